"""Test-only exploration methods, reachable as config options through tests/conf."""
import numpy as np

from algos.exploration.base import ExplorationMethod, Requirements


class DiscreteOnlyBonus(ExplorationMethod):
    """Declares that it needs discrete actions (like the count-based UCB bonus)."""

    requires = Requirements(action_kinds=("discrete",))


class NaNBonus(ExplorationMethod):
    """Returns NaN from its `nan_at`-th call on, to exercise the loud-failure path."""

    def __init__(self, observation_space, action_space, *, nan_at: int = 3, seed=0, device="cpu"):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        self.calls, self.nan_at = 0, nan_at

    def intrinsic_reward(self, rollout):
        self.calls += 1
        r = np.zeros(rollout.rewards_ext.shape)
        return r * np.nan if self.calls >= self.nan_at else r

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]
