"""Seconds per iteration of every (environment, method) cell of a preset at its own settings: what
scripts/reproduce.yaml's reduced budgets are sized from.

    python scripts/measure_cells.py vime_classic [--iterations 3] [--out /tmp/measure]

Runs each cell for a few iterations (seed 0, one process, no checkpoints) and prints the wall seconds
of each iteration (progress.csv's wall_s differences; the first includes start-up work such as a
method's first fit)."""
from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from runner.config import compose
    from runner.train import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/measure"))
    args = parser.parse_args()
    preset = yaml.safe_load((ROOT / "conf" / "experiment" / f"{args.preset}.yaml").read_text())
    params = preset["hydra"]["sweeper"]["params"]
    for env in params["env"].split(","):
        for method in params["exploration"].split(","):
            base = [f"+experiment={args.preset}", f"env={env}", f"exploration={method}"]
            batch = compose(base)[0].agent.batch_size
            cfg, choices = compose([*base, f"total_env_steps={args.iterations * batch}", "checkpoint_every=1000000"])
            run_dir = args.out / args.preset / env / method
            shutil.rmtree(run_dir, ignore_errors=True)
            assert train(cfg, run_dir, choices, show_progress=False) == 0
            with open(run_dir / "progress.csv", newline="") as f:
                walls = [float(row["wall_s"]) for row in csv.DictReader(f)]
            per_iteration = [round(b - a, 2) for a, b in zip([0.0, *walls], walls)]
            print(f"{args.preset} {env} {method}: batch {batch}, seconds per iteration {per_iteration}", flush=True)


if __name__ == "__main__":
    main()
