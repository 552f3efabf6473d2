"""The off-policy and meta loops (with the tiny agents of tests/tiny_agents.py), evaluation episodes,
and the family dispatch."""
import pytest

from runner import run_dir as rd
from runner.evaluate import EVAL_COLUMNS
from tests.conftest import kill_after_third_checkpoint_then_resume, learning_columns, read_progress, train_in_process

REPLAY = ["agent=tiny_replay", "env=pendulum", "exploration=gaussian_noise"]
META = ["agent=tiny_meta", "env=two_goals"]


def test_off_policy_loop_trains_from_its_replay_with_rewards_at_sample_time(tmp_path, monkeypatch):
    from runner.loops.off_policy import OffPolicyLoop

    calls = []
    original = OffPolicyLoop.reward_fn
    monkeypatch.setattr(OffPolicyLoop, "reward_fn", lambda self, mb: calls.append(len(mb)) or original(self, mb))
    assert train_in_process(tmp_path, *REPLAY, "total_env_steps=400") == 0
    rows = read_progress(tmp_path)
    assert [int(r["env_steps"]) for r in rows] == [100, 200, 300, 400]
    assert float(rows[-1]["replay_size"]) == (350 + 400) / 2  # the mean over the iteration's two chunks
    # 2 chunks per iteration, 8 gradient steps of 32 from the first chunk at 100 stored steps on
    assert calls == [32] * (8 * 7)
    assert rd.load_checkpoint(tmp_path)["agent"]["replay"]["added"] == 400


def test_off_policy_bonus_is_priced_per_minibatch(tmp_path):
    assert train_in_process(tmp_path, "agent=tiny_replay", "env=pendulum", "exploration=kde",
                            "total_env_steps=300") == 0
    rows = read_progress(tmp_path)
    assert float(rows[-1]["bonus_raw_mean"]) > 0 and float(rows[-1]["expl_reference_size"]) == (250 + 300) / 2


def test_meta_loop_adapts_per_task_and_meta_updates(tmp_path):
    assert train_in_process(tmp_path, *META, "total_env_steps=640") == 0
    rows = read_progress(tmp_path)
    # 2 tasks x 2 collections x 2 envs x 20 steps (one 20-step episode per env and collection)
    assert [int(r["env_steps"]) for r in rows] == [160, 320, 480, 640]
    assert all(float(r["episodes"]) == 4 for r in rows)
    assert all(r["return_ext_pre_adapt_mean"] and float(r["adapt_step_norm"]) > 0 for r in rows)
    assert len({r["bias_norm"] for r in rows}) == 4  # the meta-parameters move every iteration


@pytest.mark.parametrize("args,total_rows", [
    ([*REPLAY, "total_env_steps=3000"], 30),
    ([*META, "total_env_steps=4800"], 30),
], ids=["off_policy", "meta"])
def test_kill_after_third_checkpoint_then_resume_matches_uninterrupted(tmp_path, subprocess_env, args, total_rows):
    kill_after_third_checkpoint_then_resume(tmp_path, subprocess_env, [*args, "checkpoint_every=2", "seed=2"],
                                            total_rows)


def test_the_replay_lives_in_side_files_not_in_last_pt(tmp_path):
    import numpy as np
    import torch

    assert train_in_process(tmp_path, *REPLAY, "total_env_steps=2000") == 0
    ckpt = tmp_path / "checkpoints"
    side = sum(p.stat().st_size for p in (ckpt / "side").rglob("*") if p.is_file())
    assert side >= 2000 * 4 * (2 * 3 + 1 + 3)  # 2000 rows of obs, action, reward, next_obs, flags (float32)

    def arrays(node):
        if isinstance(node, dict):
            return [a for v in node.values() for a in arrays(v)]
        if isinstance(node, (list, tuple)):
            return [a for v in node for a in arrays(v)]
        return [node] if isinstance(node, np.ndarray) else []

    raw = torch.load(ckpt / "last.pt", weights_only=False)  # as stored: descriptors, not rows
    assert max(len(a) for a in arrays(raw["agent"])) < 2000
    assert rd.load_checkpoint(tmp_path)["agent"]["replay"]["added"] == 2000


@pytest.mark.parametrize("args", [["agent=trpo", "env=cartpole", "agent.batch_size=200", "agent.num_envs=2",
                                   "total_env_steps=800"],
                                  [*REPLAY, "total_env_steps=400"]], ids=["on_policy", "off_policy"])
def test_evaluation_every_iteration_leaves_training_unchanged(tmp_path, args):
    assert train_in_process(tmp_path / "plain", *args, "eval_every=0") == 0
    assert train_in_process(tmp_path / "eval", *args, "eval_every=1", "eval_episodes=3") == 0
    plain, evaluated = read_progress(tmp_path / "plain"), read_progress(tmp_path / "eval")
    assert all(r["eval_return_mean"] and r["eval_task_metric_mean"] for r in evaluated)
    assert not any(r[c] for r in plain for c in EVAL_COLUMNS)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in EVAL_COLUMNS} for r in learning_columns(rows)]  # noqa: E731
    assert strip(plain) == strip(evaluated)


def test_evaluation_is_deterministic_and_reproducible(tmp_path):
    args = ["agent=trpo", "env=cartpole", "agent.batch_size=200", "agent.num_envs=2", "total_env_steps=600",
            "eval_every=1", "eval_episodes=4"]
    assert train_in_process(tmp_path / "a", *args) == 0
    assert train_in_process(tmp_path / "b", *args) == 0
    a, b = read_progress(tmp_path / "a"), read_progress(tmp_path / "b")
    assert [r["eval_return_mean"] for r in a] == [r["eval_return_mean"] for r in b]


def test_an_unknown_agent_family_is_refused_naming_agent(tmp_path, capsys):
    assert train_in_process(tmp_path, "agent=unknown_family", "env=pendulum") == 2
    err = capsys.readouterr().err
    assert "agent:" in err and "'offline'" in err and "on_policy | off_policy | meta" in err


def test_an_on_policy_only_method_is_refused_for_off_policy_agents(tmp_path, capsys):
    assert train_in_process(tmp_path, "agent=tiny_replay", "env=pendulum", "exploration=emi") == 2
    assert "exploration=emi cannot run here: agent=tiny_replay is off_policy" in capsys.readouterr().err


@pytest.mark.parametrize("args,key", [(["agent=trpo", "env=cartpole", "agent.batch_size=200", "agent.num_envs=2",
                                        "total_env_steps=400"], "kl"),
                                       ([*REPLAY[:2], "total_env_steps=200"], "replay_size"),
                                       ([*META, "total_env_steps=320"], "bias_norm")],
                         ids=["on_policy", "off_policy", "meta"])
def test_exploration_update_gets_the_agents_measurements_as_feedback(tmp_path, monkeypatch, args, key):
    from algos.exploration.none import NoExploration

    seen = []
    monkeypatch.setattr(NoExploration, "update", lambda self, t, feedback=None: seen.append(feedback) or {})
    assert train_in_process(tmp_path, *args) == 0
    assert seen and all(isinstance(f, dict) and key in f for f in seen)
