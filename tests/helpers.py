"""Test-only exploration methods, reachable as config options through tests/conf, and the loop's
order of the exploration verbs for tests that drive a method by hand."""
import numpy as np

from algos.exploration.base import ExplorationMethod, Requirements


class DiscreteOnlyBonus(ExplorationMethod):
    """Declares that it needs discrete actions (like the count-based UCB bonus)."""

    requires = Requirements(action_kinds=("discrete",))


class NaNBonus(ExplorationMethod):
    """Returns NaN from intrinsic_reward once `nan_at` batches have been observed (so from the
    `nan_at`-th iteration on), to exercise the loud-failure path. intrinsic_reward is pure: the
    batches are counted in `observe`, once per new batch."""

    def __init__(self, observation_space, action_space, *, nan_at: int = 3, seed=0, device="cpu"):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        self.observed, self.nan_at = 0, nan_at

    def observe(self, transitions):
        self.observed += 1

    def intrinsic_reward(self, transitions):
        r = np.zeros(len(transitions))
        return r * np.nan if self.observed >= self.nan_at else r

    def state_dict(self):
        return {"observed": self.observed}

    def load_state_dict(self, state):
        self.observed = state["observed"]


def iterate(method, transitions, feedback=None):
    """One iteration of the training loops' exploration verbs on a new batch (runner/loops):
    observe, then update and intrinsic_reward in the order `fit_before_scoring` asks for (the agent
    update, between the two otherwise, is left out). Returns (r_int [B], the update's metrics)."""
    method.observe(transitions)
    if method.fit_before_scoring:
        metrics = method.update(transitions, feedback)
        return method.intrinsic_reward(transitions), metrics
    r_int = method.intrinsic_reward(transitions)
    return r_int, method.update(transitions, feedback)
