"""python -m runner.bench_sweep [--iterations K] [--repeats R] <train overrides>: does a local parallel
sweep scale? One seed alone against two seeds at once through the local launcher.

    python -m runner.bench_sweep                                  # agent=trpo env=half_cheetah
    python -m runner.bench_sweep agent=ppo env=hopper --iterations 20

Each repeat launches the same short run alone (`python -m runner.train`, seed 0), then two seeds in
parallel (`python -m runner.train -m hydra/launcher=local seed=0,1`), and reads each run's
progress.csv: a run's env steps/s is its env steps over its wall_s, after one warm-up iteration
(the same measure as runner.bench). The figure is (sum of the two parallel runs' steps/s) /
(the single run's steps/s): 2.0 is perfect scaling on two cores. The end-to-end ratio of the
commands' wall times (2 x single / parallel, start-up and imports included) is printed beside it.

Timings only mean something on an idle machine: before each repeat, while the benchmark runs
nothing, the share of the CPUs that other processes keep busy is measured (over 2 s, from
/proc/stat) and printed, with a warning above 5%.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.config import compose, iteration_env_steps

DEFAULT_OVERRIDES = ["agent=trpo", "env=half_cheetah"]


def steps_per_second(run_dir: Path) -> float:
    """Env steps/s of a run from its progress.csv, leaving out the first (warm-up) iteration."""
    with open(run_dir / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        raise SystemExit(f"bench_sweep: {run_dir} has {len(rows)} iteration(s); need at least 2")
    steps = float(rows[-1]["env_steps"]) - float(rows[0]["env_steps"])
    return steps / (float(rows[-1]["wall_s"]) - float(rows[0]["wall_s"]))


def others_cpu_share(seconds: float = 2.0) -> float | None:
    """Fraction of all CPUs busy over `seconds` while this benchmark runs nothing (the load
    average would count this benchmark's own previous runs); None without /proc/stat."""
    def sample() -> tuple[int, int]:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]   # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def launch(args: list[str], cwd: Path) -> float:
    """Run `python -m runner.train <args>` and return its wall time; exit on failure."""
    env = dict(os.environ, WANDB_MODE="disabled")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "runner.train", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"bench_sweep: `runner.train {' '.join(args)}` failed ({out.returncode}):\n"
                         f"{out.stderr[-3000:]}")
    return wall


def one_repeat(overrides: list[str], workdir: Path) -> dict:
    single_dir, sweep_dir = workdir / "single", workdir / "sweep"
    single_wall = launch([f"hydra.run.dir={single_dir}", "seed=0", *overrides], workdir)
    parallel_wall = launch(["-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep_dir}", "seed=0,1", *overrides],
                           workdir)
    parallel_dirs = sorted(p.parent for p in sweep_dir.rglob("progress.csv"))
    if len(parallel_dirs) != 2:
        raise SystemExit(f"bench_sweep: expected 2 runs below {sweep_dir}, found {len(parallel_dirs)}")
    single = steps_per_second(single_dir)
    parallel = [steps_per_second(d) for d in parallel_dirs]
    return {"single": single, "parallel": parallel, "ratio": sum(parallel) / single,
            "wall_ratio": 2 * single_wall / parallel_wall, "single_wall": single_wall,
            "parallel_wall": parallel_wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30, help="iterations per run (the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args(argv)
    overrides = overrides or DEFAULT_OVERRIDES
    cfg, choices = compose(overrides)
    batch = iteration_env_steps(cfg)
    overrides = [*overrides, f"total_env_steps={batch * args.iterations}", "logger.wandb.mode=disabled",
                 "resume=false"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"bench_sweep: agent={choices['agent']} exploration={choices['exploration']} env={choices['env']} "
          f"batch_size={batch} iterations={args.iterations} threads={cfg.threads} cores={cores}")
    results = []
    for repeat in range(args.repeats):
        busy = others_cpu_share()
        state = "unknown" if busy is None else f"{busy:.0%} of the CPUs busy with other work"
        warning = "  (machine busy: figures are not reliable)" if busy and busy > 0.05 else ""
        with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
            r = one_repeat(overrides, Path(tmp))
        results.append(r)
        print(f"  repeat {repeat + 1}: before it, {state}{warning}\n"
              f"    one seed alone          {r['single']:9.0f} env steps/s\n"
              f"    two seeds in parallel   {sum(r['parallel']):9.0f} env steps/s "
              f"({' + '.join(f'{p:.0f}' for p in r['parallel'])})\n"
              f"    ratio parallel / alone  {r['ratio']:9.2f}   (commands' wall time: {r['single_wall']:.1f} s "
              f"alone, {r['parallel_wall']:.1f} s for two, ratio {r['wall_ratio']:.2f})")
    print(f"median ratio over {len(results)} repeats: {statistics.median(r['ratio'] for r in results):.2f} "
          f"(end to end: {statistics.median(r['wall_ratio'] for r in results):.2f})")


if __name__ == "__main__":
    main()
