"""python -m runner.report <dir> [<dir> ...] [--out DIR]: figures and tables of a sweep, from local files.

    python -m runner.report multirun/quickstart            # writes multirun/quickstart/report/

Reads `progress.csv` and the resolved `.hydra/config.yaml` of every run below the directories
(never wandb) and writes into --out (default: <dir>/report for one directory, ./report for more):

  curves.png, curves.pdf   learning curves, one panel per environment, one line per method: the
                           mean over seeds with a 95% bootstrap confidence band (no band from 1 seed)
  curves.csv               the plotted numbers (env, method, env_steps, mean, ci_low, ci_high, seeds);
                           --curve-points N keeps at most N evenly spaced points per curve (a small
                           file to commit as a reference)
  final_scores.csv / .md   per method x environment: mean over seeds of each seed's mean over the
                           final 10% of iterations, its 95% bootstrap CI, the number of seeds
  iqm.csv, probability_of_improvement.csv
                           rliable's interquartile mean of the final scores with stratified-bootstrap
                           CIs, and P(X > Y) between methods, per environment, for methods with >= 2
                           seeds there (not aggregated across environments: that needs scores
                           normalised per environment, e.g. by the papers' reference scores);
                           --baseline METHOD states it as P(method > METHOD) for every other method
  coverage_<env>.png       runner.coverage's visitation maps per method, for runs that logged coverage
  incomplete.md            every run that is not a clean, complete seed (failed, unfinished,
                           shorter than its siblings, left out of a table and why); also printed
  report.md                all of the above in one page

Reference curves. --against DIR (a committed results/<preset>/, or any directory this command
wrote) draws DIR/curves.csv dashed under the runs' curves, one colour per method label, legend
"<method> (reference)"; only panels of the same environment and metric get them.

What is a method, what is an environment. A "method" is one value of the configuration keys that
differ between runs: the config group choices (agent=trpo/ppo, exploration=...) as recorded in
.hydra/hydra.yaml (or, without it, the class named by the group's `_target_`), plus any other key
that differs between runs with the same choices (e.g. agent.max_kl). Keys that do not change what
is learned are ignored: seed, resume, device, threads, total_env_steps, checkpoint_every,
experiment_name, logger.*. Runs that differ only by the `env.*` keys are the same method on different
environments: one panel per environment. A key is compared between runs of the same environment only:
a preset's per-environment settings (agent.batch_size 5000 on one task, 50000 on another) do not
split a method in two.

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
    import yaml

    choices = {}
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.exists():
        # plain YAML (libyaml where present): OmegaConf's loader takes ~20x longer on Hydra's large file
        loaded = yaml.load(hydra_yaml.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        recorded = ((loaded.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
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
    # same choice of the key's group on the same environment (agent.max_kl between two TRPO runs).
    # A key that differs only between environments (a preset's per-environment cells: agent.batch_size
    # 5000 on one task, 50000 on another) is a setting of the task, not another method.
    def group_choice(run, key):
        return (run.env, run.choices.get(key.split(".", 1)[0])) if "." in key else None

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


def rliable_tables(finals: list[FinalScore], reps: int, seed: int,
                   baseline: str | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Per environment: IQM (stratified bootstrap CI) of each method with >= 2 seeds, and the
    probability of improvement between every two such methods, or, given a `baseline` method,
    P(method > baseline) for every other method; notes for what was skipped."""
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
        if baseline is None:
            pairs = [(x, y) for i, x in enumerate(methods) for y in methods[i + 1:]]
        elif baseline in ready:
            pairs = [(x, baseline) for x in methods if x != baseline]
        else:
            pairs = []
            notes.append(f"{env}: the baseline {baseline!r} has no cell with >= 2 seeds here, so no "
                         f"P(method > {baseline})")
        for x, y in pairs:
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


def thin_curve(curve: Curve, max_points: int | None) -> Curve:
    """At most `max_points` of the curve's points, evenly spaced by index, first and last kept; the
    values are the curve's own at those points (nothing is averaged)."""
    n = len(curve.env_steps)
    if not max_points or n <= max_points:
        return curve
    keep = np.unique(np.linspace(0, n - 1, max(2, max_points)).round().astype(int))
    return Curve(curve.env, curve.method, curve.metric, curve.env_steps[keep], curve.mean[keep],
                 curve.ci_low[keep], curve.ci_high[keep], curve.seeds[keep])


CURVE_COLUMNS = ["env", "method", "metric", "env_steps", "mean", "ci_low", "ci_high", "seeds"]


def curve_rows(curves: list[Curve]) -> list[dict]:
    return [{"env": c.env, "method": c.method, "metric": c.metric, "env_steps": int(x), "mean": m,
             "ci_low": lo, "ci_high": hi, "seeds": int(n)}
            for c in curves for x, m, lo, hi, n in zip(c.env_steps, c.mean, c.ci_low, c.ci_high, c.seeds)]


def read_reference(directory: Path) -> list[Curve]:
    """The curves of a report directory's curves.csv (a committed results/<preset>/): ValueError
    when it has none."""
    path = Path(directory) / "curves.csv"
    if not path.is_file():
        raise ValueError(f"--against {directory}: no curves.csv there (a directory written by runner.report "
                         "or scripts/reproduce.py, e.g. results/<preset>)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in CURVE_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"--against {directory}: {path} has " + (f"no columns {', '.join(missing)}" if missing
                                                                  else "no rows"))
    grouped: dict = {}
    for row in rows:
        grouped.setdefault((row["env"], row["method"], row["metric"]), []).append(row)

    def column(members, name, kind=float):
        return np.array([kind(float(r[name])) if r[name] != "" else math.nan for r in members])

    curves = []
    for (env, method, metric), members in grouped.items():
        members.sort(key=lambda r: float(r["env_steps"]))
        curves.append(Curve(env, method, metric, column(members, "env_steps"), column(members, "mean"),
                            column(members, "ci_low"), column(members, "ci_high"), column(members, "seeds", int)))
    return curves


def curve_figure(curves: list[Curve], legend_title: str, reference: list[Curve] | None = None,
                 reference_name: str = "reference"):
    """The learning-curve figure: one panel per environment, a line and band per method; the
    `reference` curves of the same environment and metric dashed beneath, in their method's colour.
    Returns the matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = reference or []
    envs = sorted({c.env for c in curves})
    methods = sorted({c.method for c in curves} | {c.method for c in reference if c.env in envs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    ncols = min(3, len(envs))
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        metric = next(c.metric for c in curves if c.env == env)
        for ref in (c for c in reference if c.env == env and c.metric == metric):
            ax.plot(ref.env_steps, ref.mean, color=colours[ref.method], linestyle="--", linewidth=1.2, alpha=0.8,
                    zorder=1, label=f"{ref.method} ({reference_name})")
        for curve in (c for c in curves if c.env == env):
            colour = colours[curve.method]
            n = int(curve.seeds.max())
            ax.plot(curve.env_steps, curve.mean, color=colour, zorder=3,
                    label=f"{curve.method} ({n} seed{'s' * (n > 1)})")
            ax.fill_between(curve.env_steps, curve.ci_low, curve.ci_high, color=colour, alpha=0.2, linewidth=0,
                            zorder=2)
        ax.set(title=env, xlabel="env steps", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(title=legend_title or None, fontsize="small")
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    title = "mean over seeds, 95% bootstrap CI"
    if reference:
        title += f"; dashed: {reference_name}"
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return fig


def plot_curves(curves: list[Curve], legend_title: str, out: Path, reference: list[Curve] | None = None,
                reference_name: str = "reference") -> None:
    import matplotlib.pyplot as plt

    fig = curve_figure(curves, legend_title, reference, reference_name)
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"curves.{suffix}", dpi=150)
    plt.close(fig)


def reference_notes(curves: list[Curve], reference: list[Curve], name: str) -> list[str]:
    """What of the reference could not be drawn: environments absent from the runs, another metric."""
    metric_of = {c.env: c.metric for c in curves}
    notes = []
    for env in sorted({c.env for c in reference}):
        if env not in metric_of:
            notes.append(f"{name}: environment {env!r} has no runs here; its reference curves are not drawn")
        elif all(c.metric != metric_of[env] for c in reference if c.env == env):
            other = sorted({c.metric for c in reference if c.env == env})
            notes.append(f"{name}: {env} is plotted as {metric_of[env]}, the reference has {', '.join(other)}; "
                         "not drawn")
    return notes


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip("_") or "env"


def draw_coverage(runs: list[Run], out: Path) -> tuple[list[Path], list[str]]:
    """runner.coverage's per-method visitation maps, one figure per environment whose runs logged
    coverage; (the files written, notes)."""
    try:
        from runner.coverage import draw_coverage_maps
    except ImportError as err:
        return [], [f"coverage maps not drawn: runner.coverage cannot be imported ({err})"]
    written, notes = [], []
    for env in sorted({run.env for run in runs}):
        groups: dict[str, list[Path]] = {}
        for run in sorted((r for r in runs if r.env == env), key=lambda r: (r.method, r.seed, str(r.path))):
            groups.setdefault(run.method, []).append(run.path)
        paths = draw_coverage_maps(groups, out / f"coverage_{_slug(env)}.png", f"{env}: states visited in training")
        if not paths:
            notes.append(f"{env}: no coverage logged by its runs, so no coverage map")
        written += [Path(p) for p in paths]
    return written, notes


def build_report(dirs, out: Path, metric: str | None = None, final_fraction: float = 0.1,
                 reps: int = 2000, seed: int = 0, *, baseline: str | None = None, against: Path | None = None,
                 curve_points: int | None = None, coverage: bool = True, title: str | None = None) -> dict:
    """Write the report of the runs below `dirs` into `out`; returns what it computed (curves,
    final scores, rliable tables, incomplete items, notes). ValueError when there is nothing to
    report, or for a `baseline` that is no method of the runs or an `against` directory without
    curves.csv.

    baseline: state the probability of improvement as P(method > baseline). against: a report
    directory (results/<preset>) whose curves are drawn dashed under these. curve_points: at most
    this many points per curve in curves.csv (None: all; the figures always use all). coverage: draw
    runner.coverage's maps for runs that logged coverage. title: the heading of report.md."""
    if not 0 < final_fraction <= 1:
        raise ValueError(f"--final-fraction must be in (0, 1], got {final_fraction}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"--metric must be one of {' | '.join(METRICS)}, got {metric!r}")
    if curve_points is not None and curve_points < 2:
        raise ValueError(f"--curve-points must be at least 2, got {curve_points}")
    reference = read_reference(against) if against is not None else []
    runs, skipped = load_runs(dirs)
    if not runs:
        raise ValueError("no run below " + ", ".join(map(str, dirs)) + " has a configuration and "
                         "progress rows yet:\n  " + "\n  ".join(skipped))
    legend_title = " ".join(label_runs(runs))
    if baseline is not None and baseline not in {run.method for run in runs}:
        raise ValueError(f"--baseline {baseline!r} is not a method of these runs; their methods: "
                         + ", ".join(sorted({run.method for run in runs})))
    groups: dict = {}
    for run in runs:
        groups.setdefault((run.env, run.method), []).append(run)
    env_metric = {env: pick_metric([r for r in runs if r.env == env], metric) for env in {r.env for r in runs}}
    curves, finals = [], []
    for (env, method), members in sorted(groups.items()):
        members.sort(key=lambda run: (run.seed, str(run.path)))
        curves.append(learning_curve(members, env_metric[env], reps, seed))
        finals.append(final_score(members, env_metric[env], final_fraction, reps, seed))
    iqm_rows, poi_rows, notes = rliable_tables(finals, reps, seed, baseline)
    items = incomplete_items(runs, skipped, finals)
    reference_name = f"reference: {against}" if against is not None else "reference"
    other_notes = reference_notes(curves, reference, reference_name) if reference else []

    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, legend_title, out, reference, "reference")
    write_csv(out / "curves.csv", curve_rows([thin_curve(c, curve_points) for c in curves]), CURVE_COLUMNS)
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
    coverage_maps, coverage_notes = draw_coverage(runs, out) if coverage else ([], [])

    curves_line = f"{len(runs)} runs, {len(groups)} method x environment cells. Curves: ![curves](curves.png)"
    if against is not None:
        curves_line += f" (dashed: the reference curves of `{against}`)"
    page = [f"# {title or 'Report: ' + ', '.join(map(str, dirs))}\n", curves_line + "\n",
            *[f"- {note}\n" for note in other_notes],
            "## Final scores\n",
            f"Per seed: mean of the final {final_fraction:.0%} of iterations; across seeds: mean and 95% "
            f"percentile-bootstrap CI ({reps} resamples, seed {seed}).\n", final_md,
            "## rliable: IQM and probability of improvement\n"]
    if iqm_rows:
        page.append(markdown_table(["env", "method", "seeds", "IQM [95% stratified-bootstrap CI]"],
                                   [[r["env"], r["method"], r["seeds"], f"{_fmt(r['iqm'])} [{_fmt(r['ci_low'])}, "
                                     f"{_fmt(r['ci_high'])}]"] for r in iqm_rows]))
    if poi_rows and baseline is not None:
        page.append(markdown_table(["env", "probability of improvement", "[95% CI]"],
                                   [[r["env"], f"P({r['x']} > {r['y']}) = {_fmt(r['p_x_better'], 2)}",
                                     f"[{_fmt(r['ci_low'], 2)}, {_fmt(r['ci_high'], 2)}]"] for r in poi_rows]))
    elif poi_rows:
        page.append(markdown_table(["env", "X", "Y", "P(X > Y) [95% CI]"],
                                   [[r["env"], r["x"], r["y"], f"{_fmt(r['p_x_better'], 2)} [{_fmt(r['ci_low'], 2)}, "
                                     f"{_fmt(r['ci_high'], 2)}]"] for r in poi_rows]))
    page += [f"- {note}\n" for note in notes]
    if coverage_maps or coverage_notes:
        page.append("\n## Coverage maps\n")
        page += [f"![{path.stem}]({path.name})\n" for path in coverage_maps if path.suffix == ".png"]
        page += [f"- {note}\n" for note in coverage_notes]
    page += ["\n", incomplete_md.replace("# Incomplete", "## Incomplete")]
    (out / "report.md").write_text("\n".join(page))
    return {"runs": runs, "curves": curves, "finals": finals, "iqm": iqm_rows, "poi": poi_rows,
            "incomplete": items, "notes": notes, "final_md": final_md, "reference": reference,
            "coverage_maps": coverage_maps, "other_notes": other_notes + coverage_notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories (or runs/, or single runs)")
    parser.add_argument("--out", type=Path, help="output directory (default: <dir>/report, or ./report for several)")
    parser.add_argument("--metric", choices=METRICS, help="default: task_metric_mean where every run reports it")
    parser.add_argument("--final-fraction", type=float, default=0.1, help="final window, fraction of iterations")
    parser.add_argument("--bootstrap-reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--baseline", metavar="METHOD",
                        help="state the probability of improvement as P(method > METHOD), e.g. --baseline none")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="draw the curves of a committed report (results/<preset>) dashed under these runs")
    parser.add_argument("--curve-points", type=int, metavar="N",
                        help="at most N points per curve in curves.csv (default: every point)")
    parser.add_argument("--no-coverage", action="store_true", help="do not draw coverage maps")
    args = parser.parse_args(argv)
    out = args.out or (args.dirs[0] / "report" if len(args.dirs) == 1 else Path("report"))
    try:
        result = build_report(args.dirs, out, args.metric, args.final_fraction, args.bootstrap_reps, args.seed,
                              baseline=args.baseline, against=args.against, curve_points=args.curve_points,
                              coverage=not args.no_coverage)
    except ValueError as err:
        print(f"runner.report: {err}", file=sys.stderr)
        return 2
    print(result["final_md"])
    for note in result["notes"] + result["other_notes"]:
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
