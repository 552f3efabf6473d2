"""State-value baselines for on-policy agents: `predict(obs, episode_step)` and `fit(...)`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from algos.common.checks import check_finite
from algos.common.nets import flat_obs_dim, network


class LinearFeatureBaseline:
    """rllab's LinearFeatureBaseline: ridge regression of returns on
    [clip(o, -10, 10), clip(o, -10, 10)^2, t, t^2, t^3, 1] with t = episode step / 100.

    The ridge coefficient starts at `reg_coeff` and grows tenfold (up to five times) until the
    solution is finite, as in rllab.
    """

    def __init__(self, observation_space, reg_coeff: float = 1e-5, **_ignored):
        self.obs_dim = flat_obs_dim(observation_space)
        self.reg_coeff = reg_coeff
        self.coeffs = np.zeros(2 * self.obs_dim + 4)

    @staticmethod
    def features(obs: np.ndarray, episode_step: np.ndarray) -> np.ndarray:
        o = np.clip(np.asarray(obs, np.float64), -10, 10)
        t = np.asarray(episode_step, np.float64)[:, None] / 100.0
        return np.concatenate([o, o * o, t, t * t, t**3, np.ones_like(t)], 1)

    def predict(self, obs: np.ndarray, episode_step: np.ndarray) -> np.ndarray:
        return self.features(obs, episode_step) @ self.coeffs

    def fit(self, obs: np.ndarray, episode_step: np.ndarray, returns: np.ndarray) -> dict:
        feats = self.features(obs, episode_step)
        gram, target = feats.T @ feats, feats.T @ np.asarray(returns, np.float64)
        reg = self.reg_coeff
        for _ in range(5):
            coeffs = np.linalg.solve(gram + reg * np.eye(len(gram)), target)
            if np.all(np.isfinite(coeffs)):
                break
            reg *= 10
        check_finite("baseline (linear)", coefficients=coeffs)
        self.coeffs = coeffs
        return {}

    def state_dict(self) -> dict:
        return {"coeffs": self.coeffs.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.coeffs = state["coeffs"].copy()


class ValueNetworkBaseline:
    """A value network V(o) (an MLP, or the CNN torso on pixels) regressed on the returns with
    Adam over minibatch epochs."""

    def __init__(self, observation_space, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 learning_rate: float = 1e-3, epochs: int = 5, minibatch_size: int = 256,
                 cnn: str = "nature", device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, **_ignored):
        self.device = torch.device(device)
        self.net = network(observation_space, 1, hidden, activation, cnn=cnn).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate)
        self.epochs, self.minibatch_size = epochs, minibatch_size
        self.generator = generator

    def _tensor(self, x) -> torch.Tensor:
        x = np.asarray(x)  # pixels stay uint8 (the CNN scales them)
        return torch.as_tensor(x, dtype=None if x.dtype == np.uint8 else torch.float32, device=self.device)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, episode_step: np.ndarray | None = None) -> np.ndarray:
        return self.net(self._tensor(obs)).squeeze(-1).double().cpu().numpy()

    def fit(self, obs: np.ndarray, episode_step: np.ndarray, returns: np.ndarray) -> dict:
        obs_t = self._tensor(obs)
        ret_t = torch.as_tensor(returns, dtype=torch.float32, device=self.device)
        n = len(obs_t)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                loss = (self.net(obs_t[idx]).squeeze(-1) - ret_t[idx]).square().mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        check_finite("baseline (mlp)", loss=loss.detach(), parameters=self.net.parameters())
        return {"loss_baseline": float(loss.detach())}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


class ZeroBaseline:
    """rllab's ZeroBaseline: V = 0, so advantages are the (discounted) returns themselves (EX2's
    SwimmerGather launcher)."""

    def __init__(self, observation_space, **_ignored):
        pass

    def predict(self, obs: np.ndarray, episode_step: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(obs))

    def fit(self, obs: np.ndarray, episode_step: np.ndarray, returns: np.ndarray) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


BASELINES = {"linear": LinearFeatureBaseline, "mlp": ValueNetworkBaseline, "zero": ZeroBaseline}
