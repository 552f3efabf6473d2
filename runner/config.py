"""Composing, validating and comparing run configurations."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from algos.common.checks import ConfigError, require, require_choice, require_positive

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("offline", "online", "disabled")
# Keys a relaunch may change without making it a different run.
RESUMABLE_KEYS = ("total_env_steps", "resume", "device", "threads", "checkpoint_every", "logger",
                  "eval_every", "eval_episodes")


# One spelling across all config keys ("normalise"); the old keys are refused naming the new one.
RENAMED_KEYS = {"agent.normalize_advantages": "agent.normalise_advantages",
                "agent.normalize_observations": "agent.normalise_observations",
                "agent.normalize_rewards": "agent.normalise_rewards",
                "exploration.normalize_states": "exploration.normalise_states"}


def refuse_renamed_keys(overrides) -> None:
    """ConfigError for a renamed key among `overrides` (command-line overrides, checked before Hydra,
    whose own message would not say what the key is called now; or keys found in a composed config)."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RENAMED_KEYS:
            raise ConfigError(f"{key}: this key is now called {RENAMED_KEYS[key]} (one spelling, 'normalise', "
                              f"for every config key); use {RENAMED_KEYS[key]}=...")


def _subdir(override_dirname: str, seed) -> str:
    """Run sub-directory: the overrides that change the run (if any), then the seed."""
    return f"{override_dirname}/seed_{seed}" if override_dirname else f"seed_{seed}"


if not OmegaConf.has_resolver("eb_subdir"):
    OmegaConf.register_new_resolver("eb_subdir", _subdir)


def compose(overrides: list[str] = ()) -> tuple[DictConfig, dict]:
    """The config `python -m runner.train <overrides>` would get, and its group choices
    (for tests, the bench and scripts)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    refuse_renamed_keys(overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def resolve_device(device: str) -> torch.device:
    require_choice("device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA device is available "
                          f"(torch {torch.__version__}); allowed values: auto | cpu | cuda")
    return torch.device(device)


def agent_family(agent_cfg) -> str:
    """The `family` its class declares (which loop drives it), read without building the agent."""
    from hydra.utils import get_class

    from algos.agents.base import AGENT_FAMILIES

    try:
        family = getattr(get_class(agent_cfg["_target_"]), "family", None)
    except Exception as err:  # an unimportable _target_
        raise ConfigError(f"agent: cannot load agent._target_ {agent_cfg.get('_target_')!r} ({err})") from err
    require(family in AGENT_FAMILIES, "agent", f"{agent_cfg['_target_']} declares family {family!r}; "
            f"allowed values: {' | '.join(AGENT_FAMILIES)}")
    return family


def iteration_env_steps(cfg) -> int:
    """Env steps of one iteration: THE sizing rule, for every family (the only place it is written).

    On- and off-policy agents: `agent.batch_size` env steps, `agent.batch_size / agent.num_envs` per
    env. Meta agents: `meta_batch_size` tasks x (`inner_steps` + 1) collections x ceil(`fast_batch_size`
    / num_envs) whole episodes of `env.max_episode_steps` per env."""
    agent, num_envs = cfg["agent"], cfg["agent"]["num_envs"]
    require_positive("agent.num_envs", num_envs)
    if agent_family(agent) != "meta":
        batch = agent["batch_size"]
        require_positive("agent.batch_size", batch)
        require(batch % num_envs == 0, "agent.batch_size",
                f"must be a multiple of agent.num_envs ({num_envs}), got {batch}")
        return int(batch)
    return int(agent["meta_batch_size"]) * (int(agent["inner_steps"]) + 1) * num_envs * steps_per_collection(cfg)


def steps_per_collection(cfg) -> int:
    """Env steps per env of one collection: a whole iteration's for on- and off-policy agents; for meta
    agents one task's collection (ceil(fast_batch_size / num_envs) episodes of max_episode_steps)."""
    agent, num_envs = cfg["agent"], cfg["agent"]["num_envs"]
    if agent_family(agent) != "meta":
        return iteration_env_steps(cfg) // num_envs
    for key in ("meta_batch_size", "fast_batch_size"):
        require_positive(f"agent.{key}", agent.get(key))
    inner = agent.get("inner_steps")
    require(isinstance(inner, int) and inner >= 0, "agent.inner_steps", f"must be an integer >= 0, got {inner!r}")
    horizon = cfg["env"].get("max_episode_steps")
    require(isinstance(horizon, int) and horizon > 0, "env.max_episode_steps",
            f"meta agents collect whole episodes and need a positive episode limit, got {horizon!r}")
    return -(-int(agent["fast_batch_size"]) // num_envs) * horizon


def validate_run_config(cfg: DictConfig) -> None:
    """Checks of the run-level keys, before anything is built. Agent- and method-specific keys
    are checked by their constructors, which also run before any training work."""
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed",
            f"must be a non-negative integer, got {cfg.seed!r}")
    refuse_renamed_keys(key for key in RENAMED_KEYS if OmegaConf.select(cfg, key) is not None)  # from a preset
    for key in ("threads", "total_env_steps", "checkpoint_every"):
        require_positive(key, OmegaConf.select(cfg, key))
    every = cfg.get("eval_every")
    require(every is None or (isinstance(every, int) and not isinstance(every, bool) and every >= 0),
            "eval_every", f"must be null (the agent family's default) or an integer >= 0 (0 = never), got {every!r}")
    require_positive("eval_episodes", cfg.eval_episodes)
    per_iteration = iteration_env_steps(cfg)
    require(cfg.total_env_steps >= per_iteration, "total_env_steps",
            f"must be at least one iteration's env steps ({per_iteration}: agent.batch_size for on- and "
            f"off-policy agents), got {cfg.total_env_steps}")
    require(cfg.env.get("max_episode_steps") is None or
            (isinstance(cfg.env.max_episode_steps, int) and cfg.env.max_episode_steps > 0),
            "env.max_episode_steps", f"must be null or a positive integer, got {cfg.env.get('max_episode_steps')!r}")
    require_choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    resolve_device(cfg.device)


def config_differences(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every key that differs, ignoring RESUMABLE_KEYS."""
    def flatten(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
        return out

    a, b = flatten(old), flatten(new)
    skip = lambda k: any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)  # noqa: E731
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if not skip(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]
