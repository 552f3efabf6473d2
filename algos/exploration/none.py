"""No exploration beyond the agent's own stochastic policy: the intrinsic reward is zero."""
from algos.agents.base import AGENT_FAMILIES
from algos.exploration.base import ExplorationMethod, Requirements


class NoExploration(ExplorationMethod):
    """The baseline every paper compares against (plain TRPO / PPO, DDPG with its own noise off)."""

    requires = Requirements(agent_families=AGENT_FAMILIES)
