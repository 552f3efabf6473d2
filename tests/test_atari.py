"""Hard-exploration Atari: construction, preprocessing, scores, no-op starts, snapshots, CNNs."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.common.checks import ConfigError
from algos.common.nets import AtariCNN
from envs.atari import GameScore, rom_name
from runner.config import compose
from runner.env_state import get_vector_env_state, set_vector_env_state
from runner.envs import make_env, make_vector_env

GAMES = ["montezuma", "venture", "freeway", "frostbite", "gravitar", "solaris", "private_eye"]


def env_cfg(game, *overrides):
    cfg, _ = compose([f"env={game}", *overrides])
    return cfg.env


@pytest.mark.parametrize("game", GAMES)
def test_every_game_constructs_steps_and_resets_on_both_paths(game):
    for path, size in (("ale", 42), ("sync", 52)):
        env = make_vector_env(env_cfg(game, f"env.atari.vector={path}", f"env.atari.screen_size={size}"), 2)
        obs, _ = env.reset(seed=[1, 2])
        assert obs.shape == (2, 4, size, size) and obs.dtype == np.uint8
        assert isinstance(env.single_action_space, gym.spaces.Discrete)
        for _ in range(5):
            obs, reward, terminated, truncated, _ = env.step(np.array([env.single_action_space.sample()] * 2))
        assert obs.shape == (2, 4, size, size) and set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        env.close()


def test_rom_names():
    assert rom_name("ALE/MontezumaRevenge-v5") == "montezuma_revenge"
    assert rom_name("ALE/PrivateEye-v5") == "private_eye"


@pytest.mark.parametrize("size", [42, 52, 84])
def test_preprocessing_shape_and_frame_stack(size):
    env = make_env(env_cfg("freeway", f"env.atari.screen_size={size}"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, size, size)
    for _ in range(3):
        obs, *_ = env.step(0)
    frames = [obs[i] for i in range(4)]
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])  # cars move between frames


def test_noop_starts_vary_with_the_seed_and_repeat_with_it():
    env = make_env(env_cfg("freeway", "env.atari.vector=sync"))
    first = [env.reset(seed=s)[0] for s in range(6)]
    assert len({f.tobytes() for f in first}) > 1
    np.testing.assert_array_equal(env.reset(seed=3)[0], first[3])
    no_noops = make_env(env_cfg("freeway", "env.atari.noop_max=0"))
    assert len({no_noops.reset(seed=s)[0].tobytes() for s in range(4)}) == 1


def test_ram_observations():
    env = make_env(env_cfg("venture", "env.atari.observation=ram"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (128,) and obs.dtype == np.float32 and 0 <= obs.min() and obs.max() <= 1
    with pytest.raises(ConfigError, match="env.atari.vector"):
        make_vector_env(env_cfg("venture", "env.atari.observation=ram", "env.atari.vector=ale"), 2)


class _Scripted(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Discrete(2)
    rewards = [0.0, 5.0, -3.0, 100.0]

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), self.rewards[self.t - 1], self.t == 4, False, {}


def test_game_score_reports_raw_score_and_clips_reward():
    env = GameScore(_Scripted(), clip_rewards=True)
    env.reset()
    steps = [env.step(0) for _ in range(4)]
    assert [s[1] for s in steps] == [0.0, 1.0, -1.0, 1.0]
    assert [s[4]["task_metric"] for s in steps] == [0.0, 5.0, 2.0, 102.0]
    env = GameScore(_Scripted(), clip_rewards=False)
    env.reset()
    assert [env.step(0)[1] for _ in range(4)] == [0.0, 5.0, -3.0, 100.0]


def test_vector_path_reports_the_raw_score_at_episode_end():
    env = make_vector_env(env_cfg("freeway", "env.max_episode_steps=60"), 2)
    env.reset(seed=[0, 1])
    for _ in range(60):
        _, reward, terminated, truncated, info = env.step(np.array([1, 1]))  # 1 = up: scores in Freeway
    assert truncated.all()
    assert (info["final_info"]["_task_metric"] == [True, True]).all()
    assert (info["final_info"]["task_metric"] >= 0).all()


def test_sync_atari_snapshot_restores_exactly():
    env = make_vector_env(env_cfg("frostbite", "env.atari.vector=sync"), 2)
    env.reset(seed=[5, 6])
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.integers(0, 18, 2))
    snapshot = get_vector_env_state(env)
    actions = [rng.integers(0, 18, 2) for _ in range(30)]
    first = [env.step(a)[0].copy() for a in actions]
    set_vector_env_state(env, snapshot)
    second = [env.step(a)[0].copy() for a in actions]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch,size", [("nature", 42), ("nature", 84), ("nips", 42), ("nips", 52)])
def test_cnn_torsos(arch, size):
    net = AtariCNN((4, size, size), arch)
    out = net(torch.randint(0, 256, (3, 4, size, size), dtype=torch.uint8))
    assert out.shape == (3, 512 if arch == "nature" else 256)
    frames = torch.rand(3, 4, size, size)
    torch.testing.assert_close(net((frames * 255).round().to(torch.uint8)), net((frames * 255).round() / 255))


@pytest.mark.parametrize("agent", ["trpo_atari", "ppo_atari"])
def test_atari_agent_presets_run(tmp_path, agent):
    from tests.conftest import read_progress, train_in_process

    tiny = ["agent.batch_size=128", "agent.num_envs=2", "total_env_steps=256"]
    if agent == "ppo_atari":
        tiny.append("agent.num_minibatches=2")
    assert train_in_process(tmp_path, f"agent={agent}", "env=freeway", *tiny) == 0
    assert len(read_progress(tmp_path)) == 2
