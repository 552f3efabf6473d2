"""Damaged run files (runner.run_dir): a damaged last.pt falls back to prev.pt, a lost last.json is
rebuilt, a full disk leaves the checkpoint as it was, a zombie is not running, the run lock
excludes another process, and a damaged progress.csv shows as "damaged"."""
import errno
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from algos.common.buffers import RingBuffer, RingRows
from runner import run_dir as rd
from tests.conftest import through_checkpoint
from tests.test_status import fake_run

CAPACITY, CHUNK = 30, 8
RELAUNCH = "; relaunch the same command to restore progress.csv from the checkpoint"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(rd, "CHUNK_ROWS", CHUNK)


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="explorebench")
    return caplog


class Run:
    """A run's state as train() saves it, beside a replay buffer that it keeps adding rows to;
    `saved[i]` is save i's state as stored (through torch.save), to compare loads with."""

    def __init__(self, path: Path, seed: int = 0):
        self.path, self.rng = path, np.random.default_rng(seed)
        self.replay = RingBuffer(CAPACITY, (4,), np.float32)
        self.saved: list[dict] = []

    def state(self, i: int) -> dict:
        return {"iteration": i, "agent": {"w": torch.full((2, 3), float(i)), "step": i},
                "exploration": {"replay": self.replay.state_dict()}, "note": f"save {i}"}

    def save(self, rows: int, meta: bool = True) -> dict:
        self.replay.add(self.rng.standard_normal((rows, 4)).astype(np.float32))
        i = len(self.saved)
        state = self.state(i)
        rd.save_checkpoint(self.path, state, {"iteration": i, "finished": False} if meta else None)
        self.saved.append(through_checkpoint(state))
        return self.saved[-1]

    def resume(self, state: dict) -> None:
        self.replay = RingBuffer(CAPACITY, (4,), np.float32)
        self.replay.load_state_dict(state["exploration"]["replay"])
        self.saved = self.saved[:state["iteration"] + 1]


def assert_equal(a, b, where="state"):
    """The same tree: the same keys, values, tensors and replay rows (slots, counters, history)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, RingRows):
        assert (a.added, a.capacity, a.history) == (b.added, b.capacity, b.history), where
        np.testing.assert_array_equal(a.slots(), b.slots())
    else:
        assert a == b, where


def previous_generation(run: Path) -> dict | None:
    """What prev.pt holds (None without one): loaded as after losing last.pt, from a copy."""
    copy = Path(tempfile.mkdtemp(dir=run.parent))
    try:
        shutil.copytree(run / rd.CHECKPOINT_DIR, copy / rd.CHECKPOINT_DIR, symlinks=True)
        rd.checkpoint_path(copy).unlink(missing_ok=True)
        return rd.load_checkpoint(copy)
    finally:
        shutil.rmtree(copy)


def side_dir(run: Path) -> Path:
    (directory,) = (run / rd.CHECKPOINT_DIR / rd.SIDE_DIR).glob("*/*")
    return directory


def chunk(run: Path, index: int) -> Path:
    return side_dir(run) / f"{index:010d}.bin"


# -- a damaged last.pt -------------------------------------------------------------------------

def damage(run: Path, how: str) -> None:
    last = rd.checkpoint_path(run)
    if how == "truncated":
        data = last.read_bytes()
        last.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        last.write_bytes(b"")
    elif how == "garbage":
        last.write_bytes(np.random.default_rng(1).bytes(3000))
    elif how == "missing":
        last.unlink()
    elif how == "side rows missing":  # rows 32-34 are last.pt's alone (prev.pt has rows < 20)
        chunk(run, 4).unlink()
    elif how == "side rows short":
        os.truncate(chunk(run, 4), 4 * 2)  # half a row of 32-34
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how,reason", [
    ("truncated", "PytorchStreamReader"), ("empty", "EOFError"), ("garbage", "UnpicklingError"),
    ("missing", "missing"), ("side rows missing", "lacks rows 32..34"), ("side rows short", "lacks rows 32..34")])
def test_a_damaged_last_pt_falls_back_to_prev_pt(tmp_path, warnings, how, reason):
    run = Run(tmp_path / "run")
    run.save(20)   # save 0: rows [0, 20)
    run.save(15)   # save 1: rows [5, 35)
    damage(run.path, how)
    state = rd.load_checkpoint(run.path)
    assert_equal(state, run.saved[0])                    # exactly the previous save
    assert rd.last_loaded_path(run.path) == rd.prev_checkpoint_path(run.path)
    (record,) = [r for r in warnings.records if r.name == "explorebench"]
    assert record.levelno == logging.WARNING
    assert str(rd.checkpoint_path(run.path)) in record.message and reason in record.message
    assert rd.read_checkpoint_meta(run.path) == {"iteration": 0, "finished": False}  # last.json follows
    # Training goes on from the state loaded: the damaged last.pt is replaced, not rotated, so that
    # prev.pt stays the intact save 0.
    run.resume(state)
    run.save(12)
    assert_equal(rd.load_checkpoint(run.path), run.saved[1])
    assert rd.last_loaded_path(run.path) == rd.checkpoint_path(run.path)
    assert_equal(previous_generation(run.path), run.saved[0])
    run.save(3)
    assert_equal(rd.load_checkpoint(run.path), run.saved[2])
    assert_equal(previous_generation(run.path), run.saved[1])


@pytest.mark.parametrize("damaged,last_why,prev_why", [
    ("last", "UnpicklingError", "missing"),                 # the first save: no prev.pt yet
    ("both", "UnpicklingError", "EOFError"),
    ("prev (last missing)", "missing", "EOFError")])
def test_no_intact_generation_is_a_checkpoint_error_naming_the_files(tmp_path, damaged, last_why, prev_why):
    run = Run(tmp_path / "run")
    run.save(10)
    if damaged != "last":
        run.save(10)
        rd.prev_checkpoint_path(run.path).write_bytes(b"")
    last = rd.checkpoint_path(run.path)
    if damaged == "prev (last missing)":
        last.unlink()
    else:
        last.write_bytes(b"not a checkpoint")
    with pytest.raises(rd.CheckpointError) as raised:
        rd.load_checkpoint(run.path)
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert f"{last}: {last_why}" in message and f"{rd.prev_checkpoint_path(run.path)}: {prev_why}" in message
    assert "Relaunch with resume=false to start over" in message
    assert rd.last_loaded_path(run.path) is None


def test_no_checkpoint_at_all_is_none(tmp_path):
    assert rd.load_checkpoint(tmp_path) is None and rd.read_checkpoint_meta(tmp_path) is None


# -- last.json --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["garbage", "binary", "missing", "not an object"])
def test_a_lost_last_json_is_rebuilt_and_a_finished_run_shows_finished(tmp_path, how):
    run = fake_run(tmp_path / "run", iterations=4)
    meta = {"iteration": 4, "env_steps": 400, "total_iterations": 4, "finished": True}
    rd.save_checkpoint(run, {"iteration": 4}, meta)
    last_json = run / rd.CHECKPOINT_DIR / rd.META_NAME
    if how == "missing":
        last_json.unlink()
    else:
        last_json.write_bytes({"garbage": b'{"iteration": 4, "env_st', "binary": b"\x00\xff\xfe\x9c",
                               "not an object": b"[4, 400]"}[how])
    assert rd.read_checkpoint_meta(run) == meta          # from the record inside last.pt
    status = rd.run_status(run)
    assert (status.state, status.env_steps, status.total_env_steps) == ("finished", 400, 400)
    assert rd.load_checkpoint(run) == {"iteration": 4}   # the record is not part of the state
    assert json.loads(last_json.read_text()) == meta      # rewritten by the load
    # With last.pt damaged as well, prev.pt's record (one save older) is the one that loads.
    rd.save_checkpoint(run, {"iteration": 5}, dict(meta, iteration=5))
    last_json.write_text("{")
    rd.checkpoint_path(run).write_bytes(b"\x00" * 100)
    assert rd.read_checkpoint_meta(run) == meta


# -- two generations --------------------------------------------------------------------------

def test_prev_pt_is_the_save_before_across_many_saves_of_a_wrapping_replay(tmp_path):
    run = Run(tmp_path / "run", seed=3)
    # rows before each save: none, within a chunk, across chunks, wraps once, wraps several
    # times in one save, several small ones, nothing
    plan = [0, 5, 13, 31, 95, 7, 7, 7, 64, 0, 29, 3]
    for n, rows in enumerate(plan):
        run.save(rows)
        assert_equal(rd.load_checkpoint(run.path), run.saved[n])
        previous = previous_generation(run.path)
        if n == 0:
            assert previous is None and not rd.prev_checkpoint_path(run.path).exists()
        else:
            assert_equal(previous, run.saved[n - 1])
        # The chunk files kept: those holding rows of either generation's window (rows between the
        # windows were never written when the ring wrapped more than once).
        windows = [run.saved[g]["exploration"]["replay"]["rows"] for g in {n, max(n - 1, 0)}]
        needed = {c for w in windows for c in range((w.added - w.size) // CHUNK, -(-w.added // CHUNK))}
        assert {int(p.stem) for p in side_dir(run.path).glob("*.bin")} == needed, n
        if n % 3 == 2:
            rd._known.clear()  # the next save as a new process makes it (reading the files)


def test_a_save_after_a_load_of_prev_pt_keeps_prev_pt(tmp_path, warnings):
    """Killed between the two renames (only prev.pt left), then resumed: the first save does not
    rotate (no last.pt) and the one after does."""
    run = Run(tmp_path / "run")
    run.save(20)
    run.save(20)
    os.replace(rd.checkpoint_path(run.path), rd.prev_checkpoint_path(run.path))  # as the kill leaves it
    rd._known.clear()
    state = rd.load_checkpoint(run.path)
    assert_equal(state, run.saved[1])
    run.resume(state)
    run.save(6)
    assert_equal(previous_generation(run.path), run.saved[1])
    run.save(6)
    assert_equal(previous_generation(run.path), run.saved[2])
    assert_equal(rd.load_checkpoint(run.path), run.saved[3])


def test_discard_checkpoints_removes_every_generation(tmp_path):
    run = Run(tmp_path / "run")
    run.save(20)
    run.save(20)
    rd.discard_checkpoints(run.path)
    assert sorted(os.listdir(run.path / rd.CHECKPOINT_DIR)) == []
    assert rd.load_checkpoint(run.path) is None and rd.read_checkpoint_meta(run.path) is None
    rd.discard_checkpoints(tmp_path / "never")  # nothing there: nothing to do


# -- a full disk --------------------------------------------------------------------------------

def test_a_full_disk_while_writing_last_pt_leaves_the_generations_intact(tmp_path):
    run = Run(tmp_path / "run")
    run.save(20)
    run.save(15)
    tmp = rd.checkpoint_path(run.path).with_name(rd.CHECKPOINT_NAME + ".tmp")
    tmp.symlink_to("/dev/full")  # every write through it fails with ENOSPC
    run.replay.add(np.ones((4, 4), np.float32))
    with pytest.raises(OSError) as raised:
        rd.save_checkpoint(run.path, run.state(2), {"iteration": 2})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(rd.checkpoint_path(run.path))
    assert not os.path.lexists(tmp)                       # neither the link nor a file is left
    assert_equal(rd.load_checkpoint(run.path), run.saved[1])
    assert_equal(previous_generation(run.path), run.saved[0])
    assert rd.read_checkpoint_meta(run.path) == {"iteration": 1, "finished": False}
    state = run.state(2)                                   # the disk has room again
    rd.save_checkpoint(run.path, state, {"iteration": 2})
    assert_equal(rd.load_checkpoint(run.path), through_checkpoint(state))
    assert_equal(previous_generation(run.path), run.saved[1])


def test_a_full_disk_while_appending_side_rows_leaves_the_generations_intact(tmp_path):
    run = Run(tmp_path / "run")
    run.save(12)
    run.save(8)                                            # rows [0, 20): chunks 0-2
    full = chunk(run.path, 3)                              # rows 24-31: the next save's
    full.symlink_to("/dev/full")
    run.replay.add(np.ones((10, 4), np.float32))           # rows 20-29: chunks 2 and 3
    with pytest.raises(OSError) as raised:
        rd.save_checkpoint(run.path, run.state(2), {"iteration": 2})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(full)
    rd._known.clear()
    assert_equal(rd.load_checkpoint(run.path), run.saved[1])
    assert_equal(previous_generation(run.path), run.saved[0])
    full.unlink()
    state = run.state(2)
    rd.save_checkpoint(run.path, state, {"iteration": 2})
    assert_equal(rd.load_checkpoint(run.path), through_checkpoint(state))


# -- the liveness marker and the run lock -------------------------------------------------------

def proc_stat(pid: int) -> tuple[str, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def test_a_zombie_process_is_not_running(tmp_path):
    run = fake_run(tmp_path / "run", iterations=2)
    live = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.time() + 10
        while proc_stat(zombie.pid)[0] != "Z":  # exited, not reaped (nothing waits for it yet)
            assert time.time() < deadline
            time.sleep(0.01)
        for proc, alive in ((live, True), (zombie, False)):
            marker = {"pid": proc.pid, "hostname": platform.node(), "process_start": proc_stat(proc.pid)[1]}
            (run / rd.RUNNING_MARKER).write_text(json.dumps(marker))
            assert rd.marker_alive(rd.read_marker(run)) is alive
            status = rd.run_status(run)
            assert status.state == ("running" if alive else "interrupted"), status
        assert status.message.startswith(f"killed (pid {zombie.pid} gone")
    finally:
        live.kill()
        live.wait()
        zombie.wait()


@pytest.mark.parametrize("marker", [b"\x00\xff{", b'{"pid": "12", "hostname": "h"}', b"[1]",
                                    json.dumps({"pid": 0, "hostname": platform.node()}).encode()])
def test_a_damaged_marker_is_no_live_process(tmp_path, marker):
    run = fake_run(tmp_path / "run", iterations=2)
    (run / rd.RUNNING_MARKER).write_bytes(marker)
    assert rd.run_status(run).state == "interrupted"


HOLD = ("import sys\nfrom runner import run_dir as rd\n"
        "print(rd.acquire_run_lock(sys.argv[1]), flush=True)\nsys.stdin.read()\n")


def lock_holder(run: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_the_run_lock_excludes_another_process(tmp_path, subprocess_env):
    run = tmp_path / "run"
    run.mkdir()
    holder = lock_holder(run, subprocess_env)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert rd.acquire_run_lock(run) is False          # held by the other process
        holder.stdin.close()                              # it ends: the kernel drops its lock
        assert holder.wait(timeout=60) == 0
        assert rd.acquire_run_lock(run) is True
        assert rd.acquire_run_lock(run) is True           # this process holds it already
        other = lock_holder(run, subprocess_env)
        assert other.stdout.readline().strip() == "False"
        other.stdin.close()
        other.wait(timeout=60)
        rd.release_run_lock(run)
        other = lock_holder(run, subprocess_env)
        assert other.stdout.readline().strip() == "True"
        assert rd.acquire_run_lock(run) is False
        other.kill()                                      # kill -9 releases it too
        other.wait(timeout=60)
        assert rd.acquire_run_lock(run) is True
    finally:
        rd.release_run_lock(run)
        holder.kill()
        holder.wait()


# -- progress.csv -------------------------------------------------------------------------------

def lines_of(run: Path) -> list[bytes]:
    return (run / rd.PROGRESS_NAME).read_bytes().splitlines(keepends=True)


def rewrite(run: Path, lines: list[bytes]) -> None:
    (run / rd.PROGRESS_NAME).write_bytes(b"".join(lines))


def test_a_healthy_progress_file_has_no_problem_even_with_a_partial_last_line(tmp_path):
    run = fake_run(tmp_path / "run", iterations=4)
    assert rd.progress_problem(run) is None and rd.run_status(run).state == "finished"
    with open(run / rd.PROGRESS_NAME, "ab") as f:
        f.write(b"5,500,0.")  # a live writer's row, cut short
    assert rd.progress_problem(run) is None and rd.run_status(run).state == "finished"
    assert [r["iteration"] for r in rd.read_progress(run)] == [1, 2, 3, 4]
    (run / rd.PROGRESS_NAME).unlink()
    rd.discard_checkpoints(run)
    assert rd.progress_problem(run) is None and rd.run_status(run).state == "not started"


def damage_progress(run: Path, how: str) -> None:
    lines = lines_of(run)  # the header, then the rows of iterations 1-4
    if how == "truncated":
        data = b"".join(lines)
        (run / rd.PROGRESS_NAME).write_bytes(data[:len(b"".join(lines[:3])) + 5])  # 2 rows and a bit
    elif how == "garbage middle line":
        rewrite(run, lines[:3] + [b"this is not a row at all\n"] + lines[4:])
    elif how == "binary bytes":
        rewrite(run, lines[:3] + [b"\x00\x8f\xff\xfe" * 10 + b"\n"] + lines[4:])
    elif how == "a value that is not a number":
        rewrite(run, lines[:3] + [lines[3].replace(b"30.0", b"3x.0")] + lines[4:])
    elif how == "wrong number of fields":
        rewrite(run, lines[:3] + [lines[3].rstrip(b"\r\n") + b",7\r\n"] + lines[4:])
    elif how == "missing iterations":
        rewrite(run, lines[:3] + lines[4:])
    elif how == "NUL tail":  # what a crash can leave where unwritten blocks were
        rewrite(run, lines[:4] + [b"\x00" * 300])
    elif how == "missing file":
        (run / rd.PROGRESS_NAME).unlink()
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how,problem,iterations", [
    ("truncated", "progress.csv has 2 rows, but the checkpoint is at iteration 4", [1, 2]),
    ("garbage middle line", "progress.csv line 4 has 1 fields, the header 15", [1, 2, 4]),
    ("binary bytes", "progress.csv line 4 has 1 fields, the header 15", [1, 2, 4]),
    ("a value that is not a number", "progress.csv line 4 holds a value that is not a number", [1, 2, 4]),
    ("wrong number of fields", "progress.csv line 4 has 16 fields, the header 15", [1, 2, 4]),
    ("missing iterations", "progress.csv row 3 is iteration 4, not 3 (iterations must be 1, 2, ...)", [1, 2, 4]),
    ("NUL tail", "progress.csv ends with binary bytes (NUL or not UTF-8)", [1, 2, 3]),
    ("missing file", "progress.csv is missing (the checkpoint is at iteration 4)", []),
])
def test_a_damaged_progress_file_is_a_problem_and_the_run_damaged(tmp_path, how, problem, iterations):
    run = fake_run(tmp_path / "run", iterations=4)
    damage_progress(run, how)
    assert rd.progress_problem(run) == problem
    assert [r["iteration"] for r in rd.read_progress(run)] == iterations  # the rows that parse
    status = rd.run_status(run)
    assert (status.state, status.message) == ("damaged", problem + RELAUNCH)
    rd.mark_running(run)  # while its process runs, a run is running whatever its files say
    assert rd.run_status(run).state == "running"
    rd.clear_marker(run)
    (run / rd.ERROR_NAME).write_text("boom\n")  # a failed run says so, and names the damage
    assert rd.run_status(run).message == f"boom (and {problem})"


def test_the_status_command_counts_damaged_runs(tmp_path, capsys):
    from runner import status

    fake_run(tmp_path / "sweep" / "a", iterations=4)
    damage_progress(fake_run(tmp_path / "sweep" / "b", iterations=4), "missing iterations")
    assert status.main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 1 finished, 1 damaged" in out and "row 3 is iteration 4" in out
