"""python -m runner.bench_exploration [--iterations K] [--warmup W | --full-reference] [--repeats R]
exploration=<method> <train overrides>: what an exploration method costs, as iteration time with the
method / without it (exploration=none), at the same agent, environment and batch size, with both
runs' per-phase split.

    python -m runner.bench_exploration exploration=simhash env=sparse_half_cheetah agent.batch_size=5000
    python -m runner.bench_exploration exploration=kde env=sparse_half_cheetah_abs agent.batch_size=5000 \\
        --full-reference --iterations 4 --repeats 2

Each run trains for W + K iterations and times the last K (W = --warmup, 1 by default: the first
iteration allocates and warms up). Methods whose cost grows with what they have stored (the KDE
bonus scores every state against up to `exploration.max_reference` stored states) cost most once
that store is full: --full-reference sets W = ceil(max_reference / batch_size), so every timed
iteration scores against a full reference set (both runs get the same W, so they are timed at the
same iterations). --repeats R alternates the two runs R times (with, without, with, ...) and prints
every pair's ratio and their median: on a shared machine the load drifts between runs.

    python -m runner.bench_exploration --vime-model [--transitions 5000] [--updates 5000]

times VIME's model alone at sparse HalfCheetah's sizes (20-D observations, 6-D actions), one thread:
the per-transition information gain of a batch (both KL forms) and the BNN's Adam steps.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from runner.bench import runner_figures
from runner.config import compose, iteration_env_steps


def vime_model(transitions: int, updates: int) -> None:
    """VIME's two costs: the information gain of `transitions` transitions, and `updates` BNN steps."""
    from algos.exploration.vime import KL_FORMS, VIME

    torch.set_num_threads(1)
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (20,)), gym.spaces.Box(-1, 1, (6,))
    data = np.random.default_rng(0).standard_normal((transitions, 46)).astype(np.float32)
    obs, act, nxt = data[:, :20], data[:, 20:26], data[:, 26:]
    for form in KL_FORMS:
        vime = VIME(obs_space, act_space, seed=0, kl_form=form, n_updates_per_sample=updates,
                    replay_pool_size=1000000, min_pool_size=1)
        vime.pool.add(obs, act, nxt)
        vime.input_stats = vime.pool.stats()
        vime.information_gain(obs[:8], act[:8], nxt[:8])      # torch.func warm-up
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            vime.information_gain(obs, act, nxt)
            times.append(time.perf_counter() - t0)
        print(f"per-transition KL ({form:9s}), {transitions} transitions: "
              f"median {np.median(times):.3f} s, min {min(times):.3f} s")
    idx = vime.rng.integers(0, vime.pool.size, (updates, vime.pool_batch_size))
    x, y = vime.pool.standardise(vime.pool.data[idx])
    noise = vime.training_noise(updates)
    t0 = time.perf_counter()
    for j in range(updates):
        vime.bnn.train_step(x[j], y[j], [e[j] for e in noise], vime.n_batches)
    elapsed = time.perf_counter() - t0
    print(f"BNN training, {updates} Adam steps of {vime.pool_batch_size} transitions x "
          f"{vime.n_samples} samples: {elapsed:.3f} s ({elapsed / max(updates, 1) * 1e6:.0f} us/step)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    parser.add_argument("--full-reference", action="store_true",
                        help="warm up until exploration.max_reference states are stored (KDE)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this many times")
    parser.add_argument("--vime-model", action="store_true", help="time VIME's model alone (no run)")
    parser.add_argument("--transitions", type=int, default=5000, help="--vime-model: transitions to score")
    parser.add_argument("--updates", type=int, default=5000, help="--vime-model: BNN Adam steps to time")
    args, overrides = parser.parse_known_args(argv)
    if args.vime_model:
        return vime_model(args.transitions, args.updates)
    os.environ.setdefault("WANDB_MODE", "disabled")
    cfg, choices = compose(overrides)
    torch.set_num_threads(cfg.threads)
    method = choices["exploration"]
    warmup = args.warmup
    if args.full_reference:
        if cfg.exploration.get("max_reference") is None:
            raise SystemExit(f"bench: --full-reference needs exploration.max_reference ({method} has none)")
        # iteration i scores against the i * batch_size states that earlier iterations stored
        warmup = max(1, math.ceil(cfg.exploration.max_reference / iteration_env_steps(cfg)))
    if warmup < 1 or args.iterations < 1 or args.repeats < 1:
        raise SystemExit("bench: --warmup, --iterations and --repeats must be >= 1")
    baseline = [o for o in overrides if not o.startswith("exploration")] + ["exploration=none"]
    pairs = []
    for _ in range(args.repeats):
        pairs.append((runner_figures(overrides, args.iterations, warmup),
                      runner_figures(baseline, args.iterations, warmup)))
    with_method, without = pairs[-1]
    print(f"bench: exploration={method} vs none, agent={choices['agent']} env={choices['env']} "
          f"batch_size={with_method['batch_size']} device={cfg.device} threads={torch.get_num_threads()}"
          + (f" warmup={warmup} iterations" if warmup != 1 else ""))
    ratios = [w["iteration_s"] / wo["iteration_s"] for w, wo in pairs]
    for i, (w, wo) in enumerate(pairs):
        label = f" (run {i + 1})" if len(pairs) > 1 else ""
        print(f"  iteration time, none     {wo['iteration_s']:8.3f} s{label}")
        print(f"  iteration time, {method:9s}{w['iteration_s']:8.3f} s{label}")
        print(f"  ratio {method} / none    {ratios[i]:8.2f}{label}")
    if len(pairs) > 1:
        print(f"  ratio {method} / none    {statistics.median(ratios):8.2f} (median of {len(pairs)})")
    for phase in with_method["phases"]:
        name = phase.removeprefix("time_").removesuffix("_s").replace("_", " ")
        print(f"    {name:22s} {without['phases'][phase]:8.3f} s -> {with_method['phases'][phase]:8.3f} s")


if __name__ == "__main__":
    main()
