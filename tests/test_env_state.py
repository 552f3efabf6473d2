"""Environment snapshots restore exactly: after restoring, the same actions give the same
observations, rewards and episode ends, bit for bit, across episode boundaries."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.env_state import get_vector_env_state, set_vector_env_state
from runner.envs import make_vector_env


@pytest.mark.parametrize("env_id,max_steps", [("HalfCheetah-v5", 30), ("Ant-v5", 30),
                                              ("Hopper-v5", None), ("CartPole-v1", None)])
def test_vector_env_snapshot_restores_exactly(env_id, max_steps):
    env = make_vector_env(OmegaConf.create({"id": env_id, "max_episode_steps": max_steps, "kwargs": {}}), 2)
    env.reset(seed=[3, 4])
    rng = np.random.default_rng(0)
    sample = (lambda: rng.integers(0, 2, 2)) if env_id.startswith("Cart") else \
        (lambda: rng.uniform(-1, 1, (2, *env.single_action_space.shape)).astype(np.float32))
    for _ in range(17):
        env.step(sample())
    snapshot = get_vector_env_state(env)
    actions = [sample() for _ in range(60)]  # crosses episode ends (time limit 30 / falls)

    def play():
        out = []
        for a in actions:
            obs, rew, term, trunc, _ = env.step(a)
            out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy()))
        return out

    first = play()
    assert any(t.any() or u.any() for _, _, t, u in first)  # an episode ended in between
    set_vector_env_state(env, snapshot)
    second = play()
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
