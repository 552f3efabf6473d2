"""Hard-exploration Atari with the preprocessing of #Exploration (Tang et al. 2017, §3.2) and EMI
(Kim et al. 2019): docs/papers.md §3 and §5.

Settings (the `env.atari` config block): frame skip 4 with max-pooling of the last two frames,
up to 30 random no-op starts, grayscale frames resized to 42x42 (#Exploration), 52x52 (EMI) or
84x84 (Nature DQN), the last 4 frames stacked, rewards clipped to their sign, sticky actions
off (the papers' v3-era ALE) or on (repeat probability 0.25, Machado et al. 2018), an episode
limit in agent steps (4500 in both papers), no life-loss episodes and no fire-reset (EMI's
defaults). `info["task_metric"]` is the raw game score of the episode so far: what Table 1 of
#Exploration reports, whatever the clipping the agent learns from.

Two ways to step a batch of games:
- `ale`: ale-py's AtariVectorEnv, a threaded C++ batch doing all of the above, for pixels. Its
  state cannot be snapshotted, so a resumed run restarts the episodes in progress.
- `sync`: gymnasium's AtariEnv + AtariPreprocessing + FrameStackObservation in a SyncVectorEnv;
  needed for RAM observations (128 bytes scaled to [0, 1]) and resumable bit for bit.
"""
from __future__ import annotations

import re

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorWrapper
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformObservation

from explorebench.checks import require, require_choice, require_positive

gym.register_envs(ale_py)

OBSERVATIONS = ("pixels", "ram")
VECTOR_PATHS = ("auto", "ale", "sync")
STICKY_PROBABILITY = 0.25


def rom_name(env_id: str) -> str:
    """'ALE/MontezumaRevenge-v5' -> 'montezuma_revenge' (the name AtariVectorEnv takes)."""
    game = env_id.split("/")[-1].split("-")[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def validate(env_cfg) -> str:
    """Check the atari block; returns the vector path to use."""
    atari = env_cfg.atari
    require_choice("env.atari.observation", atari.observation, OBSERVATIONS)
    require_choice("env.atari.vector", atari.vector, VECTOR_PATHS)
    for key in ("frame_skip", "frame_stack", "screen_size", "vector_threads"):
        require_positive(f"env.atari.{key}", atari[key])
    require(isinstance(atari.noop_max, int) and atari.noop_max >= 0, "env.atari.noop_max",
            f"must be a non-negative integer, got {atari.noop_max!r}")
    if atari.vector == "auto":
        return "ale" if atari.observation == "pixels" else "sync"
    require(not (atari.vector == "ale" and atari.observation == "ram"), "env.atari.vector",
            "ale (AtariVectorEnv) has no RAM observations; allowed with observation=ram: auto | sync")
    return atari.vector


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
    else:
        env = gym.make(env_cfg.id, frameskip=1, repeat_action_probability=sticky,
                       **(env_cfg.get("kwargs") or {}))
        env = AtariPreprocessing(env, noop_max=atari.noop_max, frame_skip=atari.frame_skip,
                                 screen_size=atari.screen_size, terminal_on_life_loss=False,
                                 grayscale_obs=True, scale_obs=False)
        env = FrameStackObservation(env, atari.frame_stack)
    env = GameScore(env, atari.clip_rewards)
    if env_cfg.get("max_episode_steps") is not None:
        env = gym.wrappers.TimeLimit(env, int(env_cfg.max_episode_steps))
    return env


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
    env = AtariVectorEnv(
        rom_name(env_cfg.id), num_envs, num_threads=atari.vector_threads,
        img_height=atari.screen_size, img_width=atari.screen_size, grayscale=True,
        stack_num=atari.frame_stack, frameskip=atari.frame_skip, maxpool=True,
        noop_max=atari.noop_max, repeat_action_probability=STICKY_PROBABILITY if atari.sticky_actions else 0.0,
        max_num_frames_per_episode=int(max_steps) * atari.frame_skip if max_steps else 108000,
        episodic_life=False, reward_clipping=False, use_fire_reset=False,
        autoreset_mode=AutoresetMode.SAME_STEP)
    return VectorGameScore(env, atari.clip_rewards)
