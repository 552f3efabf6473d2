"""No exploration beyond the agent's own stochastic policy: the intrinsic reward is zero."""
from algos.exploration.base import ExplorationMethod


class NoExploration(ExplorationMethod):
    """The baseline every paper compares against (plain TRPO / PPO)."""
