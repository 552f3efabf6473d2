"""Exact snapshots of environment state, so that a resumed run continues mid-episode bit for bit.

gymnasium has no state API, so a snapshot walks the wrapper chain and keeps each layer's plain
attributes (numbers, arrays, RNG states, ...): TimeLimit's step counter, the env's np_random, the
vector env's buffers. MuJoCo environments add a copy of the whole MjData: the integration state
alone is not enough, because gymnasium's step() reads derived quantities left by the previous
mj_step (e.g. Ant's x-velocity uses the body positions computed before the last integration).
Atari (ale-py's AtariEnv) adds the emulator state with its RNG (ALEInterface.cloneState).
A vector env other than SyncVectorEnv (ale-py's C++ AtariVectorEnv) cannot be snapshotted.
An environment with other hidden state implements `get_snapshot()` / `restore_snapshot(state)` itself.
"""
from __future__ import annotations

import copy
from collections import deque

import numpy as np
from gymnasium.vector import SyncVectorEnv

_PLAIN = (bool, int, float, str, bytes, type(None), np.ndarray, np.generic)
_SKIP = {"env", "envs", "observation_space", "action_space", "single_observation_space",
         "single_action_space", "spec", "metadata", "render_mode", "model", "data",
         "mujoco_renderer", "env_fns"}


def _is_plain(value) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _layer_state(obj) -> dict:
    state = {}
    for name, value in vars(obj).items():
        if name in _SKIP or name.startswith("_ezpickle"):
            continue
        if isinstance(value, np.random.Generator):
            state[name] = ("rng", copy.deepcopy(value.bit_generator.state))
        elif isinstance(value, deque) and _is_plain(list(value)):  # FrameStackObservation
            state[name] = ("deque", (copy.deepcopy(list(value)), value.maxlen))
        elif _is_plain(value):
            state[name] = ("value", copy.deepcopy(value))
    return state


def _set_layer_state(obj, state: dict) -> None:
    for name, (kind, value) in state.items():
        if kind == "rng":  # the attribute may still be None in a fresh process
            bit_generator = getattr(np.random, value["bit_generator"])()
            bit_generator.state = copy.deepcopy(value)
            setattr(obj, name, np.random.Generator(bit_generator))
        elif kind == "deque":
            items, maxlen = value
            setattr(obj, name, deque(copy.deepcopy(items), maxlen=maxlen))
        else:
            setattr(obj, name, copy.deepcopy(value))


def _layers(env):
    while True:
        yield env
        if not hasattr(env, "env"):
            return
        env = env.env


def _set_mujoco_data(env, saved) -> None:
    """MjData has no in-place copy in the Python bindings, so the env gets a fresh copy (and the
    renderer, which holds a reference, is pointed at it)."""
    env.data = copy.deepcopy(saved)
    renderer = getattr(env, "mujoco_renderer", None)
    if renderer is not None:
        renderer.data = env.data


def get_env_state(env) -> list:
    """Snapshot of one (wrapped) environment."""
    snapshot = []
    for layer in _layers(env):
        entry = {"attrs": _layer_state(layer)}
        if hasattr(layer, "get_snapshot") and not hasattr(layer, "env"):
            entry["custom"] = layer.get_snapshot()
        elif hasattr(layer, "model") and hasattr(layer, "data") and not hasattr(layer, "env"):
            entry["mujoco"] = copy.deepcopy(layer.data)
        elif hasattr(layer, "ale") and not hasattr(layer, "env"):
            entry["ale"] = layer.ale.cloneState(include_rng=True)
        snapshot.append(entry)
    return snapshot


def set_env_state(env, snapshot: list) -> None:
    for layer, entry in zip(_layers(env), snapshot, strict=True):
        _set_layer_state(layer, entry["attrs"])
        if "custom" in entry:
            layer.restore_snapshot(entry["custom"])
        elif "mujoco" in entry:
            _set_mujoco_data(layer, entry["mujoco"])
        elif "ale" in entry:
            layer.ale.restoreState(entry["ale"])


def get_vector_env_state(vec_env) -> dict | None:
    """Snapshot of a SyncVectorEnv and its envs; None for a vector env that has no snapshots."""
    if not isinstance(vec_env, SyncVectorEnv):
        return None
    return {"vector": _layer_state(vec_env), "envs": [get_env_state(e) for e in vec_env.envs]}


def set_vector_env_state(vec_env, state: dict) -> None:
    _set_layer_state(vec_env, state["vector"])
    for env, env_state in zip(vec_env.envs, state["envs"], strict=True):
        set_env_state(env, env_state)
