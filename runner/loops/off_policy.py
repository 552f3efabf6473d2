"""The off-policy loop (DDPG, SAC): experience goes to the agent's replay, rewards are computed when a
minibatch is sampled.

Each iteration is agent.batch_size env steps, in chunks of `agent.collect_steps` steps per env:

    rollout = collect(collect_steps per env: agent.act, exploration.behaviour_action)
    t = rollout.transitions();  exploration.observe(t)
    [exploration.update(t)                  methods that fit before they score]
    r_int = exploration.intrinsic_reward(t);  shaper.observe(r_int)     (the shaper's statistics move
                                                                         with new experience only)
    agent.observe(t)                                                     (into the replay)
    agent.update(reward_fn),  reward_fn(minibatch) = r_ext + shaper.apply(exploration.intrinsic_reward(minibatch))
    [exploration.update(t, feedback=the agent's metrics)        the others]

The row's metrics are the chunks' means (numbers) and the bonus columns those of the new experience.
"""
from __future__ import annotations

import time

import numpy as np

from algos.common.checks import check_finite, require
from runner.collect import Collector, EpisodeStats
from runner.loops import add_phases, bonus_columns, bonus_of_new_experience, episode_columns, mean_metrics


class OffPolicyLoop:
    def __init__(self, vec_env, agent, exploration, shaper, *, steps_per_env: int, env_seeds: list[int],
                 components: dict, coverage=None, **_):
        chunk = int(getattr(agent, "collect_steps", None) or steps_per_env)
        require(chunk > 0 and steps_per_env % chunk == 0, "agent.collect_steps",
                f"must divide the env steps per env and iteration ({steps_per_env}), got {chunk}")
        self.agent, self.exploration, self.shaper = agent, exploration, shaper
        self.collector = Collector(vec_env, chunk, coverage=coverage)
        self.chunks = steps_per_env // chunk
        self.env_seeds, self.components = env_seeds, components

    def start(self) -> None:
        self.collector.reset(self.env_seeds)

    def reward_fn(self, minibatch) -> np.ndarray:
        """r = r_ext + coef * normalise(r_int) of a replay minibatch, at sample time."""
        if self.shaper.coef == 0.0:
            return np.asarray(minibatch.rewards_ext, np.float64)
        r_int = self.exploration.intrinsic_reward(minibatch)
        check_finite(self.components["exploration"], intrinsic_reward=r_int)
        return minibatch.rewards_ext + self.shaper.apply(r_int)

    def iteration(self) -> dict:
        episodes, times = EpisodeStats(), {}
        r_ints, bonuses, agent_rows, explore_rows = [], [], [], []
        for _ in range(self.chunks):
            t0 = time.perf_counter()
            rollout, chunk_episodes = self.collector.collect(self.agent, self.exploration)
            episodes.extend(chunk_episodes)
            t1 = time.perf_counter()
            transitions = rollout.transitions()
            r_int, bonus, explore_metrics, fit_s = bonus_of_new_experience(
                self.exploration, self.shaper, transitions, self.components["exploration"])
            self.agent.observe(transitions)
            t2 = time.perf_counter()
            agent_rows.append(self.agent.update(self.reward_fn))
            t3 = time.perf_counter()
            if explore_metrics is None:
                explore_metrics = self.exploration.update(transitions, feedback=agent_rows[-1])
            t4 = time.perf_counter()
            r_ints.append(r_int)
            bonuses.append(bonus)
            explore_rows.append(explore_metrics)
            add_phases(times, t1 - t0, t2 - t1 - fit_s, t4 - t3 + fit_s, t3 - t2)
        return {**episode_columns(episodes), **bonus_columns(np.concatenate(r_ints), np.concatenate(bonuses)),
                **times, **mean_metrics(agent_rows), **mean_metrics(explore_rows, "expl_")}

    def state_dict(self) -> dict:
        return {"collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.collector.load_state_dict(state["collector"])

