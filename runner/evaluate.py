"""Evaluation episodes: the agent's deterministic policy on an env instance of its own.

Every `eval_every` iterations the run plays `eval_episodes` whole episodes, one per sub-env of a
separate vector env, with `agent.act(obs, deterministic=True)` and no exploration method. Evaluation
draws from no RNG of the training run (a deterministic act draws none; the env is separate), so it does
not change any training number. Round k resets its episodes with seeds derived from the run's `seed`
and k (reproducible, different starts each round). The row gets `eval_return_mean` (environment reward)
and `eval_task_metric_mean` (the paper's metric where the env reports one, else the return).
"""
from __future__ import annotations

import numpy as np

from runner.envs import make_vector_env

EVAL_COLUMNS = ("eval_return_mean", "eval_task_metric_mean")


class Evaluator:
    def __init__(self, env_cfg, episodes: int, seed: int):
        self.env_cfg, self.episodes, self.seed = env_cfg, int(episodes), int(seed)
        self.env = None  # built at the first evaluation
        self.rounds = 0

    def evaluate(self, agent) -> dict:
        if self.env is None:
            self.env = make_vector_env(self.env_cfg, self.episodes)
        seeds = np.random.SeedSequence(self.seed, spawn_key=(self.rounds,)).generate_state(self.episodes)
        self.rounds += 1
        obs, _ = self.env.reset(seed=[int(s) for s in seeds])
        n = self.episodes
        returns, metrics = np.zeros(n), np.full(n, np.nan)
        running = np.ones(n, bool)
        agent.episode_start(running)
        while running.any():
            actions, _ = agent.act(obs, deterministic=True)
            obs, reward, terminated, truncated, info = self.env.step(actions)
            returns += np.where(running, reward, 0.0)
            ended = running & (terminated | truncated)
            if ended.any():
                final = info.get("final_info", {})
                if "task_metric" in final:
                    has = final["_task_metric"] & ended
                    metrics[has] = final["task_metric"][has]
                running &= ~ended
        metrics = np.where(np.isnan(metrics), returns, metrics)
        return {"eval_return_mean": float(returns.mean()), "eval_task_metric_mean": float(metrics.mean())}

    def state_dict(self) -> dict:
        return {"rounds": self.rounds}

    def load_state_dict(self, state: dict) -> None:
        self.rounds = int(state["rounds"])

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
