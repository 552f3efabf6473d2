"""What TRPO and PPO share: acting with a stochastic policy, observation normalisation, GAE."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from algos.common.checks import require_in_range, require_positive
from algos.common.fast_mlp import NumpyMLP, mlp_parts
from algos.common.math import gae
from algos.common.nets import action_kind, observation_kind
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Rollout


class OnPolicyAgent:
    """Plumbing for agents that learn from the rollout they just collected."""

    family = "on_policy"
    action_kinds = ("continuous", "discrete")

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, *, batch_size: int,
                 num_envs: int, gamma: float, gae_lambda: float, normalize_observations: bool,
                 obs_clip: float, device: torch.device | str, seed: int):
        require_positive("agent.batch_size", batch_size)
        require_positive("agent.num_envs", num_envs)
        require_in_range("agent.gamma", gamma, 0.0, 1.0)
        require_in_range("agent.gae_lambda", gae_lambda, 0.0, 1.0)
        self.observation_space, self.action_space = observation_space, action_space
        self.discrete = action_kind(action_space) == "discrete"
        self.batch_size, self.num_envs = batch_size, num_envs
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # action sampling on the numpy path
        self.numpy_actor = None
        # Pixels are scaled by the CNN itself; running normalisation is for vector observations.
        self.pixels = observation_kind(observation_space) == "pixels"
        normalize_observations = normalize_observations and not self.pixels
        self.obs_rms = RunningMeanStd(observation_space.shape) if normalize_observations else None
        self.obs_clip = obs_clip

    # -- acting ---------------------------------------------------------------------------------
    def preprocess(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as the networks see them: normalised with the statistics frozen during
        the current iteration (so the update sees exactly what the behaviour policy saw)."""
        if self.obs_rms is not None:
            obs = self.obs_rms.normalize(obs, self.obs_clip)
        return self.tensor(obs)

    def tensor(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as a tensor on the agent's device: pixels stay uint8 (the CNN scales)."""
        return torch.as_tensor(obs, dtype=torch.uint8 if self.pixels else torch.float32, device=self.device)

    def setup_numpy_acting(self) -> None:
        """Act with numpy when the policy is an MLP: ~10 us per step instead of ~40 us through
        torch, and no device round trip per step when training on a GPU. Call refresh_acting()
        after each update when the weights live off the CPU."""
        parts = mlp_parts(self.policy.logits if self.discrete else self.policy.mean)
        self.numpy_actor = NumpyMLP(*parts) if parts else None
        self.refresh_acting()

    def refresh_acting(self) -> None:
        if self.numpy_actor is not None and self.device.type != "cpu":
            self.numpy_actor.refresh()
        if not self.discrete:
            self.numpy_std = np.exp(self.policy.log_std.detach().cpu().numpy())

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, dict]:
        """Sampled actions, and {"logits": ...} for categorical policies (for Boltzmann)."""
        if self.numpy_actor is None:
            return self._act_torch(obs)
        x = self.obs_rms.normalize(obs, self.obs_clip) if self.obs_rms is not None else obs
        out = self.numpy_actor(x)
        if self.discrete:  # inverse-CDF sampling from softmax(logits)
            p = np.exp(out - out.max(-1, keepdims=True))
            cdf = np.cumsum(p, -1)
            u = self.rng.random((len(out), 1)) * cdf[:, -1:]
            return np.minimum((cdf < u).sum(-1), out.shape[-1] - 1), {"logits": out}
        noise = self.rng.standard_normal(out.shape, dtype=np.float32)
        noise *= self.numpy_std
        noise += out
        return noise, {}

    @torch.inference_mode()
    def _act_torch(self, obs: np.ndarray) -> tuple[np.ndarray, dict]:
        params = self.policy(self.preprocess(obs))
        actions = self.policy.dist.sample(params, self.generator).cpu().numpy()
        return actions, ({"logits": params[0].cpu().numpy()} if self.discrete else {})

    def actions_tensor(self, rollout: Rollout) -> torch.Tensor:
        dtype = torch.long if self.discrete else torch.float32
        return torch.as_tensor(rollout.flat(rollout.actions), dtype=dtype, device=self.device)

    # -- learning -------------------------------------------------------------------------------
    def advantages(self, rollout: Rollout, rewards: np.ndarray, value_fn) -> tuple[np.ndarray, np.ndarray]:
        """GAE advantages and lambda-returns (advantage + value), both [T, N]."""
        values, next_values = rollout.successor_values(value_fn)
        adv = gae(rewards, values, next_values, rollout.terminated.astype(np.float64),
                  rollout.episode_end.astype(np.float64), self.gamma, self.gae_lambda)
        return adv, adv + values

    def update_obs_stats(self, rollout: Rollout) -> None:
        if self.obs_rms is not None:
            self.obs_rms.update(rollout.flat(rollout.obs))

    def base_state(self) -> dict:
        return {"generator": self.generator.get_state(), "rng": self.rng.bit_generator.state,
                "obs_rms": self.obs_rms.state_dict() if self.obs_rms is not None else None}

    def load_base_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        if self.obs_rms is not None:
            self.obs_rms.load_state_dict(state["obs_rms"])
        self.refresh_acting()  # the acting copies follow the loaded weights
