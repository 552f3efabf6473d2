"""Hard-exploration Atari with the preprocessing of #Exploration (Tang et al. 2017, §3.2) and EMI
(Kim et al. 2019): docs/papers.md §3 and §5.

Settings (the `env.atari` config block): frame skip 4 with max-pooling of the last two frames,
up to 30 random no-op starts, grayscale frames resized to 42x42 (#Exploration), 52x52 (EMI) or
84x84 (Nature DQN), the last 4 frames stacked, rewards clipped to their sign, sticky actions
off (the papers' v3-era ALE) or on (repeat probability 0.25, Machado et al. 2018), an episode
limit in agent steps (4500 in both papers), no life-loss episodes and no fire-reset (EMI's
defaults). `info["task_metric"]` is the raw game score of the episode so far: what Table 1 of
#Exploration reports, whatever the clipping the agent learns from.

Two ways to make a grey frame (`grey`):
- `ale`: ALE's own greyscale of each screen, the max of the last two in grey, an area resize.
- `exploration_paper`: #Exploration's code (hash_exploration `envs/atari_env.py`,
  `current_screen`): the max of the last two screens in RGB, its own luminance weights and a
  bilinear resize (`paper_frames`); the stack starts with zeros, as there.

Two ways to step a batch of games:
- `ale`: ale-py's AtariVectorEnv, a threaded C++ batch doing all of the above, for pixels (for
  `exploration_paper` it hands over max-pooled RGB screens at full size and `PaperFrameStack`
  converts and stacks them). Its state cannot be snapshotted, so a resumed run restarts the
  episodes in progress.
- `sync`: gymnasium's AtariEnv + AtariPreprocessing + FrameStackObservation in a SyncVectorEnv;
  needed for RAM observations (128 bytes scaled to [0, 1]) and ALE's colour averaging, and
  resumable bit for bit.
"""
from __future__ import annotations

import functools
import re

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformObservation

from explorebench.checks import require, require_choice, require_positive

gym.register_envs(ale_py)

OBSERVATIONS = ("pixels", "ram")
VECTOR_PATHS = ("auto", "ale", "sync")
GREY_MODES = ("ale", "exploration_paper")
STICKY_PROBABILITY = 0.25
SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160  # ALE's NTSC screen
# R, G, B weights of #Exploration's code (atari_env.py with correct_luminance=True, the launchers'
# setting): Rec. 709's luminance with the green and blue weights swapped. Kept as they are, because
# they made the paper's frames.
PAPER_LUMINANCE = (0.2126, 0.0722, 0.7152)


def rom_name(env_id: str) -> str:
    """'ALE/MontezumaRevenge-v5' -> 'montezuma_revenge' (the name AtariVectorEnv takes)."""
    game = env_id.split("/")[-1].split("-")[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def validate(env_cfg) -> str:
    """Check the atari block; returns the vector path to use."""
    atari = env_cfg.atari
    require_choice("env.atari.observation", atari.observation, OBSERVATIONS)
    require_choice("env.atari.vector", atari.vector, VECTOR_PATHS)
    require_choice("env.atari.grey", atari.grey, GREY_MODES)
    require(isinstance(atari.color_averaging, bool), "env.atari.color_averaging",
            f"must be true or false, got {atari.color_averaging!r}")
    for key in ("frame_skip", "frame_stack", "screen_size", "vector_threads"):
        require_positive(f"env.atari.{key}", atari[key])
    require(isinstance(atari.noop_max, int) and atari.noop_max >= 0, "env.atari.noop_max",
            f"must be a non-negative integer, got {atari.noop_max!r}")
    if atari.vector == "auto":
        return "ale" if atari.observation == "pixels" and not atari.color_averaging else "sync"
    require(not (atari.vector == "ale" and atari.observation == "ram"), "env.atari.vector",
            "ale (AtariVectorEnv) has no RAM observations; allowed with observation=ram: auto | sync")
    require(not (atari.vector == "ale" and atari.color_averaging), "env.atari.vector",
            "ale (AtariVectorEnv) cannot colour-average; allowed with env.atari.color_averaging=true: auto | sync")
    return atari.vector


@functools.lru_cache(maxsize=None)
def _linear_taps(dst: int, src: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR sampling of one axis on its uint8 (fixed-point) path: output index d
    reads source pixels floor(x) and floor(x) + 1 at x = (d + 0.5) * src / dst - 0.5 (float32),
    indices clamped to the image, with weights 1 - frac(x) and frac(x) each rounded to a multiple of
    1/2048. Along columns OpenCV also zeroes frac(x) where a neighbour falls outside; along rows it
    does not (it only clamps the row index)."""
    x = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    i = np.floor(x).astype(np.int64)
    frac = x - i.astype(np.float32)
    if clamp_weights:
        frac[(i < 0) | (i >= src - 1)] = 0
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int32)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int32)
    return np.clip(i, 0, src - 1), np.clip(i + 1, 0, src - 1), w0, w1


def paper_frames(rgb: np.ndarray, size: int) -> np.ndarray:
    """Max-pooled RGB screens [..., 210, 160, 3] -> grey frames [..., size, size] (uint8) as
    #Exploration's code made them (atari_env.py `current_screen`, crop_or_scale='scale'):

        grey  = uint8(0.2126 R + 0.0722 G + 0.7152 B)       float64, truncated toward zero
        frame = cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR)

    No crop, and the range stays 0..255 (the reference maps frames to [-1, 1] only where it feeds
    them to its networks and its hash). OpenCV's INTER_LINEAR on uint8 is bilinear sampling with
    half-pixel centres (`_linear_taps`), not an average over the pixels an output pixel covers; in
    fixed point: per row h = a0 g[x0] + a1 g[x1], then
    out = (((b0 (h_top >> 4)) >> 16) + ((b1 (h_bottom >> 4)) >> 16) + 2) >> 2   (never above 255).
    That arithmetic is done here, and grey only on the pixels it reads (at 42 the row step is
    exactly 5: row 5i + 2 is taken as is), for speed; tests/test_atari.py checks it against the
    two lines above bit for bit."""
    (y0, y1, b0, b1), (x0, x1, a0, a1) = (_linear_taps(size, SCREEN_HEIGHT, False),
                                          _linear_taps(size, SCREEN_WIDTH, True))
    flat = rgb.reshape(-1, SCREEN_HEIGHT, SCREEN_WIDTH, 3)
    read = flat.take(np.concatenate([y0, y1]), axis=1).take(np.concatenate([x0, x1]), axis=2)
    r, g, b = PAPER_LUMINANCE
    grey = (read[..., 0] * r + read[..., 1] * g + read[..., 2] * b).astype(np.uint8).astype(np.int32)
    rows = grey[:, :, :size] * a0 + grey[:, :, size:] * a1  # [N, 2 size, size]: rows y0, then rows y1
    top, bottom = rows[:, :size] >> 4, rows[:, size:] >> 4
    out = (((b0[:, None] * top) >> 16) + ((b1[:, None] * bottom) >> 16) + 2) >> 2
    return out.astype(np.uint8).reshape(*rgb.shape[:-3], size, size)


class GameScore(gym.Wrapper):
    """Reports the raw episode score as info["task_metric"] and optionally clips the reward the
    agent sees to its sign."""

    def __init__(self, env: gym.Env, clip_rewards: bool):
        super().__init__(env)
        self.clip_rewards, self.score = clip_rewards, 0.0

    def reset(self, **kwargs):
        self.score = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        info["task_metric"] = self.score
        return obs, float(np.sign(reward)) if self.clip_rewards else reward, terminated, truncated, info


class NoopStart(gym.Wrapper):
    """Up to `noop_max` no-op actions after reset, drawn from the env's seeded RNG (for RAM
    observations; AtariPreprocessing does this for pixels)."""

    def __init__(self, env: gym.Env, noop_max: int):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.env.unwrapped.np_random.integers(0, self.noop_max + 1)):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


def _pixel_game(env_cfg, sticky: float) -> gym.Env:
    """The bare game for the pixel paths, one frame per step. With `color_averaging`, ALE blends
    each screen with the one before (its "phosphor" option): #Exploration's code does so for Venture
    only, where "without color averaging, the agent and reward items are invisible". ALE reads the
    option when a ROM is loaded, hence the reload. Its snapshots leave out the previous screen, so
    the first screen after a restore is blended with a stale one; with frame skip >= 3 that screen
    is never one of the two max-pooled, and resumes stay exact."""
    env = gym.make(env_cfg.id, frameskip=1, repeat_action_probability=sticky, **(env_cfg.get("kwargs") or {}))
    if env_cfg.atari.color_averaging:
        env.unwrapped.ale.setBool("color_averaging", True)
        env.unwrapped.load_game()
    return env


def make_atari_env(env_cfg) -> gym.Env:
    """One game with the configured preprocessing (the `sync` path)."""
    atari = env_cfg.atari
    sticky = STICKY_PROBABILITY if atari.sticky_actions else 0.0
    if atari.observation == "ram":
        env = gym.make(env_cfg.id, obs_type="ram", frameskip=atari.frame_skip,
                       repeat_action_probability=sticky, **(env_cfg.get("kwargs") or {}))
        env = NoopStart(env, atari.noop_max)
        space = gym.spaces.Box(0.0, 1.0, env.observation_space.shape, np.float32)
        env = TransformObservation(env, lambda ram: ram.astype(np.float32) / 255.0, space)
    elif atari.grey == "ale":
        env = AtariPreprocessing(_pixel_game(env_cfg, sticky), noop_max=atari.noop_max,
                                 frame_skip=atari.frame_skip, screen_size=atari.screen_size,
                                 terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
        env = FrameStackObservation(env, atari.frame_stack)
    else:  # exploration_paper: max-pooled RGB screens at full size (a same-size resize is a copy)
        env = AtariPreprocessing(_pixel_game(env_cfg, sticky), noop_max=atari.noop_max,
                                 frame_skip=atari.frame_skip, screen_size=(SCREEN_WIDTH, SCREEN_HEIGHT),
                                 terminal_on_life_loss=False, grayscale_obs=False, scale_obs=False)
        size = atari.screen_size
        env = TransformObservation(env, lambda rgb: paper_frames(rgb, size),
                                   gym.spaces.Box(0, 255, (size, size), np.uint8))
        env = FrameStackObservation(env, atari.frame_stack, padding_type="zero")
    env = GameScore(env, atari.clip_rewards)
    if env_cfg.get("max_episode_steps") is not None:
        env = gym.wrappers.TimeLimit(env, int(env_cfg.max_episode_steps))
    return env


class PaperFrameStack(VectorWrapper):
    """For AtariVectorEnv run at full size in RGB with a stack of one (its screens max-pooled in
    RGB): converts each screen with `paper_frames` and stacks the last `stack` frames, zeros before
    an episode's first (as AtariVectorEnv's own stack and the reference code do). Episodes reset
    within the step that ends them; their final observation (info["final_obs"]) is converted and
    stacked the same way."""

    def __init__(self, env, size: int, stack: int):
        super().__init__(env)
        self.size = size
        self.single_observation_space = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self.frames = np.zeros(self.observation_space.shape, np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames = np.zeros(self.observation_space.shape, np.uint8)  # a fresh array: returned ones stay
        self.frames[:, -1] = paper_frames(obs[:, 0], self.size)
        return self.frames, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.frames = np.concatenate([self.frames[:, 1:], paper_frames(obs[:, :1], self.size)], axis=1)
        ended = terminated | truncated
        if ended.any():
            final = self.frames.copy()  # rows that did not end: their current observation
            final[ended, -1] = paper_frames(info["final_obs"][ended, 0], self.size)
            info["final_obs"] = final
            self.frames[ended, :-1] = 0  # the new episodes' stacks hold their first frame only
        return self.frames, reward, terminated, truncated, info


class VectorGameScore(VectorWrapper):
    """GameScore for AtariVectorEnv: raw scores into final_info["task_metric"], clipped rewards."""

    def __init__(self, env, clip_rewards: bool):
        super().__init__(env)
        self.clip_rewards = clip_rewards
        self.scores = np.zeros(env.num_envs)

    def reset(self, *, seed=None, **kwargs):
        self.scores[:] = 0.0
        if isinstance(seed, (list, tuple)):  # AtariVectorEnv takes one seed and derives the rest,
            seed = int(seed[0]) % (2**31 - self.num_envs)  # as C ints

        return self.env.reset(seed=seed, **kwargs)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.scores += reward
        ended = terminated | truncated
        if ended.any():
            info["final_info"] = {"task_metric": self.scores.copy(), "_task_metric": ended}
            self.scores[ended] = 0.0
        return obs, np.sign(reward) if self.clip_rewards else reward, terminated, truncated, info


def make_atari_vector_env(env_cfg, num_envs: int):
    path = validate(env_cfg)
    if path == "sync":
        return SyncVectorEnv([lambda: make_atari_env(env_cfg) for _ in range(num_envs)],
                             copy=False, autoreset_mode=AutoresetMode.SAME_STEP)
    from ale_py.vector_env import AtariVectorEnv

    atari = env_cfg.atari
    max_steps = env_cfg.get("max_episode_steps")
    paper = atari.grey == "exploration_paper"
    env = AtariVectorEnv(
        rom_name(env_cfg.id), num_envs, num_threads=atari.vector_threads,
        img_height=SCREEN_HEIGHT if paper else atari.screen_size,
        img_width=SCREEN_WIDTH if paper else atari.screen_size, grayscale=not paper,
        stack_num=1 if paper else atari.frame_stack, frameskip=atari.frame_skip, maxpool=True,
        noop_max=atari.noop_max, repeat_action_probability=STICKY_PROBABILITY if atari.sticky_actions else 0.0,
        max_num_frames_per_episode=int(max_steps) * atari.frame_skip if max_steps else 108000,
        episodic_life=False, reward_clipping=False, use_fire_reset=False,
        autoreset_mode=AutoresetMode.SAME_STEP)
    if paper:
        env = PaperFrameStack(env, atari.screen_size, atari.frame_stack)
    return VectorGameScore(env, atari.clip_rewards)
