"""A run directory's files: everything that writes or reads them goes through this module.

    <run_dir>/
      .hydra/              config.yaml, hydra.yaml, overrides.yaml (Hydra rewrites them at every
                           launch; the checkpoint keeps the run's own: hydra_files / restore_hydra_files)
      running.json         the liveness marker: pid, host and start time of the training process
                           (mark_running / read_marker / marker_alive / clear_marker)
      progress.csv         one row per iteration (runner.progress writes it; read_progress)
      manifest.json        launch records (runner.manifest)
      error.txt            why the run stopped: a NaN/inf, a crash, an invalid configuration
                           (write_error / read_error / clear_error)
      checkpoints/
        last.pt            all run state (save_checkpoint / load_checkpoint), written atomically
        last.json          {"iteration", "env_steps", "total_iterations", "finished"} of last.pt
        side/<key>/<id>/   the rows of each replay buffer / pool in the state (see below)

Side files. A RingBuffer's state_dict holds a RingRows handle on its rows rather than a copy.
save_checkpoint finds every RingRows in the state tree (nested dicts, lists, tuples); its key is
its dotted path in the tree (e.g. `exploration.replay.rows`). It appends to `side/<key>/<id>/`
only the rows added since that key's previous checkpoint and puts a small descriptor into last.pt
instead of the rows. Rows are log-structured: row k (the 0-based count of all rows ever added)
lives in chunk file `k // chunk_rows` (`%010d.bin`, raw bytes; `header.json`, written once, says
the row shape, dtype and chunk_rows), at byte (k % chunk_rows) * row_bytes. Only the newest
`capacity` rows are written (a ring that wrapped several times between two checkpoints costs one
capacity), and once a new last.pt is in place, chunk files whose rows are all older than
`added - capacity` are deleted.

Crash safety (a kill -9 at any moment gives, on load, exactly the state of the last last.pt that
was renamed into place): rows are only ever written at or after the `added` of the last.pt in
place, so the rows it needs are never touched; all of them are fsync'ed before the new last.pt is
renamed over the old one; a loader reads only the rows its last.pt names, so rows a killed process
appended beyond them are ignored (and the next append overwrites them). Which rows already on
disk may be kept is decided by the rows' history (algos.common.buffers: which buffer added each
row), compared with the descriptors of the last.pt in place (read from it on the first save in a
process, cached while last.pt stays the file this process wrote or read): a resumed run appends
where it left off; a buffer whose rows differ from those on disk (a fresh run in an old directory,
an older checkpoint loaded) gets a new `<id>` directory, and the old one is deleted once the new
last.pt is in place.

The readers (find_runs, read_progress, run_status, ...) serve `python -m runner.status` and
`python -m runner.report`; they tolerate files being written (a partial last progress line, a
marker removed while read).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import platform
import random
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from algos.common.buffers import RingRows, rows_in_common
from explorebench.checks import ConfigError

RUNNING_MARKER = "running.json"
ERROR_NAME = "error.txt"
PROGRESS_NAME = "progress.csv"
HYDRA_DIR = ".hydra"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "last.pt"
META_NAME = "last.json"
SIDE_DIR = "side"
CHUNK_ROWS = 65536  # rows per side chunk file (new side directories; an existing one keeps its own)
STATES = ("finished", "running", "failed", "interrupted", "not started")
# Directories below a sweep that are never runs nor contain runs.
_SKIP_DIRS = {HYDRA_DIR, ".submitit", CHECKPOINT_DIR, "wandb", "__pycache__"}
_DESCRIPTOR = "__ring_rows__"  # the key that marks a side-file descriptor in last.pt
_HEADER = "header.json"
_CHUNK = re.compile(r"^(\d{10})\.bin$")


# -- files written atomically --------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """write(f) into a temp file, fsync it, rename it over `path`, fsync the directory: a crash at
    any moment leaves either the old or the new file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


# -- liveness marker -----------------------------------------------------------------------------

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
    """Write `run_dir/running.json` naming this process; the caller removes it when it ends
    (clear_marker, or unlink the path returned)."""
    path = Path(run_dir) / RUNNING_MARKER
    marker = {"pid": os.getpid(), "hostname": platform.node(),
              "process_start": _process_start_ticks(os.getpid()),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _atomic_write_text(path, json.dumps(marker))  # a reader never sees half of it
    return path


def clear_marker(run_dir: Path) -> None:
    (Path(run_dir) / RUNNING_MARKER).unlink(missing_ok=True)


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


# -- error.txt -----------------------------------------------------------------------------------

def write_error(run_dir: Path, text: str) -> Path:
    """Record why the run stopped (a message, or a whole traceback) in run_dir/error.txt."""
    path = Path(run_dir) / ERROR_NAME
    _atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path


def clear_error(run_dir: Path) -> None:
    (Path(run_dir) / ERROR_NAME).unlink(missing_ok=True)


def read_error(run_dir: Path) -> str | None:
    """error.txt's message as status shows it: its first line, or for a Python traceback (whose
    first line says nothing) its last line, the exception; None without error.txt."""
    try:
        text = (Path(run_dir) / ERROR_NAME).read_text()
    except FileNotFoundError:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):
        return lines[-1].strip()
    return lines[0].strip() if lines else "(error.txt is empty)"


# -- .hydra/ -------------------------------------------------------------------------------------

def hydra_files(run_dir: Path) -> dict[str, str]:
    """{name: text} of the run's .hydra/*.yaml (kept in the checkpoint)."""
    hydra_dir = Path(run_dir) / HYDRA_DIR
    return {p.name: p.read_text() for p in sorted(hydra_dir.glob("*.yaml"))} if hydra_dir.exists() else {}


def restore_hydra_files(run_dir: Path, files: dict[str, str]) -> None:
    """Hydra rewrites .hydra/ at every launch; put back the files of the run the directory holds."""
    for name, text in files.items():
        (Path(run_dir) / HYDRA_DIR / name).write_text(text)


# -- global RNG state ----------------------------------------------------------------------------

def global_rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_global_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- checkpoints ---------------------------------------------------------------------------------

def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, state: dict, meta: dict | None) -> Path:
    """Write `state` to checkpoints/last.pt, then `meta` to checkpoints/last.json (both atomic;
    meta=None leaves last.json as it is). The rows of every RingRows in `state` go to side files,
    only those added since the previous checkpoint (module docstring). `state` is not modified.
    A kill at any moment leaves the previous checkpoint or this one, whole."""
    path = checkpoint_path(run_dir)
    ckpt_dir = path.parent
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    previous = _durable_descriptors(path)
    descriptors: dict[str, dict] = {}

    def externalise(key: str, rows: RingRows) -> dict:
        key = _unique(key, descriptors)
        descriptors[key] = _append_rows(ckpt_dir, key, rows, previous.get(key))
        return descriptors[key]

    stored = _map_tree(state, (), lambda node: isinstance(node, RingRows), externalise)
    _atomic_write(path, lambda f: torch.save(stored, f))
    _remember(path, descriptors)
    _prune_side(ckpt_dir, descriptors)
    if meta is not None:
        _atomic_write_text(ckpt_dir / META_NAME, json.dumps(meta))
    return path


def load_checkpoint(run_dir: Path) -> dict | None:
    """The state last saved by save_checkpoint (its side-file rows read back into stored
    RingRows, which RingBuffer.load_state_dict takes), or None without a checkpoint."""
    path = checkpoint_path(run_dir)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        signature = _signature(os.fstat(f.fileno()))
        state = torch.load(f, map_location="cpu", weights_only=False)
    descriptors: dict[str, dict] = {}

    def internalise(key: str, descriptor: dict) -> RingRows:
        descriptors[descriptor["key"]] = descriptor
        return _read_rows(path.parent, descriptor)

    state = _map_tree(state, (), _is_descriptor, internalise)
    _known[str(path.resolve())] = (signature, descriptors)
    return state


def read_checkpoint_meta(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / CHECKPOINT_DIR / META_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# -- side files ----------------------------------------------------------------------------------

# For each last.pt this process wrote or read: (its stat signature, its descriptors by key). A
# last.pt with another signature (another process wrote it) is read again.
_known: dict[str, tuple[tuple, dict[str, dict]]] = {}


def _signature(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _is_descriptor(node) -> bool:
    return isinstance(node, dict) and _DESCRIPTOR in node


def _map_tree(node, path: tuple, match, fn):
    """`node` with every part p for which match(p) replaced by fn(dotted path, p), copying only
    the containers (dict, list, tuple) on the way to a replaced part."""
    if match(node):
        return fn(".".join(path), node)
    if isinstance(node, dict):
        out = None
        for k, v in node.items():
            new = _map_tree(v, (*path, str(k)), match, fn)
            if new is not v:
                if out is None:
                    out = copy.copy(node)  # keeps the type and attributes (a state_dict's _metadata)
                out[k] = new
        return node if out is None else out
    if isinstance(node, (list, tuple)):
        items = [_map_tree(v, (*path, str(i)), match, fn) for i, v in enumerate(node)]
        if all(a is b for a, b in zip(items, node)):
            return node
        if isinstance(node, list):
            out = copy.copy(node)
            out[:] = items
            return out
        return type(node)(*items) if hasattr(node, "_fields") else type(node)(items)
    return node


def _unique(key: str, taken: dict) -> str:
    if key not in taken:
        return key
    n = 2
    while f"{key}~{n}" in taken:
        n += 1
    return f"{key}~{n}"


def _key_dirname(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key).strip(".") or "rows"
    if name != key or len(name) > 100:
        name = f"{name[:80]}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    return name


def _durable_descriptors(path: Path) -> dict[str, dict]:
    """The side-file descriptors of the last.pt in place (none without one)."""
    try:
        signature = _signature(path.stat())
    except FileNotFoundError:
        return {}
    known = _known.get(str(path.resolve()))
    if known is not None and known[0] == signature:
        return known[1]
    descriptors: dict[str, dict] = {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # unreadable: nothing on disk is kept (the new checkpoint rewrites its rows)
        return {}

    def collect(key, descriptor):
        descriptors[descriptor["key"]] = descriptor
        return descriptor

    _map_tree(state, (), _is_descriptor, collect)
    _known[str(path.resolve())] = (signature, descriptors)
    return descriptors


def _remember(path: Path, descriptors: dict[str, dict]) -> None:
    _known[str(path.resolve())] = (_signature(path.stat()), descriptors)


def _row_bytes(shape: tuple, dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _append_rows(ckpt_dir: Path, key: str, rows: RingRows, previous: dict | None) -> dict:
    """Make rows [added - size, added) of `rows` durable under side/, writing only those not
    already there for the last.pt in place; returns the descriptor for the new last.pt."""
    if rows.dtype.hasobject:
        raise TypeError(f"{key}: a RingBuffer of Python objects ({rows.dtype}) cannot be checkpointed")
    first = rows.added - rows.size
    keep = (previous is not None and tuple(previous["shape"]) == rows.row_shape
            and np.dtype(previous["dtype"]) == rows.dtype
            and (ckpt_dir / SIDE_DIR / previous["dir"] / _HEADER).exists()
            and rows_in_common(rows.history, rows.added, previous["history"], previous["added"])
            == previous["added"])
    if keep:  # append after the rows the last.pt in place has (those are never written over)
        directory, chunk_rows, start = previous["dir"], int(previous["chunk_rows"]), max(previous["added"], first)
    else:     # a new directory: the rows on disk, if any, are not this buffer's
        directory, chunk_rows, start = f"{_key_dirname(key)}/{uuid.uuid4().hex[:12]}", CHUNK_ROWS, first
        where = ckpt_dir / SIDE_DIR / directory
        where.mkdir(parents=True)
        header = {"key": key, "row_shape": list(rows.row_shape),
                  "dtype": np.lib.format.dtype_to_descr(rows.dtype), "chunk_rows": chunk_rows,
                  "row_bytes": _row_bytes(rows.row_shape, rows.dtype)}
        _atomic_write_text(where / _HEADER, json.dumps(header))
        for d in (where.parent, where.parent.parent, ckpt_dir):
            _fsync_dir(d)
    _write_rows(ckpt_dir / SIDE_DIR / directory, rows, start, rows.added, chunk_rows)
    return {_DESCRIPTOR: 1, "key": key, "dir": directory, "added": rows.added, "capacity": rows.capacity,
            "shape": rows.row_shape, "dtype": rows.dtype, "chunk_rows": chunk_rows, "history": rows.history}


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _write_rows(directory: Path, rows: RingRows, start: int, stop: int, chunk_rows: int) -> None:
    """Write rows [start, stop) into their chunk files and fsync them."""
    row_bytes = _row_bytes(rows.row_shape, rows.dtype)
    if start >= stop or row_bytes == 0:
        return
    fds: dict[int, int] = {}
    created = False
    try:
        for k, piece in rows.pieces(start, stop):
            flat = memoryview(np.ascontiguousarray(piece).reshape(-1).view(np.uint8))
            done = 0
            while done < len(piece):
                chunk, offset = divmod(k + done, chunk_rows)
                n = min(len(piece) - done, chunk_rows - offset)
                if chunk not in fds:
                    name = directory / f"{chunk:010d}.bin"
                    created = created or not name.exists()
                    fds[chunk] = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
                _pwrite_all(fds[chunk], flat[done * row_bytes:(done + n) * row_bytes], offset * row_bytes)
                done += n
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    if created:
        _fsync_dir(directory)


def _read_rows(ckpt_dir: Path, descriptor: dict) -> RingRows:
    """The stored RingRows a descriptor names: rows [added - size, added) from its chunk files,
    each in its slot (row k in k % capacity). Rows past `added` (appended by a process killed
    before its last.pt was in place) are not read."""
    added, capacity = int(descriptor["added"]), int(descriptor["capacity"])
    shape, dtype = tuple(descriptor["shape"]), np.dtype(descriptor["dtype"])
    chunk_rows, row_bytes = int(descriptor["chunk_rows"]), _row_bytes(shape, dtype)
    directory = ckpt_dir / SIDE_DIR / descriptor["dir"]
    size = min(added, capacity)
    slots = np.empty((size, *shape), dtype)
    if row_bytes and size:
        flat = memoryview(slots.reshape(-1).view(np.uint8))
        k = added - size
        while k < added:
            chunk, offset = divmod(k, chunk_rows)
            slot = k % capacity
            n = min(added - k, chunk_rows - offset, capacity - slot)
            name = directory / f"{chunk:010d}.bin"
            want = flat[slot * row_bytes:(slot + n) * row_bytes]
            try:
                with open(name, "rb") as f:
                    f.seek(offset * row_bytes)
                    got = f.readinto(want)
            except FileNotFoundError:
                got = -1
            if got != len(want):
                raise RuntimeError(f"checkpoint side file {name} lacks rows {k}..{k + n - 1} of "
                                   f"{descriptor['key']} (the side files were changed or removed)")
            k += n
    return RingRows.stored(slots, added, capacity, descriptor["history"])


def _prune_side(ckpt_dir: Path, descriptors: dict[str, dict]) -> None:
    """With the new last.pt in place: delete what it does not need, i.e. the side directories it
    does not name, chunk files entirely older than its window, and rows past its `added`."""
    side = ckpt_dir / SIDE_DIR
    if not side.is_dir():
        return
    wanted = {d["dir"]: d for d in descriptors.values()}
    for key_dir in side.iterdir():
        if not key_dir.is_dir():
            key_dir.unlink(missing_ok=True)
            continue
        for directory in key_dir.iterdir():
            descriptor = wanted.get(f"{key_dir.name}/{directory.name}")
            if descriptor is None:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                _prune_chunks(directory, descriptor)
        if not any(key_dir.iterdir()):
            key_dir.rmdir()
    if not any(side.iterdir()):
        side.rmdir()


def _prune_chunks(directory: Path, descriptor: dict) -> None:
    added, chunk_rows = int(descriptor["added"]), int(descriptor["chunk_rows"])
    first = added - min(added, int(descriptor["capacity"]))
    row_bytes = _row_bytes(tuple(descriptor["shape"]), np.dtype(descriptor["dtype"]))
    for path in directory.iterdir():
        match = _CHUNK.match(path.name)
        if match is None:
            if path.name != _HEADER:
                path.unlink(missing_ok=True)
            continue
        begin = int(match.group(1)) * chunk_rows
        if begin + chunk_rows <= first or begin >= added:
            path.unlink(missing_ok=True)
        elif begin + chunk_rows > added and path.stat().st_size > (added - begin) * row_bytes:
            os.truncate(path, (added - begin) * row_bytes)


# -- finding runs and reading their files ---------------------------------------------------------

def is_run_dir(path: Path) -> bool:
    path = Path(path)
    return (path / HYDRA_DIR).is_dir() or (path / PROGRESS_NAME).is_file()


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
    path = Path(run_dir) / PROGRESS_NAME
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

    path = Path(run_dir) / HYDRA_DIR / "config.yaml"
    if not path.exists():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def budget_env_steps(config: dict | None, meta: dict | None) -> int | None:
    """The env steps a run trains for: whole iterations (runner.config.iteration_env_steps) within
    total_env_steps, from its configuration (rewritten by every launch), else its checkpoint."""
    from runner.config import iteration_env_steps

    try:
        per_iteration = iteration_env_steps(config)
        return int(config["total_env_steps"]) // per_iteration * per_iteration
    except (ConfigError, KeyError, TypeError, ValueError):  # no configuration, or one from before a change
        pass
    if meta and meta.get("iteration"):
        return meta["env_steps"] // meta["iteration"] * meta["total_iterations"]
    return None


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


# -- one run's state -----------------------------------------------------------------------------

@dataclass
class RunStatus:
    path: Path
    state: str                 # one of STATES
    env_steps: int             # env steps of the last complete progress row
    total_env_steps: int | None
    last_return: float         # last finite return_ext_mean (NaN if none yet)
    message: str = ""


def run_status(run_dir: Path) -> RunStatus:
    """The run's state (STATES; runner.status's docstring says when each holds) and numbers."""
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
    error = read_error(run_dir)
    if error is not None:
        return status("failed", error)
    finished = bool(meta and meta.get("finished")) and (total is None or meta["env_steps"] >= total)
    if finished:
        return status("finished")
    killed = f"killed (pid {marker['pid']} gone, marker left behind)" if marker else ""
    if rows:
        return status("interrupted", (killed or "stopped by a signal") + "; relaunch the same command to resume")
    return status("not started", killed)
