"""scripts/reproduce.py: each preset end to end at smoke scale, relaunching, bad input, and the
consistency of the committed results/ (every preset results/README.md lists has its files, and its
manifest names a commit of this repository)."""
import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "reproduce.py"
RESULTS = ROOT / "results"
# Measured on the 2-core machine (shared with other work, so +-50%), 2 seeds, --bootstrap-reps 200:
# vime_classic 30-50 s, hash_rllab 29-38 s, emi_mujoco 38-59 s, ex2_continuous 51-84 s, hash_atari and
# emi_atari 125-220 s each.
FAST = ["vime_classic", "hash_rllab"]
SLOW = ["emi_mujoco", "ex2_continuous", "hash_atari", "emi_atari"]


def load_script():
    """scripts/reproduce.py as a module (scripts/ is no package)."""
    if "reproduce" not in sys.modules:
        spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["reproduce"] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules["reproduce"]


def preset_sweep(preset: str) -> dict:
    params = OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml").hydra.sweeper.params
    return {key: str(value).split(",") for key, value in params.items()}


def declares_coverage(env: str) -> bool:
    return OmegaConf.load(ROOT / "conf" / "env" / f"{env}.yaml").get("coverage") is not None


def coverage_available() -> bool:
    return importlib.util.find_spec("runner.coverage") is not None


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def subprocess_env() -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


_SMOKE: dict[str, dict] = {}


def smoke(preset: str, tmp_path_factory) -> dict:
    """The preset's smoke reproduction (run once per test session): its command, output, wall time."""
    if preset not in _SMOKE:
        root = tmp_path_factory.mktemp(f"smoke-{preset}")
        command = [sys.executable, str(SCRIPT), preset, "--scale", "smoke", "--seeds", "2", "--out",
                   str(root / "out"), "--sweep-dir", str(root / "sweep"), "--bootstrap-reps", "200"]
        start = time.monotonic()
        proc = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
        _SMOKE[preset] = {"root": root, "out": root / "out", "sweep": root / "sweep", "command": command,
                          "proc": proc, "wall_s": time.monotonic() - start}
    return _SMOKE[preset]


def check_smoke(preset: str, tmp_path_factory) -> None:
    got = smoke(preset, tmp_path_factory)
    proc, out = got["proc"], got["out"]
    print(f"{preset} smoke, 2 seeds: {got['wall_s']:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = preset_sweep(preset)
    envs, methods = sweep["env"], sweep["exploration"]

    for name in ("report.md", "curves.png", "curves.pdf", "curves.csv", "final_scores.csv", "final_scores.md",
                 "iqm.csv", "probability_of_improvement.csv", "incomplete.md", "manifest.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # One line per (env, method) of the preset: the per-environment cells do not split a method.
    curves = read_csv(out / "curves.csv")
    assert {(r["env"], r["method"]) for r in curves} == {(e, m) for e in envs for m in methods}
    finals = read_csv(out / "final_scores.csv")
    assert {(r["env"], r["method"]) for r in finals} == {(e, m) for e in envs for m in methods}
    assert all(r["seeds"] == "2" for r in finals)
    # Probability of improvement: every method against the baseline, stated so in report.md.
    poi = read_csv(out / "probability_of_improvement.csv")
    assert sorted((r["env"], r["x"], r["y"]) for r in poi) == sorted(
        (e, m, "none") for e in envs for m in methods if m != "none")
    report_md = (out / "report.md").read_text()
    for method in methods:
        if method != "none":
            assert f"P({method} > none)" in report_md
    assert "## How this was produced" in report_md and "Nothing: every run finished" in report_md

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["preset"], manifest["scale"], manifest["seeds"], manifest["baseline"]) == (
        preset, "smoke", 2, "none")
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["commit"]) and isinstance(manifest["dirty"], bool)
    hardware = manifest["hardware"]
    assert hardware["cpu"] and hardware["cores"] >= 1 and hardware["torch_threads_per_run"] == 1
    assert manifest["wall_s"] > 0 and manifest["start"] <= manifest["end"]
    assert manifest["launcher"] == "basic" and "--scale smoke" in manifest["command"]
    assert set(manifest["envs"]) == set(envs)
    for env, info in manifest["envs"].items():
        assert set(info["overrides"]) == set(methods) and info["train_wall_s"] > 0
        assert all("total_env_steps=" in " ".join(o) for o in info["overrides"].values())
        assert sum(len(dirs) for dirs in info["runs"].values()) == 2 * len(methods)
    assert all(s["launched"] and s["returncode"] == 0 and s["wall_s"] > 0 for s in manifest["sweeps"])
    assert sum(s["states"].get("finished", 0) for s in manifest["sweeps"]) == 2 * len(envs) * len(methods)

    # Coverage maps: where the environment declares coverage (and runner.coverage draws them).
    for env in envs:
        expected = coverage_available() and declares_coverage(env)
        assert (out / f"coverage_{env}.png").is_file() == expected, env
        assert (f"(coverage_{env}.png)" in report_md) == expected, env


@pytest.mark.parametrize("preset", [*FAST, *(pytest.param(p, marks=pytest.mark.slow) for p in SLOW)])
def test_smoke_scale_runs_end_to_end_and_writes_every_file(preset, tmp_path_factory):
    check_smoke(preset, tmp_path_factory)


def test_relaunching_the_same_command_runs_nothing_new(tmp_path_factory):
    got = smoke("vime_classic", tmp_path_factory)
    assert got["proc"].returncode == 0, got["proc"].stderr[-3000:]
    runs = sorted(p.parent for p in got["sweep"].rglob("progress.csv"))
    assert len(runs) == 4 * 2 * 2
    before = {run: ((run / "progress.csv").read_text(), (run / "checkpoints" / "last.pt").stat().st_mtime_ns)
              for run in runs}
    first = json.loads((got["out"] / "manifest.json").read_text())
    first_scores = read_csv(got["out"] / "final_scores.csv")

    again = subprocess.run(got["command"], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("nothing to launch") == len(first["sweeps"]) and "launching" not in again.stdout
    assert {run: ((run / "progress.csv").read_text(), (run / "checkpoints" / "last.pt").stat().st_mtime_ns)
            for run in runs} == before
    assert sorted(p.parent for p in got["sweep"].rglob("progress.csv")) == runs
    manifest = json.loads((got["out"] / "manifest.json").read_text())
    assert not any(s["launched"] for s in manifest["sweeps"])
    assert manifest["previous_launches"][-1]["start"] == first["start"]
    # the same numbers: the report is a function of the runs
    assert read_csv(got["out"] / "final_scores.csv") == first_scores


@pytest.mark.parametrize("argv,says", [
    (["no_such_preset", "--scale", "smoke"],
     "preset 'no_such_preset' is not in reproduce.yaml; allowed: emi_atari, emi_mujoco, ex2_continuous, hash_atari, "
     "hash_rllab, vime_classic"),
    (["vime_classic", "--scale", "huge"], "--scale 'huge': allowed: smoke, reduced, paper"),
    (["vime_classic", "--scale", "smoke", "--launcher", "kubernetes"], "--launcher 'kubernetes': allowed: basic, "
                                                                       "local, local_submitit, slurm, ray"),
    (["vime_classic", "--scale", "smoke", "--seeds", "0"], "--seeds 0: must be at least 1"),
])
def test_bad_input_exits_2_naming_the_argument_before_any_work(argv, says, tmp_path, capsys):
    reproduce = load_script()
    assert reproduce.main([*argv, "--sweep-dir", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "out").exists()


def test_a_launcher_without_its_config_is_refused_by_name(tmp_path, capsys):
    reproduce = load_script()
    if (reproduce.LAUNCHERS / "ray.yaml").exists():
        pytest.skip("conf/hydra/launcher/ray.yaml exists")
    assert reproduce.main(["vime_classic", "--scale", "smoke", "--launcher", "ray",
                           "--sweep-dir", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "--launcher ray: there is no launcher config conf/hydra/launcher/ray.yaml" in err and "local" in err
    assert not (tmp_path / "sweep").exists()


def test_a_missing_scale_argument_is_an_argparse_error(capsys):
    reproduce = load_script()
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["vime_classic"])
    assert exit_info.value.code == 2 and "--scale" in capsys.readouterr().err


def test_a_bad_override_in_the_manifest_is_refused_before_any_run(tmp_path, capsys, monkeypatch):
    reproduce = load_script()
    manifest = OmegaConf.load(reproduce.MANIFEST)
    manifest.presets.vime_classic.scales.smoke.methods.vime.append("exploration.min_pol_size=5")
    bad = tmp_path / "reproduce.yaml"
    OmegaConf.save(manifest, bad)
    monkeypatch.setattr(reproduce, "MANIFEST", bad)
    assert reproduce.main(["vime_classic", "--scale", "smoke", "--sweep-dir", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert "reproduce.yaml: vime_classic, mountain_car_sparse, vime: the overrides" in err
    assert "exploration.min_pol_size" in err
    assert not (tmp_path / "sweep").exists()


def test_manifest_entries_name_the_presets_environments_and_methods():
    """Every scale of every preset: keys that are environments or methods of the preset, and every
    preset of conf/experiment/ that reproduces a paper (all but the quickstart) is in the manifest."""
    reproduce = load_script()
    manifest = reproduce.load_manifest()
    assert set(manifest["presets"]) == {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")} - {"quickstart"}
    for preset, spec in manifest["presets"].items():
        sweep = preset_sweep(preset)
        assert spec["baseline"] in sweep["exploration"]
        assert set(spec["scales"]) == set(manifest["scales"])
        for scale, entry in spec["scales"].items():
            reproduce.check_scale_entry(preset, scale, entry, sweep["env"], sweep["exploration"])


# -- the committed results ---------------------------------------------------------------------

def committed_presets() -> list[str]:
    """The presets results/README.md lists as committed: its line `Committed presets: a, b` (or `none yet`)."""
    readme = RESULTS / "README.md"
    if not readme.exists():
        return []
    lines = [line for line in readme.read_text().splitlines() if line.startswith("Committed presets:")]
    assert len(lines) == 1, "results/README.md must have exactly one line `Committed presets: ...`"
    names = lines[0].split(":", 1)[1].strip().strip(".")
    return [] if names in ("", "none yet") else [n.strip().strip("`") for n in names.split(",")]


def test_committed_results_have_their_files_and_a_commit_of_this_repository():
    presets = committed_presets()
    known = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    for preset in presets:
        assert preset in known, f"results/README.md lists {preset!r}, which is no preset of conf/experiment/"
        directory = RESULTS / preset
        for name in ("report.md", "manifest.json", "curves.png", "curves.csv", "final_scores.csv"):
            assert (directory / name).is_file(), f"results/{preset}/{name} is missing"
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["preset"] == preset and manifest["scale"] in ("smoke", "reduced", "paper")
        commit = manifest["commit"]
        found = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
        assert found.returncode == 0, f"results/{preset}/manifest.json names {commit}, not a commit of this repository"
        if any(declares_coverage(env) for env in manifest["envs"]):
            assert list(directory.glob("coverage_*.png")), f"results/{preset}/ has no coverage map"
        for name in manifest["report"]["coverage_maps"]:
            assert (directory / name).is_file(), f"results/{preset}/{name} (in its manifest) is missing"
        # the report's table is the one runner.report wrote beside it, not edited by hand
        assert (directory / "final_scores.md").read_text() in (directory / "report.md").read_text()


def test_committed_presets_line_is_read(tmp_path, monkeypatch):
    """The parser of results/README.md's list, on a synthetic README."""
    monkeypatch.setattr(sys.modules[__name__], "RESULTS", tmp_path)
    assert committed_presets() == []
    (tmp_path / "README.md").write_text("# Results\n\nCommitted presets: none yet\n")
    assert committed_presets() == []
    (tmp_path / "README.md").write_text("# Results\n\nCommitted presets: `vime_classic`, hash_rllab\n")
    assert committed_presets() == ["vime_classic", "hash_rllab"]


# -- the fidelity table ---------------------------------------------------------------------------

def load_fidelity_table():
    spec = importlib.util.spec_from_file_location("fidelity_table", ROOT / "scripts" / "fidelity_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("low,high,expected", [(0.55, 0.9, "reproduced"), (0.1, 0.45, "not reproduced"),
                                               (0.3, 0.7, "inconclusive"), (0.5, 0.5, "inconclusive")])
def test_the_verdict_is_where_the_ci_of_p_improvement_lies(low, high, expected):
    assert load_fidelity_table().verdict(low, high) == expected


@pytest.mark.parametrize("scale, expected", [("reduced", "reproduced"), ("smoke", "not measured")])
def test_the_fidelity_table_is_written_from_the_results_and_the_claims(tmp_path, monkeypatch, scale, expected):
    """The verdict follows the rule at a real scale; a smoke-scale result (a pipeline check) gets none."""
    table = load_fidelity_table()
    results = tmp_path / "results"
    (results / "vime_classic").mkdir(parents=True)
    (results / "README.md").write_text(f"# R\n\n{table.BEGIN}\nold\n{table.END}\n\nCommitted presets: none yet\n")
    (results / "vime_classic" / "manifest.json").write_text(json.dumps(
        {"scale": scale, "envs": {"mountain_car_sparse": {"budget_env_steps": {"vime": 1000000}}}}))
    (results / "vime_classic" / "final_scores.csv").write_text(
        "env,method,metric,seeds,mean,ci_low,ci_high,window_start,window_end\n"
        "mountain_car_sparse,vime,task_metric_mean,5,0.8,0.6,1.0,9,10\n"
        "mountain_car_sparse,none,task_metric_mean,5,0.0,0.0,0.0,9,10\n")
    (results / "vime_classic" / "probability_of_improvement.csv").write_text(
        "env,x,y,p_x_better,ci_low,ci_high\nmountain_car_sparse,vime,none,0.9,0.7,1.0\n")
    monkeypatch.setattr(table, "RESULTS", results)
    assert table.main() == 0
    text = (results / "README.md").read_text()
    row = next(line for line in text.splitlines() if "mountain_car_sparse" in line and "vime_classic" in line)
    assert f"{scale}, 1,000,000 env steps" in row and "P(vime > none) = 0.90 [0.70, 1.00]" in row
    assert row.split(" | ")[3] == expected
    differs = yaml.safe_load((ROOT / "scripts" / "reproduce.yaml").read_text())["presets"]["vime_classic"]["claims"][0]
    assert row.endswith(f"| {differs['differs']} |")  # the claim's own statement of what differs
    lacking = next(line for line in text.splitlines() if "on cartpole_swingup_sparse" in line)
    assert "no final scores for this pair" in lacking and "inconclusive" in lacking  # a claim the results lack
    assert "Committed presets: `vime_classic`" in text and "old" not in text
