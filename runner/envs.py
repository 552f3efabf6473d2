"""Building environments from the `env` config group."""
from __future__ import annotations

import inspect
import re

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import ClipAction, RescaleAction

from algos.common.checks import ConfigError


def make_env(env_cfg) -> gym.Env:
    """gymnasium.make(env.id, **env.kwargs) with the episode limit from env.max_episode_steps.

    Continuous actions are then normalised as rllab's `normalize` did: the agent acts in [-1, 1]
    (actions outside are clipped) and the wrapper rescales to the environment's bounds."""
    import envs  # noqa: F401  (registers the explorebench/ namespace)

    if env_cfg.get("atari") is not None:
        from envs.atari import make_atari_env, validate

        validate(env_cfg)
        return make_atari_env(env_cfg)
    kwargs = dict(env_cfg.get("kwargs") or {})
    if env_cfg.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = int(env_cfg.max_episode_steps)
    try:
        env = gym.make(env_cfg.id, **kwargs)
    except gym.error.Error as err:
        raise ConfigError(f"env.id: gymnasium cannot make {env_cfg.id!r} ({err})") from err
    except TypeError as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if unknown is None:
            raise
        raise ConfigError(f"env.kwargs.{unknown.group(1)}: {env_cfg.id} takes no such argument; it takes: "
                          f"{', '.join(_env_parameters(env_cfg.id)) or '(none listed)'}") from None
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        bounded = np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        if bounded and not (np.all(space.low == -1) and np.all(space.high == 1)):
            unit = np.ones(space.shape, space.dtype)
            env = RescaleAction(env, -unit, unit)
        env = ClipAction(env)
    return env


def _env_parameters(env_id: str) -> list[str]:
    """The keyword arguments an environment's constructor names (for the message of a wrong one)."""
    entry_point = gym.spec(env_id).entry_point
    try:
        cls = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        parameters = inspect.signature(cls).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_vector_env(env_cfg, num_envs: int) -> SyncVectorEnv:
    """N copies stepped in-process (faster than subprocesses for MuJoCo on few cores), or for
    Atari ale-py's threaded batch (envs/atari.py). Episodes reset within the step that ends them;
    the final observation is in info["final_obs"]."""
    if env_cfg.get("atari") is not None:
        from envs.atari import make_atari_vector_env

        return make_atari_vector_env(env_cfg, num_envs)
    return SyncVectorEnv([lambda: make_env(env_cfg) for _ in range(num_envs)],
                         copy=False, autoreset_mode=AutoresetMode.SAME_STEP)
