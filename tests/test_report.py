"""python -m runner.report on synthetic runs whose numbers are chosen by hand."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner import report
from runner.progress import FIXED_COLUMNS

NAN = float("nan")
BATCH = 100


def make_run(root: Path, name: str, values, *, agent: str = "trpo", env: str = "CartPole-v1", seed: int = 0,
             total_iterations: int | None = None, error: str | None = None, agent_keys: dict | None = None,
             overshoot: int = 0, **config) -> Path:
    """A run directory with a minimal .hydra/config.yaml and a progress.csv whose task metric is
    `values` (NaN: no episode ended in that iteration). The return is the metric + 1000, so a
    report that read the wrong column would be off by 1000. `overshoot`: env steps beyond BATCH in
    every iteration (TRPO's whole paths)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    total_iterations = total_iterations or len(values)
    cfg = {"agent": {"_target_": f"algos.agents.{agent}.{agent.upper()}", "batch_size": BATCH,
                     **(agent_keys or {})},
           "exploration": {"_target_": "algos.exploration.none.NoExploration", "coef": 0.0},
           "env": {"id": env}, "seed": seed, "total_env_steps": total_iterations * BATCH,
           "threads": 1, "device": "cpu", "resume": True, "logger": {"wandb": {"mode": "disabled"}}, **config}
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    with open(run / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIXED_COLUMNS, restval="")
        writer.writeheader()
        for i, v in enumerate(values, start=1):
            cell = "" if math.isnan(v) else v
            writer.writerow({"iteration": i, "env_steps": i * (BATCH + overshoot), "task_metric_mean": cell,
                             "return_ext_mean": "" if cell == "" else v + 1000})
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.json").write_text(json.dumps(
        {"iteration": len(values), "env_steps": len(values) * (BATCH + overshoot), "total_iterations": total_iterations,
         "finished": len(values) >= total_iterations}))
    if error:
        (run / "error.txt").write_text(error + "\n")
    return run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def curve(out: Path, method: str, env: str = "CartPole-v1") -> dict[int, dict]:
    return {int(r["env_steps"]): r for r in read_csv(out / "curves.csv") if r["method"] == method and r["env"] == env}


@pytest.fixture
def two_methods(tmp_path):
    """trpo: seeds with offsets 0, 10, 50 on 1..20 (seed 1 has no episode at iteration 5, seed 2
    none at iteration 1); ppo: two seeds, 100 + i and 110 + i. Two environments."""
    root = tmp_path / "sweep"
    for seed, offset in enumerate([0, 10, 50]):
        values = [i + offset for i in range(1, 21)]
        if seed == 1:
            values[4] = NAN
        if seed == 2:
            values[0] = NAN
        make_run(root, f"trpo/seed_{seed}", values, seed=seed)
    for seed, offset in enumerate([100, 110]):
        make_run(root, f"ppo/seed_{seed}", [i + offset for i in range(1, 21)], agent="ppo", seed=seed)
    make_run(root, "ppo-hopper/seed_0", [1.0] * 20, agent="ppo", env="Hopper-v5")
    make_run(root, "ppo-hopper/seed_1", [3.0] * 20, agent="ppo", env="Hopper-v5", seed=1)
    return root


def test_curve_means_and_final_scores_equal_hand_computed_values(two_methods, tmp_path):
    out = tmp_path / "report"
    result = report.build_report([two_methods], out, reps=500)
    trpo = curve(out, "TRPO")
    # Iteration 1: seed 2 has no value yet (no extrapolation): mean of 1 and 11.
    assert float(trpo[100]["mean"]) == pytest.approx(6.0) and trpo[100]["seeds"] == "2"
    # Iteration 5: seed 1 is interpolated between its neighbours (14, 16): (5 + 15 + 55) / 3.
    assert float(trpo[500]["mean"]) == pytest.approx(25.0) and trpo[500]["seeds"] == "3"
    assert float(trpo[2000]["mean"]) == pytest.approx((20 + 30 + 70) / 3)
    assert float(curve(out, "PPO")[300]["mean"]) == pytest.approx(108.0)
    assert trpo[100]["metric"] == "task_metric_mean"

    finals = {(r["env"], r["method"]): r for r in read_csv(out / "final_scores.csv")}
    # Final 10% of 20 iterations = iterations 19 and 20: seed scores 19.5, 29.5, 69.5.
    cell = finals[("CartPole-v1", "TRPO")]
    assert (cell["seeds"], cell["window_start"], cell["window_end"]) == ("3", "1900", "2000")
    assert float(cell["mean"]) == pytest.approx((19.5 + 29.5 + 69.5) / 3)
    assert 19.5 <= float(cell["ci_low"]) < float(cell["mean"]) < float(cell["ci_high"]) <= 69.5
    assert float(finals[("CartPole-v1", "PPO")]["mean"]) == pytest.approx((119.5 + 129.5) / 2)
    assert float(finals[("Hopper-v5", "PPO")]["mean"]) == pytest.approx(2.0)
    markdown = (out / "final_scores.md").read_text()
    assert "| CartPole-v1 | TRPO | task_metric_mean | 3 | 39.5 [" in markdown
    assert result["incomplete"] == []
    for name in ("curves.png", "curves.pdf", "report.md", "incomplete.md"):
        assert (out / name).stat().st_size > 0


def test_band_shrinks_with_more_seeds(tmp_path):
    """Seeds alternate between two levels (i and i + 10): the mean is the same, its CI narrower
    with 16 seeds than with 4; one seed has no band at all."""
    widths = {}
    for n in (1, 4, 16):
        root = tmp_path / f"n{n}"
        for seed in range(n):
            make_run(root, f"seed_{seed}", [i + 10.0 * (seed % 2) for i in range(1, 11)], seed=seed)
        report.build_report([root], root / "report", reps=1000)
        rows = read_csv(root / "report" / "curves.csv")
        widths[n] = np.array([float(r["ci_high"]) - float(r["ci_low"]) for r in rows])
    assert np.isnan(widths[1]).all()
    assert (widths[16] < widths[4]).all() and (widths[4] > 0).all()


def test_incomplete_runs_are_listed_not_dropped(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(3):
        make_run(root, f"done/seed_{seed}", [float(i) for i in range(1, 11)], seed=seed)
    make_run(root, "short/seed_3", [1.0, 2.0, 3.0], seed=3, total_iterations=10)   # interrupted
    make_run(root, "nan/seed_4", [1.0, 2.0], seed=4, total_iterations=10,
             error="agent (TRPO): non-finite value (NaN/inf) in loss")
    make_run(root, "quiet/seed_5", [1.0] * 9 + [NAN], seed=5)                        # no episode at the end
    (root / "pending" / "seed_6" / ".hydra").mkdir(parents=True)                       # not started
    result = report.build_report([root], tmp_path / "report", reps=200)
    text = (tmp_path / "report" / "incomplete.md").read_text()
    short = ("short/seed_3` (TRPO-NoExploration, CartPole-v1, seed 3): interrupted at 300/1,000 env steps "
             "(stopped by a signal; relaunch the same command to resume); its curve ends at 300 env steps where "
             "other seeds reach 1,000; left out of the final scores: stopped at 300 env steps, before the final "
             "window (1,000-1,000)")
    for expected in (short,
                     "nan/seed_4` (TRPO-NoExploration, CartPole-v1, seed 4): failed at 200/1,000 env steps "
                     "(agent (TRPO): non-finite value (NaN/inf) in loss); its curve ends at 200",
                     "pending/seed_6`: not started, no progress rows yet",
                     "quiet/seed_5` (TRPO-NoExploration, CartPole-v1, seed 5): left out of the final scores: "
                     "no episode ended in the final window (1,000-1,000 env steps)"):
        assert any(expected in item for item in result["incomplete"]), expected
        assert expected in text
    final = read_csv(tmp_path / "report" / "final_scores.csv")[0]
    assert final["seeds"] == "3" and float(final["mean"]) == pytest.approx(10.0)
    assert "incomplete" in (tmp_path / "report" / "report.md").read_text().lower()


def test_rliable_iqm_and_probability_of_improvement_with_two_seeds(two_methods, tmp_path):
    out = tmp_path / "report"
    result = report.build_report([two_methods], out, reps=300)
    iqm = {(r["env"], r["method"]): r for r in read_csv(out / "iqm.csv")}
    assert set(iqm) == {("CartPole-v1", "PPO"), ("CartPole-v1", "TRPO"), ("Hopper-v5", "PPO")}
    # IQM of three or two scores trims nothing: the mean.
    assert float(iqm[("CartPole-v1", "TRPO")]["iqm"]) == pytest.approx((19.5 + 29.5 + 69.5) / 3)
    poi = read_csv(out / "probability_of_improvement.csv")
    assert [(r["env"], r["x"], r["y"]) for r in poi] == [("CartPole-v1", "PPO", "TRPO")]
    assert float(poi[0]["p_x_better"]) == 1.0   # every PPO seed beats every TRPO seed
    assert result["notes"] == []
    again = report.build_report([two_methods], tmp_path / "again", reps=300)   # reproducible
    for name in ("curves.csv", "final_scores.csv", "iqm.csv", "probability_of_improvement.csv"):
        assert (out / name).read_text() == (tmp_path / "again" / name).read_text()
    assert again["notes"] == []


def test_rliable_is_absent_with_a_note_for_a_single_seed(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "trpo", [1.0] * 10)
    make_run(root, "ppo", [2.0] * 10, agent="ppo")
    result = report.build_report([root], tmp_path / "report", reps=200)
    assert read_csv(tmp_path / "report" / "iqm.csv") == []
    assert read_csv(tmp_path / "report" / "probability_of_improvement.csv") == []
    assert len(result["notes"]) == 2 and all("need at least 2" in note for note in result["notes"])
    assert "need at least 2" in (tmp_path / "report" / "report.md").read_text()


def test_methods_are_the_keys_that_differ_and_seed_threads_device_are_ignored(tmp_path):
    root = tmp_path / "sweep"
    make_run(root, "a0", [1.0] * 10, agent_keys={"max_kl": 0.01})
    make_run(root, "a1", [3.0] * 10, seed=1, threads=4, device="cuda", agent_keys={"max_kl": 0.01})
    make_run(root, "b0", [5.0] * 10, agent_keys={"max_kl": 0.02})
    make_run(root, "p0", [7.0] * 10, agent="ppo")
    make_run(root, "h0", [9.0] * 10, agent="ppo", env="Hopper-v5")
    make_run(root, "h1", [11.0] * 10, agent="ppo", env="Hopper-v5")
    (root / "h1" / ".hydra" / "config.yaml").write_text(
        (root / "h1" / ".hydra" / "config.yaml").read_text().replace(
            "id: Hopper-v5", "id: Hopper-v5\n  max_episode_steps: 500"))
    report.build_report([root], tmp_path / "report", reps=200)
    finals = {(r["env"], r["method"]): r for r in read_csv(tmp_path / "report" / "final_scores.csv")}
    assert set(finals) == {("CartPole-v1", "TRPO agent.max_kl=0.01"), ("CartPole-v1", "TRPO agent.max_kl=0.02"),
                           ("CartPole-v1", "PPO"), ("Hopper-v5 env.max_episode_steps=None", "PPO"),
                           ("Hopper-v5 env.max_episode_steps=500", "PPO")}
    cell = finals[("CartPole-v1", "TRPO agent.max_kl=0.01")]
    assert cell["seeds"] == "2" and float(cell["mean"]) == 2.0


def test_return_is_used_where_the_task_metric_is_missing(tmp_path):
    root = tmp_path / "sweep"
    run = make_run(root, "r", [1.0, 2.0])
    text = (run / "progress.csv").read_text().replace(",1.0,", ",,").replace(",2.0,", ",,")
    (run / "progress.csv").write_text(text)   # task_metric_mean emptied, return kept (1001, 1002)
    report.build_report([root], tmp_path / "report", reps=100)
    rows = read_csv(tmp_path / "report" / "curves.csv")
    assert [(r["metric"], float(r["mean"])) for r in rows] == [("return_ext_mean", 1001.0), ("return_ext_mean", 1002.0)]


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no runs below this directory" in capsys.readouterr().err
    (tmp_path / "pending" / ".hydra").mkdir(parents=True)
    assert report.main([str(tmp_path)]) == 2
    assert "has a configuration and progress rows yet" in capsys.readouterr().err


def test_command_line_writes_the_report_and_prints_the_table(two_methods, capsys):
    assert report.main([str(two_methods), "--bootstrap-reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "| CartPole-v1 | PPO |" in out and "incomplete: nothing" in out
    assert (two_methods / "report" / "curves.png").exists()


def test_whole_path_seeds_whose_env_steps_differ_are_complete_and_all_count(tmp_path):
    """TRPO's whole paths take a little more than batch_size steps, differently per seed: finished seeds
    of equal iterations are neither 'shorter' nor left out of the final window."""
    root = tmp_path / "sweep"
    for seed in range(3):
        make_run(root, f"s{seed}", [0.0] * 8 + [1.0, 1.0], seed=seed, overshoot=7 * seed)
    result = report.build_report([root], tmp_path / "report", reps=200)
    assert result["incomplete"] == []
    (final,) = result["finals"]
    assert len(final.scores) == 3 and final.mean == pytest.approx(1.0)


# -- reference curves, the baseline, the size of curves.csv ------------------------------------

def write_reference(directory: Path, rows: list[tuple]) -> Path:
    """A synthetic committed report: curves.csv rows (env, method, env_steps, mean)."""
    directory.mkdir(parents=True)
    with open(directory / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, report.CURVE_COLUMNS)
        writer.writeheader()
        for env, method, steps, mean in rows:
            writer.writerow({"env": env, "method": method, "metric": "task_metric_mean", "env_steps": steps,
                             "mean": mean, "ci_low": mean - 1, "ci_high": mean + 1, "seeds": 5})
    return directory


def test_against_draws_the_reference_curves_dashed_in_their_methods_colour(two_methods, tmp_path):
    reference = write_reference(tmp_path / "results" / "preset", [
        ("CartPole-v1", "TRPO", 0, 5.0), ("CartPole-v1", "TRPO", 1000, 7.0), ("CartPole-v1", "TRPO", 2000, 9.0),
        ("CartPole-v1", "SAC", 0, 1.0), ("CartPole-v1", "SAC", 2000, 2.0),     # a method these runs lack
        ("Walker2d-v5", "TRPO", 0, 3.0)])                                       # an environment they lack
    runs, _ = report.load_runs([two_methods])
    report.label_runs(runs)
    curves = [report.learning_curve([r for r in runs if (r.env, r.method) == cell], "task_metric_mean", 100, 0)
              for cell in sorted({(r.env, r.method) for r in runs})]
    fig = report.curve_figure(curves, "", report.read_reference(reference))
    cartpole, hopper = fig.axes[0], fig.axes[1]
    assert (cartpole.get_title(), hopper.get_title()) == ("CartPole-v1", "Hopper-v5")
    dashed = {line.get_label(): line for line in cartpole.get_lines() if line.get_linestyle() == "--"}
    solid = {line.get_label(): line for line in cartpole.get_lines() if line.get_linestyle() == "-"}
    assert set(dashed) == {"TRPO (reference)", "SAC (reference)"}
    assert set(solid) == {"PPO (2 seeds)", "TRPO (3 seeds)"}
    assert list(dashed["TRPO (reference)"].get_xdata()) == [0, 1000, 2000]
    assert list(dashed["TRPO (reference)"].get_ydata()) == [5.0, 7.0, 9.0]
    assert dashed["TRPO (reference)"].get_color() == solid["TRPO (3 seeds)"].get_color()
    assert len({dashed["SAC (reference)"].get_color(), solid["PPO (2 seeds)"].get_color(),
                solid["TRPO (3 seeds)"].get_color()}) == 3
    assert dashed["TRPO (reference)"].get_zorder() < solid["TRPO (3 seeds)"].get_zorder()   # beneath
    assert [line.get_linestyle() for line in hopper.get_lines()] == ["-"]                    # no PPO reference
    assert "dashed" in fig._suptitle.get_text()
    legend = [t.get_text() for t in cartpole.get_legend().get_texts()]
    assert "TRPO (reference)" in legend

    result = report.build_report([two_methods], tmp_path / "report", reps=100, against=reference)
    assert len(result["reference"]) == 3
    assert "environment 'Walker2d-v5' has no runs here" in " ".join(result["other_notes"])
    assert "dashed: the reference curves of" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0


def test_against_a_directory_without_curves_is_a_clear_error(two_methods, tmp_path, capsys):
    assert report.main([str(two_methods), "--against", str(tmp_path / "nowhere")]) == 2
    assert "--against" in capsys.readouterr().err and not (two_methods / "report").exists()


def test_baseline_states_each_method_against_it(two_methods, tmp_path, capsys):
    out = tmp_path / "report"
    result = report.build_report([two_methods], out, reps=300, baseline="TRPO")
    poi = read_csv(out / "probability_of_improvement.csv")
    assert [(r["env"], r["x"], r["y"], float(r["p_x_better"])) for r in poi] == [("CartPole-v1", "PPO", "TRPO", 1.0)]
    assert "| CartPole-v1 | P(PPO > TRPO) = 1.00 |" in (out / "report.md").read_text()
    assert result["notes"] == ["Hopper-v5: the baseline 'TRPO' has no cell with >= 2 seeds here, so no "
                               "P(method > TRPO)"]
    # oriented the other way round
    report.build_report([two_methods], tmp_path / "other", reps=300, baseline="PPO")
    poi = read_csv(tmp_path / "other" / "probability_of_improvement.csv")
    assert [(r["x"], r["y"], float(r["p_x_better"])) for r in poi] == [("TRPO", "PPO", 0.0)]
    assert report.main([str(two_methods), "--baseline", "vime", "--out", str(tmp_path / "bad")]) == 2
    assert "--baseline 'vime' is not a method of these runs; their methods: PPO, TRPO" in capsys.readouterr().err


def test_curve_points_keeps_evenly_spaced_points_of_the_full_curve(two_methods, tmp_path):
    report.build_report([two_methods], tmp_path / "all", reps=100)
    report.build_report([two_methods], tmp_path / "few", reps=100, curve_points=5)
    full = curve(tmp_path / "all", "TRPO")
    few = curve(tmp_path / "few", "TRPO")
    # 20 points (env steps 100..2000) thinned to indices 0, 5, 10, 14, 19 (rounded linspace)
    assert sorted(few) == [100, 600, 1100, 1500, 2000]
    assert all(few[x] == full[x] for x in few)   # the same numbers, not re-averaged
    assert len(read_csv(tmp_path / "few" / "curves.csv")) == 3 * 5
    # the figures use every point either way
    assert (tmp_path / "few" / "curves.png").stat().st_size > 0


def test_per_environment_settings_do_not_split_a_method(tmp_path):
    """A preset's cells give TRPO batch 100 on one task and 200 on another: one method, TRPO, on both;
    a key that differs between runs of one task still tells methods apart."""
    root = tmp_path / "sweep"
    make_run(root, "a0", [1.0] * 10, agent_keys={"policy_hidden": [32]})
    make_run(root, "a1", [2.0] * 10, seed=1, agent_keys={"policy_hidden": [32]})
    make_run(root, "h0", [3.0] * 10, env="Hopper-v5", agent_keys={"policy_hidden": [64, 32], "max_kl": 0.01})
    make_run(root, "h1", [4.0] * 10, env="Hopper-v5", agent_keys={"policy_hidden": [64, 32], "max_kl": 0.02})
    report.build_report([root], tmp_path / "report", reps=100)
    finals = {(r["env"], r["method"]): r["seeds"] for r in read_csv(tmp_path / "report" / "final_scores.csv")}
    # (before: "agent.policy_hidden=[32]" on CartPole, "agent.policy_hidden=[64, 32] agent.max_kl=..." on Hopper)
    assert finals == {("CartPole-v1", "TRPO-NoExploration"): "2", ("Hopper-v5", "agent.max_kl=0.01"): "1",
                      ("Hopper-v5", "agent.max_kl=0.02"): "1"}
