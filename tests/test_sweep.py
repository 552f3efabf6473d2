"""Sweeps through Hydra's launchers: deterministic run directories, parallel seeds, idempotent
relaunch, and failing jobs that neither stop the sweep nor go unreported."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.config import CONF_DIR
from tests.conftest import TEST_CONF, read_progress

TINY_SWEEP = ["env=cartpole", "agent.batch_size=200", "agent.num_envs=2", "total_env_steps=400"]
JOB_DIR = "cartpole/trpo-none/agent.batch_size=200,agent.num_envs=2"


def run_sweep(tmp_path: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "runner.train", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def sweep_subdir(*overrides: str) -> tuple[str, str]:
    """The (sweep dir, job subdir) Hydra gives a job with these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir


def test_job_directory_names_each_choice_and_the_seed_once_whatever_the_order():
    overrides = ["agent=ppo", "env=hopper", "seed=3", "agent.learning_rate=0.001", "env.max_episode_steps=500",
                 "total_env_steps=10000", "threads=2", "resume=false", "logger.wandb.tags=[a]"]
    expected = "hopper/ppo-none/agent.learning_rate=0.001,env.max_episode_steps=500/seed_3"
    assert sweep_subdir(*overrides) == ("multirun/default", expected)
    assert sweep_subdir(*reversed(overrides)) == ("multirun/default", expected)
    assert sweep_subdir("seed=1") == ("multirun/default", "half_cheetah/trpo-none/seed_1")
    # An experiment config names the sweep directory; its own group choice stays out of the path.
    assert sweep_subdir("+experiment=quickstart", "exploration=simhash", "seed=2") == (
        "multirun/quickstart", "mountain_car_sparse/trpo-simhash/seed_2")


def test_local_launcher_runs_seeds_in_parallel_and_relaunch_skips_them(tmp_path, subprocess_env):
    first = run_sweep(tmp_path, subprocess_env, *TINY_SWEEP, "seed=0,1", "hydra/launcher=local")
    assert first.returncode == 0, first.stderr
    assert "Joblib.Parallel(n_jobs=-1,backend=loky" in first.stdout + first.stderr
    runs = [tmp_path / "sweep" / JOB_DIR / f"seed_{s}" for s in (0, 1)]
    before = {}
    for seed, run in enumerate(runs):
        assert [int(r["iteration"]) for r in read_progress(run)] == [1, 2]
        assert json.loads((run / "checkpoints" / "last.json").read_text())["finished"]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["seed"] == seed and manifest["torch_threads"] == 1
        assert not (run / "running.json").exists()
        before[run] = ((run / "progress.csv").read_text(), (run / "checkpoints" / "last.pt").stat().st_mtime_ns)
    assert read_progress(runs[0]) != read_progress(runs[1])  # two seeds, two different runs

    again = run_sweep(tmp_path, subprocess_env, *TINY_SWEEP, "seed=0,1", "hydra/launcher=local")
    assert again.returncode == 0, again.stderr
    for run in runs:
        assert ((run / "progress.csv").read_text(), (run / "checkpoints" / "last.pt").stat().st_mtime_ns) == before[run]
        assert "already finished" in (run / "train.log").read_text()
    assert sorted(p.name for p in (tmp_path / "sweep" / JOB_DIR).iterdir()) == ["seed_0", "seed_1"]


def test_relaunch_with_a_larger_budget_resumes_every_run_where_it_stopped(tmp_path, subprocess_env):
    assert run_sweep(tmp_path, subprocess_env, *TINY_SWEEP, "seed=0,1").returncode == 0
    runs = [tmp_path / "sweep" / JOB_DIR / f"seed_{s}" for s in (0, 1)]
    first_rows = [read_progress(run) for run in runs]
    out = run_sweep(tmp_path, subprocess_env, *TINY_SWEEP[:-1], "total_env_steps=800", "seed=0,1")
    assert out.returncode == 0, out.stderr
    for run, rows in zip(runs, first_rows):
        now = read_progress(run)
        assert [int(r["iteration"]) for r in now] == [1, 2, 3, 4]
        assert now[:2] == rows  # resumed, not restarted
        assert "resuming" in (run / "train.log").read_text()


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_failing_jobs_do_not_stop_the_sweep_and_are_reported(tmp_path, subprocess_env, launcher):
    """nan_bonus fails (NaN) at its third iteration, discrete_only is refused on a continuous env;
    `none` is listed last and must still run. The sweep then exits 1 naming a failed job."""
    out = run_sweep(tmp_path, subprocess_env, f"hydra.searchpath=[file://{TEST_CONF}]", f"hydra/launcher={launcher}",
                    "env=pendulum", "agent.batch_size=200", "agent.num_envs=2", "total_env_steps=800",
                    "checkpoint_every=1", "exploration=nan_bonus,discrete_only,none")
    assert out.returncode == 1, out.stderr
    assert "JobFailed" in out.stderr
    base = tmp_path / "sweep" / "pendulum"
    extra = "agent.batch_size=200,agent.num_envs=2"
    nan_run, refused, good = (base / f"trpo-{e}" / extra / "seed_0" for e in ("nan_bonus", "discrete_only", "none"))
    assert json.loads((good / "checkpoints" / "last.json").read_text())["finished"]
    assert "non-finite value (NaN/inf) in intrinsic_reward" in (nan_run / "error.txt").read_text()
    assert len(read_progress(nan_run)) == 2
    assert (refused / "error.txt").read_text().startswith(
        "invalid configuration: exploration=discrete_only cannot run here")
    assert not (refused / "progress.csv").exists()
    for run in (nan_run, refused, good):
        assert not (run / "running.json").exists()
    assert "sweep job" in (nan_run / "train.log").read_text()  # the failure is logged by the job itself


@pytest.mark.slow
def test_quickstart_sweep_finishes_and_its_report_shows_simhash_ahead_of_none(tmp_path, subprocess_env, capsys):
    """The README's main command: ten sparse-MountainCar runs on the local launcher (about
    2 minutes on an idle 2-core machine), then the report."""
    from runner import report

    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "runner.train", "-m", "+experiment=quickstart"], cwd=tmp_path,
                         env=subprocess_env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    sweep = tmp_path / "multirun" / "quickstart"
    assert len(list(sweep.glob("mountain_car_sparse/trpo-*/seed_*"))) == 10
    result = report.build_report([sweep], sweep / "report")
    finals = {f.method: f for f in result["finals"]}
    assert len(finals["simhash"].scores) == len(finals["none"].scores) == 5
    assert max(finals["none"].scores.values()) == 0.0  # plain TRPO never reaches the flag
    assert sum(s > 0.5 for s in finals["simhash"].scores.values()) >= 2
    (pair,) = result["poi"]
    assert {pair["x"], pair["y"]} == {"simhash", "none"}
    p_simhash_better = pair["p_x_better"] if pair["x"] == "simhash" else 1.0 - pair["p_x_better"]
    assert p_simhash_better > 0.5
    assert result["incomplete"] == []
    with capsys.disabled():
        print(f"\nquickstart sweep: {wall:.0f} s wall")
