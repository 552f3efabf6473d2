"""What a run reports: progress.csv (the source of truth), the wandb mirror, and the console."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("explorebench")

# The fixed leading columns of progress.csv (DESIGN.md); algorithm columns follow.
FIXED_COLUMNS = [
    "iteration", "env_steps", "wall_s", "sps", "return_ext_mean", "return_ext_std",
    "task_metric_mean", "episode_len_mean", "episodes", "bonus_raw_mean", "bonus_scaled_mean",
    "time_collect_s", "time_bonus_s", "time_explore_update_s", "time_agent_update_s",
]
# Seconds per phase of an iteration (every loop fills them; the bench reports them).
PHASE_COLUMNS = ["time_collect_s", "time_bonus_s", "time_explore_update_s", "time_agent_update_s"]
# Columns that measure the machine rather than the learning (excluded from determinism checks).
TIMING_COLUMNS = ["wall_s", "sps", *PHASE_COLUMNS]


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class ProgressCSV:
    """Appends one row per iteration and flushes it to disk at once.

    The header is the fixed columns plus the keys of the first row; a key that appears later
    widens the header (the file is rewritten once, atomically). Every checkpoint carries the rows it
    covers (`snapshot`, after `sync` has made them durable), so that a resume restores them whatever
    happened to the file: truncated, a garbage or cut-off line, binary bytes, deleted."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict] = []
        self.file = None

    def snapshot(self) -> dict:
        """The rows so far, for the checkpoint: {"columns": [...], "rows": [[cell, ...], ...]}."""
        return {"columns": list(self.columns), "rows": [[row.get(c, "") for c in self.columns] for row in self.rows]}

    def sync(self) -> None:
        """fsync the rows written so far (before a checkpoint that covers them is written)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def _rows_on_disk(self) -> tuple[list[str], list[dict]]:
        """The header and the rows of the file that parse (a damaged line is skipped, not trusted)."""
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return [], []
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # a row cut short by a crash
        reader = csv.reader(lines)
        columns = next(reader, [])
        rows = []
        for cells in reader:
            if len(cells) == len(columns) and cells[0].isdigit():
                rows.append(dict(zip(columns, cells)))
        return columns, rows

    def resume(self, last_iteration: int, saved: dict | None = None) -> None:
        """Keep the rows of iterations <= last_iteration (those covered by the checkpoint) and
        drop the rest, including a row cut short by a crash. With `saved` (the checkpoint's
        snapshot) those rows are the checkpoint's: a file that disagrees is restored, and logged."""
        columns, rows = self._rows_on_disk()
        rows = [row for row in rows if int(row["iteration"]) <= last_iteration]
        if saved is not None:
            kept = [dict(zip(saved["columns"], cells)) for cells in saved["rows"]]
            if (columns, rows) != (saved["columns"], kept):
                intact = sum(a == b for a, b in zip(rows, kept))
                log.warning("%s was damaged or incomplete (%d of its %d rows up to iteration %d intact): "
                            "restored them from the checkpoint", self.path, intact, len(kept), last_iteration)
            columns, rows = list(saved["columns"]), kept
        self.columns, self.rows = columns, rows
        self._rewrite()

    def start_fresh(self) -> None:
        self.columns, self.rows = [], []
        if self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        formatted = {k: _format(v) for k, v in row.items()}
        if not self.columns:
            self.columns = FIXED_COLUMNS + [k for k in row if k not in FIXED_COLUMNS]
            self._rewrite()
        elif any(k not in self.columns for k in row):
            self.columns += [k for k in row if k not in self.columns]
            self._rewrite()
        self.rows.append(formatted)
        try:
            csv.DictWriter(self.file, self.columns, restval="").writerow(formatted)
            self.file.flush()  # a killed process loses nothing already written
        except OSError as err:  # a full disk: name the file (the checkpoint keeps the rows it covers)
            raise OSError(err.errno, err.strerror, str(self.path)) from err

    def _rewrite(self) -> None:
        if self.file is not None:
            self.file.close()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, restval="")
        if self.columns:
            writer.writeheader()
            writer.writerows(self.rows)
        tmp = self.path.with_suffix(".csv.tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.path)
        self.file = open(self.path, "a", newline="")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class WandbMirror:
    """Mirrors each progress row to wandb (offline by default). Never the source of truth."""

    def __init__(self, wandb_cfg, run_dir: Path, config: dict, group: str, run_id: str | None):
        self.run = None
        mode = wandb_cfg.mode
        if mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
            return
        import wandb

        self.run = wandb.init(
            mode=mode, project=wandb_cfg.project, entity=wandb_cfg.get("entity"), group=group,
            tags=list(wandb_cfg.get("tags") or []), name=wandb_cfg.get("name") or Path(run_dir).name,
            config=config, dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(console="off", silent=True))

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, row: dict) -> None:
        if self.run is not None:
            values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not
                      (isinstance(v, float) and math.isnan(v))}
            self.run.log(values, step=int(row["iteration"]))

    def close(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


class ConsoleProgress:
    """A progress bar (env steps, SPS, latest return) on a terminal; plain log lines otherwise."""

    def __init__(self, total_steps: int, start_steps: int, enabled: bool | None = None):
        self.total = total_steps
        self.bar = None
        if enabled if enabled is not None else sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("env steps"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[sps]} sps  return {task.fields[ret]}"),
                                TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total_steps, completed=start_steps,
                                          sps="-", ret="-")
            self.bar.start()

    def update(self, row: dict) -> None:
        ret = row["return_ext_mean"]
        ret_text = "-" if ret is None or math.isnan(ret) else f"{ret:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["env_steps"], sps=f"{row['sps']:.0f}", ret=ret_text)
        else:
            metric = row["task_metric_mean"]
            metric_text = "-" if metric is None or math.isnan(metric) else f"{metric:.2f}"
            log.info("iter %d | env steps %d/%d | %.0f sps | return %s | task metric %s",
                     row["iteration"], row["env_steps"], self.total, row["sps"], ret_text, metric_text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
