"""The paper presets (conf/experiment/*.yaml) and their per-(environment, method) cells (conf/cell/):
one sweep composes every cell at its own settings, the command line beats a cell, and a run without a
preset gets no cell."""
import functools
import json
import math
import subprocess
import sys

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from runner.config import CONF_DIR, compose

PRESETS = ("hash_rllab", "hash_atari", "ex2_continuous", "vime_classic", "emi_mujoco", "emi_atari")
LN2 = math.log(2.0)  # EX2's SwimmerGather policy init_std=2.0


def sweep(preset: str) -> dict[str, list[str]]:
    """The preset's sweep dimensions (hydra.sweeper.params)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    return {k: v.split(",") for k, v in cfg.hydra.sweeper.params.items()}


def leaves(node, prefix: str = "") -> dict:
    """{dotted key: value} of a config's leaves (lists are leaves), without its defaults list."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node)
    out = {}
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def cell_leaves(path) -> dict:
    """What a cell file sets: its own leaves over those of the cells it includes by path."""
    cfg = OmegaConf.load(path)
    out = {}
    for entry in cfg.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/"):  # an included cell; the optional per-method
            out.update(cell_leaves(CONF_DIR / f"{entry[1:]}.yaml"))  # lookups are checked by their own cells
    out.update(leaves(cfg))
    return out


@functools.cache  # composing takes a while; the tests only read the result
def composed(preset: str, env: str, method: str, *overrides: str) -> dict:
    cfg, choices = compose([f"+experiment={preset}", f"env={env}", f"exploration={method}", *overrides])
    assert (choices["env"], choices["exploration"], cfg.experiment_name) == (env, method, preset)
    return leaves(cfg)


def expected_cell(preset: str, env: str, method: str) -> dict:
    """The keys the cells of (env, method) set: <env>.yaml, then <env>/<method>.yaml over it."""
    out = {}
    for path in (CONF_DIR / "cell" / preset / f"{env}.yaml", CONF_DIR / "cell" / preset / env / f"{method}.yaml"):
        if path.exists():
            out.update(cell_leaves(path))
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_every_cell_of_a_preset_sweep_composes_with_its_cell_settings(preset):
    params = sweep(preset)
    cells = {(env, method) for env in params["env"] for method in params["exploration"]}
    for env, method in sorted(cells):
        cfg = composed(preset, env, method)
        want = expected_cell(preset, env, method)
        assert {k: cfg.get(k) for k in want} == want, (env, method)
    # every cell file belongs to a cell of the sweep (a stray name would never be used)
    root = CONF_DIR / "cell" / preset
    for path in root.rglob("*.yaml") if root.exists() else ():
        parts = path.relative_to(root).with_suffix("").parts
        assert parts[0] in params["env"], path
        assert len(parts) == 1 or parts[1] in params["exploration"], path


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_and_its_cells_set_disjoint_keys(preset):
    # The preset file merges after its cells (conf/config.yaml), so a key set by both would silently
    # replace every cell's value: each key is set for every cell by the preset, or per cell.
    body = leaves(OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml"))
    body = {k for k in body if not k.startswith("hydra.")}
    root = CONF_DIR / "cell" / preset
    for path in root.rglob("*.yaml") if root.exists() else ():
        assert not body & set(cell_leaves(path)), path


# The papers' numbers, cell by cell (docs/papers.md §3, §4, §5).
EX2_TRPO = {  # jcoreyes/ex2 exps/{pointmass,halfcheetah,swimmergather}.py
    "maze2d": {"total_env_steps": 200 * 4000, "agent.batch_size": 4000, "agent.policy_hidden": [32, 32],
               "agent.init_log_std": 0.0, "agent.baseline.kind": "linear", "env.max_episode_steps": 200},
    "sparse_half_cheetah_abs": {"total_env_steps": 1000 * 5000, "agent.batch_size": 5000,
                                "agent.policy_hidden": [64, 32], "agent.init_log_std": 0.0,
                                "agent.baseline.kind": "linear", "env.max_episode_steps": 500},
    "swimmer_gather": {"total_env_steps": 2000 * 50000, "agent.batch_size": 50000, "agent.policy_hidden": [64, 32],
                       "agent.init_log_std": LN2, "agent.baseline.kind": "zero", "env.max_episode_steps": 500},
}
EX2_MODEL = {
    "maze2d": {"coef": 1e-2, "hidden_sizes": [16, 16], "kl_weight": 0.01, "use_actions": True,
               "replay_size": 200000, "min_replay_size": 10000, "train_itrs": 1000, "learning_rate": 1e-4},
    "sparse_half_cheetah_abs": {"coef": 1e-3, "hidden_sizes": [32], "kl_weight": 0.1, "use_actions": True,
                                "replay_size": 250000, "min_replay_size": 10000, "train_itrs": 2000,
                                "learning_rate": 1e-4},
    "swimmer_gather": {"coef": 1e-4, "hidden_sizes": [16], "kl_weight": 10, "use_actions": False,
                       "replay_size": 500000, "min_replay_size": 10000, "train_itrs": 1000, "learning_rate": 1e-4},
}


@functools.cache
def method_defaults(method: str) -> dict:
    """conf/exploration/<method>.yaml as composed without a preset."""
    cfg, _ = compose([f"exploration={method}"])
    return {k: v for k, v in leaves(cfg).items() if k.startswith("exploration.")}


def test_ex2_continuous_runs_each_task_at_ex2s_launcher_settings(subprocess_env):
    for env, trpo in EX2_TRPO.items():
        for method in sweep("ex2_continuous")["exploration"]:
            cfg = composed("ex2_continuous", env, method)
            assert {k: cfg[k] for k in trpo} == trpo, (env, method)
            exploration = {k: v for k, v in cfg.items() if k.startswith("exploration.")}
            if method in ("ex2", "ex2_kexemplar"):
                want = {**method_defaults(method), **{f"exploration.{k}": v for k, v in EX2_MODEL[env].items()}}
                assert exploration == want, (env, method)  # K (num_discriminators) stays the config's
            else:  # the paper's settings for its baselines are NOT FOUND: their own configs
                assert exploration == method_defaults(method), (env, method)
    # the check, read from what `--cfg job` prints (the composed config, before resolution)
    out = subprocess.run([sys.executable, "-m", "runner.train", "+experiment=ex2_continuous", "env=swimmer_gather",
                          "exploration=ex2", "--cfg", "job"], cwd=CONF_DIR.parent, env=subprocess_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    job = yaml.safe_load(out.stdout)
    assert (job["agent"]["batch_size"], job["exploration"]["kl_weight"], job["exploration"]["use_actions"]) == (
        50000, 10, False)
    assert math.isclose(math.exp(job["agent"]["init_log_std"]), 2.0) and job["agent"]["baseline"]["kind"] == "zero"


def test_hash_rllab_and_vime_classic_cells():
    classic = {"agent.batch_size": 5000, "agent.policy_hidden": [32], "agent.baseline.kind": "mlp",
               "agent.baseline.hidden": [32]}
    locomotion = {"agent.batch_size": 5000, "agent.policy_hidden": [64, 32], "agent.baseline.kind": "linear"}
    rllab = {"mountain_car_sparse": classic, "cartpole_swingup_sparse": classic, "sparse_half_cheetah": locomotion,
             "swimmer_gather": {**locomotion, "agent.batch_size": 50000}}
    for env, want in rllab.items():  # #Exploration's launchers, 1000 iterations
        for method in ("none", "simhash"):
            cfg = composed("hash_rllab", env, method)
            assert {k: cfg[k] for k in want} == want and cfg["total_env_steps"] == 1000 * want["agent.batch_size"]
            assert (cfg["agent.gamma"], cfg["env.max_episode_steps"]) == (0.99, 500)
    vime = {**{k: rllab[k] for k in ("mountain_car_sparse", "cartpole_swingup_sparse", "sparse_half_cheetah")},
            "double_pendulum_sparse": classic}
    for env, want in vime.items():  # VIME's own NOT FOUND: #Exploration's reading of its setup
        for method in ("none", "vime"):
            cfg = composed("vime_classic", env, method)
            assert {k: cfg[k] for k in want} == want and cfg["total_env_steps"] == 1_000_000
        # no task of the preset has a state coordinate that only successors vary: the reference's epsilon
        assert composed("vime_classic", env, "vime")["exploration.std_epsilon"] == 1e-8


def test_emi_presets_keep_emis_trpo_and_give_ex2_its_own_settings():
    for env in ("swimmer_gather", "sparse_half_cheetah_abs"):
        for method in sweep("emi_mujoco")["exploration"]:
            cfg = composed("emi_mujoco", env, method)
            assert (cfg["agent.batch_size"], cfg["agent.gamma"], cfg["agent.baseline.kind"], cfg["agent.init_log_std"],
                    cfg["total_env_steps"]) == (50000, 0.995, "mlp", 0.0, 2000 * 50000), (env, method)
            exploration = {k: v for k, v in cfg.items() if k.startswith("exploration.")}
            want = dict(method_defaults(method))
            if method == "ex2":  # EX2's exemplar settings for the task, under EMI's TRPO
                want.update({f"exploration.{k}": v for k, v in EX2_MODEL[env].items()})
            assert exploration == want, (env, method)
    for preset in ("hash_atari", "emi_atari"):  # one setting for every game but hash_atari's Venture
        params = sweep(preset)
        first = None
        for env in params["env"]:
            for method in params["exploration"]:
                cfg = composed(preset, env, method)
                assert preset != "hash_atari" or cfg["env.atari.grey"] == "exploration_paper"
                # the reference averages Venture's colours only (its sprites flicker)
                assert cfg["env.atari.color_averaging"] is (preset == "hash_atari" and env == "venture")
                shared = {k: v for k, v in cfg.items()
                          if not k.startswith(("exploration.", "env.id", "env.atari.color_averaging"))}
                first = first or shared
                assert shared == first, (preset, env, method)  # one setting for every game and method


def test_the_command_line_beats_the_cell_and_no_preset_means_no_cell():
    cfg = composed("ex2_continuous", "swimmer_gather", "ex2", "agent.batch_size=1000", "total_env_steps=20000",
                   "exploration.kl_weight=0.5", "agent.baseline.kind=linear")
    assert (cfg["agent.batch_size"], cfg["total_env_steps"], cfg["exploration.kl_weight"]) == (1000, 20000, 0.5)
    assert (cfg["agent.baseline.kind"], cfg["exploration.hidden_sizes"]) == ("linear", [16])  # the rest: the cell
    plain, _ = compose(["env=swimmer_gather", "exploration=ex2"])
    plain = leaves(plain)
    assert (plain["agent.batch_size"], plain["agent.baseline.kind"], plain["agent.init_log_std"]) == (5000, "auto", 0.0)
    assert {k: v for k, v in plain.items() if k.startswith("exploration.")} == method_defaults("ex2")
    quick, _ = compose(["+experiment=quickstart", "env=swimmer_gather"])  # a preset without cells
    assert quick.agent.batch_size == 5000


APP = """
import json, sys
sys.path.insert(0, {root!r})
import hydra
from hydra.core.hydra_config import HydraConfig
import runner.config  # the run directory's resolver
@hydra.main(config_path={conf!r}, config_name="config", version_base="1.3")
def main(cfg):
    print("JOB " + json.dumps({{"env": HydraConfig.get().runtime.choices.env,
                               "exploration": cfg.exploration._target_.rsplit(".", 1)[1],
                               "batch": cfg.agent.batch_size, "steps": cfg.total_env_steps,
                               "kl_weight": cfg.exploration.get("kl_weight")}}), flush=True)
main()
"""


def test_a_multirun_sweep_composes_each_job_with_its_own_cell(tmp_path, subprocess_env):
    app = tmp_path / "app.py"
    app.write_text(APP.format(root=str(CONF_DIR.parent), conf=str(CONF_DIR)))
    out = subprocess.run([sys.executable, str(app), "-m", "+experiment=ex2_continuous", "exploration=none,ex2",
                          "seed=0", "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = {(j["env"], j["exploration"]): j for j in
            (json.loads(line[4:]) for line in out.stdout.splitlines() if line.startswith("JOB "))}
    assert len(jobs) == 6  # the preset's three tasks x the two methods given
    for env, trpo in EX2_TRPO.items():
        assert (jobs[env, "NoExploration"]["batch"], jobs[env, "NoExploration"]["steps"]) == (
            trpo["agent.batch_size"], trpo["total_env_steps"])
        assert (jobs[env, "EX2"]["batch"], jobs[env, "EX2"]["kl_weight"]) == (
            trpo["agent.batch_size"], EX2_MODEL[env]["kl_weight"])
