"""The on-policy loop (TRPO, PPO): each iteration learns from the rollout it has just collected.

    rollout = collect(batch_size env steps, or whole paths of at least that many: agent.act,
                      exploration.behaviour_action)
    t = rollout.transitions();  exploration.observe(t)
    [exploration.update(t)                  methods that fit before they score]
    r_int = exploration.intrinsic_reward(t);  shaper.observe(r_int)
    rollout.rewards = r_ext + shaper.apply(r_int)
    agent.update(rollout)
    [exploration.update(t, feedback=the agent's metrics)        the others]
"""
from __future__ import annotations

import time

from runner.collect import Collector
from runner.loops import bonus_columns, bonus_of_new_experience, episode_columns, phase_columns


class OnPolicyLoop:
    def __init__(self, vec_env, agent, exploration, shaper, *, steps_per_env: int, env_seeds: list[int],
                 components: dict, coverage=None, **_):
        self.agent, self.exploration, self.shaper = agent, exploration, shaper
        whole_paths = agent.batch_size if agent.whole_paths else None
        self.collector = Collector(vec_env, steps_per_env, whole_paths_min_steps=whole_paths, coverage=coverage)
        self.env_seeds, self.components = env_seeds, components

    def start(self) -> None:
        self.collector.reset(self.env_seeds)

    def iteration(self) -> dict:
        t0 = time.perf_counter()
        rollout, episodes = self.collector.collect(self.agent, self.exploration)
        t1 = time.perf_counter()
        transitions = rollout.transitions()
        r_int, bonus, explore_metrics, fit_s = bonus_of_new_experience(
            self.exploration, self.shaper, transitions, self.components["exploration"])
        rollout.rewards = rollout.rewards_ext + transitions.as_steps(bonus)
        t2 = time.perf_counter()
        agent_metrics = self.agent.update(rollout)
        t3 = time.perf_counter()
        if explore_metrics is None:
            explore_metrics = self.exploration.update(transitions, feedback=agent_metrics)
        t4 = time.perf_counter()
        return {"env_steps": rollout.obs.shape[0] * rollout.obs.shape[1],
                **episode_columns(episodes), **bonus_columns(r_int, bonus),
                **phase_columns(t1 - t0, t2 - t1 - fit_s, t4 - t3 + fit_s, t3 - t2),
                **agent_metrics, **{f"expl_{k}": v for k, v in explore_metrics.items()}}

    def state_dict(self) -> dict:
        return {"collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.collector.load_state_dict(state["collector"])
