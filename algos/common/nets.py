"""Small networks: MLPs, the Atari CNN torsos, Gaussian and categorical policies, value networks.

Vector observations go through an MLP; pixel observations (uint8, [C, H, W]) through a CNN torso
that scales them to [0, 1] itself, so rollouts keep the compact uint8 frames.
"""
from __future__ import annotations

import math
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from algos.common.checks import ConfigError, require_choice
from algos.common.distributions import Categorical, DiagGaussian

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
CNN_ARCHS = ("nature", "nips")


def _init(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh",
        orthogonal_init: bool = False, out_gain: float = 1.0) -> nn.Sequential:
    """Linear layers with `activation` between them. With `orthogonal_init`, hidden layers get
    orthogonal weights with gain sqrt(2) and the output layer gain `out_gain`, biases zero
    (the PPO implementation-details initialisation)."""
    require_choice("activation", activation, tuple(ACTIVATIONS))
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layer = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        if orthogonal_init:
            _init(layer, out_gain if last else math.sqrt(2))
        layers.append(layer)
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class AtariCNN(nn.Module):
    """Convolutional torso for stacked frames.

    nature: Mnih et al. 2015 (Nature DQN): 32 8x8/4, 64 4x4/2, 64 3x3/1, fc 512, ReLU.
    nips:   Mnih et al. 2013/2016 (A3C), the `nips_dqn_args` of #Exploration and EMI:
            16 8x8/4, 32 4x4/2, fc 256, ReLU.
    """

    def __init__(self, obs_shape: tuple, arch: str = "nature", orthogonal_init: bool = False):
        super().__init__()
        require_choice("agent.cnn", arch, CNN_ARCHS)
        channels = obs_shape[0]
        if arch == "nature":
            convs = [nn.Conv2d(channels, 32, 8, 4), nn.Conv2d(32, 64, 4, 2), nn.Conv2d(64, 64, 3, 1)]
            self.out_dim = 512
        else:
            convs = [nn.Conv2d(channels, 16, 8, 4), nn.Conv2d(16, 32, 4, 2)]
            self.out_dim = 256
        layers: list[nn.Module] = []
        for conv in convs:
            layers += [_init(conv, math.sqrt(2)) if orthogonal_init else conv, nn.ReLU()]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        fc = nn.Linear(flat, self.out_dim)
        self.fc = nn.Sequential(_init(fc, math.sqrt(2)) if orthogonal_init else fc, nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs
        return self.fc(self.convs(x))


def observation_kind(observation_space: gym.Space) -> str:
    """'vector' for a flat Box, 'pixels' for a [C, H, W] Box; anything else is refused."""
    if isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1:
        return "vector"
    if isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3:
        return "pixels"
    raise ConfigError(f"env: observation space {observation_space} is not supported; allowed: "
                      "a flat Box (vectors) or a [channels, height, width] Box (pixels)")


def flat_obs_dim(observation_space: gym.Space) -> int:
    if observation_kind(observation_space) != "vector":
        raise ConfigError(f"env: observation space {observation_space} needs vector observations here")
    return int(observation_space.shape[0])


def action_kind(action_space: gym.Space) -> str:
    """'continuous' for a flat Box, 'discrete' for Discrete; anything else is refused."""
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return "continuous"
    if isinstance(action_space, gym.spaces.Discrete):
        return "discrete"
    raise ConfigError(f"env: action space {action_space} is not supported; "
                      "allowed: a flat Box (continuous) or Discrete")


def network(observation_space: gym.Space, out_dim: int, hidden: Sequence[int], activation: str,
            orthogonal_init: bool = False, out_gain: float = 1.0, cnn: str = "nature") -> nn.Sequential:
    """An MLP for vector observations, or a CNN torso plus a linear output for pixels."""
    if observation_kind(observation_space) == "vector":
        return mlp(flat_obs_dim(observation_space), hidden, out_dim, activation, orthogonal_init, out_gain)
    torso = AtariCNN(observation_space.shape, cnn, orthogonal_init)
    head = nn.Linear(torso.out_dim, out_dim)
    return nn.Sequential(torso, _init(head, out_gain) if orthogonal_init else head)


class GaussianPolicy(nn.Module):
    """Mean from a network, state-independent learned log-std (rllab's GaussianMLPPolicy)."""

    dist = DiagGaussian

    def __init__(self, mean: nn.Module, act_dim: int, init_log_std: float = 0.0):
        super().__init__()
        self.mean = mean
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor):
        return self.mean(obs), self.log_std


class CategoricalPolicy(nn.Module):
    """Softmax over logits from a network."""

    dist = Categorical

    def __init__(self, logits: nn.Module):
        super().__init__()
        self.logits = logits

    def forward(self, obs: torch.Tensor):
        return (self.logits(obs),)


def make_policy(observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int],
                activation: str, init_log_std: float = 0.0, orthogonal_init: bool = False,
                out_gain: float = 1.0, cnn: str = "nature") -> nn.Module:
    if action_kind(action_space) == "continuous":
        act_dim = int(np.prod(action_space.shape))
        net = network(observation_space, act_dim, hidden, activation, orthogonal_init, out_gain, cnn)
        return GaussianPolicy(net, act_dim, init_log_std)
    net = network(observation_space, int(action_space.n), hidden, activation, orthogonal_init, out_gain, cnn)
    return CategoricalPolicy(net)
