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
RESUMABLE_KEYS = ("total_env_steps", "resume", "device", "threads", "checkpoint_every", "logger")


def _subdir(override_dirname: str, seed) -> str:
    """Run sub-directory: the overrides that change the run (if any), then the seed."""
    return f"{override_dirname}/seed_{seed}" if override_dirname else f"seed_{seed}"


if not OmegaConf.has_resolver("eb_subdir"):
    OmegaConf.register_new_resolver("eb_subdir", _subdir)


def compose(overrides: list[str] = ()) -> tuple[DictConfig, dict]:
    """The config `python -m runner.train <overrides>` would get, and its group choices
    (for tests, the bench and scripts)."""
    from hydra import compose as hydra_compose, initialize_config_dir

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


def validate_run_config(cfg: DictConfig) -> None:
    """Checks of the run-level keys, before anything is built. Agent- and method-specific keys
    are checked by their constructors, which also run before any training work."""
    require(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed",
            f"must be a non-negative integer, got {cfg.seed!r}")
    for key in ("threads", "total_env_steps", "checkpoint_every", "agent.batch_size", "agent.num_envs"):
        require_positive(key, OmegaConf.select(cfg, key))
    batch, num_envs = cfg.agent.batch_size, cfg.agent.num_envs
    require(batch % num_envs == 0, "agent.batch_size",
            f"must be a multiple of agent.num_envs ({num_envs}), got {batch}")
    require(cfg.total_env_steps >= batch, "total_env_steps",
            f"must be at least agent.batch_size ({batch}) for one iteration, got {cfg.total_env_steps}")
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
