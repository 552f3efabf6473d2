"""Bad input and damaged files: every refusal exits 2 before any work naming the key, a refused launch
changes nothing, damaged run files are restored with nothing lost (issue "Bad input and damaged files")."""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import run_dir as rd
from runner.config import compose
from runner.progress import TIMING_COLUMNS
from tests.conftest import TINY, read_progress, train_command, train_in_process

CARTPOLE = ["agent=trpo", "env=cartpole", *TINY["trpo"][:-1]]  # without total_env_steps (200 per iteration)


def learning_rows(run_dir) -> list[dict]:
    """progress.csv without the columns that measure the machine."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in read_progress(run_dir)]


# -- 1. numbers as users type them -------------------------------------------------------------------

def test_whole_numbers_typed_as_floats_are_the_integers_they_denote():
    cfg, _ = compose([*CARTPOLE, "total_env_steps=1e3", "agent.batch_size=200.0", "checkpoint_every=2.0"])
    for key, value in (("total_env_steps", 1000), ("agent.batch_size", 200), ("checkpoint_every", 2)):
        got = cfg[key] if "." not in key else cfg.agent.batch_size
        assert got == value and type(got) is int, key
    cfg, _ = compose([*CARTPOLE, "agent.policy_hidden=[32.0,16]", "total_env_steps=400"])
    assert list(cfg.agent.policy_hidden) == [32, 16] and all(type(h) is int for h in cfg.agent.policy_hidden)
    cfg, _ = compose([*CARTPOLE, "agent.max_kl=1", "total_env_steps=400"])  # an integer where a float is: a number
    assert cfg.agent.max_kl == 1


@pytest.mark.parametrize("override,key", [("total_env_steps=1500.5", "total_env_steps"),
                                          ("agent.num_envs=1.5", "agent.num_envs"), ("seed=2.5e-1", "seed")])
def test_a_non_whole_integer_is_refused_naming_the_key(override, key):
    from algos.common.checks import ConfigError

    with pytest.raises(ConfigError, match=f"^{key}: must be an integer, got"):
        compose([*CARTPOLE, "total_env_steps=400", override])
    cfg, _ = compose([*CARTPOLE, "total_env_steps=1.5e3"])  # 1500: whole, so accepted
    assert cfg.total_env_steps == 1500 and type(cfg.total_env_steps) is int


def test_a_budget_typed_in_scientific_notation_runs_and_extends_a_finished_run(tmp_path, subprocess_env):
    run = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=4e2"), env=subprocess_env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "total_env_steps: 400\n" in (tmp_path / ".hydra" / "config.yaml").read_text()
    extend = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=8e2"), env=subprocess_env,
                            capture_output=True, text=True)
    assert extend.returncode == 0, extend.stderr
    assert [int(r["iteration"]) for r in read_progress(tmp_path)] == [1, 2, 3, 4]
    status = rd.run_status(tmp_path)
    assert (status.state, status.env_steps, status.total_env_steps) == ("finished", 800, 800)


# -- 2. exit code 2 with the key named, for every invalid configuration ------------------------------

REFUSALS = [
    (["exploration=simhash", "exploration.coef=abc"], "exploration.coef: must be a number, got 'abc'"),
    (["agent.policy_hidden=abc"], "agent.policy_hidden: must be a list"),
    (["+agent.foo=1"], "agent.foo: not a key of agent=trpo"),
    (["exploration=simhash", "+exploration.foo=1"], "exploration.foo: not a key of exploration=simhash"),
    (["exploration=simhash", "+exploration.dim_keyy=8"], "did you mean exploration.dim_key?"),
    (["+env.kwargs.foo=1"], "env.kwargs.foo: CartPole-v1 takes no such argument"),
    (["+chekpoint_every=1"], "chekpoint_every: not a configuration key; did you mean checkpoint_every?"),
    (["env=nope"], "Could not find 'env/nope'"),
    (["agent=nope"], "Could not find 'agent/nope'"),
    (["resume=maybe"], "resume: must be true or false, got 'maybe'"),
    (["exploration=simhash", "exploration.coef=-0.1"], "exploration.coef: must be a number >= 0"),
    (["agent.activation=swish"], "agent.activation: got 'swish'; allowed values: tanh | relu"),
    (["total_env_steps=1500.5"], "total_env_steps: must be an integer, got 1500.5"),
    (["agent.whole_paths=1"], "agent.whole_paths: must be true or false, got 1"),
]


@pytest.mark.parametrize("overrides,message", REFUSALS, ids=[" ".join(o) for o, _ in REFUSALS])
def test_every_invalid_configuration_exits_2_naming_the_key(tmp_path, subprocess_env, overrides, message):
    args = [a for a in CARTPOLE if not any(a.startswith(o.split("=")[0] + "=") for o in overrides)]
    out = subprocess.run(train_command(tmp_path / "run", *args, "total_env_steps=400", *overrides),
                         env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "progress.csv").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_pixel_only_method_on_vector_observations_is_refused(tmp_path, capsys):
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400", "exploration=ex2_atari") == 2
    err = capsys.readouterr().err
    assert "exploration=ex2_atari with exploration.conv_filters=[16, 8] cannot run here" in err
    assert "env=cartpole has vector observations; it supports pixels" in err


# -- 3. a refused launch changes nothing --------------------------------------------------------------

def _finished_run(run_dir, env) -> dict[str, bytes]:
    out = subprocess.run(train_command(run_dir, *CARTPOLE, "total_env_steps=400"), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return _files(run_dir)


def _files(run_dir) -> dict[str, bytes]:
    """Every file of the run but the console log (a refused launch logs its refusal there)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "wandb" not in p.parts and p.name != "train.log"}


def test_a_launch_refused_because_the_directory_is_in_use_changes_nothing(tmp_path, subprocess_env):
    before = _finished_run(tmp_path, subprocess_env)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from runner import run_dir as rd; "
                               "assert rd.acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=800", "agent.max_kl=0.02"),
                             env=subprocess_env, capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2 and "is in use by another process" in out.stderr, out.stderr
    assert _files(tmp_path) == before  # .hydra/ included: reports still label the run with its own config


def test_a_relaunch_refused_for_another_configuration_changes_nothing(tmp_path, subprocess_env):
    before = _finished_run(tmp_path, subprocess_env)
    out = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=400", "agent.max_kl=0.02"),
                         env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 2 and "agent.max_kl: 0.01 -> 0.02" in out.stderr
    assert _files(tmp_path) == before and not (tmp_path / "error.txt").exists()
    assert rd.run_status(tmp_path).state == "finished"


def test_an_invalid_value_on_an_existing_run_writes_nothing_into_it(tmp_path, subprocess_env):
    before = _finished_run(tmp_path, subprocess_env)
    out = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=800", "resume=maybe"),
                         env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 2 and "resume: must be true or false" in out.stderr
    assert _files(tmp_path) == before
    assert rd.run_status(tmp_path).state == "finished"


def test_a_refusal_in_a_new_directory_says_why_in_status(tmp_path, subprocess_env):
    out = subprocess.run(train_command(tmp_path, *CARTPOLE, "total_env_steps=400", "+agent.foo=1"),
                         env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 2
    status = rd.run_status(tmp_path)
    assert status.state == "failed" and "agent.foo: not a key of agent=trpo" in status.message


# -- 4. damaged progress.csv --------------------------------------------------------------------------

def _cut_line(path: Path):
    text = path.read_text()
    path.write_text(text[:text.index("\n", text.index("\n") + 1) + 10])  # header, row 1, 10 chars of row 2


DAMAGE = {
    "truncated": lambda p: p.write_text("".join(p.read_text().splitlines(True)[:2])),
    "garbage line": lambda p: p.write_text("".join(
        line if i != 2 else "garbage,\x00,row\n" for i, line in enumerate(p.read_text().splitlines(True)))),
    "cut-off line": _cut_line,
    "binary bytes": lambda p: p.write_bytes(p.read_bytes()[:40] + bytes(range(256)) + p.read_bytes()[40:]),
    "missing": lambda p: p.unlink(),
    "header only": lambda p: p.write_text(p.read_text().splitlines(True)[0]),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert train_in_process(run_dir, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    return learning_rows(run_dir)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_progress_csv_is_restored_from_the_checkpoint(tmp_path, uninterrupted, damage, caplog):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800") == 0
    DAMAGE[damage](tmp_path / "progress.csv")
    status = rd.run_status(tmp_path)
    assert status.state == "damaged", (status.state, status.message)  # not counted finished
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    assert learning_rows(tmp_path) == uninterrupted
    assert "restored them from the checkpoint" in caplog.text and "progress.csv" in caplog.text
    assert rd.run_status(tmp_path).state == "finished"


def test_a_damaged_progress_csv_of_a_finished_run_is_restored_by_relaunching_it(tmp_path, uninterrupted):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    DAMAGE["garbage line"](tmp_path / "progress.csv")
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    assert learning_rows(tmp_path) == uninterrupted


def test_rows_past_the_checkpoint_of_a_killed_run_are_dropped_and_recomputed(tmp_path, uninterrupted):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=4", "total_env_steps=1200") == 0
    (tmp_path / "checkpoints" / "last.pt").unlink()        # as if killed after iteration 5's rows, before
    os.replace(tmp_path / "checkpoints" / "prev.pt", tmp_path / "checkpoints" / "last.pt")  # its checkpoint
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=4", "total_env_steps=1200") == 0
    assert learning_rows(tmp_path) == uninterrupted


# -- 5. damaged checkpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_last_checkpoint_falls_back_on_the_previous_one(tmp_path, uninterrupted, damage, caplog):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800") == 0
    last = tmp_path / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "garbage": os.urandom(4096)}[damage])
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    assert str(last) in caplog.text
    assert learning_rows(tmp_path) == uninterrupted


def test_a_damaged_checkpoint_with_no_previous_one_exits_2_naming_it(tmp_path, capsys):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=400") == 0
    ckpt = tmp_path / "checkpoints"
    (ckpt / "prev.pt").unlink(missing_ok=True)
    (ckpt / "last.pt").write_bytes(b"not a checkpoint")
    rows = (tmp_path / "progress.csv").read_bytes()
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800") == 2
    err = capsys.readouterr().err
    assert str(ckpt / "last.pt") in err and "resume=false" in err
    assert (tmp_path / "progress.csv").read_bytes() == rows and not (tmp_path / "error.txt").exists()
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800", "resume=false") == 0


def test_a_garbage_last_json_is_rebuilt_and_the_run_stays_finished(tmp_path):
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400") == 0
    meta_path = tmp_path / "checkpoints" / "last.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{garbage")
    assert rd.run_status(tmp_path).state == "finished"
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400") == 0
    assert json.loads(meta_path.read_text()) == meta


# -- 6. disk full and unwritable directories ----------------------------------------------------------

@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fill a disk")
def test_a_full_disk_stops_the_run_naming_the_path_and_keeps_the_checkpoint(tmp_path, capsys):
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=400") == 0
    before = rd.load_checkpoint(tmp_path)
    tmp = tmp_path / "checkpoints" / "last.pt.tmp"
    tmp.symlink_to("/dev/full")  # every write of the next checkpoint fails with ENOSPC
    assert train_in_process(tmp_path, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800") == 1
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'checkpoints' / 'last.pt'}" in err and os.strerror(errno.ENOSPC) in err
    assert not tmp.exists() and not tmp.is_symlink()
    after = rd.load_checkpoint(tmp_path)
    assert after["iteration"] == before["iteration"] == 2


def test_a_run_directory_that_cannot_be_created_exits_naming_the_path(tmp_path, subprocess_env):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = subprocess.run(train_command(blocker / "run", *CARTPOLE, "total_env_steps=400"), env=subprocess_env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and f"cannot write {blocker}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# -- 7. sweep and status edge cases -------------------------------------------------------------------

def test_a_zombie_named_by_the_marker_does_not_hold_the_directory(tmp_path):
    zombie = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline
        time.sleep(0.01)
    ticks = int(Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    try:
        marker = {"pid": zombie.pid, "hostname": os.uname().nodename, "process_start": ticks}
        (tmp_path / rd.RUNNING_MARKER).write_text(json.dumps(marker))
        assert rd.run_status(tmp_path).state != "running"
        assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400") == 0
    finally:
        zombie.wait()


def test_two_identical_sweeps_at_once_say_the_other_holds_the_runs(tmp_path, subprocess_env):
    sweep = [sys.executable, "-m", "runner.train", "-m", f"hydra.sweep.dir={tmp_path}", "seed=0,1",
             *CARTPOLE, "agent.whole_paths=false", "total_env_steps=40000"]
    first = subprocess.Popen(sweep, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        runs = tmp_path / "cartpole" / "trpo-none"
        deadline = time.time() + 60
        while not list(runs.glob("*/seed_0/progress.csv")):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        second = subprocess.run([*sweep[:5], "seed=0"] + sweep[6:], env=subprocess_env, capture_output=True,
                                text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert second.returncode != 0
    assert "is in use by process" in second.stderr and "another run or sweep holds it" in second.stderr
    assert "exit code 2" not in second.stderr


def test_a_nan_before_the_first_checkpoint_says_there_is_no_checkpoint_yet(tmp_path, capsys):
    code = train_in_process(tmp_path, "exploration=nan_bonus", "exploration.nan_at=1", "checkpoint_every=100",
                            *TINY["trpo"][:-1], "total_env_steps=2000")
    assert code == 1
    err = capsys.readouterr().err
    assert "there is no checkpoint yet: a relaunch starts the run over" in err
    assert "the last checkpoint is intact" not in err
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_status_and_report_flag_a_run_with_gaps(tmp_path, subprocess_env):
    from runner import report

    run_dir = tmp_path / "sweep" / "seed_0"
    out = subprocess.run(train_command(run_dir, *CARTPOLE, "total_env_steps=800"), env=subprocess_env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = (run_dir / "progress.csv").read_text().splitlines(True)
    (run_dir / "progress.csv").write_text("".join(rows[:2] + rows[3:]))  # iteration 2 gone
    status = rd.run_status(run_dir)
    assert status.state == "damaged" and "relaunch the same command" in status.message
    with open(run_dir / "progress.csv", newline="") as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [1, 3, 4]
    items = report.build_report([tmp_path / "sweep"], tmp_path / "report")["incomplete"]
    assert len(items) == 1 and str(run_dir) in items[0] and "damaged" in items[0]
