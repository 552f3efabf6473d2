"""A run directory's files: everything that writes or reads them goes through this module.

    <run_dir>/
      .hydra/              config.yaml, hydra.yaml, overrides.yaml (train() writes them when it
                           accepts a launch: write_hydra_files; hydra_files reads them)
      running.json         the liveness marker: pid, host and start time of the training process
                           (mark_running / read_marker / marker_alive / clear_marker); the run
                           directory itself is also flock'ed while a process trains in it
                           (acquire_run_lock / release_run_lock)
      progress.csv         one row per iteration (runner.progress writes it; read_progress,
                           progress_problem)
      manifest.json        launch records (runner.manifest)
      error.txt            why the run stopped: a NaN/inf, a crash, an invalid configuration
                           (write_error / read_error / clear_error)
      checkpoints/
        last.pt            all run state (save_checkpoint / load_checkpoint), written atomically;
                           it also holds its last.json record (to rebuild a lost last.json)
        prev.pt            the generation before last.pt (load_checkpoint falls back to it when
                           last.pt is missing or damaged)
        last.json          {"iteration", "env_steps", "total_iterations", "finished"} of last.pt
                           (read_checkpoint_meta)
        side/<key>/<id>/   the rows of each replay buffer / pool in both generations (see below)

Side files. A RingBuffer's state_dict holds a RingRows handle on its rows rather than a copy.
save_checkpoint finds every RingRows in the state tree (nested dicts, lists, tuples); its key is
its dotted path in the tree (e.g. `exploration.replay.rows`). It appends to `side/<key>/<id>/`
only the rows added since that key's previous checkpoint and puts a small descriptor into last.pt
instead of the rows. Rows are log-structured: row k (the 0-based count of all rows ever added)
lives in chunk file `k // chunk_rows` (`%010d.bin`, raw bytes; `header.json`, written once, says
the row shape, dtype and chunk_rows), at byte (k % chunk_rows) * row_bytes. Only the newest
`capacity` rows are written (a ring that wrapped several times between two checkpoints costs one
capacity), and once a new last.pt is in place, chunk files that neither generation needs are
deleted (for a directory both name: rows outside [smaller window start, larger `added`)).

Two generations. Each save renames the last.pt in place to prev.pt, then the new file to last.pt
(one directory fsync after both), so prev.pt is the save before. Only a last.pt this process
knows to be good is rotated: one it wrote or loaded, or, on the first save in a process, one it
read (torch.load) whose side files hold every row it names (file sizes). A damaged or missing
last.pt is simply replaced, and prev.pt stays. The generation that becomes prev.pt (the good
last.pt, else a good prev.pt) is the "base" of the save: append decisions are made against it.

Crash safety (a kill -9 at any moment leaves at least one whole, loadable generation: the last
last.pt renamed into place, or, killed between the two renames, the same file as prev.pt): rows
are only ever written at or after the base's `added`, so the rows the base needs are never
touched; all of them are fsync'ed before the new last.pt is renamed into place; a loader reads
only the rows its generation names, so rows a killed process appended beyond them are ignored
(and the next append overwrites them). Which rows already on disk may be kept is decided by the
rows' history (algos.common.buffers: which buffer added each row), compared with the base's
descriptors (cached per generation file while it stays the file this process wrote or read): a
resumed run appends where it left off; a buffer whose rows differ from those on disk (a fresh run
in an old directory, an older checkpoint loaded) gets a new `<id>` directory, and the old one is
deleted once neither generation names it. A save that fails (a full disk: OSError ENOSPC) removes
its temp file and leaves the generations in place.

Damage. load_checkpoint loads last.pt, or, when it is missing, truncated, garbage or lacks side
rows, warns (logger "explorebench", naming the file and why) and loads prev.pt; with neither it
raises CheckpointError (relaunch with resume=false to start over); last_loaded_path tells which
one it loaded. A missing or garbage last.json is rebuilt from the generation's own record
(read_checkpoint_meta; load_checkpoint rewrites it). discard_checkpoints removes every generation
(a fresh run never falls back to another run's).

The readers (find_runs, holds_run, read_progress, run_status, ...) serve `python -m runner.status` and
`python -m runner.report`; they tolerate files being written (a partial last progress line, a
marker removed while read) and damaged ones (unparsable progress lines are skipped and reported
by progress_problem; run_status says "damaged").
"""
from __future__ import annotations

import copy
import csv
import errno
import fcntl
import hashlib
import json
import logging
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
PREV_CHECKPOINT_NAME = "prev.pt"  # the generation before last.pt
META_NAME = "last.json"
SIDE_DIR = "side"
CHUNK_ROWS = 65536  # rows per side chunk file (new side directories; an existing one keeps its own)
STATES = ("finished", "running", "failed", "interrupted", "damaged", "not started")
# Directories below a sweep that are never runs nor contain runs.
_SKIP_DIRS = {HYDRA_DIR, ".submitit", CHECKPOINT_DIR, "wandb", "__pycache__"}
_DESCRIPTOR = "__ring_rows__"  # the key that marks a side-file descriptor in last.pt
_META_KEY = "__checkpoint_meta__"  # where a generation keeps its last.json record
_HEADER = "header.json"
_CHUNK = re.compile(r"^(\d{10})\.bin$")

log = logging.getLogger("explorebench")


# -- files written atomically --------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:  # already gone (or cannot be removed: nothing more to do about it)
        pass


def _atomic_write(path: Path, write, before_rename=None) -> None:
    """write(f) into a temp file, fsync it, rename it over `path`, fsync the directory: a crash at
    any moment leaves either the old or the new file whole. before_rename() runs just before the
    rename (save_checkpoint moves last.pt to prev.pt there). When anything fails (a full disk, an
    unwritable directory) the temp file is removed and the OSError raised again with its errno,
    naming `path`; the old file is left as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        _remove_quietly(tmp)  # a symlink (e.g. to /dev/full) is removed, not what it points to
        if isinstance(err, OSError) and err.errno is not None and err.filename != os.fspath(path):
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path)) from err
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


# -- liveness marker and run lock ----------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process from Linux /proc; None
    where /proc is not available or the process is gone. The start time tells a live process
    from a later one that reused its pid; the state tells a zombie (Z) or dead (X) one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces, so split after its ')': state is field 3,
        # starttime field 22.
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


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
    """The marker, or None when there is none or it is not one (removed or half-written right
    now, or damaged: not JSON, binary, no integer pid)."""
    try:
        marker = json.loads((Path(run_dir) / RUNNING_MARKER).read_bytes())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    if not (isinstance(marker, dict) and {"pid", "hostname"} <= set(marker)):
        return None
    pid = marker["pid"]
    return marker if isinstance(pid, int) and not isinstance(pid, bool) else None


def marker_alive(marker: dict) -> bool | None:
    """True if the marker's process still runs, False if it is gone (or a zombie: exited, not yet
    reaped), None if it ran on another host (cannot be checked from here)."""
    if marker.get("hostname") != platform.node():
        return None
    pid = int(marker["pid"])
    if pid <= 0:  # os.kill would signal a process group: not a process the marker can name
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    stat = _proc_stat(pid)
    if stat is None:  # no /proc here (or it just went): the kill above is all there is to go by
        return True
    state, start = stat
    if state in ("Z", "X"):
        return False
    recorded = marker.get("process_start")
    return recorded is None or start == recorded


# The run directories this process holds the lock of: {resolved path: the locked fd}.
_locks: dict[str, int] = {}


def acquire_run_lock(run_dir: Path) -> bool:
    """Take an exclusive flock on the run directory itself, held until release_run_lock or the
    process ends (the kernel drops it then, however the process died). False when another
    process holds it; True when this one does (again, if it already did). Unlike reading
    running.json and then writing it, taking the lock is one step: two processes on one host can
    never both pass. On a filesystem without flock it warns and returns True (the marker check
    is all there is)."""
    key = str(Path(run_dir).resolve())
    if key in _locks:
        return True
    fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)  # Python's fds are close-on-exec
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        log.warning("cannot lock %s (%s); relying on running.json alone", key, err)
        return True
    _locks[key] = fd
    return True


def release_run_lock(run_dir: Path) -> None:
    fd = _locks.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only fd on it releases the flock


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
        text = (Path(run_dir) / ERROR_NAME).read_text(errors="replace")
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


def write_hydra_files(run_dir: Path, files: dict[str, str]) -> None:
    """Write .hydra/<name> for each {name: text} (each atomically). Hydra itself writes no .hydra/
    (conf/config.yaml: hydra.output_subdir null): train() writes them once it accepts a launch."""
    hydra_dir = Path(run_dir) / HYDRA_DIR
    if files:
        hydra_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _atomic_write_text(hydra_dir / name, text)


def holds_run(run_dir: Path) -> bool:
    """Whether the directory holds a run's files: progress.csv, or any checkpoint file (last.pt,
    prev.pt, last.json), whole or damaged. (.hydra/ alone does not: a refused launch writes it.)"""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    return any(os.path.lexists(p) for p in (Path(run_dir) / PROGRESS_NAME, ckpt_dir / CHECKPOINT_NAME,
                                             ckpt_dir / PREV_CHECKPOINT_NAME, ckpt_dir / META_NAME))


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

class CheckpointError(RuntimeError):
    """No generation of a run's checkpoint loads (each missing or damaged)."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_NAME


def prev_checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / PREV_CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, state: dict, meta: dict | None) -> Path:
    """Write `state` to checkpoints/last.pt, the last.pt in place becoming prev.pt when it is
    good (module docstring: two generations), then `meta` to checkpoints/last.json (both atomic;
    meta=None leaves last.json as it is). last.pt keeps `meta` too, to rebuild a lost last.json.
    The rows of every RingRows in `state` go to side files, only those added since the base
    generation (module docstring). `state` is not modified. A kill at any moment leaves at least
    one whole generation; a failure (OSError, e.g. ENOSPC) leaves the generations as they were."""
    path = checkpoint_path(run_dir)
    prev_path = prev_checkpoint_path(run_dir)
    ckpt_dir = path.parent
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_good = _good_descriptors(path)
    base = last_good if last_good is not None else _good_descriptors(prev_path)
    descriptors: dict[str, dict] = {}

    def externalise(key: str, rows: RingRows) -> dict:
        key = _unique(key, descriptors)
        descriptors[key] = _append_rows(ckpt_dir, key, rows, (base or {}).get(key))
        return descriptors[key]

    stored = _map_tree(state, (), lambda node: isinstance(node, RingRows), externalise)
    if meta is not None:
        stored = {**stored, _META_KEY: meta}

    def rotate() -> None:  # the good last.pt becomes prev.pt (its cache entry with it)
        os.replace(path, prev_path)
        _known[_cache_key(prev_path)] = _known.pop(_cache_key(path))

    _atomic_write(path, lambda f: torch.save(stored, f), rotate if last_good is not None else None)
    _remember(path, descriptors)
    _prune_side(ckpt_dir, [descriptors, base or {}])  # the base is now prev.pt
    if meta is not None:
        _atomic_write_text(ckpt_dir / META_NAME, json.dumps(meta))
    return path


def load_checkpoint(run_dir: Path) -> dict | None:
    """The state last saved by save_checkpoint (its side-file rows read back into stored
    RingRows, which RingBuffer.load_state_dict takes), or None without a checkpoint.

    When last.pt is missing, truncated, garbage or lacks side rows, a warning (logger
    "explorebench") names it and why, and prev.pt is loaded instead; when no generation loads,
    CheckpointError names the files and what is wrong with each. last_loaded_path(run_dir) then
    says which file was loaded. last.json is rewritten (atomically) when it does not hold the
    loaded generation's record (missing, garbage, left behind by a kill, or after a fallback)."""
    run_dir = Path(run_dir)
    candidates = [checkpoint_path(run_dir), prev_checkpoint_path(run_dir)]
    _loaded.pop(_run_key(run_dir), None)
    if not any(os.path.lexists(p) for p in candidates):
        return None
    damaged: list[tuple[Path, str]] = []
    for path in candidates:
        if not os.path.lexists(path):
            damaged.append((path, "missing"))
            continue
        try:
            state, signature, descriptors, meta = _load_generation(path)
        except Exception as err:  # torch.load raises many kinds on a damaged file (EOFError,
            # UnpicklingError, RuntimeError from the zip reader, ...); the side-file reader RuntimeError
            damaged.append((path, f"{type(err).__name__}: {err}"))
            _known.pop(_cache_key(path), None)  # (its side files may be what is damaged)
            continue
        for bad, why in damaged:
            log.warning("checkpoint %s is %s; loading the previous generation %s instead", bad,
                        why if why == "missing" else f"damaged ({why})", path)
        _known[_cache_key(path)] = (signature, descriptors)
        _loaded[_run_key(run_dir)] = path
        if isinstance(meta, dict) and _read_meta_file(path.parent) != meta:
            try:
                _atomic_write_text(path.parent / META_NAME, json.dumps(meta))
            except (OSError, TypeError, ValueError) as err:  # the state loaded: that is what matters
                log.warning("could not rewrite %s: %s", path.parent / META_NAME, err)
        return state
    raise CheckpointError(
        f"no checkpoint of the run in {run_dir} loads: "
        + "; ".join(f"{p}: {why}" for p, why in damaged)
        + ". Relaunch with resume=false to start over (the run's checkpoints are then discarded)")


def last_loaded_path(run_dir: Path) -> Path | None:
    """The file the latest load_checkpoint(run_dir) in this process loaded: checkpoints/last.pt,
    or prev.pt when it fell back; None before any load, or when that load found no checkpoint or
    raised."""
    return _loaded.get(_run_key(run_dir))


def read_checkpoint_meta(run_dir: Path) -> dict | None:
    """checkpoints/last.json; when it is missing or garbage, the record kept inside the newest
    generation that loads (last.pt, else prev.pt; read without its rows); None without either."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    meta = _read_meta_file(ckpt_dir)
    if meta is not None:
        return meta
    for path in (checkpoint_path(run_dir), prev_checkpoint_path(run_dir)):
        if not path.exists():
            continue
        try:
            _, _, meta = _inspect_generation(path)
        except Exception:  # damaged: the next generation, as load_checkpoint does
            continue
        return meta if isinstance(meta, dict) else None  # None: saved without a record
    return None


def discard_checkpoints(run_dir: Path) -> None:
    """Remove last.pt, prev.pt, last.json and side/ (and their temp files): a run that starts
    fresh must never fall back to another run's generation."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    for name in (CHECKPOINT_NAME, PREV_CHECKPOINT_NAME, META_NAME):
        for path in (ckpt_dir / name, ckpt_dir / f"{name}.tmp"):
            _known.pop(_cache_key(path), None)
            if os.path.lexists(path):
                path.unlink()
    shutil.rmtree(ckpt_dir / SIDE_DIR, ignore_errors=True)
    _loaded.pop(_run_key(run_dir), None)
    if ckpt_dir.is_dir():
        _fsync_dir(ckpt_dir)


def _read_meta_file(ckpt_dir: Path) -> dict | None:
    try:
        meta = json.loads((ckpt_dir / META_NAME).read_bytes())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    return meta if isinstance(meta, dict) else None


def _load_generation(path: Path) -> tuple[dict, tuple, dict[str, dict], dict | None]:
    """(state, stat signature, side-file descriptors by key, last.json record) of one generation
    file, its rows read; raises when it is damaged."""
    with open(path, "rb") as f:
        signature = _signature(os.fstat(f.fileno()))
        stored = torch.load(f, map_location="cpu", weights_only=False)
    if not isinstance(stored, dict):
        raise ValueError(f"it holds a {type(stored).__name__}, not a checkpoint")
    meta = stored.pop(_META_KEY, None)
    descriptors: dict[str, dict] = {}

    def internalise(key: str, descriptor: dict) -> RingRows:
        descriptors[descriptor["key"]] = descriptor
        return _read_rows(path.parent, descriptor)

    return _map_tree(stored, (), _is_descriptor, internalise), signature, descriptors, meta


def _inspect_generation(path: Path) -> tuple[tuple, dict[str, dict], dict | None]:
    """(stat signature, descriptors by key, last.json record) of one generation file without
    reading its rows (torch.load with mmap; the side files' sizes checked); raises when damaged."""
    signature = _signature(path.stat())
    stored = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if not isinstance(stored, dict):
        raise ValueError(f"it holds a {type(stored).__name__}, not a checkpoint")
    descriptors: dict[str, dict] = {}

    def collect(key: str, descriptor: dict) -> dict:
        descriptors[descriptor["key"]] = descriptor
        return descriptor

    _map_tree(stored, (), _is_descriptor, collect)
    for descriptor in descriptors.values():
        lack = _missing_rows(path.parent, descriptor)
        if lack is not None:
            raise RuntimeError(lack)
    return signature, descriptors, stored.get(_META_KEY)


# -- side files ----------------------------------------------------------------------------------

# For each generation file this process wrote or read and found good: (its stat signature, its
# descriptors by key). A file with another signature (replaced, or another process wrote it) is
# read again. Keys: _cache_key (a generation file), _run_key (run directory, for _loaded).
_known: dict[str, tuple[tuple, dict[str, dict]]] = {}
# For each run directory: the generation file its latest load_checkpoint loaded.
_loaded: dict[str, Path] = {}


def _cache_key(path: Path) -> str:
    return os.path.join(os.path.realpath(Path(path).parent), Path(path).name)


def _run_key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


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


def _good_descriptors(path: Path) -> dict[str, dict] | None:
    """The side-file descriptors of the generation file `path` if it is good (this process wrote
    or loaded it, or it reads now and its side files hold its rows), else None (missing or
    damaged)."""
    key = _cache_key(path)
    try:
        signature = _signature(path.stat())
    except OSError:
        return None
    known = _known.get(key)
    if known is not None and known[0] == signature:
        return known[1]
    _known.pop(key, None)
    try:
        signature, descriptors, _ = _inspect_generation(path)
    except Exception:  # damaged: the save does not rotate it, nor keep any rows for it
        return None
    _known[key] = (signature, descriptors)
    return descriptors


def _remember(path: Path, descriptors: dict[str, dict]) -> None:
    _known[_cache_key(path)] = (_signature(path.stat()), descriptors)


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
    name = directory
    try:
        for k, piece in rows.pieces(start, stop):
            flat = memoryview(np.ascontiguousarray(piece).reshape(-1).view(np.uint8))
            done = 0
            while done < len(piece):
                chunk, offset = divmod(k + done, chunk_rows)
                n = min(len(piece) - done, chunk_rows - offset)
                name = directory / f"{chunk:010d}.bin"
                if chunk not in fds:
                    created = created or not name.exists()
                    fds[chunk] = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
                _pwrite_all(fds[chunk], flat[done * row_bytes:(done + n) * row_bytes], offset * row_bytes)
                done += n
        for chunk, fd in fds.items():
            name = directory / f"{chunk:010d}.bin"
            os.fsync(fd)
    except OSError as err:  # a full disk: name the file (the rows past the base's are ignored)
        if err.errno is None or err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), os.fspath(name)) from err
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


def _missing_rows(ckpt_dir: Path, descriptor: dict) -> str | None:
    """What rows of a descriptor its side files lack (judged by the files' sizes), or None."""
    added, capacity = int(descriptor["added"]), int(descriptor["capacity"])
    chunk_rows = int(descriptor["chunk_rows"])
    row_bytes = _row_bytes(tuple(descriptor["shape"]), np.dtype(descriptor["dtype"]))
    directory = ckpt_dir / SIDE_DIR / descriptor["dir"]
    k = added - min(added, capacity)
    while row_bytes and k < added:
        chunk, offset = divmod(k, chunk_rows)
        n = min(added - k, chunk_rows - offset)
        name = directory / f"{chunk:010d}.bin"
        try:
            size = name.stat().st_size
        except OSError:
            size = -1
        if size < (offset + n) * row_bytes:
            return (f"checkpoint side file {name} lacks rows {k}..{k + n - 1} of {descriptor['key']} "
                    "(the side files were changed or removed)")
        k += n
    return None


def _prune_side(ckpt_dir: Path, generations: list[dict[str, dict]]) -> None:
    """With the new last.pt in place: delete what neither generation (the descriptors of each)
    needs, i.e. the side directories neither names, and in a directory the chunk files entirely
    outside [the smallest window start, the largest `added`) of the generations naming it, and
    rows past that `added`."""
    side = ckpt_dir / SIDE_DIR
    if not side.is_dir():
        return
    wanted: dict[str, list[dict]] = {}
    for descriptors in generations:
        for d in descriptors.values():
            wanted.setdefault(d["dir"], []).append(d)
    for key_dir in side.iterdir():
        if not key_dir.is_dir():
            key_dir.unlink(missing_ok=True)
            continue
        for directory in key_dir.iterdir():
            named = wanted.get(f"{key_dir.name}/{directory.name}")
            if named is None:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                _prune_chunks(directory, named)
        if not any(key_dir.iterdir()):
            key_dir.rmdir()
    if not any(side.iterdir()):
        side.rmdir()


def _prune_chunks(directory: Path, descriptors: list[dict]) -> None:
    """Keep rows [min window start, max added) of the descriptors naming this directory (one
    directory has one header: the same chunk_rows and row size for all)."""
    first = min(int(d["added"]) - min(int(d["added"]), int(d["capacity"])) for d in descriptors)
    added = max(int(d["added"]) for d in descriptors)
    chunk_rows = int(descriptors[0]["chunk_rows"])
    row_bytes = _row_bytes(tuple(descriptors[0]["shape"]), np.dtype(descriptors[0]["dtype"]))
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


def _split_csv_line(line: str) -> list[str] | None:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return None


@dataclass
class _Progress:
    exists: bool
    rows: list[dict[str, float]]
    bad_lines: list[tuple[int, str]]  # (1-based line number, what is wrong), parsed rows skipped
    binary_tail: bool                 # an unterminated last line holding bytes no writer writes


def _parse_progress(run_dir: Path) -> _Progress:
    """progress.csv's complete lines parsed: every line that parses is a row (values as floats,
    an empty cell NaN); a line that does not is noted and skipped. An unterminated last line is
    a row being written (or cut by a kill): left out."""
    try:
        data = (Path(run_dir) / PROGRESS_NAME).read_bytes()
    except FileNotFoundError:
        return _Progress(False, [], [], False)
    lines = data.decode("utf-8", errors="replace").split("\n")
    partial = lines.pop()  # "" when the file ends with a newline
    binary_tail = "\x00" in partial or "\ufffd" in partial
    if not lines:
        return _Progress(True, [], [], binary_tail)
    header = _split_csv_line(lines[0].rstrip("\r"))
    if not header or "iteration" not in header or "env_steps" not in header:
        return _Progress(True, [], [(1, "is not the header (iteration,env_steps,...)")], binary_tail)
    rows, bad = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = _split_csv_line(line.rstrip("\r"))
        if fields is None or len(fields) != len(header):
            bad.append((number, "is not CSV" if fields is None else
                        f"has {len(fields)} fields, the header {len(header)}"))
            continue
        try:
            rows.append({k: float(v) if v != "" else math.nan for k, v in zip(header, fields)})
        except ValueError:
            bad.append((number, "holds a value that is not a number"))
    return _Progress(True, rows, bad, binary_tail)


def read_progress(run_dir: Path) -> list[dict[str, float]]:
    """The complete rows of run_dir/progress.csv as floats (an empty cell is NaN). A run that is
    being written, or was killed mid-write, may end with a partial line: it is left out. A line
    that does not parse (damage: garbage, binary bytes, a wrong number of fields) is skipped, so
    that readers see the rows that are there (progress_problem says what is wrong)."""
    return _parse_progress(run_dir).rows


def progress_problem(run_dir: Path) -> str | None:
    """What is wrong with progress.csv, or None when it is healthy: a line that does not parse
    (but an unterminated last line is one a live writer may be writing), iterations that are
    not 1, 2, ..., n, fewer rows than the checkpoint's iteration, or no progress.csv beside a
    checkpoint."""
    return _progress_problem(_parse_progress(run_dir), read_checkpoint_meta(run_dir))


def _progress_problem(progress: _Progress, meta: dict | None) -> str | None:
    checkpointed = meta.get("iteration") if meta else None
    checkpointed = checkpointed if isinstance(checkpointed, int) and not isinstance(checkpointed, bool) else None
    if not progress.exists:
        if checkpointed is None:
            return None
        return f"progress.csv is missing (the checkpoint is at iteration {checkpointed})"
    if progress.bad_lines:
        (number, why), more = progress.bad_lines[0], len(progress.bad_lines) - 1
        return f"progress.csv line {number} {why}" + (f" (and {more} more lines do not parse)" if more else "")
    if progress.binary_tail:
        return "progress.csv ends with binary bytes (NUL or not UTF-8)"
    for expected, row in enumerate(progress.rows, start=1):
        if row["iteration"] != expected:
            got = "an empty iteration" if math.isnan(row["iteration"]) else f"iteration {row['iteration']:g}"
            return f"progress.csv row {expected} is {got}, not {expected} (iterations must be 1, 2, ...)"
    if checkpointed is not None and len(progress.rows) < checkpointed:
        return f"progress.csv has {len(progress.rows)} rows, but the checkpoint is at iteration {checkpointed}"
    return None


def read_run_config(run_dir: Path) -> dict | None:
    """The resolved configuration Hydra saved for the run (.hydra/config.yaml), or None (also
    when it is damaged)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / HYDRA_DIR / "config.yaml"
    if not path.exists():
        return None
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # damaged (not YAML, binary): as without one (yaml and omegaconf raise many kinds)
        return None
    return config if isinstance(config, dict) else None


def budget_env_steps(config: dict | None, meta: dict | None) -> int | None:
    """The env steps a run trains for: whole iterations (runner.config.iteration_env_steps) within
    total_env_steps, from its configuration (rewritten by every launch), else its checkpoint."""
    from runner.config import iteration_env_steps

    try:
        per_iteration = iteration_env_steps(config)
        return int(config["total_env_steps"]) // per_iteration * per_iteration
    except (ConfigError, KeyError, TypeError, ValueError):  # no configuration, or one from before a change
        pass
    try:
        if meta and meta.get("iteration"):
            return int(meta["env_steps"] // meta["iteration"] * meta["total_iterations"])
    except (KeyError, TypeError, ValueError, ArithmeticError):  # a damaged record
        pass
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
    progress = _parse_progress(run_dir)
    rows = progress.rows
    meta = read_checkpoint_meta(run_dir)
    total = budget_env_steps(read_run_config(run_dir), meta)
    env_steps = int(rows[-1]["env_steps"]) if rows and math.isfinite(rows[-1]["env_steps"]) else 0
    returns = [r["return_ext_mean"] for r in rows if not math.isnan(r.get("return_ext_mean", math.nan))]
    last_return = returns[-1] if returns else math.nan

    def status(state: str, message: str = "") -> RunStatus:
        return RunStatus(run_dir, state, env_steps, total, last_return, message)

    marker = read_marker(run_dir)
    alive = marker_alive(marker) if marker else False
    if alive or alive is None:
        where = f"pid {marker['pid']} on {marker['hostname']}"
        return status("running", where if alive else f"{where} (another host: not checked from here)")
    problem = _progress_problem(progress, meta)
    error = read_error(run_dir)
    if error is not None:
        return status("failed", error + (f" (and {problem})" if problem else ""))
    if problem:
        return status("damaged", problem + "; relaunch the same command to restore progress.csv from the checkpoint")
    finished = (bool(meta and meta.get("finished")) and isinstance(meta.get("env_steps"), int)
                and (total is None or meta["env_steps"] >= total))
    if finished:
        return status("finished")
    killed = f"killed (pid {marker['pid']} gone, marker left behind)" if marker else ""
    if rows:
        return status("interrupted", (killed or "stopped by a signal") + "; relaunch the same command to resume")
    return status("not started", killed)
