"""Coverage maps: where in the state space the training states of each iteration were.

An environment declares two coordinates that show exploration in its conf/env/<env>.yaml:

    coverage:
      x: {name: torso x, source: qpos, index: 0, range: [-10, 10]}
      y: {name: torso z, source: qpos, index: 1, range: [-1, 1]}
      bins: 32               # or [bins_x, bins_y]

or `coverage: null` (no map; a config without the key has none either). Each axis reads one
number per env step from a source (SOURCES): `obs`, `obs_angle` and `episode_step` come from the
rollout itself (no per-step cost); `qpos` and `attribute` are read from the env by the collector at
the time of each step, only when an axis declares them. The range is cut into equal bins; a value
outside it is counted in the edge bin on its side (a NaN in the first bin), unless `wrap: true`
declares the coordinate periodic (an angle): then it is wrapped into the range, whose width is the
period. The block is validated before any work (`coverage_spec`, then `CoverageCounter` against the
built env), naming the key: env.coverage.x.source, ...

Every state s_t the agent acted in during an iteration counts once (whole paths: the kept steps
only), so a row sums to the iteration's env steps. The run directory holds:

- coverage.json: the header (COVERAGE_FORMAT, the axes as declared, bins, dtype, shape of a row,
  lost_iterations);
- coverage.bin: raw rows, one per iteration in order (row i holds iteration i + 1), each a C-order
  [bins_y, bins_x] little-endian int32 array, appended and flushed every iteration.

Crash safety as progress.csv's: the rows a checkpoint covers are fsync'ed before it is written, and
the checkpoint keeps the CRC-32 of each row (`CoverageLog.snapshot`); a resume truncates the file to
the checkpoint's iteration (the rows of a killed process past it are recomputed, identically). A row
the checkpoint covers that is missing or fails its CRC cannot be recomputed: it is zeroed and its
iteration listed in `lost_iterations` (with a warning). A run without coverage writes no files.

The report draws them with `draw_coverage_maps` (early vs late training, per method, over seeds);
`read_coverage` reads one run's rows.
"""
from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorebench.checks import require, require_choice

log = logging.getLogger("explorebench")

HEADER_NAME, ROWS_NAME = "coverage.json", "coverage.bin"
COVERAGE_FORMAT = "explorebench coverage 1"
DTYPE = np.dtype("<i4")
MAX_BINS = 1024  # per axis: a row of 1024 x 1024 int32 is already 4 MiB per iteration
EARLY_LATE_FRACTION = 0.1  # the maps' windows: the first and the last 10% of iterations
# source -> what the axis reads; the first three from the rollout, the others from the env at each step
SOURCES = {
    "obs": "entry `index` of the (flat) observation",
    "obs_angle": "atan2(obs[index[0]], obs[index[1]]): an angle given by its sine and cosine entries",
    "episode_step": "the step's index within its episode (0 at a reset)",
    "qpos": "entry `index` of the MuJoCo qpos of the env's robot (env.unwrapped.data.qpos)",
    "attribute": "the number env.unwrapped.<attribute> (a plain attribute the env keeps)",
}
ENV_SOURCES = ("qpos", "attribute")
AXIS_KEYS = ("name", "source", "index", "attribute", "range", "wrap")


@dataclass(frozen=True)
class Axis:
    """One coordinate of the map, as declared (validated by `coverage_spec`)."""

    key: str  # env.coverage.x or env.coverage.y, for messages
    name: str
    source: str
    index: int | tuple[int, int] | None
    attribute: str | None
    low: float
    high: float
    wrap: bool

    def as_dict(self) -> dict:
        out = {"name": self.name, "source": self.source}
        if self.index is not None:
            out["index"] = list(self.index) if isinstance(self.index, tuple) else self.index
        if self.attribute is not None:
            out["attribute"] = self.attribute
        return {**out, "range": [self.low, self.high], "wrap": self.wrap}


@dataclass(frozen=True)
class CoverageSpec:
    x: Axis
    y: Axis
    bins_x: int
    bins_y: int

    @property
    def shape(self) -> tuple[int, int]:
        """A row's shape: [bins_y, bins_x] (y is the row of an image, x its column)."""
        return self.bins_y, self.bins_x

    def header(self, lost_iterations=()) -> dict:
        return {"format": COVERAGE_FORMAT, "x": self.x.as_dict(), "y": self.y.as_dict(),
                "bins": [self.bins_x, self.bins_y], "shape": list(self.shape), "dtype": DTYPE.str,
                "row_bytes": self.bins_x * self.bins_y * DTYPE.itemsize,
                "rows": "one per iteration, in order (row i holds iteration i + 1), C order [bins_y, bins_x]",
                "outside_the_range": "counted in the edge bins (wrap: true wraps a periodic coordinate instead)",
                "lost_iterations": sorted(int(i) for i in lost_iterations)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _axis(block: dict, which: str) -> Axis:
    key = f"env.coverage.{which}"
    axis = block.get(which)
    require(isinstance(axis, dict), key, f"must be a mapping with keys name, source, range (and index or "
            f"attribute as the source needs), got {axis!r}")
    for name in axis:
        require(name in AXIS_KEYS, f"{key}.{name}", f"not a coverage axis key; the keys: {', '.join(AXIS_KEYS)}")
    name = axis.get("name")
    require(isinstance(name, str) and name.strip() != "", f"{key}.name",
            f"must be the coordinate's name for the map's axis (e.g. 'torso x'), got {name!r}")
    source = axis.get("source")
    require_choice(f"{key}.source", source, list(SOURCES))
    index, attribute = axis.get("index"), axis.get("attribute")
    if source in ("obs", "qpos"):
        require(_is_int(index) and index >= 0, f"{key}.index",
                f"must be an integer >= 0 (source {source}: {SOURCES[source]}), got {index!r}")
    elif source == "obs_angle":
        ok = isinstance(index, (list, tuple)) and len(index) == 2 and all(_is_int(i) and i >= 0 for i in index)
        require(ok, f"{key}.index", f"must be [sine index, cosine index] of the observation (source obs_angle: "
                f"{SOURCES[source]}), got {index!r}")
        index = (int(index[0]), int(index[1]))
    else:
        require(index is None, f"{key}.index", f"source {source} takes no index ({SOURCES[source]})")
    if source == "attribute":
        require(isinstance(attribute, str) and attribute.isidentifier(), f"{key}.attribute",
                f"must name the env's attribute to read (source attribute: {SOURCES[source]}), got {attribute!r}")
    else:
        require(attribute is None, f"{key}.attribute", "is read by source attribute only; this axis has source "
                f"{source}")
    span = axis.get("range")
    ok = isinstance(span, (list, tuple)) and len(span) == 2 and all(_is_number(v) for v in span)
    require(ok and span[0] < span[1], f"{key}.range", f"must be [low, high], finite numbers with low < high, "
            f"got {span!r}")
    wrap = axis.get("wrap", False)
    require(isinstance(wrap, bool), f"{key}.wrap", f"must be true or false, got {wrap!r}")
    return Axis(key, name, source, index, attribute, float(span[0]), float(span[1]), wrap)


def coverage_spec(env_cfg) -> CoverageSpec | None:
    """The env config's validated `coverage` block; None when it is null or absent (no map).
    ConfigError naming the key (env.coverage.x.source, ...) for a bad block."""
    from omegaconf import DictConfig, OmegaConf

    block = env_cfg.get("coverage") if hasattr(env_cfg, "get") else None
    if block is None:
        return None
    if isinstance(block, DictConfig):
        block = OmegaConf.to_container(block, resolve=True)
    require(isinstance(block, dict), "env.coverage", f"must be null or a mapping with keys x, y, bins, got {block!r}")
    for name in block:
        require(name in ("x", "y", "bins"), f"env.coverage.{name}", "not a coverage key; the keys: x, y, bins")
    bins = block.get("bins")
    pair = [bins, bins] if _is_int(bins) else bins
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_is_int(b) and 1 <= b <= MAX_BINS for b in pair)
    require(ok, "env.coverage.bins", f"must be an integer in [1, {MAX_BINS}] or [bins_x, bins_y] of such, got {bins!r}")
    return CoverageSpec(_axis(block, "x"), _axis(block, "y"), int(pair[0]), int(pair[1]))


class CoverageCounter:
    """Counts the training states of an iteration on the spec's grid.

    Built against the vector env (checks each axis against it, before any work). The collector calls
    `read_envs` before each env step when `reads_envs` (an axis reads the env), and `add` with each
    collection's rollout; the runner takes one row per iteration with `take_row`. Reads nothing
    random and changes no env state."""

    def __init__(self, spec: CoverageSpec, vec_env):
        self.spec = spec
        self.enabled = True  # False: the collector neither reads nor counts (a run that predates coverage)
        self.axes = (spec.x, spec.y)
        self.env_axes = [a for a in self.axes if a.source in ENV_SOURCES]
        self.reads_envs = bool(self.env_axes)
        self.counts = np.zeros(spec.bins_x * spec.bins_y, np.int64)
        space = vec_env.single_observation_space
        for axis in self.axes:
            if axis.source in ("obs", "obs_angle"):
                shape = getattr(space, "shape", None)
                require(shape is not None and len(shape) == 1, f"{axis.key}.source",
                        f"{axis.source} needs flat vector observations; this env's have shape {shape}")
                for i in (axis.index if isinstance(axis.index, tuple) else (axis.index,)):
                    require(i < shape[0], f"{axis.key}.index", f"the observation has {shape[0]} entries, got {i}")
        self.unwrapped = []
        if self.reads_envs:
            envs = getattr(vec_env, "envs", None)
            require(envs is not None, f"{self.env_axes[0].key}.source",
                    f"{self.env_axes[0].source} reads each env and needs gymnasium's SyncVectorEnv; this env "
                    f"steps as {type(vec_env).__name__}: use an observation source")
            self.unwrapped = [e.unwrapped for e in envs]
            for axis in self.env_axes:
                self._check_env_axis(axis, self.unwrapped[0])
        self.read_env = self._reader(self.env_axes)
        self.missing = (math.nan,) * len(self.env_axes)

    @staticmethod
    def _check_env_axis(axis: Axis, env) -> None:
        if axis.source == "qpos":
            data = getattr(env, "data", None)
            qpos = getattr(data, "qpos", None)
            require(qpos is not None, f"{axis.key}.source", f"qpos needs a MuJoCo env (env.unwrapped.data.qpos); "
                    f"{type(env).__name__} has none: use source obs or attribute")
            require(axis.index < len(qpos), f"{axis.key}.index",
                    f"{type(env).__name__}'s qpos has {len(qpos)} entries, got {axis.index}")
        else:
            value = getattr(env, axis.attribute, None)
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            require(ok, f"{axis.key}.attribute", f"{type(env).__name__} has no number attribute "
                    f"{axis.attribute!r} (got {type(value).__name__})")

    @staticmethod
    def _reader(axes: list[Axis]):
        """One env's env-read coordinates as a tuple: one call per env and step, which is what the
        per-step cost is made of (the qpos-only readers index MjData directly). The env's MjData is
        replaced when a snapshot is restored (runner/env_state.py): it is looked up at every read."""
        if axes and all(a.source == "qpos" for a in axes):
            if len(axes) == 1:
                i = axes[0].index
                return lambda env: (env.data.qpos[i],)
            i, j = axes[0].index, axes[1].index

            def read_qpos(env):
                qpos = env.data.qpos
                return qpos[i], qpos[j]
            return read_qpos
        getters = [(lambda env, i=a.index: env.data.qpos[i]) if a.source == "qpos" else
                   (lambda env, name=a.attribute: getattr(env, name)) for a in axes]
        return lambda env: tuple(get(env) for get in getters)

    def read_envs(self, kept: np.ndarray) -> list[tuple]:
        """The env-read coordinates of every env now, before its step (NaN for envs not on a path)."""
        read, missing = self.read_env, self.missing
        return [read(env) if on else missing for env, on in zip(self.unwrapped, kept.tolist())]

    def values(self, axis: Axis, rollout, env_values: np.ndarray | None) -> np.ndarray:
        """The axis' coordinate of each step of `rollout`, [T, N]."""
        if axis.source == "obs":
            return rollout.obs[..., axis.index]
        if axis.source == "obs_angle":
            return np.arctan2(rollout.obs[..., axis.index[0]], rollout.obs[..., axis.index[1]])
        if axis.source == "episode_step":
            return rollout.episode_step
        return env_values[..., self.env_axes.index(axis)]

    def add(self, rollout, env_values: np.ndarray | None = None) -> None:
        """Count every step of one collection: `env_values` [T, N, env axes], in the rollout's layout."""
        x = bin_index(self.values(self.spec.x, rollout, env_values), self.spec.x, self.spec.bins_x)
        y = bin_index(self.values(self.spec.y, rollout, env_values), self.spec.y, self.spec.bins_y)
        self.counts += np.bincount((y * self.spec.bins_x + x).reshape(-1), minlength=len(self.counts))

    def take_row(self) -> np.ndarray:
        """This iteration's counts [bins_y, bins_x] (int32); the next iteration starts from zero."""
        row = self.counts.astype(DTYPE).reshape(self.spec.shape)
        self.counts[:] = 0
        return row


def bin_index(values, axis: Axis, bins: int) -> np.ndarray:
    """The bin of each value: equal bins over [low, high]; outside it the edge bins (or wrapped, for a
    periodic axis); NaN in the first bin."""
    v = np.asarray(values, np.float64)
    if axis.wrap:
        v = axis.low + np.mod(v - axis.low, axis.high - axis.low)
    scaled = np.floor((v - axis.low) * (bins / (axis.high - axis.low)))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=bins - 1, neginf=0.0)
    return np.clip(scaled, 0, bins - 1).astype(np.int64)


# -- the run directory's files --------------------------------------------------------------------

def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err


def remove_coverage_files(run_dir) -> None:
    """A fresh run without coverage: no files of an earlier run in the directory stay behind."""
    for name in (HEADER_NAME, ROWS_NAME, HEADER_NAME + ".tmp", ROWS_NAME + ".tmp"):
        (Path(run_dir) / name).unlink(missing_ok=True)


class CoverageLog:
    """coverage.json + coverage.bin of one run (see the module docstring)."""

    def __init__(self, run_dir, spec: CoverageSpec):
        self.run_dir, self.spec = Path(run_dir), spec
        self.header_path, self.path = self.run_dir / HEADER_NAME, self.run_dir / ROWS_NAME
        self.row_bytes = spec.bins_x * spec.bins_y * DTYPE.itemsize
        self.crc: list[int] = []
        self.lost: set[int] = set()
        self.file = None

    def _write_header(self) -> None:
        text = json.dumps(self.spec.header(self.lost), indent=1) + "\n"
        try:
            if self.header_path.read_text() == text:
                return  # a relaunch leaves an intact run's files as they were
        except (OSError, UnicodeDecodeError):
            pass
        _write_atomically(self.header_path, text)

    def start_fresh(self) -> None:
        self.crc, self.lost = [], set()
        self._write_header()
        self.file = open(self.path, "wb")

    def resume(self, iteration: int, saved: dict | None) -> None:
        """Keep the rows of iterations <= `iteration` (the checkpoint's), checked against the CRCs the
        checkpoint saved; drop the rest. A covered row that is missing or damaged is zeroed and listed
        in the header's lost_iterations."""
        try:
            data = self.path.read_bytes()[:iteration * self.row_bytes]
        except FileNotFoundError:
            data = b""
        rows = [data[i * self.row_bytes:(i + 1) * self.row_bytes] for i in range(iteration)]
        saved_crc = list(saved["crc32"]) if saved else []
        self.lost = {int(i) for i in (saved or {}).get("lost", ()) if i <= iteration}
        damaged = [i + 1 for i, row in enumerate(rows)
                   if len(row) < self.row_bytes or (i < len(saved_crc) and zlib.crc32(row) != saved_crc[i])]
        zero = bytes(self.row_bytes)
        for i in damaged:
            rows[i - 1] = zero
        self.lost |= set(damaged)
        self.crc = [zlib.crc32(row) for row in rows]
        if damaged:
            log.warning("%s: the rows of iterations %s were missing or damaged and cannot be recomputed: zeroed "
                        "and listed in %s's lost_iterations", self.path, _spans(damaged), HEADER_NAME)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(b"".join(rows))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        self._write_header()
        self.file = open(self.path, "r+b" if self.path.exists() else "wb")
        if os.fstat(self.file.fileno()).st_size != iteration * self.row_bytes:
            self.file.truncate(iteration * self.row_bytes)  # rows of a killed process past the checkpoint
        self.file.seek(0, os.SEEK_END)

    def append(self, row: np.ndarray) -> None:
        data = np.ascontiguousarray(row, DTYPE).tobytes()
        try:
            self.file.write(data)
            self.file.flush()  # a killed process loses nothing already written
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from err
        self.crc.append(zlib.crc32(data))

    def sync(self) -> None:
        """fsync the rows written so far (before a checkpoint that covers them)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def snapshot(self) -> dict:
        """For the checkpoint: the CRC-32 of every row so far and the lost iterations."""
        return {"rows": len(self.crc), "crc32": np.asarray(self.crc, np.uint32), "lost": sorted(self.lost)}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _spans(iterations: list[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7'."""
    spans, start = [], None
    for i, it in enumerate(iterations):
        start = it if start is None else start
        if i + 1 == len(iterations) or iterations[i + 1] != it + 1:
            spans.append(f"{start}-{it}" if it != start else str(it))
            start = None
    return ", ".join(spans)


def read_coverage(run_dir) -> tuple[dict, np.ndarray] | None:
    """(header, counts [iterations, bins_y, bins_x]) of a run, or None when it has no coverage files (or
    an unreadable header). Rows of a running or killed run past its checkpoint are included; a partly
    written last row is not."""
    run_dir = Path(run_dir)
    try:
        header = json.loads((run_dir / HEADER_NAME).read_text())
        shape = tuple(int(n) for n in header["shape"])
        dtype = np.dtype(header["dtype"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        data = (run_dir / ROWS_NAME).read_bytes()
    except FileNotFoundError:
        data = b""
    row_bytes = shape[0] * shape[1] * dtype.itemsize
    n = len(data) // row_bytes
    return header, np.frombuffer(data[:n * row_bytes], dtype).reshape(n, *shape).astype(np.int64)


def _same_grid(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("x", "y", "bins", "shape"))


def early_late_counts(counts: np.ndarray, fraction: float = EARLY_LATE_FRACTION) -> tuple[np.ndarray, np.ndarray, int]:
    """The visits of the first and of the last `fraction` of a run's iterations (at least one
    iteration each), and that window's length in iterations."""
    k = max(1, math.ceil(fraction * len(counts)))
    return counts[:k].sum(0), counts[-k:].sum(0), k


def draw_coverage_maps(groups: dict[str, list[Path]], out: Path, title: str) -> list[Path]:
    """One environment's figure: a row per method (`groups`: label -> its run directories, the seeds),
    columns early (the first 10% of each run's iterations) and late (the last 10%), each the visits
    summed over the seeds and normalised to a fraction of all visits in the panel, on one log colour
    scale for the whole figure (cells never visited are left blank). Saves `out` as PNG and the same
    stem as PDF; returns their paths. Runs without coverage are skipped (and runs on another grid than
    the first one's, with a warning); no run with coverage: no figure, []."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    header, panels = None, []
    for label, dirs in groups.items():
        early, late, seeds, iterations = 0, 0, 0, set()
        for run_dir in dirs:
            got = read_coverage(run_dir)
            if got is None or len(got[1]) == 0:
                continue
            if header is None:
                header = got[0]
            elif not _same_grid(got[0], header):
                log.warning("%s: its coverage grid differs from the first run's; left out of %s", run_dir, out)
                continue
            e, la, _ = early_late_counts(got[1])
            early, late, seeds = early + e, late + la, seeds + 1
            iterations.add(len(got[1]))
        if seeds:
            panels.append((label, seeds, iterations, early, late))
    if not panels:
        return []
    fractions = [[c / max(c.sum(), 1) for c in (early, late)] for *_, early, late in panels]
    positive = [f[f > 0] for row in fractions for f in row if (f > 0).any()]
    vmax = max((p.max() for p in positive), default=1.0)
    vmin = max(min((p.min() for p in positive), default=vmax), vmax * 1e-6)
    vmin = min(vmin, vmax / 10)  # a colour scale of at least one decade
    x, y = header["x"], header["y"]
    extent = (*x["range"], *y["range"])
    fig, axes = plt.subplots(len(panels), 2, figsize=(9.5, 3.6 * len(panels) + 0.6), squeeze=False)
    image = None
    for row, ((label, seeds, iterations, *_), pair) in enumerate(zip(panels, fractions)):
        runs = f"{seeds} seed{'s' * (seeds > 1)}"
        length = f"{min(iterations)}" if len(iterations) == 1 else f"{min(iterations)}-{max(iterations)}"
        for col, (fraction, window) in enumerate(zip(pair, ("early", "late"))):
            ax = axes[row, col]
            shown = np.ma.masked_less_equal(fraction, 0)
            if shown.count():
                image = ax.imshow(shown, origin="lower", extent=extent, aspect="auto", interpolation="nearest",
                                  cmap="viridis", norm=LogNorm(vmin=vmin, vmax=vmax))
            else:
                ax.text(0.5, 0.5, "no visits", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(*x["range"])
            ax.set_ylim(*y["range"])
            ax.set_facecolor("#eeeeee")
            ax.set_xlabel(x["name"])
            ax.set_ylabel(f"{label} ({runs})\n{y['name']}" if col == 0 else y["name"])
            if row == 0:
                which = "first" if window == "early" else "last"
                ax.set_title(f"{window}: {which} {EARLY_LATE_FRACTION:.0%} of {length} iterations")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="fraction of visits (log scale)", shrink=0.9)
    fig.suptitle(f"{title}\nvisits of training states; values outside the axes' ranges in the edge bins",
                 fontsize="medium")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths

