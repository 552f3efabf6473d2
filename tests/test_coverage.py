"""Coverage maps (runner/coverage.py): the logged counts against a brute-force histogram of the training
states, one row per iteration summing to its env steps, crash safety and resume, the figure, and the
env configs' coverage blocks."""
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from runner import run_dir as rd
from runner.collect import Collector
from runner.coverage import (
    HEADER_NAME,
    ROWS_NAME,
    CoverageCounter,
    CoverageLog,
    coverage_spec,
    draw_coverage_maps,
    early_late_counts,
    read_coverage,
)
from tests.conftest import (
    TEST_CONF,
    TINY,
    kill_after_third_checkpoint_then_resume,
    learning_columns,
    read_progress,
    train_command,
    train_in_process,
)

ROOT = Path(__file__).resolve().parent.parent
ENV_CONFS = sorted((ROOT / "conf" / "env").glob("*.yaml"))


def qpos_axes(x_index: int, y_index: int, x_range: str, y_range: str) -> list[str]:
    """Overrides that make an env's map read two MuJoCo qpos entries."""
    return ["env.coverage.x.source=qpos", f"env.coverage.x.index={x_index}", f"env.coverage.x.range={x_range}",
            "env.coverage.y.source=qpos", f"env.coverage.y.index={y_index}", f"env.coverage.y.range={y_range}"]


def train_edited(run_dir, overrides, edits: dict) -> int:
    """train() on the config of `overrides` with `edits` (key -> value) set as a preset's file would set them
    (the command line takes only the keys the env's file lists)."""
    from omegaconf import OmegaConf

    from runner.config import compose
    from runner.train import train

    cfg, choices = compose([f"hydra.searchpath=[file://{TEST_CONF}]", *overrides])
    for key, value in edits.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return train(cfg, Path(run_dir), choices, show_progress=False)


def brute_force(xs, ys, x_range, y_range, bins_x, bins_y, wrap=(False, False)) -> np.ndarray:
    """One state at a time: its bin on each axis, the edge bin for a value outside the range."""
    counts = np.zeros((bins_y, bins_x), np.int64)

    def cell(v, span, bins, periodic):
        low, high = span
        if periodic:
            v = low + (v - low) % (high - low)
        return min(max(math.floor((v - low) * (bins / (high - low))), 0), bins - 1)

    for x, y in zip(xs, ys):
        counts[cell(y, y_range, bins_y, wrap[1]), cell(x, x_range, bins_x, wrap[0])] += 1
    return counts


@pytest.fixture
def recorded(monkeypatch):
    """Every collection's rollout (its obs and episode steps, each step once), in order."""
    rollouts = []
    collect = Collector.collect

    def recording(self, agent, exploration):
        rollout, stats = collect(self, agent, exploration)
        obs = rollout.obs.reshape(-1, *rollout.obs.shape[2:]).copy()
        rollouts.append((obs, rollout.episode_step.reshape(-1).copy()))
        return rollout, stats

    monkeypatch.setattr(Collector, "collect", recording)
    return rollouts


def per_iteration(rollouts, run_dir) -> list[tuple[np.ndarray, np.ndarray]]:
    """The recorded states split into the run's iterations by progress.csv's env steps."""
    obs = np.concatenate([o for o, _ in rollouts])
    steps = np.concatenate([s for _, s in rollouts])
    ends = [int(r["env_steps"]) for r in read_progress(run_dir)]
    assert ends[-1] == len(obs)
    return [(obs[a:b], steps[a:b]) for a, b in zip([0, *ends[:-1]], ends)]


# name -> (overrides, config edits, x of a state (obs, episode step), y of it, wrap)
CASES = {
    # TRPO, episodes carried over; the observation's entries, on ranges narrower than the states' (the edge
    # bins on both sides take the values outside)
    "trpo carried over, obs": (["agent=trpo", "env=mountain_car_sparse", *TINY["trpo"],
                                "env.coverage.x.range=[-0.1,0.1]", "env.coverage.y.range=[-0.4,0.4]"], {},
                               lambda o, s: o[:, 0], lambda o, s: o[:, 1], (False, False)),
    # TRPO whole paths (200-step episodes): an angle from its sine and cosine, and an entry
    "trpo whole paths, obs_angle": (["agent=trpo", "env=pendulum", "agent.batch_size=300", "agent.num_envs=2",
                                     "agent.whole_paths=true", "total_env_steps=600"], {},
                                    lambda o, s: np.arctan2(o[:, 1], o[:, 0]), lambda o, s: o[:, 2], (False, False)),
    # Hopper's observation is qpos[1:]: qpos[1], qpos[2] read by the collector must be the observation's
    # entries 0, 1 of the same step, across the early terminations' resets (whole paths: envs stepped alone)
    "trpo whole paths, qpos": (["agent=trpo", "env=hopper", "agent.batch_size=300", "agent.num_envs=3",
                                "agent.whole_paths=true", "total_env_steps=900",
                                *qpos_axes(1, 2, "[1.2,1.3]", "[-0.1,0.1]")], {},
                               lambda o, s: o[:, 0], lambda o, s: o[:, 1], (False, False)),
    "ppo, qpos": (["agent=ppo", "env=hopper", *TINY["ppo"], *qpos_axes(1, 2, "[1.2,1.3]", "[-0.1,0.1]")], {},
                  lambda o, s: o[:, 0], lambda o, s: o[:, 1], (False, False)),
    # the chain's position (an env attribute, read by the collector; the one-hot observation says it too)
    # against the episode step, whole paths of short episodes
    "trpo whole paths, attribute and episode_step": (
        ["agent=trpo", "env=chain", "agent.batch_size=100", "agent.num_envs=2", "agent.whole_paths=true",
         "total_env_steps=300"], {}, lambda o, s: o.argmax(1), lambda o, s: s, (False, False)),
    # a pole angle the env does not wrap, wrapped into [-pi, pi)
    "ppo, wrapped angle": (["agent=ppo", "env=cartpole_swingup_sparse", *TINY["ppo"]], {},
                           lambda o, s: o[:, 0], lambda o, s: o[:, 2], (False, True)),
    # the off-policy loop: two chunks of collection per iteration
    "off-policy": (["agent=tiny_replay", "env=pendulum", "exploration=gaussian_noise", "total_env_steps=300"], {},
                   lambda o, s: np.arctan2(o[:, 1], o[:, 0]), lambda o, s: o[:, 2], (False, False)),
    # the meta loop: tasks x (inner steps + 1) collections per iteration (the test env declares no map)
    "meta": (["agent=tiny_meta", "env=two_goals", "total_env_steps=320"],
             {"env.coverage": {"x": {"name": "x", "source": "obs", "index": 0, "range": [-1.5, 1.5]},
                               "y": {"name": "step", "source": "episode_step", "range": [0, 20]}, "bins": [12, 20]}},
             lambda o, s: o[:, 0], lambda o, s: s, (False, False)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logged_counts_equal_a_brute_force_histogram_of_the_training_states(tmp_path, recorded, case):
    overrides, edits, x_of, y_of, wrap = CASES[case]
    assert train_edited(tmp_path, overrides, edits) == 0
    header, counts = read_coverage(tmp_path)
    x, y = header["x"], header["y"]
    bins_x, bins_y = header["bins"]
    assert counts.shape == (len(read_progress(tmp_path)), bins_y, bins_x) and header["shape"] == [bins_y, bins_x]
    assert (x["wrap"], y["wrap"]) == wrap
    iterations = per_iteration(recorded, tmp_path)
    for row, (obs, steps) in zip(counts, iterations):
        expected = brute_force(x_of(obs, steps), y_of(obs, steps), x["range"], y["range"], bins_x, bins_y, wrap)
        np.testing.assert_array_equal(row, expected)
    # a row per iteration, each summing to the iteration's env steps (whole paths: more than the batch)
    ends = [int(r["env_steps"]) for r in read_progress(tmp_path)]
    assert counts.sum((1, 2)).tolist() == np.diff([0, *ends]).tolist()
    # the grid is not degenerate: the states spread over several cells, some inside the range
    assert (counts.sum(0) > 0).sum() >= 3
    if case == "trpo carried over, obs":
        total = counts.sum(0)
        assert min(total[:, 0].sum(), total[:, -1].sum(), total[0].sum(), total[-1].sum()) > 0
        assert total[1:-1, 1:-1].sum() > 0


def test_the_file_is_raw_int32_rows_described_by_its_header(tmp_path):
    assert train_in_process(tmp_path, "agent=trpo", "env=maze2d", *TINY["trpo"]) == 0
    header = json.loads((tmp_path / HEADER_NAME).read_text())
    assert header["dtype"] == "<i4" and header["shape"] == [30, 30] and header["row_bytes"] == 30 * 30 * 4
    assert header["x"] == {"name": "x", "source": "obs", "index": 0, "range": [-0.3, 0.3], "wrap": False}
    assert header["lost_iterations"] == []
    raw = np.fromfile(tmp_path / ROWS_NAME, "<i4")
    assert raw.size == 2 * 30 * 30
    np.testing.assert_array_equal(read_coverage(tmp_path)[1], raw.reshape(2, 30, 30))


@pytest.mark.parametrize("agent", ["trpo", "ppo"])
def test_coverage_changes_no_learning_column(tmp_path, agent):
    """The map reads states only: no random number drawn, no env state changed."""
    args = [f"agent={agent}", "env=hopper", *TINY[agent]]
    assert train_in_process(tmp_path / "with", *args) == 0
    assert train_in_process(tmp_path / "without", *args, "~env.coverage") == 0
    with_map, without = (learning_columns(read_progress(tmp_path / d)) for d in ("with", "without"))
    assert with_map == without
    assert read_coverage(tmp_path / "with") is not None


# -- crash safety and resume --------------------------------------------------------------------------

def coverage_files(run_dir) -> dict[str, bytes]:
    return {name: (Path(run_dir) / name).read_bytes() for name in (HEADER_NAME, ROWS_NAME)}


def test_kill_after_a_checkpoint_then_resume_leaves_coverage_byte_identical(tmp_path, subprocess_env):
    # TRPO's whole paths on HalfCheetah, the coordinates read from MuJoCo's qpos by the collector
    args = ["agent=trpo", "agent.batch_size=1000", "agent.num_envs=2", "total_env_steps=30000",
            "env=half_cheetah", "checkpoint_every=2", "seed=1"]
    kill_after_third_checkpoint_then_resume(tmp_path, subprocess_env, args, total_rows=30)
    reference, resumed = coverage_files(tmp_path / "ref"), coverage_files(tmp_path / "run")
    assert len(reference[ROWS_NAME]) == 30 * 32 * 32 * 4
    assert resumed == reference


CARTPOLE = ["agent=trpo", "env=cartpole", "agent.batch_size=200", "agent.num_envs=2", "agent.whole_paths=false"]


def test_resume_drops_the_rows_past_the_checkpoint_and_recomputes_them(tmp_path):
    args = [*CARTPOLE, "checkpoint_every=4", "total_env_steps=1200"]  # checkpoints at iterations 4 and 6
    assert train_in_process(tmp_path, *args) == 0
    uninterrupted = coverage_files(tmp_path)
    # as if killed after iteration 6's rows and half of a 7th, before iteration 6's checkpoint
    os.replace(tmp_path / "checkpoints" / "prev.pt", tmp_path / "checkpoints" / "last.pt")
    with open(tmp_path / ROWS_NAME, "ab") as f:
        f.write(os.urandom(1000))
    assert rd.load_checkpoint(tmp_path)["iteration"] == 4
    assert train_in_process(tmp_path, *args) == 0
    assert coverage_files(tmp_path) == uninterrupted


def test_a_relaunched_finished_run_leaves_its_coverage_files_as_they_were(tmp_path):
    args = [*CARTPOLE, "total_env_steps=400"]
    assert train_in_process(tmp_path, *args) == 0
    before = coverage_files(tmp_path)
    mtimes = [(tmp_path / n).stat().st_mtime_ns for n in before]
    assert train_in_process(tmp_path, *args) == 0
    assert coverage_files(tmp_path) == before
    assert [(tmp_path / n).stat().st_mtime_ns for n in before] == mtimes


@pytest.mark.parametrize("damage", ["flipped byte", "cut short", "missing"])
def test_a_damaged_row_the_checkpoint_covers_is_zeroed_and_listed_lost(tmp_path, damage, caplog):
    reference = tmp_path / "reference"
    assert train_in_process(reference, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    run = tmp_path / "run"
    assert train_in_process(run, *CARTPOLE, "checkpoint_every=2", "total_env_steps=800") == 0
    path, row_bytes = run / ROWS_NAME, 32 * 32 * 4
    data = bytearray(path.read_bytes())
    if damage == "flipped byte":
        data[row_bytes + 17] ^= 0xFF  # iteration 2
        path.write_bytes(bytes(data))
        lost = [2]
    elif damage == "cut short":
        path.write_bytes(bytes(data[:2 * row_bytes + 5]))  # iterations 3 and 4
        lost = [3, 4]
    else:
        path.unlink()
        lost = [1, 2, 3, 4]
    assert train_in_process(run, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1200") == 0
    assert str(path) in caplog.text and "cannot be recomputed" in caplog.text
    header, counts = read_coverage(run)
    _, expected = read_coverage(reference)
    assert header["lost_iterations"] == lost
    kept = [i for i in range(6) if i + 1 not in lost]
    np.testing.assert_array_equal(counts[kept], expected[kept])
    assert not counts[[i - 1 for i in lost]].any()
    # the lost rows stay listed, and are not flagged again, through later resumes
    caplog.clear()
    assert train_in_process(run, *CARTPOLE, "checkpoint_every=2", "total_env_steps=1600") == 0
    assert read_coverage(run)[0]["lost_iterations"] == lost and "cannot be recomputed" not in caplog.text


def test_a_run_without_coverage_writes_no_coverage_files(tmp_path):
    assert train_in_process(tmp_path / "none", *CARTPOLE, "total_env_steps=400", "~env.coverage") == 0
    assert read_coverage(tmp_path / "none") is None
    assert not (tmp_path / "none" / HEADER_NAME).exists() and not (tmp_path / "none" / ROWS_NAME).exists()
    # a fresh start without coverage removes an earlier run's files from the directory
    assert train_in_process(tmp_path / "again", *CARTPOLE, "total_env_steps=400") == 0
    assert (tmp_path / "again" / ROWS_NAME).exists()
    assert train_in_process(tmp_path / "again", *CARTPOLE, "total_env_steps=400", "~env.coverage",
                            "resume=false") == 0
    assert not (tmp_path / "again" / HEADER_NAME).exists() and not (tmp_path / "again" / ROWS_NAME).exists()


def test_a_run_begun_before_envs_declared_coverage_resumes_without_a_map(tmp_path):
    # its checkpoint's config has no env.coverage, as the checkpoints written before this feature
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400", "~env.coverage") == 0
    state = rd.load_checkpoint(tmp_path)
    assert "coverage" not in state["config"]["env"]
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=800") == 0  # not "a different configuration"
    assert len(read_progress(tmp_path)) == 4 and read_coverage(tmp_path) is None
    assert "coverage" not in rd.load_checkpoint(tmp_path)["config"]["env"]


def test_changing_the_coverage_block_of_a_run_is_a_different_configuration(tmp_path, capsys):
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=400") == 0
    assert train_in_process(tmp_path, *CARTPOLE, "total_env_steps=800", "env.coverage.bins=16") == 2
    assert "env.coverage.bins: 32 -> 16" in capsys.readouterr().err


# -- the figure ---------------------------------------------------------------------------------------

def synthetic_run(run_dir: Path, spec, rows: np.ndarray) -> None:
    log = CoverageLog(run_dir, spec)
    run_dir.mkdir(parents=True)
    log.start_fresh()
    for row in rows:
        log.append(row)
    log.close()


def test_draw_coverage_maps_writes_png_and_pdf_for_two_methods_and_two_seeds(tmp_path):
    spec = coverage_spec({"coverage": {"x": {"name": "torso x", "source": "obs", "index": 0, "range": [-10, 10]},
                                       "y": {"name": "torso y", "source": "obs", "index": 1, "range": [-5, 5]},
                                       "bins": [16, 8]}})
    rng = np.random.default_rng(0)
    groups = {}
    for method in ("none", "vime"):
        groups[method] = []
        for seed, iterations in ((0, 20), (1, 23)):
            run_dir = tmp_path / method / f"seed_{seed}"
            synthetic_run(run_dir, spec, rng.integers(0, 50, (iterations, 8, 16)).astype(np.int32))
            groups[method].append(run_dir)
    groups["vime"].append(tmp_path / "no_coverage")  # a run without coverage is skipped
    (tmp_path / "no_coverage").mkdir()
    paths = draw_coverage_maps(groups, tmp_path / "maps" / "coverage_half_cheetah.png", "half_cheetah")
    assert paths == [tmp_path / "maps" / "coverage_half_cheetah.png", tmp_path / "maps" / "coverage_half_cheetah.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    # the windows: the first and last ceil(10%) of each run's iterations (2 of 20, 3 of 23)
    counts = read_coverage(groups["none"][1])[1]
    early, late, k = early_late_counts(counts)
    assert k == 3
    np.testing.assert_array_equal(early, counts[:3].sum(0))
    np.testing.assert_array_equal(late, counts[20:].sum(0))
    assert early_late_counts(read_coverage(groups["none"][0])[1])[2] == 2
    assert early_late_counts(counts[:4])[2] == 1  # at least one iteration


def test_no_run_with_coverage_draws_no_figure(tmp_path):
    (tmp_path / "run").mkdir()
    assert read_coverage(tmp_path / "run") is None
    assert draw_coverage_maps({"none": [tmp_path / "run"]}, tmp_path / "maps.png", "cartpole") == []
    assert not (tmp_path / "maps.png").exists()


def test_maps_of_real_runs(tmp_path):
    groups = {m: [] for m in ("none", "simhash")}
    for method in groups:
        for seed in (0, 1):
            run_dir = tmp_path / method / str(seed)
            assert train_in_process(run_dir, "agent=trpo", "env=mountain_car_sparse", f"exploration={method}",
                                    f"seed={seed}", *TINY["trpo"]) == 0
            groups[method].append(run_dir)
    paths = draw_coverage_maps(groups, tmp_path / "coverage.png", "mountain_car_sparse")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


# -- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,edits,message", [
    (["env.coverage.x.source=velocity"], {},
     "env.coverage.x.source: got 'velocity'; allowed values: obs | obs_angle | episode_step | qpos | attribute"),
    (["env.coverage.x.index=-1"], {}, "env.coverage.x.index: must be an integer >= 0"),
    (["env.coverage.y.index=99"], {}, "env.coverage.y.index: HalfCheetahEnv's qpos has 9 entries, got 99"),
    (["env.coverage.y.range=[1,0]"], {}, "env.coverage.y.range: must be [low, high], finite numbers with low < high"),
    (["env.coverage.x.range=[0]"], {}, "env.coverage.x.range: must be [low, high]"),
    (["env.coverage.x.range=[0,abc]"], {}, "env.coverage.x.range: must be [low, high]"),
    (["env.coverage.bins=0"], {}, "env.coverage.bins: must be an integer in [1, 1024] or [bins_x, bins_y] of such"),
    (["~env.coverage.x.name"], {}, "env.coverage.x.name: must be the coordinate's name"),
    ([], {"env.coverage.x.colour": "red"}, "env.coverage.x.colour: not a coverage axis key"),
    ([], {"env.coverage.z": 1}, "env.coverage.z: not a coverage key; the keys: x, y, bins"),
    ([], {"env.coverage": [1, 2]}, "env.coverage: must be null or a mapping with keys x, y, bins"),
    ([], {"env.coverage.x.wrap": "maybe"}, "env.coverage.x.wrap: must be true or false, got 'maybe'"),
    ([], {"env.coverage.x.attribute": "position"}, "env.coverage.x.attribute: is read by source attribute only"),
    (["env=mountain_car", "env.coverage.x.source=qpos"], {},
     "env.coverage.x.source: qpos needs a MuJoCo env (env.unwrapped.data.qpos); MountainCarEnv has none"),
    (["env=mountain_car", "env.coverage.y.index=2"], {}, "env.coverage.y.index: the observation has 2 entries, got 2"),
    (["env=pendulum", "env.coverage.x.index=[1]"], {}, "env.coverage.x.index: must be [sine index, cosine index]"),
    (["env=chain", "env.coverage.x.attribute=speed"], {},
     "env.coverage.x.attribute: ChainEnv has no number attribute 'speed'"),
    (["env=chain", "env.coverage.y.source=obs"], {}, "env.coverage.y.index: must be an integer >= 0 (source obs"),
    (["env=chain"], {"env.coverage.y.index": 1}, "env.coverage.y.index: source episode_step takes no index"),
])
def test_a_bad_coverage_block_is_refused_before_any_work_naming_the_key(tmp_path, capsys, overrides, edits, message):
    assert train_edited(tmp_path, overrides, edits) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "progress.csv").exists() and not (tmp_path / ROWS_NAME).exists()
    assert not (tmp_path / HEADER_NAME).exists()


def test_a_bad_coverage_block_exits_2_from_the_command_line(tmp_path, subprocess_env):
    out = subprocess.run(train_command(tmp_path, "env=maze2d", "env.coverage.y.source=qpos"), env=subprocess_env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid configuration: env.coverage.y.source: qpos needs a MuJoCo env" in out.stderr


# -- the env configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("conf", ENV_CONFS, ids=[p.stem for p in ENV_CONFS])
def test_every_env_config_declares_coverage_or_says_null(conf):
    from runner.config import compose
    from runner.envs import make_vector_env

    raw = yaml.safe_load(conf.read_text())
    assert "coverage" in raw, f"{conf.name}: declare the coverage block (docs/contributing.md) or coverage: null"
    cfg, _ = compose([f"env={conf.stem}"])
    spec = coverage_spec(cfg.env)
    if any("atari" in str(d) for d in raw.get("defaults", [])):
        assert spec is None  # pixels: no map
    if spec is None:
        assert raw["coverage"] is None
        return
    # the block fits the env, and the env's start states lie inside both ranges (not in an edge bin's
    # overflow): a wrong index or a range that misses the env shows here
    vec_env = make_vector_env(cfg.env, 2)
    try:
        counter = CoverageCounter(spec, vec_env)
        obs, _ = vec_env.reset(seed=[0, 1])

        class Start:  # the start states, as a rollout of one step
            def __init__(self):
                self.obs, self.episode_step = obs[None], np.zeros((1, 2), np.int64)

        env_values = np.asarray([counter.read_envs(np.ones(2, bool))], np.float64) if counter.reads_envs else None
        for axis in (spec.x, spec.y):
            values = counter.values(axis, Start(), env_values)
            if axis.wrap:
                values = axis.low + np.mod(values - axis.low, axis.high - axis.low)
            assert ((values >= axis.low) & (values < axis.high)).all(), (conf.stem, axis.key, values)
        counter.add(Start(), env_values)
        assert counter.take_row().sum() == 2
    finally:
        vec_env.close()
