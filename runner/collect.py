"""Collection: step the vector env with the agent's policy (and an exploration method's behaviour
actions) for a fixed number of steps, episodes running on across calls."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from algos.common.rollout import Rollout
from runner.env_state import get_vector_env_state, set_vector_env_state

log = logging.getLogger("explorebench")


@dataclass
class EpisodeStats:
    """Episodes that ended during one collection: extrinsic return, length, task metric."""

    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    task_metrics: list = field(default_factory=list)

    def extend(self, other: "EpisodeStats") -> None:
        """Add the episodes of another collection."""
        self.returns += other.returns
        self.lengths += other.lengths
        self.task_metrics += other.task_metrics


class Collector:
    """Keeps the vector env's episodes running across iterations (no reset between batches). Before each
    step, `agent.episode_start(mask)` is told which envs begin an episode (per-episode latents, skills);
    after it, the agent's info (log_prob, logits, ...) is kept per step in the rollout."""

    def __init__(self, vec_env, num_steps: int):
        self.env, self.num_steps, self.num_envs = vec_env, num_steps, vec_env.num_envs
        self.obs = None
        self.episode_return = np.zeros(self.num_envs)
        self.episode_step = np.zeros(self.num_envs, np.int64)
        self.seeds: list[int] = []
        self.resets = 0  # restarts forced by resuming without an env snapshot

    def reset(self, seeds: list[int]) -> None:
        self.seeds = list(seeds)
        self.obs, _ = self.env.reset(seed=seeds)
        self.obs = self.obs.copy()
        self.episode_return[:] = 0
        self.episode_step[:] = 0

    def collect(self, agent, exploration) -> tuple[Rollout, EpisodeStats]:
        T, N = self.num_steps, self.num_envs
        obs_buf = np.empty((T, N, *self.obs.shape[1:]), self.obs.dtype)
        act_buf = logp_buf = None
        info_buf: dict = {}
        rew_buf = np.empty((T, N))
        term_buf = np.empty((T, N), bool)
        trunc_buf = np.empty((T, N), bool)
        step_buf = np.empty((T, N), np.int64)
        final_index, final_obs = [], []
        stats = EpisodeStats()
        behaviour = exploration.behaviour_action if exploration.changes_actions else None
        obs = self.obs
        for t in range(T):
            starting = self.episode_step == 0
            if starting.any():
                agent.episode_start(starting)
            actions, info = agent.act(obs)
            log_prob = info.get("log_prob")
            if behaviour is not None:
                actions, log_prob = behaviour(obs, actions, episode_step=self.episode_step, agent_info=info)
            if act_buf is None:
                act_buf = np.empty((T, *actions.shape), actions.dtype)
                info_buf = {k: np.empty((T, *np.shape(v)), np.asarray(v).dtype) for k, v in info.items()}
                logp_buf = None if log_prob is None else np.empty((T, N))
            obs_buf[t] = obs
            act_buf[t] = actions
            for k, v in info.items():
                info_buf[k][t] = v
            if logp_buf is not None:
                logp_buf[t] = log_prob
            step_buf[t] = self.episode_step
            obs, reward, terminated, truncated, info = self.env.step(actions)
            rew_buf[t], term_buf[t], trunc_buf[t] = reward, terminated, truncated
            self.episode_return += reward
            self.episode_step += 1
            ended = terminated | truncated
            if ended.any():
                metric, has_metric = self._final_task_metric(info)
                for i in np.flatnonzero(ended):
                    final_index.append((t, i))
                    final_obs.append(info["final_obs"][i])
                    stats.returns.append(float(self.episode_return[i]))
                    stats.lengths.append(int(self.episode_step[i]))
                    stats.task_metrics.append(float(metric[i]) if has_metric[i] else float(self.episode_return[i]))
                self.episode_return[ended] = 0
                self.episode_step[ended] = 0
        self.obs = obs.copy()
        rollout = Rollout(
            obs=obs_buf, actions=act_buf, rewards_ext=rew_buf, terminated=term_buf,
            truncated=trunc_buf, episode_step=step_buf, last_obs=self.obs,
            final_index=np.asarray(final_index, np.int64).reshape(-1, 2),
            final_obs=np.asarray(final_obs, obs_buf.dtype).reshape(-1, *obs_buf.shape[2:]),
            agent_info=info_buf, behaviour_log_prob=logp_buf)
        return rollout, stats

    @staticmethod
    def _final_task_metric(info: dict):
        """The paper metric of each env's final step, and a mask of the envs that report one."""
        final = info.get("final_info", {})
        if "task_metric" in final:
            return final["task_metric"], final["_task_metric"]
        n = len(info["final_obs"])
        return np.zeros(n), np.zeros(n, bool)

    def state_dict(self) -> dict:
        return {"env": get_vector_env_state(self.env), "obs": self.obs.copy(), "seeds": self.seeds,
                "episode_return": self.episode_return.copy(), "episode_step": self.episode_step.copy(),
                "resets": self.resets}

    def load_state_dict(self, state: dict) -> None:
        self.resets = state["resets"]
        if state["env"] is None:
            # No snapshot (ale-py's C++ batch): restart the episodes, with fresh but reproducible seeds.
            log.warning("this vector env cannot be snapshotted: episodes in progress restart on resume")
            self.resets += 1
            self.reset([s + 7919 * self.resets for s in state["seeds"]])
            self.seeds = state["seeds"]
            return
        set_vector_env_state(self.env, state["env"])
        self.seeds = state["seeds"]
        self.obs = state["obs"].copy()
        self.episode_return = state["episode_return"].copy()
        self.episode_step = state["episode_step"].copy()
