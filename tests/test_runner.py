"""The training entry point end to end: smoke runs, outputs, determinism, resume, validation."""
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from runner import run_dir as rd
from runner.progress import FIXED_COLUMNS
from tests.conftest import (
    TINY,
    kill_after_third_checkpoint_then_resume,
    learning_columns,
    read_progress,
    train_command,
    train_in_process,
    wait_for_rows,
)

AGENTS = ["trpo", "ppo"]
ENVS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "env").glob("*.yaml"))


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("agent", AGENTS)
def test_smoke_every_agent_and_env(tmp_path, agent, env):
    assert train_in_process(tmp_path, f"agent={agent}", f"env={env}", *TINY[agent]) == 0
    rows = read_progress(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert list(rows[0])[:len(FIXED_COLUMNS)] == FIXED_COLUMNS
    assert int(rows[-1]["env_steps"]) == int(TINY[agent][-1].split("=")[1])


def test_run_directory_contents(tmp_path):
    assert train_in_process(tmp_path, "agent=trpo", "env=cartpole", "seed=7", *TINY["trpo"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("git_commit", "git_dirty", "packages", "cpu", "torch_threads", "seed", "start_time", "command"):
        assert key in manifest
    assert manifest["seed"] == 7 and manifest["torch_threads"] == 1
    assert manifest["packages"]["torch"].startswith("2.13.0")
    meta = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert meta == {"iteration": 2, "env_steps": 400, "total_iterations": 2, "finished": True}
    state = rd.load_checkpoint(tmp_path)
    assert {"agent", "exploration", "shaper", "loop", "evaluator", "rng", "config"} <= set(state)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_categorical_trpo_learns_cartpole(tmp_path):
    assert train_in_process(tmp_path, "agent=trpo", "env=cartpole", "total_env_steps=50000") == 0
    returns = [float(r["return_ext_mean"]) for r in read_progress(tmp_path)]
    assert returns[0] < 40 and returns[-1] > 150  # random play lasts ~22 steps


@pytest.mark.parametrize("agent", AGENTS)
def test_same_seed_same_progress(tmp_path, agent):
    args = [f"agent={agent}", "env=half_cheetah", *TINY[agent][:-1], "total_env_steps=1024", "seed=3"]
    assert train_in_process(tmp_path / "a", *args) == 0
    assert train_in_process(tmp_path / "b", *args) == 0
    assert train_in_process(tmp_path / "c", *args[:-1], "seed=4") == 0
    a, b, c = (learning_columns(read_progress(tmp_path / d)) for d in "abc")
    assert a == b
    assert a != c


KILL_ARGS = {
    "trpo": ["agent=trpo", "agent.batch_size=1000", "agent.num_envs=2", "total_env_steps=30000"],
    "ppo": ["agent=ppo", "agent.batch_size=512", "agent.num_minibatches=8", "total_env_steps=15360"],
}


@pytest.mark.parametrize("agent", AGENTS)
def test_kill_after_third_checkpoint_then_resume_matches_uninterrupted(tmp_path, subprocess_env, agent):
    args = [*KILL_ARGS[agent], "env=half_cheetah", "checkpoint_every=2", "seed=1"]
    kill_after_third_checkpoint_then_resume(tmp_path, subprocess_env, args, total_rows=30)


def test_sigterm_checkpoints_and_exits_then_resumes(tmp_path, subprocess_env):
    args = [*KILL_ARGS["trpo"], "env=half_cheetah", "checkpoint_every=100"]
    proc = subprocess.Popen(train_command(tmp_path, *args), env=subprocess_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "progress.csv", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    rows = read_progress(tmp_path)
    meta = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert meta["iteration"] == len(rows) and not meta["finished"]  # checkpoint_every=100 was not due
    done = subprocess.run(train_command(tmp_path, *args), env=subprocess_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(read_progress(tmp_path)) == 30


def test_finished_run_is_not_rerun_and_budget_can_be_extended(tmp_path, capsys):
    args = ["agent=trpo", "env=cartpole", *TINY["trpo"][:-1]]
    assert train_in_process(tmp_path, *args, "total_env_steps=400") == 0
    before = (tmp_path / "progress.csv").read_text()
    mtime = (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert train_in_process(tmp_path, *args, "total_env_steps=400") == 0
    assert (tmp_path / "progress.csv").read_text() == before
    assert (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    assert train_in_process(tmp_path, *args, "total_env_steps=800") == 0  # extend the budget
    assert [int(r["iteration"]) for r in read_progress(tmp_path)] == [1, 2, 3, 4]


def test_resume_into_a_directory_with_another_config_is_refused(tmp_path, capsys):
    args = ["agent=trpo", "env=cartpole", *TINY["trpo"]]
    assert train_in_process(tmp_path, *args) == 0
    assert train_in_process(tmp_path, *args, "agent.max_kl=0.05") == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "agent.max_kl: 0.01 -> 0.05" in err
    assert train_in_process(tmp_path, *args, "agent.max_kl=0.05", "resume=false") == 0


@pytest.mark.parametrize("overrides,message", [
    (["total_env_steps=0"], "total_env_steps: must be a positive integer, got 0"),
    (["agent.batch_size=-5"], "agent.batch_size: must be a positive integer, got -5"),
    (["agent.num_envs=0"], "agent.num_envs: must be a positive integer, got 0"),
    (["threads=0"], "threads: must be a positive integer, got 0"),
    (["checkpoint_every=0"], "checkpoint_every: must be a positive integer, got 0"),
    (["agent.num_envs=3"], "agent.batch_size: must be a multiple of agent.num_envs (3), got 5000"),
    (["total_env_steps=100"], "total_env_steps: must be at least one iteration's env steps (5000: agent.batch_size"),
    (["device=gpu"], "device: got 'gpu'; allowed values: auto | cpu | cuda"),
    (["logger.wandb.mode=loud"], "logger.wandb.mode: got 'loud'; allowed values: offline | online | disabled"),
    (["agent.max_kl=0"], "agent.max_kl: must be a positive number, got 0"),
    (["agent.baseline.kind=quadratic"], "agent.baseline.kind: got 'quadratic'; allowed values: auto | linear | mlp"),
    (["agent=ppo", "agent.num_minibatches=30"], "agent.num_minibatches: must divide agent.batch_size (2048), got 30"),
    (["exploration.normalise=zscore"], "exploration.normalise: got 'zscore'; allowed values: none | running_std | "
                                       "batch_median | running_median_ratio"),
    (["exploration=discrete_only"], "exploration=discrete_only cannot run here: env=half_cheetah has continuous "
                                    "actions; it supports discrete"),
])
def test_invalid_config_is_refused_before_any_work(tmp_path, capsys, overrides, message):
    assert train_in_process(tmp_path, *overrides) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "progress.csv").exists()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_unavailable_cuda_is_refused_through_the_command_line(tmp_path, subprocess_env):
    out = subprocess.run(train_command(tmp_path, "device=cuda"), env=subprocess_env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "device: 'cuda' was requested but no CUDA device is available" in out.stderr
    assert "allowed values: auto | cpu | cuda" in out.stderr


def test_nan_intrinsic_reward_stops_the_run_and_keeps_the_checkpoint(tmp_path, capsys):
    code = train_in_process(tmp_path, "exploration=nan_bonus", "checkpoint_every=1", *TINY["trpo"][:-1],
                            "total_env_steps=2000")
    assert code == 1
    assert "exploration (nan_bonus): non-finite value (NaN/inf) in intrinsic_reward" in capsys.readouterr().err
    assert len(read_progress(tmp_path)) == 2
    assert rd.load_checkpoint(tmp_path)["iteration"] == 2
    assert "intrinsic_reward" in (tmp_path / "error.txt").read_text()


def test_nan_in_agent_update_names_the_agent(tmp_path, capsys):
    code = train_in_process(tmp_path, "agent=ppo", "env=cartpole", "agent.learning_rate=1e30",
                            "checkpoint_every=1", "total_env_steps=20480")
    assert code == 1
    assert "agent (PPO): non-finite value (NaN/inf)" in capsys.readouterr().err
    state = rd.load_checkpoint(tmp_path)
    assert state is None or state["iteration"] == len(read_progress(tmp_path))


def test_wandb_offline_mirror_writes_a_local_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert train_in_process(tmp_path, "env=cartpole", "logger.wandb.mode=offline", *TINY["trpo"]) == 0
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_command_line_run_directory_is_deterministic_and_relaunch_skips(tmp_path, subprocess_env):
    command = ["python", "-m", "runner.train", "env=cartpole", "agent.batch_size=200",
               "agent.num_envs=2", "total_env_steps=400", "seed=5"]
    first = subprocess.run(command, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs/default/cartpole/trpo-none/agent.batch_size=200,agent.num_envs=2/seed_5"
    assert len(read_progress(run_dir)) == 2
    assert (run_dir / ".hydra" / "config.yaml").exists()
    again = subprocess.run(command, cwd=tmp_path, env=subprocess_env, capture_output=True, text=True)
    assert again.returncode == 0
    assert "already finished" in again.stdout + again.stderr


def test_bench_prints_raw_runner_ratio_and_phases(capsys):
    from runner import bench

    bench.main(["agent=trpo", "env=cartpole", "agent.batch_size=200", "agent.num_envs=2",
                "--iterations", "2", "--raw-steps", "400"])
    out = capsys.readouterr().out
    for label in ("raw env steps/s", "runner env steps/s", "ratio runner / raw", "collect",
                  "bonus", "explore update", "agent update"):
        assert label in out


def test_progress_bar_renders(tmp_path):
    from runner.progress import ConsoleProgress

    bar = ConsoleProgress(total_steps=1000, start_steps=0, enabled=True)
    bar.update({"iteration": 1, "env_steps": 500, "sps": 1234.0, "return_ext_mean": 3.5,
                "task_metric_mean": 3.5})
    bar.close()


def test_a_directory_in_use_by_a_live_process_is_refused(tmp_path, capsys):
    import platform
    import sys

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "running.json").write_text(json.dumps({"pid": other.pid, "hostname": platform.node()}))
        assert train_in_process(tmp_path, "env=cartpole", *TINY["trpo"]) == 2
        assert f"is in use by process {other.pid}" in capsys.readouterr().err
        assert not (tmp_path / "progress.csv").exists()
    finally:
        other.kill()
        other.wait()
    assert train_in_process(tmp_path, "env=cartpole", *TINY["trpo"]) == 0  # the marker is stale now


@pytest.mark.parametrize("old,new", [("agent.normalize_observations", "agent.normalise_observations"),
                                     ("exploration.normalize_states", "exploration.normalise_states")])
def test_an_old_spelling_is_refused_naming_the_new_key(tmp_path, subprocess_env, old, new):
    out = subprocess.run(train_command(tmp_path, f"{old}=true"), env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{old}: this key is now called {new}" in out.stderr
    assert not (tmp_path / "progress.csv").exists()


def test_an_old_spelling_in_a_preset_is_refused_before_any_work(tmp_path, capsys):
    from omegaconf import open_dict

    from runner.config import compose
    from runner.train import train

    cfg, choices = compose(["env=cartpole", *TINY["trpo"]])
    with open_dict(cfg):
        cfg.agent.normalize_advantages = True  # as an old experiment preset would set it
    assert train(cfg, tmp_path, choices, show_progress=False) == 2
    assert "agent.normalize_advantages: this key is now called agent.normalise_advantages" in capsys.readouterr().err
    assert not (tmp_path / "progress.csv").exists()
