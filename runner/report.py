"""python -m runner.report <dir> [<dir> ...] [--out DIR]: figures and tables of a sweep, from local files.

    python -m runner.report multirun/quickstart            # writes multirun/quickstart/report/

Reads `progress.csv` and the resolved `.hydra/config.yaml` of every run below the directories
(never wandb) and writes into --out (default: <dir>/report for one directory, ./report for more):

  curves.png, curves.pdf   learning curves, one panel per environment, one line per method: the
                           mean over seeds with a 95% bootstrap confidence band (no band from 1 seed)
  curves.csv               the plotted numbers (env, method, env_steps, mean, ci_low, ci_high, seeds)
  final_scores.csv / .md   per method x environment: mean over seeds of each seed's mean over the
                           final 10% of iterations, its 95% bootstrap CI, the number of seeds
  iqm.csv, probability_of_improvement.csv
                           rliable's interquartile mean of the final scores with stratified-bootstrap
                           CIs, and P(X > Y) between methods, per environment, for methods with >= 2
                           seeds there (not aggregated across environments: that needs scores
                           normalised per environment, e.g. by the papers' reference scores)
  incomplete.md            every run that is not a clean, complete seed (failed, unfinished,
                           shorter than its siblings, left out of a table and why); also printed
  report.md                all of the above in one page

What is a method, what is an environment. A "method" is one value of the configuration keys that
differ between runs: the config group choices (agent=trpo/ppo, exploration=...) as recorded in
.hydra/hydra.yaml (or, without it, the class named by the group's `_target_`), plus any other key
that differs between runs with the same choices (e.g. agent.max_kl). Keys that do not change what
is learned are ignored: seed, resume, device, threads, total_env_steps, checkpoint_every,
experiment_name, logger.*. Runs that differ only by the `env.*` keys are the same method on different
environments: one panel per environment.

The metric is `task_metric_mean` (the paper's number) when every run of the panel reports it, else
`return_ext_mean`; --metric forces one.

Numbers. Seeds are aligned on env_steps. A row without a finished episode has a NaN metric: each
seed's curve is linearly interpolated across such rows inside its own first..last finite point (no
extrapolation), and at each env_steps the mean is over the seeds that have a value there. The
final window is the last 10% (--final-fraction) of the iterations of the method's longest seed on
that environment (at least one iteration); a seed's final score is the mean of its finite values
in that window, and a seed with none (it stopped earlier, or no episode ended) is left out of the
tables and listed in incomplete.md. All bootstraps are percentile bootstraps over seeds with
--bootstrap-reps resamples, seeded from --seed and the curve's or table cell's name, so a report
is reproducible and one method's numbers do not depend on which other methods are in it.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runner.run_dir import find_runs, read_progress, read_run_config, run_status

METRICS = ("task_metric_mean", "return_ext_mean")
# Keys that do not change what is learned (never a reason to tell two methods apart).
IGNORED_KEYS = {"seed", "resume", "device", "threads", "total_env_steps", "checkpoint_every", "experiment_name"}
IGNORED_PREFIXES = ("logger.", "hydra.")


# -- reading runs ------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    flat: dict               # resolved config, flattened to dotted keys (lists as JSON text)
    choices: dict            # config group -> chosen option (empty where unknown)
    rows: list[dict]         # progress.csv rows as floats
    status: object           # runner.run_dir.RunStatus
    seed: int = 0
    env: str = ""            # panel label
    method: str = ""         # line label


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def _choices(run_dir: Path, flat: dict) -> dict:
    """Group choices from .hydra/hydra.yaml; without it, the class name of each group's _target_."""
    from omegaconf import OmegaConf

    choices = {}
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.exists():
        recorded = OmegaConf.load(hydra_yaml).hydra.runtime.get("choices", {})
        choices = {k: str(v) for k, v in recorded.items()
                   if not k.startswith(("hydra/", "cell@", "cell/")) and k not in ("logger", "experiment")
                   and v is not None}
    for key, value in flat.items():
        group, _, leaf = key.rpartition(".")
        if leaf == "_target_" and group and "." not in group and group not in choices:
            choices[group] = str(value).rsplit(".", 1)[-1]
    return choices


def load_runs(dirs) -> tuple[list[Run], list[str]]:
    """The runs below `dirs` that have a configuration and progress rows, and a note for every
    run directory left out."""
    runs, skipped = [], []
    for path in find_runs(dirs):
        status = run_status(path)
        config = read_run_config(path)
        rows = read_progress(path)
        if not rows:
            why = f" ({status.message})" if status.message else ""
            skipped.append(f"`{path}`: {status.state}{why}, no progress rows yet (left out)")
        elif config is None:
            skipped.append(f"`{path}`: no .hydra/config.yaml, so its configuration is unknown (left out)")
        else:
            flat = flatten(config)
            runs.append(Run(path, flat, _choices(path, flat), rows, status, seed=int(flat.get("seed", 0))))
    return runs, skipped


# -- telling methods and environments apart ----------------------------------------------------

def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def _differing_keys(runs: list[Run], keys: set, bucket_of) -> dict[str, set]:
    """For each key whose value differs between runs of the same bucket (bucket_of(run, key):
    e.g. the same choice of the key's config group), the buckets where it differs."""
    differing = {}
    for key in sorted(keys):
        values: dict = {}
        for run in runs:
            values.setdefault(bucket_of(run, key), set()).add(repr(run.flat.get(key)))
        buckets = {bucket for bucket, seen in values.items() if len(seen) > 1}
        if buckets:
            differing[key] = buckets
    return differing


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's `env` (panel) and `method` (line) labels; returns the config groups and
    keys that tell methods apart (the legend's title)."""
    # Environments: the env group choice (or env.id), plus the env.* keys that differ between
    # runs of the same choice (e.g. two episode limits).
    for run in runs:
        run.env = run.choices.get("env") or str(run.flat.get("env.id", "env"))
    env_keys = {k for run in runs for k in run.flat if k.startswith("env.")}
    env_extra = _differing_keys(runs, env_keys, lambda run, key: run.env)
    for run in runs:
        run.env = " ".join([run.env, *(f"{k}={run.flat.get(k)}" for k, where in env_extra.items() if run.env in where)])

    # Methods: the group choices that differ, then the keys that differ between runs making the
    # same choice of the key's group (agent.max_kl between two TRPO runs).
    def group_choice(run, key):
        return run.choices.get(key.split(".", 1)[0]) if "." in key else None

    groups = sorted({g for run in runs for g in run.choices if g != "env"})
    differing_groups = [g for g in groups if len({run.choices.get(g) for run in runs}) > 1]
    keys = {k for run in runs for k in run.flat if not _ignored(k) and not k.startswith("env.")}
    differing_keys = _differing_keys(runs, keys, group_choice)
    for run in runs:
        parts = [str(run.choices.get(g)) for g in differing_groups]
        parts += [f"{k}={run.flat.get(k)}" for k, where in differing_keys.items() if group_choice(run, k) in where]
        run.method = " ".join(parts) or "-".join(run.choices[g] for g in ("agent", "exploration")
                                                 if g in run.choices) or "all runs"
    return differing_groups + list(differing_keys)


def pick_metric(runs: list[Run], forced: str | None) -> str:
    if forced:
        return forced
    has_task_metric = all(any(math.isfinite(r.get("task_metric_mean", math.nan)) for r in run.rows)
                          for run in runs)
    return "task_metric_mean" if has_task_metric else "return_ext_mean"


# -- statistics --------------------------------------------------------------------------------

def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator per curve / table cell: reproducible, and independent of the other cells."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def bootstrap_mean_ci(samples: np.ndarray, reps: int, rng: np.random.Generator,
                      level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of the mean over seeds, per column of `samples` [seeds, points].
    NaN marks a seed without a value at a point: each point resamples among the seeds present
    there. A point with fewer than two seeds has no interval (NaN)."""
    samples = np.asarray(samples, dtype=float)
    lo = np.full(samples.shape[1], np.nan)
    hi = np.full(samples.shape[1], np.nan)
    present = ~np.isnan(samples)
    patterns, which = np.unique(present.T, axis=0, return_inverse=True)
    tail = 100 * (1 - level) / 2
    for p, pattern in enumerate(patterns):
        k = int(pattern.sum())
        if k < 2:
            continue
        cols = np.flatnonzero(which.ravel() == p)
        values = samples[np.ix_(pattern, cols)]                     # [k, c]
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=reps)  # resampling with replacement
        means = counts @ values / k                                  # [reps, c]
        lo[cols], hi[cols] = np.percentile(means, [tail, 100 - tail], axis=0)
    return lo, hi


def seed_curve(run: Run, metric: str, grid: np.ndarray) -> np.ndarray:
    """The run's metric on `grid`: interpolated across NaN rows within its finite range."""
    steps = np.array([r["env_steps"] for r in run.rows])
    values = np.array([r.get(metric, math.nan) for r in run.rows])
    finite = np.isfinite(values)
    out = np.full(grid.shape, np.nan)
    if finite.any():
        xs, ys = steps[finite], values[finite]
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        out[inside] = np.interp(grid[inside], xs, ys)
    return out


@dataclass
class Curve:
    env: str
    method: str
    metric: str
    env_steps: np.ndarray
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    seeds: np.ndarray         # seeds with a value at each point


def learning_curve(runs: list[Run], metric: str, reps: int, seed: int) -> Curve:
    grid = np.unique(np.concatenate([[r["env_steps"] for r in run.rows] for run in runs]))
    samples = np.stack([seed_curve(run, metric, grid) for run in runs])
    present = ~np.isnan(samples)
    keep = present.any(axis=0)
    grid, samples, present = grid[keep], samples[:, keep], present[:, keep]
    mean = np.nanmean(samples, axis=0)   # every kept point has at least one seed
    lo, hi = bootstrap_mean_ci(samples, reps, _rng(seed, f"curve|{runs[0].env}|{runs[0].method}"))
    return Curve(runs[0].env, runs[0].method, metric, grid, mean, lo, hi, present.sum(axis=0))


@dataclass
class FinalScore:
    env: str
    method: str
    metric: str
    window: tuple[int, int]   # env steps of the final window (first, last)
    scores: dict = field(default_factory=dict)   # run path -> score of the seeds that count
    left_out: dict = field(default_factory=dict)  # run path -> why it does not count
    mean: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan


def final_score(runs: list[Run], metric: str, fraction: float, reps: int, seed: int) -> FinalScore:
    longest = max(runs, key=lambda run: len(run.rows))
    n_final = max(1, math.ceil(fraction * len(longest.rows)))
    window = (int(longest.rows[-n_final]["env_steps"]), int(longest.rows[-1]["env_steps"]))
    # The window is a range of iterations: with whole paths (TRPO) the seeds' env steps per iteration differ.
    first_iteration = int(longest.rows[-n_final]["iteration"])
    result = FinalScore(runs[0].env, runs[0].method, metric, window)
    for run in runs:
        values = [r.get(metric, math.nan) for r in run.rows if int(r["iteration"]) >= first_iteration]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            result.scores[run.path] = float(np.mean(finite))
        elif values:
            result.left_out[run.path] = f"no episode ended in the final window ({window[0]:,}-{window[1]:,} env steps)"
        else:
            result.left_out[run.path] = (f"stopped at {int(run.rows[-1]['env_steps']):,} env steps, before the "
                                         f"final window ({window[0]:,}-{window[1]:,})")
    if result.scores:
        scores = np.array(list(result.scores.values()))
        result.mean = float(scores.mean())
        lo, hi = bootstrap_mean_ci(scores[:, None], reps, _rng(seed, f"final|{result.env}|{result.method}"))
        result.ci_low, result.ci_high = float(lo[0]), float(hi[0])
    return result


@contextlib.contextmanager
def _global_numpy_seed(seed: int):
    """rliable's stratified bootstraps draw their indices from numpy's global RNG
    (np.random.choice) whatever `random_state` says; seed it for the call and put it back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def rliable_tables(finals: list[FinalScore], reps: int, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """Per environment: IQM (stratified bootstrap CI) of each method with >= 2 seeds, and the
    probability of improvement between every two such methods; notes for what was skipped."""
    try:
        from rliable import library as rly
        from rliable import metrics
    except Exception as err:  # arch 7 (rliable 1.2 needs arch < 8) fails at import under pandas >= 3
        raise RuntimeError(f"rliable cannot be imported ({type(err).__name__}: {err}); rliable 1.2 needs "
                           "arch < 8, which needs pandas < 3") from err

    iqm_rows, poi_rows, notes = [], [], []
    for env in sorted({f.env for f in finals}):
        cells = {f.method: np.array(list(f.scores.values()))[:, None] for f in finals if f.env == env}
        for method, scores in cells.items():
            if len(scores) < 2:
                notes.append(f"{env}, {method}: {len(scores)} seed(s) with a final score; IQM and "
                             "probability of improvement need at least 2")
        ready = {m: s for m, s in cells.items() if len(s) >= 2}
        for method, scores in sorted(ready.items()):
            with _global_numpy_seed(zlib.crc32(f"{seed}|iqm|{env}|{method}".encode())):
                point, interval = rly.get_interval_estimates(
                    {method: scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
            iqm_rows.append({"env": env, "method": method, "seeds": len(scores), "iqm": float(point[method][0]),
                             "ci_low": float(interval[method][0, 0]), "ci_high": float(interval[method][1, 0])})
        methods = sorted(ready)
        for i, x in enumerate(methods):
            for y in methods[i + 1:]:
                key = f"{x},{y}"
                with _global_numpy_seed(zlib.crc32(f"{seed}|poi|{env}|{key}".encode())):
                    point, interval = rly.get_interval_estimates(
                        {key: [ready[x], ready[y]]},
                        lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps=reps)
                poi_rows.append({"env": env, "x": x, "y": y, "p_x_better": float(point[key][0]),
                                 "ci_low": float(interval[key][0, 0]), "ci_high": float(interval[key][1, 0])})
    return iqm_rows, poi_rows, notes


# -- what is incomplete ------------------------------------------------------------------------

def incomplete_items(runs: list[Run], skipped: list[str], finals: list[FinalScore]) -> list[str]:
    """One line per run that is not a clean, complete seed, with everything that is wrong with it:
    not finished (and why), a curve shorter than its siblings', left out of the final scores."""
    facts: dict[Path, list[str]] = {run.path: [] for run in runs}
    for run in runs:
        s = run.status
        if s.state != "finished":
            done = f"{s.env_steps:,}/{s.total_env_steps:,}" if s.total_env_steps else f"{s.env_steps:,}/?"
            facts[run.path].append(f"{s.state} at {done} env steps" + (f" ({s.message})" if s.message else ""))
    groups: dict = {}
    for run in runs:
        groups.setdefault((run.env, run.method), []).append(run)
    duplicates = []
    for (env, method), members in sorted(groups.items()):
        # shorter = fewer iterations (whole paths make the env steps of equal iterations differ)
        longest = max(members, key=lambda run: int(run.rows[-1]["iteration"]))
        for run in members:
            if int(run.rows[-1]["iteration"]) < int(longest.rows[-1]["iteration"]):
                facts[run.path].append(f"its curve ends at {int(run.rows[-1]['env_steps']):,} env steps where "
                                       f"other seeds reach {int(longest.rows[-1]['env_steps']):,}")
        seeds = [run.seed for run in members]
        for dup in sorted({s for s in seeds if seeds.count(s) > 1}):
            paths = ", ".join(f"`{run.path}`" for run in members if run.seed == dup)
            duplicates.append(f"{method}, {env}: seed {dup} appears more than once ({paths}); each counts as a seed")
    for final in finals:
        for path, why in final.left_out.items():
            facts[path].append(f"left out of the final scores: {why}")
    items = list(skipped)
    items += [f"`{run.path}` ({run.method}, {run.env}, seed {run.seed}): " + "; ".join(facts[run.path])
              for run in runs if facts[run.path]]
    return items + duplicates


# -- writing -----------------------------------------------------------------------------------

def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(curves: list[Curve], legend_title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({c.env for c in curves})
    methods = sorted({c.method for c in curves})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    ncols = min(3, len(envs))
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for curve in (c for c in curves if c.env == env):
            colour = colours[curve.method]
            n = int(curve.seeds.max())
            ax.plot(curve.env_steps, curve.mean, color=colour, label=f"{curve.method} ({n} seed{'s' * (n > 1)})")
            ax.fill_between(curve.env_steps, curve.ci_low, curve.ci_high, color=colour, alpha=0.2, linewidth=0)
        metric = next(c.metric for c in curves if c.env == env)
        ax.set(title=env, xlabel="env steps", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(title=legend_title or None, fontsize="small")
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.suptitle("mean over seeds, 95% bootstrap CI", fontsize="small")
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"curves.{suffix}", dpi=150)
    plt.close(fig)


def build_report(dirs, out: Path, metric: str | None = None, final_fraction: float = 0.1,
                 reps: int = 2000, seed: int = 0) -> dict:
    """Write the report of the runs below `dirs` into `out`; returns what it computed (curves,
    final scores, rliable tables, incomplete items, notes). ValueError when there is nothing to
    report."""
    if not 0 < final_fraction <= 1:
        raise ValueError(f"--final-fraction must be in (0, 1], got {final_fraction}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"--metric must be one of {' | '.join(METRICS)}, got {metric!r}")
    runs, skipped = load_runs(dirs)
    if not runs:
        raise ValueError("no run below " + ", ".join(map(str, dirs)) + " has a configuration and "
                         "progress rows yet:\n  " + "\n  ".join(skipped))
    legend_title = " ".join(label_runs(runs))
    groups: dict = {}
    for run in runs:
        groups.setdefault((run.env, run.method), []).append(run)
    env_metric = {env: pick_metric([r for r in runs if r.env == env], metric) for env in {r.env for r in runs}}
    curves, finals = [], []
    for (env, method), members in sorted(groups.items()):
        members.sort(key=lambda run: (run.seed, str(run.path)))
        curves.append(learning_curve(members, env_metric[env], reps, seed))
        finals.append(final_score(members, env_metric[env], final_fraction, reps, seed))
    iqm_rows, poi_rows, notes = rliable_tables(finals, reps, seed)
    items = incomplete_items(runs, skipped, finals)

    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, legend_title, out)
    write_csv(out / "curves.csv", [
        {"env": c.env, "method": c.method, "metric": c.metric, "env_steps": int(x), "mean": m,
         "ci_low": lo, "ci_high": hi, "seeds": int(n)}
        for c in curves for x, m, lo, hi, n in zip(c.env_steps, c.mean, c.ci_low, c.ci_high, c.seeds)],
        ["env", "method", "metric", "env_steps", "mean", "ci_low", "ci_high", "seeds"])
    final_rows = [{"env": f.env, "method": f.method, "metric": f.metric, "seeds": len(f.scores),
                   "mean": f.mean, "ci_low": f.ci_low, "ci_high": f.ci_high,
                   "window_start": f.window[0], "window_end": f.window[1]} for f in finals]
    write_csv(out / "final_scores.csv", final_rows, list(final_rows[0]))
    final_md = markdown_table(
        ["env", "method", "metric", "seeds", "final score (mean [95% CI])", "final window (env steps)"],
        [[f.env, f.method, f.metric, len(f.scores), f"{_fmt(f.mean)} [{_fmt(f.ci_low)}, {_fmt(f.ci_high)}]",
          f"{f.window[0]:,}-{f.window[1]:,}"] for f in finals])
    (out / "final_scores.md").write_text(final_md)
    write_csv(out / "iqm.csv", iqm_rows, ["env", "method", "seeds", "iqm", "ci_low", "ci_high"])
    write_csv(out / "probability_of_improvement.csv", poi_rows, ["env", "x", "y", "p_x_better", "ci_low", "ci_high"])
    incomplete_md = "# Incomplete\n\n" + ("".join(f"- {item}\n" for item in items) if items else
                                          "Nothing: every run finished its budget and counts in every table.\n")
    (out / "incomplete.md").write_text(incomplete_md)

    page = [f"# Report: {', '.join(map(str, dirs))}\n",
            f"{len(runs)} runs, {len(groups)} method x environment cells. Curves: ![curves](curves.png)\n",
            "## Final scores\n",
            f"Per seed: mean of the final {final_fraction:.0%} of iterations; across seeds: mean and 95% "
            f"percentile-bootstrap CI ({reps} resamples, seed {seed}).\n", final_md,
            "## rliable: IQM and probability of improvement\n"]
    if iqm_rows:
        page.append(markdown_table(["env", "method", "seeds", "IQM [95% stratified-bootstrap CI]"],
                                   [[r["env"], r["method"], r["seeds"], f"{_fmt(r['iqm'])} [{_fmt(r['ci_low'])}, "
                                     f"{_fmt(r['ci_high'])}]"] for r in iqm_rows]))
    if poi_rows:
        page.append(markdown_table(["env", "X", "Y", "P(X > Y) [95% CI]"],
                                   [[r["env"], r["x"], r["y"], f"{_fmt(r['p_x_better'], 2)} [{_fmt(r['ci_low'], 2)}, "
                                     f"{_fmt(r['ci_high'], 2)}]"] for r in poi_rows]))
    page += [f"- {note}\n" for note in notes] + ["\n", incomplete_md.replace("# Incomplete", "## Incomplete")]
    (out / "report.md").write_text("\n".join(page))
    return {"runs": runs, "curves": curves, "finals": finals, "iqm": iqm_rows, "poi": poi_rows,
            "incomplete": items, "notes": notes, "final_md": final_md}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories (or runs/, or single runs)")
    parser.add_argument("--out", type=Path, help="output directory (default: <dir>/report, or ./report for several)")
    parser.add_argument("--metric", choices=METRICS, help="default: task_metric_mean where every run reports it")
    parser.add_argument("--final-fraction", type=float, default=0.1, help="final window, fraction of iterations")
    parser.add_argument("--bootstrap-reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    args = parser.parse_args(argv)
    out = args.out or (args.dirs[0] / "report" if len(args.dirs) == 1 else Path("report"))
    try:
        result = build_report(args.dirs, out, args.metric, args.final_fraction, args.bootstrap_reps, args.seed)
    except ValueError as err:
        print(f"runner.report: {err}", file=sys.stderr)
        return 2
    print(result["final_md"])
    for note in result["notes"]:
        print(f"note: {note}")
    if result["incomplete"]:
        print("incomplete:\n" + "".join(f"  - {item}\n" for item in result["incomplete"]))
    else:
        print("incomplete: nothing (every run finished and counts)")
    print(f"report written to {out}/ (report.md, curves.png/.pdf, final_scores.csv/.md, iqm.csv, "
          "probability_of_improvement.csv, incomplete.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
