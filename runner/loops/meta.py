"""The meta-RL loop (MAML-TRPO, MAESN): tasks, adaptation, one meta-update per iteration.

    tasks = env.sample_tasks(agent.meta_batch_size, rng)
    for each task i:  set_task on every sub-env; fresh episodes
        agent.start_task(i)
        for k in 0 .. agent.inner_steps:
            rollout_k = collect(steps per collection: agent.act, exploration.behaviour_action)
            bonus as on-policy (observe, [update], intrinsic_reward, shaper); rollout_k.rewards = r_ext + bonus
            if k < inner_steps: agent.adapt(i, rollout_k)           (act uses the adapted parameters next)
    agent.meta_update([[rollout_0, ..., rollout_inner] for each task])
    exploration.update(all of it, feedback=the meta-update's metrics)    (methods that do not fit first)

A collection is ceil(agent.fast_batch_size / num_envs) whole episodes of env.max_episode_steps per
env (runner.config.iteration_env_steps). The row's episode columns are those of the last (adapted)
collections; `return_ext_pre_adapt_mean` those of the first. The task family API (sample_tasks(n, rng),
set_task(task)) is the environment's.
"""
from __future__ import annotations

import time

import numpy as np

from algos.common.rollout import Transitions
from runner.collect import Collector, EpisodeStats
from runner.loops import add_phases, bonus_columns, bonus_of_new_experience, episode_columns, mean_metrics


def concatenate(batches: list[Transitions]) -> Transitions:
    """One batch of several (without rollout layout)."""
    cat = lambda name: np.concatenate([getattr(b, name) for b in batches])  # noqa: E731
    keys = batches[0].agent_info.keys()
    return Transitions(cat("obs"), cat("actions"), cat("rewards_ext"), cat("terminated"), cat("truncated"),
                       cat("episode_step"), next_obs=cat("next_obs"),
                       agent_info={k: np.concatenate([b.agent_info[k] for b in batches]) for k in keys})


class MetaLoop:
    def __init__(self, vec_env, agent, exploration, shaper, *, steps_per_env: int, env_seeds: list[int],
                 components: dict, task_seed: int, coverage=None, **_):
        self.env, self.agent, self.exploration, self.shaper = vec_env, agent, exploration, shaper
        self.collector = Collector(vec_env, steps_per_env, coverage=coverage)
        self.components = components
        self.rng = np.random.default_rng(task_seed)  # tasks and the episodes' reset seeds

    def start(self) -> None:
        pass

    def sample_tasks(self, n: int) -> list:
        return self.env.envs[0].get_wrapper_attr("sample_tasks")(n, self.rng)

    def iteration(self) -> dict:
        times = {}
        first, last = EpisodeStats(), EpisodeStats()
        rollouts, seen, r_ints, bonuses, explore_metrics = [], [], [], [], {}
        adapt_rows = []
        for i, task in enumerate(self.sample_tasks(self.agent.meta_batch_size)):
            self.env.call("set_task", task)
            self.collector.reset([int(s) for s in self.rng.integers(0, 2**31, self.env.num_envs)])
            self.agent.start_task(i)
            per_task = []
            for k in range(self.agent.inner_steps + 1):
                t0 = time.perf_counter()
                rollout, episodes = self.collector.collect(self.agent, self.exploration)
                t1 = time.perf_counter()
                transitions = rollout.transitions()
                r_int, bonus, fit_metrics, fit_s = bonus_of_new_experience(
                    self.exploration, self.shaper, transitions, self.components["exploration"])
                explore_metrics = fit_metrics or explore_metrics
                rollout.rewards = rollout.rewards_ext + transitions.as_steps(bonus)
                t2 = time.perf_counter()
                if k < self.agent.inner_steps:
                    adapt_rows.append(self.agent.adapt(i, rollout))
                t3 = time.perf_counter()
                add_phases(times, t1 - t0, t2 - t1 - fit_s, fit_s, t3 - t2)
                (first if k == 0 else last).extend(episodes)
                per_task.append(rollout)
                seen.append(transitions)
                r_ints.append(r_int)
                bonuses.append(bonus)
            rollouts.append(per_task)
        t0 = time.perf_counter()
        agent_metrics = self.agent.meta_update(rollouts)
        t1 = time.perf_counter()
        if not self.exploration.fit_before_scoring:
            explore_metrics = self.exploration.update(concatenate(seen), feedback=agent_metrics)
        t2 = time.perf_counter()
        add_phases(times, 0.0, 0.0, t2 - t1, t1 - t0)
        return {**episode_columns(last if self.agent.inner_steps else first),
                **bonus_columns(np.concatenate(r_ints), np.concatenate(bonuses)),
                **times, "return_ext_pre_adapt_mean": episode_columns(first)["return_ext_mean"],
                **agent_metrics, **mean_metrics(adapt_rows, "adapt_"),
                **{f"expl_{k}": v for k, v in explore_metrics.items()}}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
