"""python -m runner.status <dir>: the state of every run below a directory (a sweep, or runs/).

    python -m runner.status multirun/quickstart

One table row per run directory (a directory holding `.hydra/` or `progress.csv`), with its state,
env steps done / total, the last finite `return_ext_mean`, and why it stopped when it did not
finish. The states:

  running      `running.json` names a live process (not a zombie). train() writes this marker
               (pid, host, the process's start time) when it starts and removes it when it
               returns or raises.
  failed       `error.txt` exists: a NaN/inf, a crash, or an invalid configuration; the
               message is its first line (for a traceback, its last line).
  finished     `checkpoints/last.json` (or, when it is lost or garbage, the record inside the
               checkpoint) says finished and covers the configured budget.
  interrupted  progress was written but the run is neither finished nor alive. Either it was
               stopped by SIGTERM/Ctrl-C (it checkpointed and removed its marker: "stopped") or it
               was killed (SIGKILL, out of memory, machine lost: its marker is left behind, the
               process is gone: "killed"). Relaunching the same command resumes it either way.
  damaged      not running, and progress.csv is damaged: a line does not parse (garbage,
               binary bytes, a wrong number of fields; an unterminated last line is not counted),
               its iterations are not 1, 2, ..., n, it has fewer rows than the checkpoint's
               iteration, or it is missing beside a checkpoint. Such a run is never counted
               finished; relaunching the same command restores progress.csv from the checkpoint.
               (A failed run's message names such damage too.)
  not started  the directory exists (Hydra creates it when the job starts) but holds no
               progress.csv yet: killed before its first iteration.

A marker written on another host cannot be checked from here; such a run shows as running, with
the host named in the message.

This module is the command only; reading a run directory (finding runs, a run's state, the
marker) is runner.run_dir's.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from runner.run_dir import STATES, RunStatus, find_runs, run_status, sweep_size

# -- command line ------------------------------------------------------------------------------

_STYLE = {"finished": "green", "running": "cyan", "failed": "bold red", "interrupted": "yellow",
          "damaged": "bold magenta", "not started": "dim"}


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
