"""python -m runner.status: the state of each run below a sweep directory."""
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import run_dir as rd
from runner import status
from runner.progress import FIXED_COLUMNS
from tests.conftest import TINY, train_command, train_in_process


def fake_run(run_dir: Path, iterations: int, total_iterations: int = 4, batch: int = 100,
             checkpointed: int | None = None, returns=None) -> Path:
    """A run directory as train() leaves it: .hydra/config.yaml, progress.csv with `iterations`
    rows, checkpoints/last.json at iteration `checkpointed` (default: the last row)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"agent:\n  batch_size: {batch}\nseed: 0\ntotal_env_steps: {total_iterations * batch}\n")
    if iterations:
        returns = returns or [10.0 * i for i in range(1, iterations + 1)]
        lines = [",".join(FIXED_COLUMNS)]
        for i, ret in enumerate(returns, start=1):
            row = {"iteration": i, "env_steps": i * batch, "return_ext_mean": "" if ret is None else ret}
            lines.append(",".join(str(row.get(c, "")) for c in FIXED_COLUMNS))
        (run_dir / "progress.csv").write_text("\n".join(lines) + "\n")
        done = iterations if checkpointed is None else checkpointed
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.json").write_text(json.dumps(
            {"iteration": done, "env_steps": done * batch, "total_iterations": total_iterations,
             "finished": done >= total_iterations}))
    return run_dir


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def fake_sweep(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root / "a" / "seed_0", iterations=4)                                  # finished
    rd.mark_running(fake_run(root / "a" / "seed_1", iterations=2))             # running: this process
    failed = fake_run(root / "a" / "seed_2", iterations=3, checkpointed=2)
    (failed / "error.txt").write_text("agent (TRPO): non-finite value (NaN/inf) in loss\nmore detail\n")
    crashed = fake_run(root / "b" / "seed_0", iterations=1)
    (crashed / "error.txt").write_text("Traceback (most recent call last):\n  File ...\nRuntimeError: boom\n")
    fake_run(root / "b" / "seed_1", iterations=0)                                  # not started
    fake_run(root / "b" / "seed_2", iterations=3, returns=[5.0, 7.0, None])       # stopped by a signal
    killed = fake_run(root / "b" / "seed_3", iterations=2)
    (killed / rd.RUNNING_MARKER).write_text(json.dumps({"pid": dead_pid(), "hostname": platform.node()}))
    elsewhere = fake_run(root / "b" / "seed_4", iterations=1)
    (elsewhere / rd.RUNNING_MARKER).write_text(json.dumps({"pid": 1, "hostname": "another-node"}))
    # Hydra's record of the sweep (not a run): an experiment's sweeper.params, then the command line
    (root / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      agent: trpo,ppo\n"
                                        "      seed: 0,1,2\n  overrides:\n    task:\n    - seed=0,1,2,3\n"
                                        "    - env=hopper\n")
    return root


def test_every_state_is_told_apart(fake_sweep):
    got = {str(r.relative_to(fake_sweep)): rd.run_status(r) for r in rd.find_runs([fake_sweep])}
    assert {name: s.state for name, s in got.items()} == {
        "a/seed_0": "finished", "a/seed_1": "running", "a/seed_2": "failed", "b/seed_0": "failed",
        "b/seed_1": "not started", "b/seed_2": "interrupted", "b/seed_3": "interrupted", "b/seed_4": "running"}
    assert (got["a/seed_0"].env_steps, got["a/seed_0"].total_env_steps, got["a/seed_0"].last_return) == (400, 400, 40.0)
    assert got["a/seed_1"].message == f"pid {os.getpid()} on {platform.node()}"
    assert got["a/seed_2"].message == "agent (TRPO): non-finite value (NaN/inf) in loss"
    assert got["a/seed_2"].env_steps == 300
    assert got["b/seed_0"].message == "RuntimeError: boom"   # a traceback's last line says what
    assert got["b/seed_1"].env_steps == 0
    assert got["b/seed_2"].last_return == 7.0                 # the last finite return
    assert got["b/seed_2"].message.startswith("stopped by a signal")
    assert got["b/seed_3"].message.startswith("killed")
    assert "another host" in got["b/seed_4"].message


def test_command_prints_a_table_with_every_state(fake_sweep, capsys):
    assert status.main([str(fake_sweep)]) == 0
    out = capsys.readouterr().out
    for text in ("a/seed_0", "b/seed_3", "finished", "running", "failed", "interrupted", "not started",
                 "400 / 400", "non-finite value (NaN/inf) in loss"):
        assert text in out
    assert "8 runs: 1 finished, 2 running, 2 failed, 2 interrupted, 1 not started" in out
    assert "the last sweep launched here has 8 jobs" in out   # 2 agents x 4 seeds (the command line wins)


def test_directory_without_runs_is_a_clear_error(tmp_path, capsys):
    assert status.main([str(tmp_path)]) == 2
    assert "no runs below this directory" in capsys.readouterr().err
    assert status.main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_partial_last_line_of_a_progress_file_being_written_is_ignored(tmp_path):
    run = fake_run(tmp_path / "run", iterations=2)
    with open(run / "progress.csv", "a") as f:
        f.write("3,300,0.1")  # a row cut short
    assert [r["iteration"] for r in rd.read_progress(run)] == [1.0, 2.0]


def test_train_removes_its_marker_when_it_returns(tmp_path):
    assert train_in_process(tmp_path, "env=cartpole", *TINY["trpo"]) == 0
    assert not (tmp_path / rd.RUNNING_MARKER).exists()
    assert rd.run_status(tmp_path).state == "finished"


def test_a_training_process_shows_running_then_killed(tmp_path, subprocess_env):
    args = ["env=cartpole", "agent.batch_size=200", "agent.num_envs=2", "total_env_steps=10000000"]
    proc = subprocess.Popen(train_command(tmp_path, *args), env=subprocess_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not rd.read_progress(tmp_path):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        marker = rd.read_marker(tmp_path)
        assert marker["pid"] == proc.pid and rd.run_status(tmp_path).state == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    now = rd.run_status(tmp_path)
    assert now.state == "interrupted" and now.message.startswith(f"killed (pid {proc.pid} gone")
