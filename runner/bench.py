"""python -m runner.bench [--iterations K] <train overrides>: the runner's speed against raw stepping.

    python -m runner.bench agent=trpo env=half_cheetah
    python -m runner.bench agent=ppo env=half_cheetah --iterations 8

Prints, in one process: raw env steps/s (the same vector env and wrappers, random actions), the
runner's end-to-end env steps/s over K iterations after one warm-up iteration (everything
included: collection, bonus, updates, logging, checkpoints), their ratio, and the per-phase split.
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from runner.config import compose, iteration_env_steps, resolve_device
from runner.envs import make_vector_env
from runner.progress import PHASE_COLUMNS
from runner.train import derive_seeds, train


def raw_steps_per_second(env_cfg, num_envs: int, steps: int, seed: int = 0) -> float:
    """Steps/s of the vector env alone, with actions drawn uniformly from the agent's action range."""
    env = make_vector_env(env_cfg, num_envs)
    env.reset(seed=derive_seeds(seed, num_envs)["envs"])
    space = env.action_space
    rng = np.random.default_rng(seed)
    n_calls = max(1, steps // num_envs)
    if hasattr(space, "nvec") or hasattr(space, "n"):
        actions = [space.sample() for _ in range(n_calls)]
    else:  # the agent acts in [-1, 1]; the env's wrappers clip and rescale
        actions = rng.uniform(-1, 1, (n_calls, *space.shape)).astype(space.dtype)
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    elapsed = time.perf_counter() - start
    env.close()
    return n_calls * num_envs / elapsed


def runner_figures(overrides: list[str], iterations: int, warmup: int = 1) -> dict:
    """Train for warmup + iterations iterations and time the last `iterations` (the first ones warm
    up: allocations, first backward, ...)."""
    cfg, _ = compose(overrides)
    batch = iteration_env_steps(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        run_overrides = [*overrides, f"total_env_steps={batch * (warmup + iterations)}",
                         "logger.wandb.mode=disabled", "resume=false"]
        cfg, choices = compose(run_overrides)
        code = train(cfg, Path(tmp), choices, show_progress=False)
        if code:
            raise SystemExit(f"bench: the training run failed (exit code {code})")
        with open(Path(tmp) / "progress.csv") as f:
            rows = list(csv.DictReader(f))
    timed = rows[warmup:]
    wall = float(timed[-1]["wall_s"]) - float(rows[warmup - 1]["wall_s"])
    steps = int(timed[-1]["env_steps"]) - int(rows[warmup - 1]["env_steps"])  # whole paths: >= batch each
    return {"sps": steps / wall,
            "phases": {p: float(np.mean([float(r[p]) for r in timed])) for p in PHASE_COLUMNS},
            "iteration_s": wall / len(timed), "batch_size": batch, "device": cfg.device}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations after one warm-up")
    parser.add_argument("--raw-steps", type=int, default=30000, help="env steps for the raw figure")
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    cfg, choices = compose(overrides)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    raw = raw_steps_per_second(cfg.env, cfg.agent.num_envs, args.raw_steps)
    fig = runner_figures(overrides, args.iterations)
    print(f"bench: agent={choices['agent']} exploration={choices['exploration']} env={choices['env']} "
          f"batch_size={fig['batch_size']} num_envs={cfg.agent.num_envs} device={device} "
          f"threads={torch.get_num_threads()}")
    print(f"  raw env steps/s          {raw:10.0f}")
    print(f"  runner env steps/s       {fig['sps']:10.0f}   (end to end, {args.iterations} iterations)")
    print(f"  ratio runner / raw       {fig['sps'] / raw:10.2f}")
    print(f"  per iteration            {fig['iteration_s']:10.3f} s")
    for phase, seconds in fig["phases"].items():
        name = phase.removeprefix("time_").removesuffix("_s").replace("_", " ")
        print(f"    {name:22s} {seconds:10.3f} s  ({100 * seconds / fig['iteration_s']:4.1f}%)")


if __name__ == "__main__":
    main()
