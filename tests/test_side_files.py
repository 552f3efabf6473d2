"""Checkpoints keep replay buffers in side files (runner.run_dir): each save appends only the rows
added since the previous one, and a kill at any moment leaves exactly the last checkpoint that
was renamed into place."""
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from algos.common.buffers import RingBuffer, RingRows
from algos.common.checks import ConfigError
from runner import run_dir as rd
from tests.conftest import through_checkpoint

# name -> (capacity, row shape, dtype): frames, float rows, scalars, wide integers
SPECS = {"frames": (50, (3, 5, 5), np.uint8), "rows": (40, (6,), np.float32),
         "done": (30, (), np.bool_), "ids": (20, (2,), np.int64)}


def make_buffers(specs=SPECS) -> dict[str, RingBuffer]:
    return {name: RingBuffer(cap, shape, dtype) for name, (cap, shape, dtype) in specs.items()}


def random_rows(rng: np.random.Generator, buffer: RingBuffer, n: int) -> np.ndarray:
    shape, dtype = (n, *buffer.data.shape[1:]), buffer.data.dtype
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 200, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def add_all(buffers: dict, rng: np.random.Generator, n: int) -> None:
    for buffer in buffers.values():
        buffer.add(random_rows(rng, buffer, n))


def state_of(buffers: dict, i: int) -> dict:
    """A nested state as train() saves one: buffers inside dicts and a list, beside small things."""
    b = {name: buf.state_dict() for name, buf in buffers.items()}
    return {"iteration": i, "agent": {"weights": torch.full((3,), float(i))},
            "exploration": {"replay": b["frames"], "pools": [b["rows"], {"inner": b["done"]}],
                            "ids": b["ids"]}}


def restore(state: dict, specs=SPECS) -> dict[str, RingBuffer]:
    buffers = make_buffers(specs)
    e = state["exploration"]
    for name, s in {"frames": e["replay"], "rows": e["pools"][0], "done": e["pools"][1]["inner"],
                    "ids": e["ids"]}.items():
        buffers[name].load_state_dict(s)
    return buffers


def assert_same(a: dict, b: dict) -> None:
    """Same rows in the same slots, same counters, and the same behaviour from here on."""
    for name in a:
        x, y = a[name], b[name]
        np.testing.assert_array_equal(x.data, y.data)
        assert x.data.dtype == y.data.dtype and (x.top, x.added) == (y.top, y.added), name
        if x.size:
            np.testing.assert_array_equal(x.sample(np.random.default_rng(7), 25),
                                          y.sample(np.random.default_rng(7), 25))


def same_after_more_adds(a: dict, b: dict, seed: int) -> None:
    """Copies of `a` and `b` given the same new rows stay identical."""
    a2, b2 = ({k: through_rows(v) for k, v in d.items()} for d in (a, b))
    add_all(a2, np.random.default_rng(seed), 13)
    add_all(b2, np.random.default_rng(seed), 13)
    assert_same(a2, b2)


def through_rows(buffer: RingBuffer) -> RingBuffer:
    copy = RingBuffer(len(buffer.data), buffer.data.shape[1:], buffer.data.dtype)
    copy.load_state_dict(buffer.state_dict())
    return copy


def side_chunks(run: os.PathLike) -> dict[str, dict[int, int]]:
    """{key directory/id: {chunk index: size in bytes}} of the side files."""
    side = rd.checkpoint_path(run).parent / rd.SIDE_DIR
    out = {}
    for directory in sorted(side.glob("*/*")):
        out[f"{directory.parent.name}/{directory.name}"] = {
            int(p.stem): p.stat().st_size for p in directory.glob("*.bin")}
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(rd, "CHUNK_ROWS", 8)


@pytest.fixture
def bytes_written(monkeypatch):
    """A counter of the bytes save_checkpoint writes into side files (os.pwrite)."""
    counter = {"bytes": 0}
    real = os.pwrite

    def pwrite(fd, data, offset):
        n = real(fd, data, offset)
        counter["bytes"] += n
        return n

    monkeypatch.setattr(os, "pwrite", pwrite)
    return counter


# -- round trips ---------------------------------------------------------------------------------

def test_round_trip_after_every_save_without_wrap_with_wrap_and_beyond_capacity(tmp_path, small_chunks):
    rng = np.random.default_rng(0)
    buffers = make_buffers()
    # rows added before each save: nothing yet, no wrap, up to the smallest capacity, one wrap of
    # all, a single add larger than every capacity, several adds that wrap more than once, none
    plan = [[0], [10], [10], [25], [7], [130], [35, 40, 45], [], [3]]
    for i, adds in enumerate(plan):
        for n in adds:
            add_all(buffers, rng, n)
        rd.save_checkpoint(tmp_path, state_of(buffers, i), {"iteration": i})
        state = rd.load_checkpoint(tmp_path)
        assert state["iteration"] == i and torch.equal(state["agent"]["weights"], torch.full((3,), float(i)))
        assert isinstance(state["exploration"]["replay"]["rows"], RingRows)
        loaded = restore(state)
        assert_same(buffers, loaded)
        same_after_more_adds(buffers, loaded, seed=i)
        if i == 4:  # from here the run goes on as a resumed process would: from the loaded state
            buffers = loaded
            rd._known.clear()
    assert rd.read_checkpoint_meta(tmp_path) == {"iteration": len(plan) - 1}


def test_state_round_trips_through_torch_save_alone():
    rng = np.random.default_rng(1)
    buffers = make_buffers()
    for n in (17, 60):  # before and after the rings wrap
        add_all(buffers, rng, n)
        saved = through_checkpoint(state_of(buffers, 0))
        assert not saved["exploration"]["replay"]["rows"].live
        loaded = restore(saved)
        assert_same(buffers, loaded)
        same_after_more_adds(buffers, loaded, seed=n)
        assert_same(buffers, restore(state_of(buffers, 0)))  # straight from the live handles


def test_a_handle_taken_before_an_add_is_refused():
    buffer = RingBuffer(10, (2,))
    buffer.add(np.ones((3, 2), np.float32))
    state = buffer.state_dict()
    buffer.add(np.ones((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="changed after its state_dict"):
        through_checkpoint(state)


def test_a_buffer_of_another_shape_or_an_old_style_state_is_refused():
    state = RingBuffer(10, (3,)).state_dict()
    with pytest.raises(ConfigError, match="does not fit"):
        RingBuffer(10, (4,)).load_state_dict(state)
    with pytest.raises(ConfigError, match="older format"):
        RingBuffer(10, (3,)).load_state_dict({"data": np.zeros((0, 3)), "top": 0, "added": 0})


def test_another_capacity_keeps_each_row_in_its_slot():
    rng = np.random.default_rng(2)
    small = RingBuffer(8, (2,))
    for n in (5, 8):
        small.add(rng.standard_normal((n, 2)).astype(np.float32))
    big = RingBuffer(20, (2,))
    big.load_state_dict(through_checkpoint(small.state_dict()))
    assert (big.added, big.top) == (13, 13)
    np.testing.assert_array_equal(big.data[5:13], small.data[np.arange(5, 13) % 8])


# -- only new rows are written -----------------------------------------------------------------

def test_later_saves_append_only_new_rows_and_old_chunks_are_deleted(tmp_path, monkeypatch, bytes_written):
    monkeypatch.setattr(rd, "CHUNK_ROWS", 100)
    rng = np.random.default_rng(3)
    buffer = RingBuffer(1000, (8,), np.float32)  # 32-byte rows
    row = 32

    def save(i):
        bytes_written["bytes"] = 0
        rd.save_checkpoint(tmp_path, {"replay": buffer.state_dict(), "i": i}, None)
        loaded = RingBuffer(1000, (8,), np.float32)
        loaded.load_state_dict(rd.load_checkpoint(tmp_path)["replay"])
        assert_same({"b": buffer}, {"b": loaded})
        (directory, chunks), = side_chunks(tmp_path).items()
        return bytes_written["bytes"], chunks

    buffer.add(rng.standard_normal((350, 8)).astype(np.float32))
    written, chunks = save(0)
    assert written == 350 * row and chunks == {0: 100 * row, 1: 100 * row, 2: 100 * row, 3: 50 * row}
    for i in range(1, 4):
        buffer.add(rng.standard_normal((30, 8)).astype(np.float32))
        written, chunks = save(i)
        assert written == 30 * row                      # only the new rows
    assert chunks == {0: 100 * row, 1: 100 * row, 2: 100 * row, 3: 100 * row, 4: 40 * row}
    assert save(4)[0] == 0                              # nothing new, nothing written
    assert rd.checkpoint_path(tmp_path).stat().st_size < 20_000  # the rows are not in last.pt

    for n in (550, 500):  # added 1490: rows [490, 1490) held
        buffer.add(rng.standard_normal((n, 8)).astype(np.float32))
    written, chunks = save(5)
    assert written == 1000 * row                        # wrapped by more than capacity: capacity rows
    assert sorted(chunks) == list(range(0, 15))         # prev.pt (added 440) still needs rows [0, 440)
    assert chunks[14] == 90 * row
    buffer.add(rng.standard_normal((120, 8)).astype(np.float32))  # added 1610: rows [610, 1610)
    written, chunks = save(6)
    # last.pt needs rows [610, 1610), prev.pt [490, 1490): chunks 0-3 (rows < 400) are gone
    assert written == 120 * row and sorted(chunks) == list(range(4, 17))
    buffer.add(rng.standard_normal((10, 8)).astype(np.float32))   # prev.pt now needs [610, 1610)
    written, chunks = save(7)
    assert written == 10 * row and sorted(chunks) == list(range(6, 17))


def test_a_new_buffer_in_a_directory_with_an_old_checkpoint_does_not_reuse_its_rows(tmp_path, small_chunks):
    """resume=false into an old run directory: the rows on disk are another buffer's."""
    rng = np.random.default_rng(4)
    old = make_buffers()
    add_all(old, rng, 20)
    rd.save_checkpoint(tmp_path, state_of(old, 1), None)
    before = set(side_chunks(tmp_path))
    new = make_buffers()
    add_all(new, rng, 25)
    rd.save_checkpoint(tmp_path, state_of(new, 1), None)
    assert_same(new, restore(rd.load_checkpoint(tmp_path)))
    after = set(side_chunks(tmp_path))
    assert before < after and len(after) == 2 * len(before)  # new directories; the old ones are prev.pt's
    rd.save_checkpoint(tmp_path, state_of(new, 2), None)
    assert set(side_chunks(tmp_path)) == after - before      # once prev.pt is no longer the old run's
    # What train() does for resume=false: no generation of the old run is left to fall back to.
    rd.discard_checkpoints(tmp_path)
    assert rd.load_checkpoint(tmp_path) is None and side_chunks(tmp_path) == {}
    rd.save_checkpoint(tmp_path, state_of(old, 1), None)
    assert not after & set(side_chunks(tmp_path)) and not rd.prev_checkpoint_path(tmp_path).exists()
    assert_same(old, restore(rd.load_checkpoint(tmp_path)))
    # Two processes resuming the same checkpoint and diverging: the second's rows are its own.
    a, b = restore(rd.load_checkpoint(tmp_path)), restore(rd.load_checkpoint(tmp_path))
    add_all(a, rng, 5)
    rd.save_checkpoint(tmp_path, state_of(a, 2), None)
    add_all(b, rng, 9)
    rd.save_checkpoint(tmp_path, state_of(b, 2), None)
    assert_same(b, restore(rd.load_checkpoint(tmp_path)))


# -- crash safety --------------------------------------------------------------------------------

def in_child(fn) -> int:
    """Run fn() in a forked child (which may os._exit anywhere); returns its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def crash_at(point: str):
    """Patch (in the child) the system call where `point` is, so that the process dies there."""
    real_replace, real_pwrite, real_unlink = os.replace, os.pwrite, os.unlink
    calls = {"pwrite": 0}

    def replace(src, dst):
        last_pt = os.fspath(dst).endswith(rd.CHECKPOINT_NAME)
        prev_pt = os.fspath(dst).endswith(rd.PREV_CHECKPOINT_NAME)
        if point == "before_rename" and (last_pt or prev_pt):  # before the first of the renames
            os._exit(9)
        real_replace(src, dst)
        if point == "between_renames" and prev_pt:
            os._exit(9)  # last.pt is prev.pt now, the new file not yet last.pt
        if point == "after_rename" and last_pt:
            os._exit(9)
        if point == "meta" and os.fspath(dst).endswith(rd.META_NAME):
            os._exit(9)

    def pwrite(fd, data, offset):
        calls["pwrite"] += 1
        if point == "append" and calls["pwrite"] == 3:
            real_pwrite(fd, memoryview(data)[:len(data) // 2], offset)  # a torn write
            os._exit(9)
        return real_pwrite(fd, data, offset)

    def unlink(path, *args, **kwargs):
        if point == "prune":
            os._exit(9)
        real_unlink(path, *args, **kwargs)

    os.replace, os.pwrite, os.unlink = replace, pwrite, unlink


def copies(buffers: dict) -> dict[str, RingBuffer]:
    return {k: through_rows(v) for k, v in buffers.items()}


def previous_generation(run: Path, scratch: Path) -> dict | None:
    """The state prev.pt holds (None without one), as load_checkpoint falls back to it when
    last.pt is lost: on a copy of the run's checkpoints, so that the run's files stay as they are."""
    copy = Path(tempfile.mkdtemp(dir=scratch))
    try:
        shutil.copytree(rd.checkpoint_path(run).parent, copy / rd.CHECKPOINT_DIR, symlinks=True)
        rd.checkpoint_path(copy).unlink(missing_ok=True)
        return rd.load_checkpoint(copy)
    finally:
        shutil.rmtree(copy)


@pytest.mark.parametrize("point,survives", [("append", "old"), ("before_rename", "old"),
                                            ("between_renames", "old"), ("after_rename", "new"),
                                            ("prune", "new"), ("meta", "new")])
def test_a_process_killed_during_a_save_leaves_one_whole_checkpoint(tmp_path, small_chunks, point, survives, caplog):
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    rng = np.random.default_rng(5)
    buffers = make_buffers()
    add_all(buffers, rng, 25)
    rd.save_checkpoint(run, state_of(buffers, 0), {"iteration": 0})
    older = copies(buffers)
    add_all(buffers, rng, 40)  # every ring wraps, some chunks fall out of the window
    rd.save_checkpoint(run, state_of(buffers, 1), {"iteration": 1})
    old = copies(buffers)
    add_all(buffers, rng, 40)

    def save():
        crash_at(point)
        rd.save_checkpoint(run, state_of(buffers, 2), {"iteration": 2})

    assert in_child(save) == 9
    caplog.clear()
    state = rd.load_checkpoint(run)
    assert state["iteration"] == (1 if survives == "old" else 2)
    assert_same(old if survives == "old" else buffers, restore(state))
    if point == "between_renames":  # only prev.pt is left: it loads, with a warning naming last.pt
        assert not rd.checkpoint_path(run).exists()
        assert rd.last_loaded_path(run) == rd.prev_checkpoint_path(run)
        assert f"checkpoint {rd.checkpoint_path(run)} is missing" in caplog.text
    else:  # both generations whole: prev.pt is the save before last.pt's
        assert rd.last_loaded_path(run) == rd.checkpoint_path(run) and not caplog.text
        prev = previous_generation(run, scratch)
        assert prev["iteration"] == state["iteration"] - 1
        assert_same(older if survives == "old" else old, restore(prev))
    loaded = restore(state)
    # The run resumes from what it loaded: it appends after the rows of the checkpoint in place
    # (over whatever the killed process left) and the next load gives exactly its state, the
    # previous generation the one before.
    for i in range(3, 6):
        before = copies(loaded)
        add_all(loaded, rng, 11)
        rd.save_checkpoint(run, state_of(loaded, i), {"iteration": i})
        assert_same(loaded, restore(rd.load_checkpoint(run)))
        assert_same(before, restore(previous_generation(run, scratch)))
        rd._known.clear()  # the next save as a new process would do it


def test_a_failed_rename_in_this_process_leaves_the_previous_checkpoint(tmp_path, small_chunks, monkeypatch):
    rng = np.random.default_rng(6)
    buffers = make_buffers()
    add_all(buffers, rng, 12)
    rd.save_checkpoint(tmp_path, state_of(buffers, 1), None)
    old = restore(rd.load_checkpoint(tmp_path))
    add_all(buffers, rng, 33)
    real = os.replace

    def replace(src, dst):
        if os.fspath(dst).endswith(rd.CHECKPOINT_NAME):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        rd.save_checkpoint(tmp_path, state_of(buffers, 2), None)
    assert_same(old, restore(rd.load_checkpoint(tmp_path)))
    monkeypatch.setattr(os, "replace", real)
    add_all(buffers, rng, 4)
    rd.save_checkpoint(tmp_path, state_of(buffers, 3), None)
    assert_same(buffers, restore(rd.load_checkpoint(tmp_path)))


KILL_SPECS = {"frames": (300, (4, 6, 6), np.uint8), "rows": (200, (7,), np.float32),
              "done": (120, (), np.bool_), "ids": (90, (2,), np.int64)}


def rows_of_iteration(buffers: dict, i: int) -> None:
    """Iteration i's adds, the same whichever process makes them: 1 to 450 rows (some wrap every
    ring more than once)."""
    rng = np.random.default_rng(1000 + i)
    add_all(buffers, rng, int(rng.integers(1, 451)))


def saver(run, report_fd: int) -> None:
    """Resume from the checkpoint, then forever: one iteration's rows, a checkpoint, a report."""
    state = rd.load_checkpoint(run)
    buffers, i = (restore(state, KILL_SPECS), state["iteration"]) if state else (make_buffers(KILL_SPECS), 0)
    while True:
        i += 1
        rows_of_iteration(buffers, i)
        rd.save_checkpoint(run, state_of(buffers, i), {"iteration": i})
        os.write(report_fd, f"{i}\n".encode())


def test_kill_9_at_random_moments_while_saving(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "CHUNK_ROWS", 32)
    pace = random.Random(0)
    expected, at = make_buffers(KILL_SPECS), 0  # the buffers after iteration `at`, made here
    snapshots = {0: copies(expected)}  # the buffers after each iteration
    scratch = tmp_path.parent / f"{tmp_path.name}-scratch"
    scratch.mkdir()
    loaded_at = []
    for trial in range(30):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                saver(tmp_path, write_fd)
            finally:
                os._exit(3)
        os.close(write_fd)
        # Paced by the saver's own reports, not the clock, so that a loaded machine kills as often
        # mid-save and the run gets as far: wait for 0-3 saves, then kill at a random moment after.
        with os.fdopen(read_fd) as f:
            reported = [int(f.readline()) for _ in range(pace.randint(0, 3))]
            time.sleep(pace.uniform(0.0, 0.06))
            os.kill(pid, signal.SIGKILL)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGKILL, "the saver stopped itself"
            reported += [int(line) for line in f.read().split()]
        state = rd.load_checkpoint(tmp_path)
        if state is None:
            assert not reported
            continue
        i = state["iteration"]
        # The last save that returned, or the one after it if the kill came after its rename.
        last = reported[-1] if reported else at
        assert last <= i <= last + 1 and i >= at
        while at < i:
            at += 1
            rows_of_iteration(expected, at)
            snapshots[at] = copies(expected)
        assert_same(expected, restore(state, KILL_SPECS))
        if rd.checkpoint_path(tmp_path).exists():  # (else killed between the renames: prev.pt loaded)
            prev = previous_generation(tmp_path, scratch)
            assert (prev is None) == (i == 1)
            if prev is not None:  # the save before last.pt's, whole
                assert prev["iteration"] == i - 1
                assert_same(snapshots[i - 1], restore(prev, KILL_SPECS))
        meta = rd.read_checkpoint_meta(tmp_path)  # written after last.pt: it may lag behind
        assert (meta or {"iteration": 0})["iteration"] <= i
        loaded_at.append(i)
    assert len(loaded_at) >= 20 and loaded_at[-1] >= 30, loaded_at


# -- speed -------------------------------------------------------------------------------------

def test_a_checkpoint_after_the_first_writes_only_new_rows_of_a_1m_replay(tmp_path, bytes_written):
    """A 1M-transition replay (obs 17 + action 6 + next obs 17 + reward + done = 42 float32,
    168 MB) with 1000 new rows between checkpoints: every checkpoint after the first < 1 s."""
    rng = np.random.default_rng(7)
    replay = RingBuffer(1_000_000, (42,), np.float32)
    for _ in range(4):
        replay.add(rng.standard_normal((250_000, 42), dtype=np.float32))
    net = {"w": torch.zeros(256, 256), "b": torch.zeros(256)}

    def save(i):
        bytes_written["bytes"] = 0
        t0 = time.perf_counter()
        rd.save_checkpoint(tmp_path, {"iteration": i, "agent": net, "exploration": {"replay": replay.state_dict()}},
                           {"iteration": i})
        return time.perf_counter() - t0, bytes_written["bytes"]

    first, first_bytes = save(0)
    later = []
    for i in range(1, 6):
        replay.add(rng.standard_normal((1000, 42), dtype=np.float32))
        seconds, written = save(i)
        assert written == 1000 * 42 * 4
        later.append(seconds)
    t0 = time.perf_counter()
    state = rd.load_checkpoint(tmp_path)
    load_s = time.perf_counter() - t0
    print(f"\n1M x 42 float32 replay: first checkpoint {first:.2f} s ({first_bytes / 1e6:.0f} MB), later "
          f"checkpoints (1000 new rows) {min(later) * 1e3:.0f}-{max(later) * 1e3:.0f} ms, load {load_s:.2f} s, "
          f"last.pt {rd.checkpoint_path(tmp_path).stat().st_size / 1e3:.0f} kB")
    assert first_bytes == 1_000_000 * 42 * 4
    assert max(later) < 1.0
    rows = state["exploration"]["replay"]["rows"]
    assert (rows.added, rows.top) == (1_005_000, replay.top)
    np.testing.assert_array_equal(rows.slots(), replay.data)
