"""Collection: step the vector env with the agent's policy (and an exploration method's behaviour
actions), for a fixed number of steps with episodes running on across calls, or in whole paths."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from gymnasium.vector import SyncVectorEnv

from algos.common.rollout import Rollout
from runner.env_state import get_vector_env_state, set_vector_env_state

log = logging.getLogger("explorebench")

PATH_SEED_STRIDE = 1_000_003  # whole-paths collection k resets env i with seed (seed_i + k * stride) mod 2^31


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
    """Steps the vector env with the agent's policy (and an exploration method's behaviour actions).
    Before each step, `agent.episode_start(mask)` is told which envs begin an episode (per-episode
    latents, skills); after it, the agent's info (log_prob, logits, ...) is kept per step.

    Two modes:
    - carried over (default): `num_steps` steps of every env per collection, episodes running on
      across collections; the rollout is [num_steps, N].
    - whole paths (`whole_paths_min_steps` = agent.batch_size; rllab's BatchPolopt sampler): every
      collection resets all envs and collects complete episodes until at least that many steps, as
      rllab's serial sampler would: an env at an episode boundary starts a path (envs in index order)
      only while the steps taken plus the most the running paths can still take (the time limit
      `path_limit`) stay below the batch, so an iteration overshoots by less than one path (without a
      known limit: while the steps taken stay below it). Every started path runs to its end. The paths
      form one column, [total steps, 1], env by env, each contiguous and ending in an episode end.
      With gymnasium's SyncVectorEnv the envs are stepped one by one, only those on a path, and an
      env resets as its path ends, waiting at an episode start until it is admitted; other vector envs
      (ale-py's batch) step all envs and drop the steps of those not on a path, which start a path
      only at their next episode boundary.

    With a `coverage` counter (runner/coverage.py), every collection's steps are counted on its grid,
    in the rollout's layout (whole paths: the kept steps); coordinates it reads from the envs
    (MuJoCo qpos, attributes) are read before each step, from the envs on a path.
    """

    def __init__(self, vec_env, num_steps: int, whole_paths_min_steps: int | None = None, coverage=None):
        self.env, self.num_steps, self.num_envs = vec_env, num_steps, vec_env.num_envs
        self.whole_paths_min_steps = whole_paths_min_steps
        self.coverage = coverage
        spec = getattr(getattr(vec_env, "envs", [None])[0], "spec", None)
        self.path_limit = getattr(spec, "max_episode_steps", None)  # None: ale-py's batch
        self.step_envs_alone = type(vec_env) is SyncVectorEnv  # whole paths step only the envs on a path
        self.obs = None
        self.episode_return = np.zeros(self.num_envs)
        self.episode_step = np.zeros(self.num_envs, np.int64)
        self.seeds: list[int] = []
        self.resets = 0  # restarts forced by resuming without an env snapshot
        self.path_batches = 0  # whole-paths collections so far (each resets with its own seeds)

    def reset(self, seeds: list[int]) -> None:
        self.seeds = list(seeds)
        self._reset_envs(self.seeds)

    def _reset_envs(self, seeds: list[int]) -> None:
        self.obs, _ = self.env.reset(seed=seeds)
        self.obs = self.obs.copy()
        self.episode_return[:] = 0
        self.episode_step[:] = 0

    def collect(self, agent, exploration) -> tuple[Rollout, EpisodeStats]:
        whole_paths = self.whole_paths_min_steps is not None
        alone = whole_paths and self.step_envs_alone  # only the envs on a path are stepped
        if whole_paths:  # fresh episodes, seeded per collection so that a resumed run repeats them
            self._reset_envs([(s + PATH_SEED_STRIDE * self.path_batches) % 2**31 for s in self.seeds])
            self.path_batches += 1
        N = self.num_envs
        steps = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "episode_step", "kept")}
        info_steps: dict = {}
        logp_steps: list = []
        final_index, final_obs = [], []
        stats = EpisodeStats()
        behaviour = exploration.behaviour_action if exploration.changes_actions else None
        coverage = self.coverage if self.coverage is not None and self.coverage.enabled else None
        read_envs = coverage.read_envs if coverage is not None and coverage.reads_envs else None
        env_values: list = []  # coordinates read from the envs, per step (coverage only)
        obs, kept, taken, t = self.obs, np.ones(N, bool), 0, 0
        if whole_paths:
            kept[:] = False
            self._admit(kept, np.arange(N), taken)
        while (kept.any() or taken < self.whole_paths_min_steps) if whole_paths else t < self.num_steps:
            starting = (self.episode_step == 0) & kept
            if starting.any():
                agent.episode_start(starting)
            actions, info = agent.act(obs)
            if behaviour is not None:
                actions, log_prob = behaviour(obs, actions, episode_step=self.episode_step, agent_info=info)
                logp_steps.append(np.asarray(log_prob, np.float64))
            # Copies: the vector env (copy=False) and the acting path reuse their output buffers.
            for k, v in info.items():
                info_steps.setdefault(k, []).append(np.array(v))
            steps["obs"].append(obs.copy())
            steps["actions"].append(np.array(actions))
            steps["episode_step"].append(self.episode_step.copy())
            steps["kept"].append(kept.copy())
            if read_envs is not None:  # the state the agent acts in, before the step changes it
                env_values.append(read_envs(kept))
            if alone:
                obs, reward, terminated, truncated, info = self._step_envs_on_paths(obs, actions, kept)
            else:
                obs, reward, terminated, truncated, info = self.env.step(actions)
            steps["rewards"].append(np.array(reward, np.float64))
            steps["terminated"].append(np.array(terminated, bool))
            steps["truncated"].append(np.array(truncated, bool))
            self.episode_return += reward
            self.episode_step += kept if alone else 1  # waiting envs stay put
            ended = terminated | truncated
            if (ended & kept).any():
                metric, has_metric = self._final_task_metric(info)
                for i in np.flatnonzero(ended & kept):
                    final_index.append((t, i))
                    final_obs.append(info["final_obs"][i])
                    stats.returns.append(float(self.episode_return[i]))
                    stats.lengths.append(int(self.episode_step[i]))
                    stats.task_metrics.append(float(metric[i]) if has_metric[i] else float(self.episode_return[i]))
            self.episode_return[ended] = 0
            self.episode_step[ended] = 0
            if whole_paths:
                taken += int(kept.sum())
                kept &= ~ended
                # envs stepped alone wait at an episode start; the others reach one when theirs ends
                self._admit(kept, np.flatnonzero(~kept if alone else ended), taken)
            t += 1
        self.obs = obs.copy()
        buffers = {k: np.stack(v) for k, v in steps.items()}
        agent_info = {k: np.stack(v) for k, v in info_steps.items()}
        final_index = np.asarray(final_index, np.int64).reshape(-1, 2)
        final_obs = np.asarray(final_obs, self.obs.dtype).reshape(-1, *self.obs.shape[1:])
        behaviour_log_prob = np.stack(logp_steps) if logp_steps else None
        last_obs = self.obs
        env_values = np.asarray(env_values, np.float64) if read_envs is not None else None
        if whole_paths:  # the kept steps as one column of whole paths, env by env
            env_of, t_of = np.nonzero(buffers.pop("kept").T)
            take = lambda a: a[t_of, env_of][:, None]  # noqa: E731
            buffers = {k: take(v) for k, v in buffers.items()}
            agent_info = {k: take(v) for k, v in agent_info.items()}
            behaviour_log_prob = None if behaviour_log_prob is None else take(behaviour_log_prob)
            env_values = None if env_values is None else take(env_values)
            row = np.full((t, N), -1, np.int64)
            row[t_of, env_of] = np.arange(len(t_of))
            final_rows = row[final_index[:, 0], final_index[:, 1]]
            order = np.argsort(final_rows)
            final_index = np.stack([final_rows[order], np.zeros(len(order), np.int64)], 1)
            final_obs = final_obs[order]
            last_obs = final_obs[-1:]  # the column ends with an episode end: unused
        else:
            buffers.pop("kept")
        rollout = Rollout(
            obs=buffers["obs"], actions=buffers["actions"], rewards_ext=buffers["rewards"],
            terminated=buffers["terminated"], truncated=buffers["truncated"],
            episode_step=buffers["episode_step"], last_obs=last_obs, final_index=final_index,
            final_obs=final_obs, agent_info=agent_info, behaviour_log_prob=behaviour_log_prob)
        if coverage is not None:
            coverage.add(rollout, env_values)
        return rollout, stats

    def _step_envs_on_paths(self, obs, actions, kept):
        """One step of the envs where `kept`, each stepped alone and reset at its episode's end (the
        vector env's step, same-step autoreset, for a subset); the other envs stay where they are."""
        obs = obs.copy()
        n = self.num_envs
        reward, terminated, truncated = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        final_obs = np.zeros_like(obs)
        metric, has_metric = np.zeros(n), np.zeros(n, bool)
        for i in np.flatnonzero(kept):
            env = self.env.envs[i]
            o, reward[i], terminated[i], truncated[i], info = env.step(actions[i])
            if terminated[i] or truncated[i]:
                final_obs[i] = o
                if "task_metric" in info:
                    metric[i], has_metric[i] = info["task_metric"], True
                o, _ = env.reset()
            obs[i] = o
        return obs, reward, terminated, truncated, {
            "final_obs": final_obs, "final_info": {"task_metric": metric, "_task_metric": has_metric}}

    def _admit(self, kept: np.ndarray, candidates: np.ndarray, taken: int) -> None:
        """Start paths in the `candidates` envs (at an episode boundary), in order, while the steps
        committed (taken, plus what the running paths may still take) stay below the batch."""
        limit = self.path_limit or 0
        committed = taken + int(np.sum(limit - self.episode_step[kept])) if limit else taken
        for i in candidates:
            if committed >= self.whole_paths_min_steps:
                return
            kept[i] = True
            committed += limit

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
                "resets": self.resets, "path_batches": self.path_batches}

    def load_state_dict(self, state: dict) -> None:
        self.resets = state["resets"]
        self.path_batches = state.get("path_batches", 0)
        if state["env"] is None:
            # No snapshot (ale-py's C++ batch): restart the episodes, with fresh but reproducible seeds
            # (whole-paths collections restart them anyway).
            if self.whole_paths_min_steps is None:
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
