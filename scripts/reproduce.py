"""scripts/reproduce.py <preset> --scale smoke|reduced|paper: run a paper preset's sweep at a named scale
and write its results (curves, tables, coverage maps, a manifest).

    python scripts/reproduce.py vime_classic --scale reduced           # writes results/vime_classic/
    python scripts/reproduce.py hash_rllab --scale smoke --out /tmp/s  # seconds per run: a pipeline check
    python scripts/reproduce.py ex2_continuous --scale paper --launcher slurm

What runs comes from scripts/reproduce.yaml (the budgets of each preset at each scale; the paper
settings stay in conf/experiment/<preset>.yaml and conf/cell/<preset>/). For each environment of the
preset's sweep (hydra.sweeper.params.env) it launches

    python -m runner.train -m +experiment=<preset> env=<env> exploration=<methods> seed=0,...,N-1 \\
        <the scale's overrides> hydra.sweep.dir=<sweep dir> hydra/launcher=<launcher>

one sweep per group of methods that share their overrides (a method's own shrunk settings, such as
VIME's pool size at smoke scale, cannot be given to the others). Every run's configuration is
composed and checked before anything starts: a bad override in the manifest exits 2 naming it.

Relaunching the same command resumes: run directories are named by their overrides, a sweep whose
runs have all finished their budget is not launched again, and in a sweep that is, finished runs
skip themselves (runner.train). While a sweep runs, its runs' states are printed every --poll
seconds; its output goes to <sweep dir>/logs/.

Then it writes --out through runner.report: report.md, curves.png/.pdf (mean and 95% CI per method),
curves.csv (at most 50 points per curve: the reference others plot against with runner.report
--against), final_scores.csv/.md (95% CIs), iqm.csv and probability_of_improvement.csv (stated as
P(method > baseline), the manifest's baseline), coverage maps where the environment logs coverage,
incomplete.md, and manifest.json: the commit (and whether the work tree was dirty), scale, seeds,
the overrides of every sweep, the launcher, the hardware, start/end times and wall time per
environment, and the command line, enough to regenerate the directory.

Exit codes: 0 every run finished and the report is written; 1 some run did not finish (the report
is written from what there is, incomplete.md says what is missing); 2 bad input (before any work);
130 interrupted (relaunch the same command to resume).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python scripts/reproduce.py` from anywhere
    sys.path.insert(0, str(ROOT))

MANIFEST = ROOT / "scripts" / "reproduce.yaml"
EXPERIMENTS = ROOT / "conf" / "experiment"
LAUNCHERS = ROOT / "conf" / "hydra" / "launcher"
BUILTIN_LAUNCHERS = ("basic",)            # Hydra's own sequential launcher: no config file here
NAMED_LAUNCHERS = ("basic", "local", "local_submitit", "slurm", "ray")
CURVE_POINTS = 50                         # points per curve in the committed curves.csv
SCALE_KEYS = ("all", "methods")           # the keys of a scale's entry that are not environments


class UsageError(Exception):
    """Bad input: exit 2 with this message, before any run starts."""


# -- the manifest ------------------------------------------------------------------------------

def load_manifest(path: Path | None = None) -> dict:
    from omegaconf import OmegaConf

    path = path or MANIFEST
    manifest = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for key in ("scales", "presets"):
        if not isinstance(manifest.get(key), dict):
            raise UsageError(f"{path}: no `{key}:` mapping")
    return manifest


def preset_sweep(preset: str) -> dict[str, list[str]]:
    """The values the preset sweeps over (hydra.sweeper.params), per key, as lists."""
    from omegaconf import OmegaConf

    path = EXPERIMENTS / f"{preset}.yaml"
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    out = {key: [v.strip() for v in str(value).split(",") if v.strip()] for key, value in params.items()}
    for key in ("env", "exploration"):
        if not out.get(key):
            raise UsageError(f"{path}: hydra.sweeper.params.{key} is empty; scripts/reproduce.py runs presets "
                             "that sweep over environments and exploration methods")
    return out


def overrides_for(entry: dict, env: str, method: str) -> list[str]:
    """A scale's overrides for one (environment, method): all, <env>, methods.<method>, methods.<env>/<method>."""
    methods = entry.get("methods") or {}
    return [*(entry.get("all") or []), *(entry.get(env) or []), *(methods.get(method) or []),
            *(methods.get(f"{env}/{method}") or [])]


def check_scale_entry(preset: str, scale: str, entry, envs: list[str], methods: list[str]) -> dict:
    """The scale's entry of a preset, with every key it names checked against the preset's sweep."""
    where = f"{MANIFEST.name}: presets.{preset}.scales.{scale}"
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: must be a mapping (all, <env>, methods), got {entry!r}")
    for key, value in entry.items():
        if key not in (*SCALE_KEYS, *envs):
            raise UsageError(f"{where}.{key}: not `all`, `methods` or an environment of the preset "
                             f"({', '.join(envs)})")
        if key != "methods" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{where}.{key}: must be a list of overrides (key=value), got {value!r}")
    for key, value in (entry.get("methods") or {}).items():
        env, _, method = key.rpartition("/")
        if method not in methods or (env and env not in envs):
            raise UsageError(f"{where}.methods.{key}: not a method of the preset ({', '.join(methods)}), "
                             "optionally after <env>/")
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{where}.methods.{key}: must be a list of overrides, got {value!r}")
    return entry


# -- what a sweep will run -----------------------------------------------------------------------

@dataclass
class Sweep:
    envs: list[str]
    methods: list[str]
    overrides: list[str]                      # the scale's overrides (the same for every job here)
    run_dirs: dict[tuple[str, str], list[Path]] = field(default_factory=dict)  # (env, method) -> its seeds' runs
    budget: dict[tuple[str, str], int | None] = field(default_factory=dict)    # env steps each such run trains for
    threads: int = 1
    command: list[str] = field(default_factory=list)
    log: Path | None = None
    wall_s: float = 0.0
    launched: bool = False
    returncode: int | None = None

    def all_runs(self, env: str | None = None) -> list[tuple[tuple[str, str], Path]]:
        return [(cell, d) for cell, dirs in self.run_dirs.items() for d in dirs if env in (None, cell[0])]

    @property
    def name(self) -> str:
        return f"{'+'.join(self.envs)}-{'+'.join(self.methods)}"


@contextlib.contextmanager
def _hydra_initialised():
    """Hydra initialised on conf/ (once: every composition of a plan shares it, and its config cache)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def compose_job(preset: str, env: str, method: str, overrides: list[str], sweep_dir: Path):
    """(run sub-directory of seed 0, env steps a run trains for, torch threads) of one job, composing
    its configuration as runner.train will and checking its overrides (ConfigError, Hydra's errors)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from runner.config import check_overrides, refuse_renamed_keys
    from runner.run_dir import budget_env_steps

    job = [f"+experiment={preset}", f"env={env}", f"exploration={method}", "seed=0", *overrides]
    refuse_renamed_keys(job)
    with _hydra_initialised():
        cfg = compose("config", overrides=[*job, f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        subdir = str(cfg.hydra.sweep.subdir)
        choices = dict(cfg.hydra.runtime.choices)
        searchpath = list(cfg.hydra.searchpath)
        with open_dict(cfg):
            del cfg["hydra"]
        check_overrides(cfg, [o for o in job if not o.lstrip("+~").startswith("hydra")], choices, searchpath)
    config = OmegaConf.to_container(cfg, resolve=True)
    return subdir, budget_env_steps(config, None), int(config.get("threads") or 1)


def plan_sweeps(preset: str, entry: dict, envs: list[str], methods: list[str], seeds: int,
                sweep_dir: Path, merge_envs: bool = False) -> list[Sweep]:
    """The sweeps to launch, every job composed: per environment, one per group of methods with the same
    overrides; `merge_envs`: environments whose groups are the same share one sweep (fewer process
    start-ups; smoke scale)."""
    with _hydra_initialised():
        return _plan_sweeps(preset, entry, envs, methods, seeds, sweep_dir, merge_envs)


def _plan_sweeps(preset: str, entry: dict, envs: list[str], methods: list[str], seeds: int,
                 sweep_dir: Path, merge_envs: bool) -> list[Sweep]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from algos.common.checks import ConfigError

    sweeps: list[Sweep] = []
    for env in envs:
        groups: dict[tuple, list[str]] = {}
        for method in methods:
            groups.setdefault(tuple(overrides_for(entry, env, method)), []).append(method)
        for overrides, members in groups.items():
            same = [s for s in sweeps if merge_envs and s.methods == members and s.overrides == list(overrides)]
            sweep = same[0] if same else Sweep([], members, list(overrides))
            if not same:
                sweeps.append(sweep)
            sweep.envs.append(env)
            for method in members:
                try:
                    subdir, budget, threads = compose_job(preset, env, method, list(overrides), sweep_dir)
                except (ConfigError, HydraException, OmegaConfBaseException) as err:
                    raise UsageError(f"{MANIFEST.name}: {preset}, {env}, {method}: the overrides "
                                     f"{' '.join(overrides) or '(none)'} do not compose: {err}") from err
                seed_dir = sweep_dir / subdir
                if seed_dir.name != "seed_0":  # the sweep subdir's layout (conf/config.yaml) ends in seed_<n>
                    raise UsageError(f"unexpected run directory layout {subdir!r}: it should end in seed_0")
                sweep.run_dirs[(env, method)] = [seed_dir.parent / f"seed_{s}" for s in range(seeds)]
                sweep.budget[(env, method)] = budget
                sweep.threads = max(sweep.threads, threads)
    return [part for sweep in sweeps for part in split_until_composable(preset, sweep)]


def sweep_composes(preset: str, envs: list[str], methods: list[str], overrides: list[str]) -> bool:
    """Whether Hydra can start a sweep over `envs` x `methods`: before its jobs, a multirun composes the
    configuration with the overrides that are not swept, so a swept group keeps the preset's default
    choice there (exploration=none), and a method's own key (exploration.min_pool_size) fails on it."""
    from hydra import compose

    fixed = [f"env={envs[0]}"] * (len(envs) == 1) + [f"exploration={methods[0]}"] * (len(methods) == 1)
    try:
        with _hydra_initialised():
            compose("config", overrides=[f"+experiment={preset}", *fixed, *overrides])
    except Exception:  # any composition error: launch the jobs in smaller sweeps instead
        return False
    return True


def split_until_composable(preset: str, sweep: Sweep) -> list[Sweep]:
    """`sweep`, or, where Hydra could not start it, sweeps of one method (then one environment) each;
    a single job's sweep composes as the job itself did."""
    if (len(sweep.envs) == 1 and len(sweep.methods) == 1) or sweep_composes(preset, sweep.envs, sweep.methods,
                                                                             sweep.overrides):
        return [sweep]
    if len(sweep.methods) > 1:
        parts = [([e for e in sweep.envs], [m]) for m in sweep.methods]
    else:
        parts = [([e], list(sweep.methods)) for e in sweep.envs]
    out = []
    for envs, methods in parts:
        cells = [(e, m) for e in envs for m in methods]
        part = Sweep(envs, methods, list(sweep.overrides), {c: sweep.run_dirs[c] for c in cells},
                     {c: sweep.budget[c] for c in cells}, sweep.threads)
        out += split_until_composable(preset, part)
    return out


def sweep_command(preset: str, sweep: Sweep, seeds: int, sweep_dir: Path, launcher: str) -> list[str]:
    return [sys.executable, "-m", "runner.train", "-m", f"+experiment={preset}", f"env={','.join(sweep.envs)}",
            f"exploration={','.join(sweep.methods)}", "seed=" + ",".join(str(s) for s in range(seeds)),
            *sweep.overrides, f"hydra.sweep.dir={sweep_dir}", f"hydra/launcher={launcher}"]


# -- run states --------------------------------------------------------------------------------

def states(sweep: Sweep) -> dict[str, int]:
    """How many of the sweep's runs are in each state ('queued': no directory yet; 'finished' only
    when the run covers this scale's budget, else 'to extend')."""
    from runner.run_dir import run_status

    counts: dict[str, int] = {}
    for cell, run_dir in sweep.all_runs():
        if not run_dir.exists():
            state = "queued"
        else:
            status = run_status(run_dir)
            state = status.state
            if state == "finished" and sweep.budget[cell] is not None and status.total_env_steps is not None \
                    and status.total_env_steps < sweep.budget[cell]:
                state = "to extend"
        counts[state] = counts.get(state, 0) + 1
    return counts


def describe(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} runs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def launch(sweep: Sweep, poll_s: float, tag: str) -> None:
    """Run the sweep's command (output to its log), printing its runs' states every poll_s seconds."""
    sweep.log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    start = time.monotonic()
    with open(sweep.log, "a") as log:
        log.write(f"\n$ {shlex.join(sweep.command)}\n")
        log.flush()
        proc = subprocess.Popen(sweep.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    sweep.returncode = proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    print(f"  {tag} ... {time.monotonic() - start:.0f} s: {describe(states(sweep))}", flush=True)
        except KeyboardInterrupt:
            # Ctrl-C reached the sweep too (same process group): its runs checkpoint and stop.
            proc.wait()
            raise
        finally:
            sweep.wall_s = time.monotonic() - start
    sweep.launched = True


# -- the record --------------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    """git's output (not stripped: porcelain lines start with a space), or None without git."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(exclude: Path | None) -> dict:
    """HEAD's commit and whether the work tree differs from it, outputs left out: results/ (other
    presets' results may be in the making beside this one) and the output directory."""
    commit = _git("rev-parse", "HEAD")
    spec = ["--", ".", ":(exclude)results"]
    if exclude is not None:
        try:
            spec.append(f":(exclude){exclude.resolve().relative_to(ROOT)}")
        except ValueError:  # outside the repository: nothing to leave out
            pass
    status = _git("status", "--porcelain", *spec)
    changed = [line for line in (status or "").splitlines() if line.strip()]
    return {"commit": commit.strip() if commit else None, "dirty": bool(changed) if status is not None else None,
            "dirty_paths": [line[3:] for line in changed[:50]]}


def hardware(launcher: str, threads: int) -> dict:
    import torch

    from runner.manifest import _cpu_model

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    at_once = 1 if launcher == "basic" else usable // max(1, threads) if launcher == "local" else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads_per_run": threads, "runs_at_once": at_once,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_train_wall_s(run_dirs: list[Path]) -> float:
    """The runs' own training time: the last wall_s of each progress.csv, summed."""
    from runner.run_dir import read_progress

    total = 0.0
    for run_dir in run_dirs:
        rows = read_progress(run_dir) if run_dir.exists() else []
        if rows and rows[-1].get("wall_s") == rows[-1].get("wall_s"):  # not NaN
            total += float(rows[-1]["wall_s"])
    return total


def manifest_section(record: dict) -> str:
    """report.md's account of how the directory was produced."""
    hw = record["hardware"]
    lines = ["\n## How this was produced\n",
             f"`{record['command']}` at commit `{record['commit']}`"
             + (" (work tree dirty)" if record["dirty"] else "") + f": scale **{record['scale']}**, "
             f"{record['seeds']} seeds, launcher `{record['launcher']}`, on {hw['cpu']} ({hw['usable_cores']} "
             f"cores, {hw['torch_threads_per_run']} torch thread(s) per run). {record['start']} to {record['end']}, "
             f"{record['wall_s']:.0f} s in all. Regenerate it with the same command at that commit.\n",
             "| sweep | envs | methods | overrides | wall time (s) | runs' training time (s) | runs |",
             "|---|---|---|---|---|---|---|"]
    for i, sweep in enumerate(record["sweeps"], start=1):
        overrides = " ".join(f"`{o}`" for o in sweep["overrides"]) or "(the preset's settings)"
        wall = f"{sweep['wall_s']:.1f}" if sweep["launched"] else "not launched (finished before)"
        runs = ", ".join(f"{n} {state}" for state, n in sorted(sweep["states"].items()))
        lines.append(f"| {i} | {', '.join(sweep['envs'])} | {', '.join(sweep['methods'])} | {overrides} | {wall} | "
                     f"{sweep['train_wall_s']:.1f} | {runs} |")
    return "\n".join(lines) + "\n"


# -- the command -------------------------------------------------------------------------------

def parse_args(argv, manifest: dict) -> argparse.Namespace:
    presets = sorted(manifest["presets"])
    scales = list(manifest["scales"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help=f"one of {', '.join(presets)}")
    parser.add_argument("--scale", required=True, help=f"one of {', '.join(scales)}")
    parser.add_argument("--seeds", type=int, help="seeds per cell, 0..N-1 (default: the scale's in reproduce.yaml)")
    parser.add_argument("--launcher", help=f"one of {', '.join(NAMED_LAUNCHERS)} (a config in conf/hydra/launcher/, "
                                           "or Hydra's basic; default: the scale's)")
    parser.add_argument("--out", type=Path, help="results directory (default: results/<preset> for reduced and "
                                                 "paper, <sweep dir>/results for smoke)")
    parser.add_argument("--sweep-dir", type=Path,
                        help="where the runs go (default: multirun/reproduce/<preset>-<scale>)")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between progress lines of a running sweep")
    parser.add_argument("--bootstrap-reps", type=int, default=2000, help="bootstrap resamples of the report")
    args = parser.parse_args(argv)
    if args.preset not in manifest["presets"]:
        raise UsageError(f"preset {args.preset!r} is not in {MANIFEST.name}; allowed: {', '.join(presets)}")
    if not (EXPERIMENTS / f"{args.preset}.yaml").is_file():
        raise UsageError(f"preset {args.preset!r}: conf/experiment/{args.preset}.yaml does not exist")
    if args.scale not in manifest["scales"]:
        raise UsageError(f"--scale {args.scale!r}: allowed: {', '.join(scales)}")
    defaults = manifest["scales"][args.scale] or {}
    args.seeds = args.seeds if args.seeds is not None else int(defaults.get("seeds", 5))
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be at least 1")
    args.launcher = args.launcher or defaults.get("launcher", "local")
    if args.launcher not in NAMED_LAUNCHERS and not (LAUNCHERS / f"{args.launcher}.yaml").is_file():
        raise UsageError(f"--launcher {args.launcher!r}: allowed: {', '.join(NAMED_LAUNCHERS)}")
    if args.launcher not in BUILTIN_LAUNCHERS and not (LAUNCHERS / f"{args.launcher}.yaml").is_file():
        raise UsageError(f"--launcher {args.launcher}: there is no launcher config conf/hydra/launcher/"
                         f"{args.launcher}.yaml in this repository (available: "
                         + ", ".join([*BUILTIN_LAUNCHERS, *sorted(p.stem for p in LAUNCHERS.glob('*.yaml'))]) + ")")
    if args.poll <= 0:
        raise UsageError(f"--poll {args.poll}: must be positive")
    cwd = Path.cwd()
    args.sweep_dir = (cwd / args.sweep_dir if args.sweep_dir else
                      ROOT / "multirun" / "reproduce" / f"{args.preset}-{args.scale}").resolve()
    default_out = args.sweep_dir / "results" if args.scale == "smoke" else ROOT / "results" / args.preset
    args.out = (cwd / args.out if args.out else default_out).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    try:
        manifest = load_manifest()
        args = parse_args(argv, manifest)
        spec = manifest["presets"][args.preset] or {}
        sweep_params = preset_sweep(args.preset)
        envs, methods = sweep_params["env"], sweep_params["exploration"]
        baseline = spec.get("baseline")
        if baseline is not None and baseline not in methods:
            raise UsageError(f"{MANIFEST.name}: presets.{args.preset}.baseline {baseline!r} is not a method of the "
                             f"preset ({', '.join(methods)})")
        if args.scale not in (spec.get("scales") or {}):
            raise UsageError(f"{MANIFEST.name}: presets.{args.preset} has no scale {args.scale!r}")
        entry = check_scale_entry(args.preset, args.scale, spec["scales"][args.scale], envs, methods)
        git = git_state(args.out)
        print(f"reproduce {args.preset} at scale {args.scale}: {len(envs)} environments x {len(methods)} methods "
              f"x {args.seeds} seeds, launcher {args.launcher}; composing every run's configuration", flush=True)
        sweeps = plan_sweeps(args.preset, entry, envs, methods, args.seeds, args.sweep_dir,
                             merge_envs=(manifest["scales"][args.scale] or {}).get("sweeps") == "merged")
    except UsageError as err:
        print(f"reproduce.py: {err}", file=sys.stderr)
        return 2

    threads = max(s.threads for s in sweeps)
    for sweep in sweeps:
        sweep.command = sweep_command(args.preset, sweep, args.seeds, args.sweep_dir, args.launcher)
        sweep.log = args.sweep_dir / "logs" / f"{sweep.name}.log"
    try:
        for i, sweep in enumerate(sweeps, start=1):
            tag = f"[{i}/{len(sweeps)}] {', '.join(sweep.envs)} ({', '.join(sweep.methods)})"
            before = states(sweep)
            if before.get("finished", 0) == sum(before.values()):
                print(f"{tag}: {describe(before)}; nothing to launch", flush=True)
                continue
            print(f"{tag}: {describe(before)}; launching (log: {sweep.log})", flush=True)
            launch(sweep, args.poll, tag)
            print(f"{tag}: done in {sweep.wall_s:.1f} s (exit {sweep.returncode}): {describe(states(sweep))}",
                  flush=True)
    except KeyboardInterrupt:
        print("reproduce.py: interrupted; relaunch the same command to resume", file=sys.stderr)
        return 130
    ended = time.time()

    from runner import report
    from runner.run_dir import is_run_dir

    def relative(path: Path) -> str:
        return str(path.relative_to(args.sweep_dir))

    record = {
        "preset": args.preset, "scale": args.scale, "seeds": args.seeds, "launcher": args.launcher,
        "baseline": baseline, "commit": git["commit"], "dirty": git["dirty"], "dirty_paths": git["dirty_paths"],
        "command": shlex.join(["python", "scripts/reproduce.py", *(sys.argv[1:] if argv is None else argv)]),
        "start": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ended)),
        "wall_s": ended - started, "sweep_dir": str(args.sweep_dir),
        "hardware": hardware(args.launcher, threads),
        "sweeps": [{"envs": s.envs, "methods": s.methods, "overrides": s.overrides, "launched": s.launched,
                    "wall_s": s.wall_s, "returncode": s.returncode, "command": shlex.join(s.command),
                    "train_wall_s": run_train_wall_s([d for _, d in s.all_runs()]), "states": states(s)}
                   for s in sweeps],
        "envs": {},
    }
    for env in envs:
        mine = [i for i, s in enumerate(sweeps) if env in s.envs]
        alone = all(sweeps[i].envs == [env] for i in mine)
        record["envs"][env] = {
            # a sweep shared with other environments has no wall time of this one's alone
            "wall_s": sum(sweeps[i].wall_s for i in mine) if alone else None,
            "train_wall_s": run_train_wall_s([d for i in mine for _, d in sweeps[i].all_runs(env)]),
            "sweeps": [i + 1 for i in mine],
            "overrides": {method: overrides_for(entry, env, method) for method in methods},
            "budget_env_steps": {m: b for i in mine for (e, m), b in sweeps[i].budget.items() if e == env},
            "runs": {m: [relative(d) for d in dirs] for i in mine for (e, m), dirs in sweeps[i].run_dirs.items()
                     if e == env}}
    previous = args.out / "manifest.json"
    if previous.is_file():  # the earlier launches into this directory, e.g. before a resume
        try:
            old = json.loads(previous.read_text())
            if (old.get("preset"), old.get("scale")) == (args.preset, args.scale):
                record["previous_launches"] = [*old.get("previous_launches", []),
                                               {k: old.get(k) for k in ("start", "end", "wall_s", "commit",
                                                                        "command", "seeds")}]
        except (OSError, ValueError):
            pass

    try:
        # The planned runs only: a sweep directory may also hold runs of other settings.
        planned = [d for s in sweeps for _, d in s.all_runs() if d.is_dir() and is_run_dir(d)]
        if not planned:
            raise ValueError(f"none of the runs planned below {args.sweep_dir} has started")
        result = report.build_report(planned, args.out, reps=args.bootstrap_reps, baseline=baseline,
                                     curve_points=CURVE_POINTS,
                                     title=f"{args.preset} at scale {args.scale} ({args.seeds} seeds)")
    except ValueError as err:
        print(f"reproduce.py: no report: {err}", file=sys.stderr)
        return 1
    record["report"] = {"incomplete": result["incomplete"], "notes": result["notes"] + result["other_notes"],
                        "coverage_maps": [p.name for p in result["coverage_maps"]]}
    (args.out / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(args.out / "report.md", "a") as f:
        f.write(manifest_section(record))

    if args.out.resolve().parent == (ROOT / "results").resolve():  # a committed result: the fidelity table
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import fidelity_table

        fidelity_table.main()
    print(result["final_md"])
    for note in result["notes"] + result["other_notes"]:
        print(f"note: {note}")
    unfinished = sum(n for s in sweeps for state, n in states(s).items() if state != "finished")
    print(f"{args.preset} ({args.scale}): {'every run finished' if not unfinished else f'{unfinished} runs unfinished'}"
          f"; {ended - started:.0f} s; results in {args.out}/ (report.md, manifest.json)")
    if result["incomplete"]:
        print("incomplete:\n" + "".join(f"  - {item}\n" for item in result["incomplete"]))
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
