"""python -m runner.status <dir>: the state of every run below a directory (a sweep, or runs/).

    python -m runner.status multirun/quickstart

One table row per run directory (a directory holding `.hydra/` or `progress.csv`), with its state,
env steps done / total, the last finite `return_ext_mean`, and why it stopped when it did not
finish. The states:

  running      `running.json` names a live process. train() writes this marker (pid, host, the
               process's start time) when it starts and removes it when it returns or raises.
  failed       `error.txt` exists: a NaN/inf, a crash, or an invalid configuration; the
               message is its first line (for a traceback, its last line).
  finished     `checkpoints/last.json` says finished and covers the configured budget.
  interrupted  progress was written but the run is neither finished nor alive. Either it was
               stopped by SIGTERM/Ctrl-C (it checkpointed and removed its marker: "stopped") or it
               was killed (SIGKILL, out of memory, machine lost: its marker is left behind, the
               process is gone: "killed"). Relaunching the same command resumes it either way.
  not started  the directory exists (Hydra creates it when the job starts) but holds no
               progress.csv yet: killed before its first iteration.

A marker written on another host cannot be checked from here; such a run shows as running, with
the host named in the message.

This module also holds what the report shares with it: finding run directories and reading a
progress.csv that may be being written.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RUNNING_MARKER = "running.json"
STATES = ("finished", "running", "failed", "interrupted", "not started")
# Directories below a sweep that are never runs nor contain runs.
_SKIP_DIRS = {".hydra", ".submitit", "checkpoints", "wandb", "__pycache__"}


# -- liveness marker ---------------------------------------------------------------------------

def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), which tells a live
    process from a later one that reused its pid; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces, so split after its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def mark_running(run_dir: Path) -> Path:
    """Write `run_dir/running.json` naming this process; the caller removes it when it ends."""
    path = Path(run_dir) / RUNNING_MARKER
    marker = {"pid": os.getpid(), "hostname": platform.node(),
              "process_start": _process_start_ticks(os.getpid()),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps(marker))
    return path


def read_marker(run_dir: Path) -> dict | None:
    try:
        marker = json.loads((Path(run_dir) / RUNNING_MARKER).read_text())
    except (OSError, json.JSONDecodeError):  # absent, or removed/half-written right now
        return None
    return marker if isinstance(marker, dict) and {"pid", "hostname"} <= set(marker) else None


def marker_alive(marker: dict) -> bool | None:
    """True if the marker's process still runs, False if it is gone, None if it ran on another
    host (cannot be checked from here)."""
    if marker.get("hostname") != platform.node():
        return None
    pid = int(marker["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    recorded = marker.get("process_start")
    return recorded is None or _process_start_ticks(pid) in (None, recorded)


# -- run directories and their files -----------------------------------------------------------

def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "progress.csv").is_file()


def find_runs(roots) -> list[Path]:
    """Every run directory at or below the given directories, sorted; ValueError (with what was
    looked for) when a directory does not exist or none holds a run."""
    runs: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"{root}: no such directory")
        found = []
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if is_run_dir(here):
                found.append(here)
                dirnames.clear()  # a run's subdirectories (checkpoints, wandb) are not runs
            else:
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        if not found:
            raise ValueError(f"{root}: no runs below this directory (a run directory holds "
                             ".hydra/ or progress.csv)")
        runs += found
    return sorted(set(runs))


def read_progress(run_dir: Path) -> list[dict[str, float]]:
    """The complete rows of run_dir/progress.csv as floats (an empty cell is NaN). A run that is
    being written, or was killed mid-write, may end with a partial line: it is left out."""
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if None in row or None in row.values():
            break
        rows.append({k: float(v) if v != "" else math.nan for k, v in row.items()})
    return rows


def read_run_config(run_dir: Path) -> dict | None:
    """The resolved configuration Hydra saved for the run (.hydra/config.yaml), or None."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def read_checkpoint_meta(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "checkpoints" / "last.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def budget_env_steps(config: dict | None, meta: dict | None) -> int | None:
    """The env steps a run trains for: whole iterations of agent.batch_size within
    total_env_steps, from its configuration (rewritten by every launch), else its checkpoint."""
    try:
        batch = int(config["agent"]["batch_size"])
        return int(config["total_env_steps"]) // batch * batch
    except (TypeError, KeyError, ValueError):
        pass
    if meta and meta.get("iteration"):
        return meta["env_steps"] // meta["iteration"] * meta["total_iterations"]
    return None


def first_line(path: Path) -> str:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    # A Python traceback's first line says nothing; its last line names the exception.
    if lines and lines[0].startswith("Traceback"):
        return lines[-1].strip()
    return lines[0].strip() if lines else "(error.txt is empty)"


def sweep_size(sweep_dir: Path) -> int | None:
    """How many jobs the last sweep launched into `sweep_dir` has (from Hydra's multirun.yaml),
    or None. A launcher creates a job's directory only when the job starts, so jobs still queued
    have none yet: this count shows them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return None
    cfg = OmegaConf.load(path)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    # As Hydra's basic sweeper does: an experiment's sweeper.params, then the command line's
    # overrides, the later winning for the same key.
    lines = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    values = {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}
    size = 1
    for override in values.values():
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


# -- one run's state ---------------------------------------------------------------------------

@dataclass
class RunStatus:
    path: Path
    state: str                 # one of STATES
    env_steps: int             # env steps of the last complete progress row
    total_env_steps: int | None
    last_return: float         # last finite return_ext_mean (NaN if none yet)
    message: str = ""


def run_status(run_dir: Path) -> RunStatus:
    run_dir = Path(run_dir)
    rows = read_progress(run_dir)
    meta = read_checkpoint_meta(run_dir)
    total = budget_env_steps(read_run_config(run_dir), meta)
    env_steps = int(rows[-1]["env_steps"]) if rows else 0
    returns = [r["return_ext_mean"] for r in rows if not math.isnan(r.get("return_ext_mean", math.nan))]
    last_return = returns[-1] if returns else math.nan

    def status(state: str, message: str = "") -> RunStatus:
        return RunStatus(run_dir, state, env_steps, total, last_return, message)

    marker = read_marker(run_dir)
    alive = marker_alive(marker) if marker else False
    if alive or alive is None:
        where = f"pid {marker['pid']} on {marker['hostname']}"
        return status("running", where if alive else f"{where} (another host: not checked from here)")
    if (run_dir / "error.txt").exists():
        return status("failed", first_line(run_dir / "error.txt"))
    finished = bool(meta and meta.get("finished")) and (total is None or meta["env_steps"] >= total)
    if finished:
        return status("finished")
    killed = f"killed (pid {marker['pid']} gone, marker left behind)" if marker else ""
    if rows:
        return status("interrupted", (killed or "stopped by a signal") + "; relaunch the same command to resume")
    return status("not started", killed)


# -- command line ------------------------------------------------------------------------------

_STYLE = {"finished": "green", "running": "cyan", "failed": "bold red", "interrupted": "yellow",
          "not started": "dim"}


def render(root: Path, statuses: list[RunStatus], console) -> None:
    from rich.table import Table

    table = Table(title=f"runs below {root}", title_justify="left")
    for name, justify in (("run", "left"), ("state", "left"), ("env steps", "right"),
                          ("return", "right"), ("message", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for s in statuses:
        try:
            name = str(s.path.relative_to(root)) if s.path != root else s.path.name
        except ValueError:
            name = str(s.path)
        steps = f"{s.env_steps:,} / {s.total_env_steps:,}" if s.total_env_steps else f"{s.env_steps:,} / ?"
        ret = "-" if math.isnan(s.last_return) else f"{s.last_return:.1f}"
        style = _STYLE[s.state]
        table.add_row(name, f"[{style}]{s.state}[/]", steps, ret, s.message)
    console.print(table)
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    console.print(f"{len(statuses)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    size = sweep_size(root)
    if size is not None:
        console.print(f"the last sweep launched here has {size} jobs (multirun.yaml); a job still queued has "
                      "no directory yet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a sweep directory (e.g. multirun/quickstart), runs/, or one run")
    args = parser.parse_args(argv)
    try:
        runs = find_runs([args.directory])
    except ValueError as err:
        print(f"runner.status: {err}", file=sys.stderr)
        return 2
    from rich.console import Console

    # Not on a terminal (a pipe, a log file): wide enough that run paths stay on one line.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    render(args.directory, [run_status(r) for r in runs], console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
