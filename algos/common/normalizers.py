"""Running statistics for observation and reward normalisation (checkpointable, float64)."""
from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Mean and variance of everything seen so far, merged batch by batch (Chan et al. 1979)."""

    def __init__(self, shape: tuple = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon
        self._cache_scale()

    def _cache_scale(self) -> None:
        # float32 copies for the per-step normalisation in the acting loop
        self.mean32 = self.mean.astype(np.float32)
        self.inv_std32 = (1.0 / np.sqrt(self.var + 1e-8)).astype(np.float32)

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64).reshape(-1, *self.mean.shape)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = batch.mean(0), batch.var(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self._cache_scale()

    def normalize(self, x: np.ndarray, clip: float | None = None) -> np.ndarray:
        """(x - mean) / std in float32, clipped to [-clip, clip]."""
        out = np.asarray(x, np.float32) - self.mean32
        out *= self.inv_std32
        if clip is not None:  # the ufuncs directly: np.clip's dispatch costs more than the work
            np.minimum(out, clip, out=out)
            np.maximum(out, -clip, out=out)
        return out

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), state["count"]
        self._cache_scale()


class DiscountedReturnScaler:
    """Divide rewards by the running std of the discounted return (gymnasium's NormalizeReward,
    as used by CleanRL's PPO), then clip.

    Applied to a whole [T, N] rollout at once, but with the per-step semantics of the wrapper:
    the reward of step t is divided by the std of all returns up to and including step t. The
    return accumulator restarts at episode boundaries.
    """

    def __init__(self, gamma: float, clip: float = 10.0, num_envs: int = 1):
        self.gamma, self.clip = gamma, clip
        self.returns = np.zeros(num_envs, np.float64)
        self.count, self.mean, self.sq_mean = 1e-4, 0.0, 1.0  # as RunningMeanStd(epsilon=1e-4)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        T, N = rewards.shape
        discounted = np.empty((T, N), np.float64)
        running = self.returns
        for t in range(T):
            running = running * self.gamma + rewards[t]
            discounted[t] = running
            running = running * (1.0 - episode_end[t])
        self.returns = running
        # Cumulative statistics after each step, merged with the stored prior.
        counts = self.count + N * np.arange(1, T + 1)
        means = (self.count * self.mean + np.cumsum(discounted.sum(1))) / counts
        sq_means = (self.count * self.sq_mean + np.cumsum((discounted**2).sum(1))) / counts
        variances = np.maximum(sq_means - means**2, 0.0)
        self.count, self.mean, self.sq_mean = counts[-1], means[-1], sq_means[-1]
        scaled = rewards / np.sqrt(variances + 1e-8)[:, None]
        return np.clip(scaled, -self.clip, self.clip)

    def state_dict(self) -> dict:
        return {"returns": self.returns.copy(), "count": self.count, "mean": self.mean,
                "sq_mean": self.sq_mean}

    def load_state_dict(self, state: dict) -> None:
        self.returns = state["returns"].copy()
        self.count, self.mean, self.sq_mean = state["count"], state["mean"], state["sq_mean"]
