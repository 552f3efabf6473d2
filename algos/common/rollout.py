"""The on-policy batch that the runner collects and agents and exploration methods consume."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Rollout:
    """T steps of N parallel environments, time-major ([T, N, ...]).

    `obs[t]` is the observation in which `actions[t]` was taken; its successor is `obs[t + 1]`,
    except where the episode ended at step t: then the successor is the episode's final observation
    (`final_obs`, listed at `final_index`), and `obs[t + 1]` is the first observation of the next
    episode. `last_obs` is the observation after step T - 1 when that step did not end an episode.
    `rewards_ext` is the environment's reward; `rewards` (set by the runner before the agent
    update) is the reward the agent optimises, r_ext + coef * normalise(r_int).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards_ext: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_step: np.ndarray          # index of obs[t] within its episode (0 at reset)
    last_obs: np.ndarray              # [N, ...]
    final_index: np.ndarray           # [K, 2] (t, env) of the steps that ended an episode
    final_obs: np.ndarray             # [K, ...]
    rewards: np.ndarray | None = None
    agent_info: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    @property
    def episode_end(self) -> np.ndarray:
        return self.terminated | self.truncated

    def next_obs(self) -> np.ndarray:
        """The true successor of every step, [T, N, ...] (materialised on demand)."""
        nxt = np.concatenate([self.obs[1:], self.last_obs[None]], 0)
        if len(self.final_index):
            nxt[self.final_index[:, 0], self.final_index[:, 1]] = self.final_obs
        return nxt

    def flat(self, array: np.ndarray) -> np.ndarray:
        """[T, N, ...] -> [T * N, ...]."""
        return array.reshape(self.num_steps * self.num_envs, *array.shape[2:])

    def successor_values(self, value_fn) -> tuple[np.ndarray, np.ndarray]:
        """(V(s_t), V(s'_t)) as [T, N] arrays, for `value_fn(obs [B, ...], episode_step [B]) -> [B]`.

        One batched call covers obs[0..T-1] and last_obs, a second the final observations; the
        successor of an episode's last step is evaluated at that episode's next step index.
        """
        T, N = self.num_steps, self.num_envs
        all_obs = np.concatenate([self.obs, self.last_obs[None]], 0)
        last_step = self.episode_step[-1] + 1
        last_step = np.where(self.episode_end[-1], 0, last_step)  # unused where it ended
        all_steps = np.concatenate([self.episode_step, last_step[None]], 0)
        v = np.asarray(value_fn(all_obs.reshape((T + 1) * N, *all_obs.shape[2:]),
                                all_steps.reshape(-1)), np.float64).reshape(T + 1, N)
        values, next_values = v[:-1], v[1:].copy()
        if len(self.final_index):
            t, i = self.final_index[:, 0], self.final_index[:, 1]
            next_values[t, i] = value_fn(self.final_obs, self.episode_step[t, i] + 1)
        return values, next_values
