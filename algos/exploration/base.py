"""The exploration contract, and the reward augmentation r = r_ext + coef * normalise(r_int).

A method sees experience through three verbs, called by every training loop in this order:

  observe(transitions)            new experience enters counts, pools and replays, once per new batch
  intrinsic_reward(transitions)   r_int per row, [B]; PURE: no state changes (RNGs included), any batch,
                                  any time (off-policy agents call it on replay minibatches), and a row
                                  gets the same value whatever batch it is in
  update(transitions, feedback)   train the bonus model; `feedback` is what the agent measured (e.g.
                                  evaluation returns before and after its update), or None

A method that trains before it scores (EX2) sets `fit_before_scoring = True`: the loop then calls
`update` between `observe` and `intrinsic_reward`; otherwise `update` comes after the agent's update.
A model that has not been trained yet gives zeros. Methods that change the executed actions (noise
strategies) set `changes_actions = True` and implement `behaviour_action`, which also returns the
log-probability of the executed actions under the behaviour distribution. `requires` declares what the
method can work with, so that an impossible combination is refused at start-up; it defaults to
on-policy agents, and a method opts in to off-policy and meta agents.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from algos.common.checks import require_choice
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Transitions

ACTION_KINDS = ("continuous", "discrete")
OBSERVATION_KINDS = ("vector", "pixels")


@dataclass(frozen=True)
class Requirements:
    action_kinds: tuple = ACTION_KINDS
    agent_families: tuple = ("on_policy",)
    observation_kinds: tuple = OBSERVATION_KINDS
    because: str = ""  # the config value that narrowed them, named in the refusal (e.g. "exploration.rule=ucb1_action")


class ExplorationMethod:
    """Base class: no bonus, no action change, no state. Subclasses override what they need."""

    requires = Requirements()
    changes_actions = False     # True for methods that implement behaviour_action
    fit_before_scoring = False  # True: the loop calls update() before intrinsic_reward()

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu"):
        self.observation_space, self.action_space = observation_space, action_space
        self.seed, self.device = seed, device

    def observe(self, transitions: Transitions) -> None:
        """New experience enters the method's counts, pools or replays (once per new batch)."""

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        """r_int of every row, [B]; pure."""
        return np.zeros(len(transitions))

    def update(self, transitions: Transitions, feedback: dict | None = None) -> dict:
        """Train the bonus model; returns metrics (logged as expl_<name>)."""
        return {}

    def behaviour_action(self, obs: np.ndarray, actions: np.ndarray, *, episode_step: np.ndarray,
                         agent_info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """(the actions to execute instead of the policy's `actions` [N, ...] in `obs`, their
        log-probability under the behaviour distribution [N]).

        `episode_step` ([N], read-only) is each env's step index within its episode (0 at the first
        step); `agent_info` is what agent.act returned beside the actions ("log_prob", and "logits" for
        categorical policies or "mean" and "std" for Gaussian ones). Without a change of action the
        behaviour is the policy itself."""
        return actions, agent_info.get("log_prob")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


NORMALISATIONS = ("none", "running_std", "batch_median", "running_median_ratio")


class IntrinsicRewardShaper:
    """coef * normalise(r_int), with the normalisations the papers use:

    - none
    - running_std: divide by the running standard deviation of all bonuses of new data so far
    - batch_median: subtract the median of the batch being shaped (EX2, batch_polopt.py)
    - running_median_ratio: divide by the mean of the last `median_window` medians of new data
      (VIME's use_kl_ratio_q, kl_q_len = 10)

    `observe(r_int)` moves the statistics with the bonuses of new experience, once per new batch;
    `apply(r_int)` is pure, so an off-policy agent can shape any minibatch.
    """

    def __init__(self, coef: float, normalise: str = "none", median_window: int = 10):
        require_choice("exploration.normalise", normalise, NORMALISATIONS)
        self.coef, self.normalise = float(coef), normalise
        self.rms = RunningMeanStd()
        self.medians: deque = deque(maxlen=median_window)

    def observe(self, r_int: np.ndarray) -> None:
        r = np.asarray(r_int, np.float64)
        if not r.any():
            # A method that gives no bonus yet (VIME before its first model update) must not
            # pull the running statistics towards zero.
            return
        if self.normalise == "running_std":
            self.rms.update(r.reshape(-1))
        elif self.normalise == "running_median_ratio":
            self.medians.append(float(np.median(r)))

    def apply(self, r_int: np.ndarray) -> np.ndarray:
        r = np.asarray(r_int, np.float64)
        if not r.any():
            return self.coef * r
        if self.normalise == "running_std":
            r = r / np.sqrt(self.rms.var + 1e-8)
        elif self.normalise == "batch_median":
            r = r - np.median(r)
        elif self.normalise == "running_median_ratio":
            r = r / max(float(np.mean(self.medians)), 1e-8) if self.medians else r
        return self.coef * r

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "medians": list(self.medians)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self.medians.clear()
        self.medians.extend(state["medians"])
