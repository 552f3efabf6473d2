"""Hard-exploration Atari: construction, preprocessing, scores, no-op starts, snapshots, CNNs."""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from algos.common.checks import ConfigError
from algos.common.nets import AtariCNN
from envs.atari import GameScore, paper_frames, rom_name, validate
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


def _taps_by_hand(dst: int, src: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR for uint8, one axis: for each output index the two source indices and
    their weights in 1/2048 (source position (d + 0.5) * src / dst - 0.5 in float32; columns zero
    the weight of a neighbour outside the image, rows only clamp the index)."""
    taps = []
    for d in range(dst):
        x = np.float32((d + 0.5) * (1.0 / (dst / src)) - 0.5)
        i = math.floor(x)
        frac = np.float32(x - np.float32(i))
        if clamp_weights and not 0 <= i < src - 1:
            frac = np.float32(0)
        w0 = int(np.rint((np.float32(1) - frac) * np.float32(2048)))
        taps.append((min(max(i, 0), src - 1), min(max(i + 1, 0), src - 1), w0, int(np.rint(frac * np.float32(2048)))))
    return taps


def _paper_frame_by_hand(screen_a, screen_b, size):
    """#Exploration's frame from the last two RGB screens of a frame-skip group, pixel by pixel:
    the max in RGB, grey = int(0.2126 R + 0.0722 G + 0.7152 B) (truncated, the reference's
    astype(uint8)), then the bilinear resize in OpenCV's fixed point: rows and columns mixed
    with 11-bit weights, the vertical mix rounded as OpenCV's uint8 path does."""
    rgb = np.maximum(screen_a, screen_b).tolist()
    grey = [[int(r * 0.2126 + g * 0.0722 + b * 0.7152) for r, g, b in row] for row in rgb]
    rows, cols = _taps_by_hand(size, 210, False), _taps_by_hand(size, 160, True)
    out = np.zeros((size, size), np.uint8)
    for i, (y0, y1, b0, b1) in enumerate(rows):
        for j, (x0, x1, a0, a1) in enumerate(cols):
            top = grey[y0][x0] * a0 + grey[y0][x1] * a1
            bottom = grey[y1][x0] * a0 + grey[y1][x1] * a1
            out[i, j] = min(255, (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2)
    return out


@pytest.mark.parametrize("size", [42, 52])
def test_exploration_paper_frames_equal_a_conversion_by_hand_of_the_emulator_screens(size):
    cfg = env_cfg("frostbite", "env.atari.grey=exploration_paper", "env.atari.vector=sync",
                  "env.atari.noop_max=0", f"env.atari.screen_size={size}")
    env = make_env(cfg)
    twin = gym.make(cfg.id, frameskip=1, repeat_action_probability=0.0)  # the same game, frame by frame
    obs, _ = env.reset(seed=4)
    twin.reset(seed=4)
    screen = twin.unwrapped.ale.getScreenRGB()
    expected = [np.zeros((size, size), np.uint8)] * 3 + [_paper_frame_by_hand(screen, screen, size)]
    np.testing.assert_array_equal(obs, np.stack(expected))  # the stack starts with zeros
    rng = np.random.default_rng(0)
    for _ in range(12):
        action = int(rng.integers(0, env.action_space.n))
        obs, *_ = env.step(action)
        screens = []
        for _ in range(4):
            twin.step(action)
            screens.append(twin.unwrapped.ale.getScreenRGB())
        expected = expected[1:] + [_paper_frame_by_hand(screens[2], screens[3], size)]
        np.testing.assert_array_equal(obs, np.stack(expected))
    ale_grey = make_env(env_cfg("frostbite", "env.atari.vector=sync", "env.atari.noop_max=0",
                                f"env.atari.screen_size={size}"))
    assert not np.array_equal(ale_grey.reset(seed=4)[0][-1], expected[0])  # ALE's conversion differs


@pytest.mark.parametrize("size", [42, 52, 84, 200])
def test_paper_frames_equal_the_reference_code_lines(size):
    """atari_env.py's conversion, run with OpenCV on random screens (every colour, so every
    rounding case of the weights and the resize), equals ours bit for bit."""
    import cv2

    screens = np.random.default_rng(size).integers(0, 256, (3, 210, 160, 3), dtype=np.uint8)
    for screen, ours in zip(screens, paper_frames(screens, size)):
        grey = (screen[:, :, 0] * 0.2126 + screen[:, :, 1] * 0.0722 + screen[:, :, 2] * 0.7152).astype(np.uint8)
        np.testing.assert_array_equal(ours, cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR))


def test_exploration_paper_frames_agree_on_both_vector_paths():
    def run(path):
        env = make_vector_env(env_cfg("freeway", "env.atari.grey=exploration_paper", f"env.atari.vector={path}",
                                      "env.atari.noop_max=0", "env.max_episode_steps=25"), 2)
        out = [env.reset(seed=[3, 4])[0].copy()]
        for t in range(25):
            obs, _, terminated, truncated, info = env.step(np.array([1, t % 3]))
            out.append(obs.copy())
        assert truncated.all() and not terminated.any()
        return out, info["final_obs"]

    (ale, ale_final), (sync, sync_final) = run("ale"), run("sync")
    assert ale[0].shape == (2, 4, 42, 42) and ale[0].dtype == np.uint8
    for a, b in zip(ale, sync):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ale[-1][:, :3], 0)  # the new episodes start with zeros and one frame
    # the final observations continue the old stacks; their last frame differs on the ale path,
    # where AtariVectorEnv's time limit stops before it reads the last screen
    np.testing.assert_array_equal(ale_final[:, :3], ale[-2][:, 1:])
    np.testing.assert_array_equal(np.stack(sync_final)[:, :3], sync[-2][:, 1:])


def test_grey_and_colour_averaging_keys_are_checked():
    with pytest.raises(ConfigError, match=r"env\.atari\.grey.*ale \| exploration_paper"):
        make_env(env_cfg("freeway", "env.atari.grey=gray"))
    with pytest.raises(ConfigError, match="env.atari.color_averaging"):
        make_env(env_cfg("freeway", "env.atari.color_averaging=1"))
    with pytest.raises(ConfigError, match=r"env\.atari\.vector.*color_averaging=true: auto \| sync"):
        make_vector_env(env_cfg("venture", "env.atari.vector=ale", "env.atari.color_averaging=true"), 2)
    assert validate(env_cfg("venture", "env.atari.color_averaging=true")) == "sync"
    assert validate(env_cfg("venture", "env.atari.grey=exploration_paper")) == "ale"


def test_colour_averaging_blends_venture_and_resumes_exactly():
    same = ["env.atari.grey=exploration_paper", "env.atari.vector=sync", "env.atari.noop_max=0"]
    plain = make_vector_env(env_cfg("venture", *same), 1)
    blended = make_vector_env(env_cfg("venture", *same, "env.atari.color_averaging=true"), 1)
    plain.reset(seed=[0])
    blended.reset(seed=[0])
    rng = np.random.default_rng(1)
    actions = [rng.integers(0, 18, 1) for _ in range(60)]
    differ = [not np.array_equal(plain.step(a)[0], blended.step(a)[0]) for a in actions[:30]]
    assert any(differ)
    snapshot = get_vector_env_state(blended)
    first = [blended.step(a)[0].copy() for a in actions[30:]]
    set_vector_env_state(blended, snapshot)
    for a, obs in zip(actions[30:], first):
        np.testing.assert_array_equal(blended.step(a)[0], obs)


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

    # 100-step episodes: TRPO's whole paths then take 200 steps per iteration, not two whole games
    tiny = ["agent.batch_size=128", "agent.num_envs=2", "total_env_steps=256", "env.max_episode_steps=100"]
    if agent == "ppo_atari":
        tiny.append("agent.num_minibatches=2")
    assert train_in_process(tmp_path, f"agent={agent}", "env=freeway", *tiny) == 0
    assert len(read_progress(tmp_path)) == 2
