"""The exploration contract, and the reward augmentation r = r_ext + coef * normalise(r_int).

A method sees each rollout twice per iteration: `intrinsic_reward(rollout)` before any update on
that batch (so the bonus measures novelty with respect to the past), then `update(rollout)` after
the agent's update. Noise-type methods change actions through `perturb_action`. `requires` declares
what the method can work with, so that an impossible combination is refused at start-up.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from algos.common.checks import require_choice
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Rollout

ACTION_KINDS = ("continuous", "discrete")
AGENT_FAMILIES = ("on_policy", "off_policy", "meta")
OBSERVATION_KINDS = ("vector", "pixels")


@dataclass(frozen=True)
class Requirements:
    action_kinds: tuple = ACTION_KINDS
    agent_families: tuple = AGENT_FAMILIES
    observation_kinds: tuple = OBSERVATION_KINDS


class ExplorationMethod:
    """Base class: no bonus, no action change, no state. Subclasses override what they need."""

    requires = Requirements()
    perturbs_actions = False  # set True by methods that override perturb_action

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu"):
        self.observation_space, self.action_space = observation_space, action_space
        self.seed, self.device = seed, device

    def intrinsic_reward(self, rollout: Rollout) -> np.ndarray:
        """r_int for every step of the rollout, [T, N]."""
        return np.zeros(rollout.rewards_ext.shape)

    def update(self, rollout: Rollout) -> dict:
        return {}

    def perturb_action(self, obs: np.ndarray, actions: np.ndarray, *, episode_step: np.ndarray,
                       agent_info: dict) -> np.ndarray:
        """The actions to execute instead of the policy's `actions` ([N, ...]) in `obs`.

        `episode_step` ([N], read-only) is each env's step index within its episode (0 at the
        first step); `agent_info` is what agent.act returned beside the actions (e.g. "logits"
        for categorical policies)."""
        return actions

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


NORMALISATIONS = ("none", "running_std", "batch_median", "running_median_ratio")


class IntrinsicRewardShaper:
    """coef * normalise(r_int), with the normalisations the papers use:

    - none
    - running_std: divide by the running standard deviation of all bonuses so far
    - batch_median: subtract the batch median (EX2, batch_polopt.py)
    - running_median_ratio: divide by the mean of the last `median_window` per-iteration medians,
      the current one included (VIME's use_kl_ratio_q, kl_q_len = 10)
    """

    def __init__(self, coef: float, normalise: str = "none", median_window: int = 10):
        require_choice("exploration.normalise", normalise, NORMALISATIONS)
        self.coef, self.normalise = float(coef), normalise
        self.rms = RunningMeanStd()
        self.medians: deque = deque(maxlen=median_window)

    def __call__(self, r_int: np.ndarray) -> np.ndarray:
        r = np.asarray(r_int, np.float64)
        if not r.any():
            # A method that gives no bonus yet (VIME before its first model update) must not
            # pull the running statistics towards zero.
            return self.coef * r
        if self.normalise == "running_std":
            self.rms.update(r.reshape(-1))
            r = r / np.sqrt(self.rms.var + 1e-8)
        elif self.normalise == "batch_median":
            r = r - np.median(r)
        elif self.normalise == "running_median_ratio":
            self.medians.append(float(np.median(r)))
            r = r / max(float(np.mean(self.medians)), 1e-8)
        return self.coef * r

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "medians": list(self.medians)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.medians.clear()
        self.medians.extend(state["medians"])
