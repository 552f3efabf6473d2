"""The exploration contract, for every method in conf/exploration: `intrinsic_reward` is pure.

Each method is driven by the on-policy loop for a few iterations (so that its models train and its
bonus is not trivially zero), then handed one more observed batch: scoring it twice, and scoring a
shuffled copy, must give the same value per row, and must leave `state_dict()` exactly as it was.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import through_checkpoint

CONF = Path(__file__).resolve().parent.parent / "conf" / "exploration"
CHEETAH = ["env=half_cheetah", "env.max_episode_steps=60"]
CASES = {  # method -> env and the overrides that train its model within three iterations of 200 steps
    "none": CHEETAH, "simhash": CHEETAH, "kde": CHEETAH, "gaussian_noise": CHEETAH, "ou_noise": CHEETAH,
    "ae_simhash": [*CHEETAH, "exploration.train_steps=3"],
    "ex2": [*CHEETAH, "exploration.min_replay_size=200", "exploration.first_train_itrs=20",
            "exploration.train_itrs=10", "exploration.steps_per_draw=10"],
    "ex2_kexemplar": [*CHEETAH, "exploration.min_replay_size=200", "exploration.first_train_itrs=20",
                      "exploration.train_itrs=10", "exploration.steps_per_draw=10",
                      "exploration.num_discriminators=4"],
    "emi": [*CHEETAH, "exploration.minibatch_size=64"],
    "vime": [*CHEETAH, "exploration.min_pool_size=100", "exploration.n_updates_per_sample=10"],
    "ucb": ["env=cartpole"], "egreedy": ["env=cartpole"], "boltzmann": ["env=cartpole"],
    # Atari: 100-step episodes, so that TRPO's whole paths stay short
    "ex2_atari": ["env=freeway", "env.max_episode_steps=100", "env.atari.vector=sync", "agent=trpo_atari",
                  "exploration.min_replay_size=100",
                  "exploration.first_train_itrs=2", "exploration.train_itrs=2", "exploration.batch_size=8",
                  "exploration.steps_per_draw=2"],
    "emi_atari": ["env=freeway", "env.max_episode_steps=100", "env.atari.vector=sync", "agent=trpo_atari",
                  "exploration.minibatch_size=32",
                  "exploration.epochs=1"],
}


def test_every_method_is_covered():
    assert set(CASES) == {p.stem for p in CONF.glob("*.yaml")}


def same(a, b) -> bool:
    """Exact equality of nested states (dicts, lists, arrays, tensors, numbers)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return type(a) is type(b) and same(vars(a), vars(b))
    return a == b or (a != a and b != b)


def observed_batch(method: str):
    """(method, a batch it has observed but not scored) after three iterations of the on-policy loop."""
    from runner.collect import Collector
    from runner.config import compose, steps_per_collection
    from runner.envs import make_vector_env
    from runner.loops.on_policy import OnPolicyLoop
    from runner.train import build, build_exploration, derive_seeds

    agent_args = ["agent.batch_size=200", "agent.num_envs=2"]
    cfg, _ = compose([f"exploration={method}", *CASES[method], *agent_args])
    seeds = derive_seeds(0, 2)
    env = make_vector_env(cfg.env, 2)
    spaces = dict(observation_space=env.single_observation_space, action_space=env.single_action_space)
    agent = build(cfg.agent, "agent", **spaces, device="cpu", seed=seeds["agent"], num_iterations=4)
    exploration, shaper = build_exploration(cfg.exploration, *spaces.values(), seeds["exploration"], "cpu")
    loop = OnPolicyLoop(env, agent, exploration, shaper, steps_per_env=steps_per_collection(cfg),
                        env_seeds=seeds["envs"], components={"exploration": method})
    loop.start()
    for _ in range(3):
        loop.iteration()
    collector = Collector(env, 100)
    collector.reset([5, 6])
    batch = collector.collect(agent, exploration)[0].transitions()
    exploration.observe(batch)
    if exploration.fit_before_scoring:
        exploration.update(batch)
    env.close()
    return exploration, batch


@pytest.mark.parametrize("method", sorted(CASES))
def test_intrinsic_reward_is_pure(method):
    exploration, batch = observed_batch(method)
    before = through_checkpoint(exploration.state_dict())
    first = exploration.intrinsic_reward(batch)
    second = exploration.intrinsic_reward(batch)
    permutation = np.random.default_rng(0).permutation(len(batch))
    shuffled = exploration.intrinsic_reward(batch.take(permutation))
    assert first.shape == (len(batch),)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(shuffled, first[permutation], rtol=1e-5, atol=1e-7)
    assert same(through_checkpoint(exploration.state_dict()), before)
    if method not in ("none", "gaussian_noise", "ou_noise", "egreedy", "boltzmann"):
        assert np.any(first != 0), "the bonus is still zero: the test does not exercise the model"
