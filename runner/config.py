"""Composing, validating and comparing run configurations."""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

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


def _compose(overrides: list[str]) -> DictConfig:
    """Hydra's composition of conf/config.yaml with `overrides`, its hydra node included; inside a
    running Hydra app (runner.train's main) through the app's own config loader."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def compose(overrides: list[str] = ()) -> tuple[DictConfig, dict]:
    """The config `python -m runner.train <overrides>` would get, and its group choices
    (for tests, the bench and scripts), with the value overrides checked as runner.train checks them."""
    refuse_renamed_keys(overrides)
    cfg = _compose(overrides)
    choices = dict(cfg.hydra.runtime.choices)
    searchpath = list(cfg.hydra.searchpath)
    with open_dict(cfg):
        del cfg["hydra"]
    check_overrides(cfg, [o for o in overrides if not o.lstrip("+~").startswith("hydra")], choices, searchpath)
    return cfg, choices


# -- the command line's value overrides, checked against the config they override ----------------

_ABSENT = object()


def _constructor_parameters(node) -> dict[str, inspect.Parameter]:
    """The keyword parameters the `_target_` of a config group's node takes (none without one)."""
    from hydra.utils import get_class

    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        parameters = inspect.signature(get_class(target).__init__).parameters if target else {}
    except Exception:  # an unimportable _target_ is refused where the component is built
        return {}
    return {name: p for name, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _unknown_key(key: str, reference: DictConfig, choices: dict) -> str:
    """Why `key` is not a key of the configuration, with the closest key beside it."""
    parent = key.rpartition(".")[0]
    while parent and not isinstance(OmegaConf.select(reference, parent), DictConfig):
        parent = parent.rpartition(".")[0]
    node = OmegaConf.select(reference, parent) if parent else reference
    leaf = key[len(parent) + 1:] if parent else key
    siblings = [k for k in node if k != "_target_"]
    group = key.split(".", 1)[0]
    what = f"not a key of {group}={choices[group]}" if "." in key and group in choices else "not a configuration key"
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)
    hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    return f"{key}: {what}{hint} (the keys of {parent or 'the configuration'}: {', '.join(siblings)})"


def _checked_value(key: str, value, default, real: bool = False):
    """`value` of an override of `key`, given the value it overrides: the same kind of value, whole
    numbers typed as floats (1e6, 1000.0) taken as the integers they denote. `real`: the component
    takes a float here although the yaml wrote a whole number (`kl_weight: 10`)."""
    def number_name(v):
        return "an integer" if isinstance(v, int) else "a number"

    if default is None or isinstance(default, str):  # null: checked where it is used; strings take any scalar
        if isinstance(default, str) and isinstance(value, (DictConfig, ListConfig)):
            raise ConfigError(f"{key}: must be a single value, got {OmegaConf.to_container(value)!r}")
        return value
    if isinstance(default, bool):
        require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, f"must be {number_name(default)}, got {value!r}")
        if isinstance(default, int) and isinstance(value, float) and not real:
            require(value.is_integer(), key, f"must be an integer, got {value!r}")
            return int(value)
        return value
    if isinstance(default, ListConfig):
        require(isinstance(value, ListConfig), key, f"must be a list (e.g. {list(default)}), got {value!r}")
        if len(default) and all(isinstance(x, int) and not isinstance(x, bool) for x in default):
            return [_checked_value(f"{key}[{i}]", x, 0) for i, x in enumerate(value)]
        return value
    if isinstance(default, DictConfig):
        require(isinstance(value, DictConfig), key, f"must be a mapping of keys to values, got {value!r}")
    return value


def check_overrides(cfg: DictConfig, overrides, choices: dict, searchpath=()) -> None:
    """Refuse, naming the key, a command-line value override of a key the configuration does not have
    (with the closest known key) or of another kind than the value it overrides (`exploration.coef=abc`,
    `resume=maybe`, `agent.policy_hidden=abc`); whole numbers typed as floats become integers in `cfg`.

    The reference is the configuration composed from the same group choices without the value overrides.
    A key the yaml does not list is accepted when the group's `_target_` takes it as a parameter, and
    `env.kwargs.*` is checked by the environment itself (runner.envs.make_env)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = [o for o in parsed if o.key_or_group in choices or "/" in o.key_or_group]
    values = [o for o in parsed if o not in groups and not o.is_delete()]
    if not values:
        return
    base = [o.input_line for o in groups]
    if searchpath:
        base.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    reference = _compose(base)
    with open_dict(reference):
        del reference["hydra"]
    for override in values:
        key = override.key_or_group
        group, _, name = key.partition(".")
        parameter = (_constructor_parameters(reference.get(group)).get(name)
                     if group in ("agent", "exploration") and "." not in name else None)
        default = OmegaConf.select(reference, key, default=_ABSENT)
        if default is _ABSENT:
            if not (key.startswith("env.kwargs.") or parameter is not None):
                raise ConfigError(_unknown_key(key, reference, choices))
            continue
        value = OmegaConf.select(cfg, key)
        real = parameter is not None and "float" in str(parameter.annotation)
        checked = _checked_value(key, value, default, real)
        if checked is not value:
            OmegaConf.update(cfg, key, checked, force_add=True)


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
