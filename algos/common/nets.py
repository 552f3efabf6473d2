"""Small networks: MLPs, Gaussian and categorical policies, value functions."""
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
        if orthogonal_init:
            last = i == len(sizes) - 2
            nn.init.orthogonal_(layer.weight, out_gain if last else math.sqrt(2))
            nn.init.zeros_(layer.bias)
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def flat_obs_dim(observation_space: gym.Space) -> int:
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(
            f"env: observation space {observation_space} is not supported by the MLP networks; "
            "allowed: a flat Box (vector observations)")
    return int(observation_space.shape[0])


def action_kind(action_space: gym.Space) -> str:
    """'continuous' for a flat Box, 'discrete' for Discrete; anything else is refused."""
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return "continuous"
    if isinstance(action_space, gym.spaces.Discrete):
        return "discrete"
    raise ConfigError(f"env: action space {action_space} is not supported; "
                      "allowed: a flat Box (continuous) or Discrete")


class GaussianMLPPolicy(nn.Module):
    """Mean from an MLP, state-independent learned log-std (rllab's GaussianMLPPolicy)."""

    dist = DiagGaussian

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], activation: str,
                 init_log_std: float = 0.0, orthogonal_init: bool = False, out_gain: float = 1.0):
        super().__init__()
        self.mean = mlp(obs_dim, hidden, act_dim, activation, orthogonal_init, out_gain)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor):
        return self.mean(obs), self.log_std


class CategoricalMLPPolicy(nn.Module):
    """Logits from an MLP."""

    dist = Categorical

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], activation: str,
                 orthogonal_init: bool = False, out_gain: float = 1.0, **_unused):
        super().__init__()
        self.logits = mlp(obs_dim, hidden, n_actions, activation, orthogonal_init, out_gain)

    def forward(self, obs: torch.Tensor):
        return (self.logits(obs),)


def make_policy(observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int],
                activation: str, init_log_std: float = 0.0, orthogonal_init: bool = False,
                out_gain: float = 1.0) -> nn.Module:
    obs_dim = flat_obs_dim(observation_space)
    if action_kind(action_space) == "continuous":
        return GaussianMLPPolicy(obs_dim, int(np.prod(action_space.shape)), hidden, activation,
                                 init_log_std, orthogonal_init, out_gain)
    return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden, activation,
                                orthogonal_init, out_gain)
