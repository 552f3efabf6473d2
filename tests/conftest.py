import csv
import os
import sys
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "disabled"
ROOT = Path(__file__).resolve().parent.parent
TEST_CONF = Path(__file__).resolve().parent / "conf"

# Tiny budgets that still exercise every phase (2 iterations unless a test says otherwise). TRPO's
# whole paths (its default) would run every env to its time limit (1000 steps on MuJoCo): the tiny runs
# carry episodes over instead; tests/test_paths.py covers whole paths.
TINY = {
    "trpo": ["agent.batch_size=200", "agent.num_envs=2", "agent.whole_paths=false", "total_env_steps=400"],
    "ppo": ["agent.batch_size=128", "agent.num_envs=2", "agent.num_minibatches=4",
            "agent.update_epochs=2", "total_env_steps=256"],
}


def train_in_process(run_dir, *overrides):
    """Run runner.train's training function in this process; returns the exit code."""
    from runner.config import compose
    from runner.train import train

    cfg, choices = compose([f"hydra.searchpath=[file://{TEST_CONF}]", *overrides])
    return train(cfg, Path(run_dir), choices, show_progress=False)


def train_command(run_dir, *overrides):
    return [sys.executable, "-m", "runner.train", f"hydra.run.dir={run_dir}",
            f"hydra.searchpath=[file://{TEST_CONF}]", *overrides]


def read_progress(run_dir) -> list[dict]:
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def through_checkpoint(state: dict) -> dict:
    """`state` after a torch.save / torch.load round trip, as the runner's checkpoints store it
    (it also breaks any aliasing between the saved and the live tensors)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def replay_after_restore(env, actions) -> list[tuple]:
    """Snapshot `env` (runner.env_state), play `actions`, restore the snapshot and play them again;
    assert that both plays match bit for bit and return the first. A play is one (obs, reward,
    terminated, truncated, task_metric) per step, and one (obs,) after each episode end, from an
    unseeded reset (which draws from the env's own RNG, so the snapshot must hold it)."""
    import numpy as np

    from runner.env_state import get_env_state, set_env_state

    def play():
        out = []
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            out.append((obs.copy(), reward, terminated, truncated, info["task_metric"]))
            if terminated or truncated:
                out.append((env.reset()[0].copy(),))
        return out

    snapshot = get_env_state(env)
    first = play()
    set_env_state(env, snapshot)
    second = play()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    return first


def learning_columns(rows: list[dict]) -> list[dict]:
    """Rows without the columns that measure time rather than learning."""
    from runner.progress import TIMING_COLUMNS

    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def wait_for_rows(path: Path, n: int, proc, timeout: float = 120) -> int:
    """Wait until `path` (a progress.csv being written by `proc`) holds n rows; returns the count."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            rows = path.read_text().count("\n") - 1
            if rows >= n:
                return rows
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.005)
    raise TimeoutError


def kill_after_third_checkpoint_then_resume(tmp_path, env, args: list[str], total_rows: int) -> None:
    """Run `args` (with checkpoint_every=2) uninterrupted; run it again, kill -9 it once iteration 6 has
    been checkpointed, relaunch it: the resumed progress.csv must equal the uninterrupted one."""
    import json
    import subprocess

    reference = subprocess.run(train_command(tmp_path / "ref", *args), env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    proc = subprocess.Popen(train_command(tmp_path / "run", *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = wait_for_rows(tmp_path / "run" / "progress.csv", 7, proc)  # iteration 6 checkpointed
    proc.kill()
    proc.wait()
    assert rows < total_rows
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["iteration"] >= 6
    resumed = subprocess.run(train_command(tmp_path / "run", *args), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref_rows, run_rows = read_progress(tmp_path / "ref"), read_progress(tmp_path / "run")
    assert len(ref_rows) == total_rows
    assert [int(r["iteration"]) for r in run_rows] == list(range(1, len(ref_rows) + 1))
    assert learning_columns(run_rows) == learning_columns(ref_rows)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run like the runner (threads=1): a second OpenMP thread only contends on a shared
    2-core machine (it made some tests 10-20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def subprocess_env():
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
