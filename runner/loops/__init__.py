"""One training loop per agent family (the agent's `family` picks it): on_policy, off_policy, meta.

A loop owns the collection for its family and calls the exploration method's verbs in the pinned
order (algos/exploration/base.py); runner/train.py owns everything the families share (validation,
building, resume, signals, checkpoint cadence, evaluation, logging). `iteration()` returns one row of
progress.csv without the run-level columns (iteration, env_steps, wall_s, sps, eval_*).
Each loop hands the run's coverage counter (runner/coverage.py; None without a map) to its collector,
which counts every collected step: the runner writes one row of counts per iteration.
"""
from __future__ import annotations

import time

import numpy as np

from algos.common.checks import check_finite
from runner.collect import EpisodeStats
from runner.progress import PHASE_COLUMNS


def episode_columns(episodes: EpisodeStats) -> dict:
    """The row's episode columns: extrinsic return, task metric and length of the episodes that ended."""
    def mean(xs):
        return float(np.mean(xs)) if len(xs) else float("nan")
    return {"return_ext_mean": mean(episodes.returns),
            "return_ext_std": float(np.std(episodes.returns)) if episodes.returns else float("nan"),
            "task_metric_mean": mean(episodes.task_metrics),
            "episode_len_mean": mean(episodes.lengths), "episodes": len(episodes.returns)}


def bonus_of_new_experience(exploration, shaper, transitions, component: str) -> tuple:
    """observe -> [update, for methods that fit before scoring] -> intrinsic_reward -> shaper:
    (r_int [B], coef * normalise(r_int) [B], the update's metrics or None, seconds spent in update)."""
    exploration.observe(transitions)
    fit_metrics, fit_s = None, 0.0
    if exploration.fit_before_scoring:
        start = time.perf_counter()
        fit_metrics = exploration.update(transitions)
        fit_s = time.perf_counter() - start
    r_int = exploration.intrinsic_reward(transitions)
    check_finite(component, intrinsic_reward=r_int)
    shaper.observe(r_int)
    return r_int, shaper.apply(r_int), fit_metrics, fit_s


def bonus_columns(r_int: np.ndarray, bonus: np.ndarray) -> dict:
    return {"bonus_raw_mean": float(np.mean(r_int)), "bonus_scaled_mean": float(np.mean(bonus))}


def phase_columns(collect: float, bonus: float, explore_update: float, agent_update: float) -> dict:
    """The row's seconds per phase (runner.progress.PHASE_COLUMNS, in that order)."""
    return dict(zip(PHASE_COLUMNS, (collect, bonus, explore_update, agent_update)))


def add_phases(total: dict, *seconds: float) -> None:
    """Accumulate one more collection's phase seconds into `total` (phase_columns' keys)."""
    for name, value in phase_columns(*seconds).items():
        total[name] = total.get(name, 0.0) + value


def mean_metrics(rows: list[dict], prefix: str = "") -> dict:
    """The mean of each metric over the rows that report it, its name prefixed."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return {prefix + k: float(np.mean([row[k] for row in rows if k in row])) for k in keys}
