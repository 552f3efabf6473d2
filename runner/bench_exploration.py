"""python -m runner.bench_exploration [--iterations K] exploration=<method> <train overrides>:
what an exploration method costs, as iteration time with the method / without it (exploration=none),
at the same agent, environment and batch size, with both runs' per-phase split.

    python -m runner.bench_exploration exploration=simhash env=sparse_half_cheetah agent.batch_size=5000
"""
from __future__ import annotations

import argparse
import os

import torch

from runner.bench import runner_figures
from runner.config import compose


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations after one warm-up")
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    cfg, choices = compose(overrides)
    torch.set_num_threads(cfg.threads)
    method = choices["exploration"]
    baseline = [o for o in overrides if not o.startswith("exploration")] + ["exploration=none"]
    with_method = runner_figures(overrides, args.iterations)
    without = runner_figures(baseline, args.iterations)
    print(f"bench: exploration={method} vs none, agent={choices['agent']} env={choices['env']} "
          f"batch_size={with_method['batch_size']} device={cfg.device} threads={torch.get_num_threads()}")
    print(f"  iteration time, none     {without['iteration_s']:8.3f} s")
    print(f"  iteration time, {method:9s}{with_method['iteration_s']:8.3f} s")
    print(f"  ratio {method} / none    {with_method['iteration_s'] / without['iteration_s']:8.2f}")
    for phase in with_method["phases"]:
        name = phase.removeprefix("time_").removesuffix("_s").replace("_", " ")
        print(f"    {name:22s} {without['phases'][phase]:8.3f} s -> {with_method['phases'][phase]:8.3f} s")


if __name__ == "__main__":
    main()
