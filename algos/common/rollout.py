"""The batches the loops hand to agents and exploration methods.

`Rollout` is what on-policy collection produces: T steps of N environments, time-major. `Transitions`
is the one flat view of experience that every exploration method reads: a rollout's steps
(`Rollout.transitions()`), an off-policy agent's replay minibatch, or a shuffled copy of either.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Transitions:
    """B transitions (s, a, s'), flat: row i is obs[i] -> actions[i] -> next_obs[i].

    `next_obs` is the true successor: the final observation where an episode ended (terminated or
    truncated at a time limit), never the next episode's first observation. It is stored compactly as
    `successor` [B] and `extra_next_obs` [K, ...]: next_obs[i] = obs[successor[i]] when successor[i] < B,
    else extra_next_obs[successor[i] - B]; so a rollout's successors that are themselves rows of the
    batch are not copied, and `next_obs` is materialised only when a method reads it.

    Rows taken from a rollout of T steps of N environments carry `layout` = (T, N) and `index` [B, 2],
    the (step, env) of each row (a shuffled copy or a subset keeps them); other batches (replay
    minibatches) have neither. `agent_info` holds per-row arrays of what the agent's act() returned
    besides the actions (e.g. "log_prob", "logits").
    """

    def __init__(self, obs: np.ndarray, actions: np.ndarray, rewards_ext: np.ndarray,
                 terminated: np.ndarray, truncated: np.ndarray, episode_step: np.ndarray, *,
                 next_obs: np.ndarray | None = None, successor: np.ndarray | None = None,
                 extra_next_obs: np.ndarray | None = None, agent_info: dict | None = None,
                 layout: tuple[int, int] | None = None, index: np.ndarray | None = None):
        self.obs, self.actions, self.rewards_ext = obs, actions, rewards_ext
        self.terminated, self.truncated, self.episode_step = terminated, truncated, episode_step
        self.agent_info = dict(agent_info or {})
        self.layout, self.index = layout, index
        if next_obs is not None:
            self._next_obs = next_obs
            self.successor = np.arange(len(obs), 2 * len(obs))
            self.extra_next_obs = next_obs
        else:
            self._next_obs = None
            self.successor, self.extra_next_obs = successor, extra_next_obs

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def episode_end(self) -> np.ndarray:
        return self.terminated | self.truncated

    @property
    def next_obs(self) -> np.ndarray:
        if self._next_obs is None:
            inside = self.successor < len(self.obs)
            out = np.empty_like(self.obs)
            out[inside] = self.obs[self.successor[inside]]
            out[~inside] = self.extra_next_obs[self.successor[~inside] - len(self.obs)]
            self._next_obs = out
        return self._next_obs

    def actions_one_hot(self, n: int) -> np.ndarray:
        """Discrete actions as float32 one-hot rows [B, n]."""
        return np.eye(n, dtype=np.float32)[np.asarray(self.actions, np.int64).reshape(-1)]

    @staticmethod
    def last_frame(obs: np.ndarray) -> np.ndarray:
        """The newest frame [B, H, W] of pixel stacks [B, C, H, W] (the last channel)."""
        return obs[:, -1]

    def take(self, rows: np.ndarray) -> "Transitions":
        """The rows `rows` (a permutation, a subset, a minibatch), with their (step, env) index."""
        return Transitions(self.obs[rows], self.actions[rows], self.rewards_ext[rows],
                           self.terminated[rows], self.truncated[rows], self.episode_step[rows],
                           next_obs=self.next_obs[rows],
                           agent_info={k: v[rows] for k, v in self.agent_info.items()},
                           layout=self.layout, index=None if self.index is None else self.index[rows])

    def as_steps(self, values: np.ndarray) -> np.ndarray:
        """Per-row values [B] placed at their (step, env), [T, N] (rows from a rollout only)."""
        if self.index is None:
            raise ValueError("this batch does not come from a rollout")
        out = np.zeros(self.layout, np.asarray(values).dtype)
        out[self.index[:, 0], self.index[:, 1]] = values
        return out


@dataclass
class Rollout:
    """T steps of N parallel environments, time-major ([T, N, ...]).

    `obs[t]` is the observation in which `actions[t]` was taken; its successor is `obs[t + 1]`,
    except where the episode ended at step t: then the successor is the episode's final observation
    (`final_obs`, listed at `final_index`), and `obs[t + 1]` is the first observation of the next
    episode. `last_obs` is the observation after step T - 1 when that step did not end an episode.
    `rewards_ext` is the environment's reward; `rewards` (set by the loop before the agent update)
    is the reward the agent optimises, r_ext + coef * normalise(r_int). `agent_info` holds [T, N, ...]
    arrays of what the agent's act() returned besides the actions, and `behaviour_log_prob` [T, N],
    where an exploration method changed the actions, the log-probability of each executed action
    under the behaviour distribution (the policy composed with the method's action noise).
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
    behaviour_log_prob: np.ndarray | None = None

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

    def transitions(self) -> Transitions:
        """All T * N steps as one flat batch (row t * N + n), successors encoded without copies:
        obs[t + 1] where the episode went on, last_obs or the final observation otherwise."""
        T, N = self.num_steps, self.num_envs
        ended = self.episode_end
        inside = ~ended
        inside[-1] = False
        inside = inside.reshape(-1)
        outside = np.flatnonzero(~inside)
        successor = np.where(inside, np.arange(T * N) + N, T * N + np.cumsum(~inside) - 1)
        final_row = np.full((T, N), -1, np.int64)
        if len(self.final_index):
            final_row[self.final_index[:, 0], self.final_index[:, 1]] = np.arange(len(self.final_index))
        k = final_row.reshape(-1)[outside]
        extra = np.empty((len(outside), *self.obs.shape[2:]), self.obs.dtype)
        extra[k >= 0] = self.final_obs[k[k >= 0]]
        extra[k < 0] = self.last_obs[outside[k < 0] % N]
        info = {key: self.flat(v) for key, v in self.agent_info.items()}
        return Transitions(self.flat(self.obs), self.flat(self.actions), self.flat(self.rewards_ext),
                           self.flat(self.terminated), self.flat(self.truncated),
                           self.flat(self.episode_step), successor=successor, extra_next_obs=extra,
                           agent_info=info, layout=(T, N),
                           index=np.stack(np.divmod(np.arange(T * N), N), 1))

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
