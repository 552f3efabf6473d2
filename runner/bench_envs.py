"""python -m runner.bench_envs [names...]: our environments' raw speed against gymnasium's nearest.

    python -m runner.bench_envs                      # every pair in PAIRS
    python -m runner.bench_envs swimmer_gather --steps 20000 --repeats 5

For each (our env conf, reference gymnasium id) pair, both environments are built the same way
(runner.envs.make_env, so with the runner's action wrappers), stepped with uniform random actions in
[−1, 1] (resetting at episode ends), and timed in this process, alternating between the two so
that a busy machine slows both alike; the best of the repeats counts. Printed: env steps/s of each,
their ratio, and the ratio per simulated second (steps/s × seconds per step), which factors out
different step lengths (rllab's swimmer simulates 0.05 s per step, Swimmer-v5 0.04 s).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

from runner.envs import make_env

CONF_DIR = Path(__file__).resolve().parent.parent / "conf" / "env"

# (our conf/env/<name>.yaml, the gymnasium id it is compared with)
PAIRS = [
    ("swimmer_gather", "Swimmer-v5"),
    ("ant_gather", "Ant-v5"),
    ("half_cheetah_rllab", "HalfCheetah-v5"),
    ("sparse_half_cheetah", "HalfCheetah-v5"),
    ("sparse_half_cheetah_abs", "HalfCheetah-v5"),
]


def env_config(name_or_id: str):
    """Our env conf by name, or a gymnasium id with its registered limit."""
    path = CONF_DIR / f"{name_or_id}.yaml"
    if path.exists():
        return OmegaConf.load(path)
    return OmegaConf.create({"id": name_or_id, "max_episode_steps": None, "kwargs": {}})


class Timer:
    """One environment, its pre-drawn random actions, and timed stepping in chunks."""

    def __init__(self, name_or_id: str, steps: int, seed: int = 0):
        self.env = make_env(env_config(name_or_id))
        self.env.reset(seed=seed)
        space = self.env.action_space
        rng = np.random.default_rng(seed)
        if isinstance(space, gym.spaces.Box):  # the agent's range; make_env's wrappers rescale
            self.actions = rng.uniform(-1, 1, (steps, *space.shape)).astype(space.dtype)
        else:  # discrete (the Atari section to come)
            space.seed(seed)
            self.actions = [space.sample() for _ in range(steps)]
        self.seconds_per_step = getattr(self.env.unwrapped, "dt", None)  # simulated time
        self.best = 0.0

    def run(self) -> float:
        env = self.env
        start = time.perf_counter()
        for action in self.actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        rate = len(self.actions) / (time.perf_counter() - start)
        self.best = max(self.best, rate)
        return rate


def bench_pair(ours: str, reference: str, steps: int, repeats: int) -> dict:
    a, b = Timer(ours, steps), Timer(reference, steps)
    a.run(), b.run()  # warm-up: first-step checks, caches
    for _ in range(repeats):
        a.run(), b.run()
    figures = {"ours": ours, "reference": reference, "ours_sps": a.best, "reference_sps": b.best,
               "ratio": a.best / b.best, "ratio_per_sim_second": None}
    if a.seconds_per_step and b.seconds_per_step:
        figures["ratio_per_sim_second"] = (a.best * a.seconds_per_step) / (b.best * b.seconds_per_step)
        figures["sim_seconds_per_step"] = (a.seconds_per_step, b.seconds_per_step)
    a.env.close(), b.env.close()
    return figures


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"our env confs (default: all of {[p[0] for p in PAIRS]})")
    parser.add_argument("--steps", type=int, default=10000, help="env steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per env (the best counts)")
    args = parser.parse_args(argv)
    pairs = dict(PAIRS)
    unknown = [n for n in args.names if n not in pairs]
    if unknown:
        parser.error(f"unknown env {unknown}; known: {list(pairs)}")
    print(f"{'env':26s} {'steps/s':>9s}  {'reference':16s} {'steps/s':>9s}  {'ratio':>6s}  {'per sim s':>9s}")
    results = []
    for name in args.names or list(pairs):
        fig = bench_pair(name, pairs[name], args.steps, args.repeats)
        per_sim = "-" if fig["ratio_per_sim_second"] is None else f"{fig['ratio_per_sim_second']:9.2f}"
        print(f"{name:26s} {fig['ours_sps']:9.0f}  {fig['reference']:16s} {fig['reference_sps']:9.0f}  "
              f"{fig['ratio']:6.2f}  {per_sim:>9s}", flush=True)
        results.append(fig)
    return results


if __name__ == "__main__":
    main()
