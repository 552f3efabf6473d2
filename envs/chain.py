"""The exploration canary: a sparse chain that a learner without directed exploration almost never
solves, and a count-based learner solves within a small budget.

    position:  0        1 (start)   2   ...   n - 1
    reward:    +0.01 (distractor, ends)        +1 (goal, ends)

States 0..n-1 in a line; the agent starts at 1 and moves left (action 0) or right (action 1).
Reaching 0 pays the small `distractor` reward and ends the episode; reaching n - 1 pays 1 and ends
it; otherwise the reward is 0. Episodes are cut at `horizon` steps (default n + 10, so a policy
that walks straight there has 11 steps to spare). The observation is the one-hot code of the
position (or, with `observation="thermometer"`, ones up to the position), so states are exact:
counts are exact counts, and SimHash codes of distinct states are distinct with probability
~1 - n^2 2^-k. `info["task_metric"]` is 1 if the goal was reached in the episode, else 0.

How hard it is (defaults n = 24, horizon 34; exact, by dynamic programming over the walk): a
uniformly random policy reaches the goal in an episode with probability 9.4e-05 (about once in
10,600 episodes), and the distractor ends 86% of its episodes; a policy that has learned the
distractor reaches the goal even less often. Measured on the canary's budget (TRPO, 30 iterations of
500 steps, tests/test_canary.py): TRPO + none solved 0 of 10 seeds, TRPO + SimHash (beta 0.1) 10 of 10.
`random_walk_success(n, horizon)` recomputes the probability for other settings.

Not a paper environment: a chain of the same family as the classic ones of the exploration
literature (e.g. Strehl & Littman's RiverSwim, the chain of Osband et al.'s Bootstrapped DQN),
kept tiny so that the whole canary runs in seconds on a CPU. Registered as `explorebench/Chain-v0`.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

OBSERVATIONS = ("onehot", "thermometer")


def random_walk_success(n: int = 24, horizon: int | None = None, start: int = 1) -> float:
    """Probability that a uniformly random left/right policy reaches n - 1 before 0 within the
    horizon (exact, by propagating the distribution over positions)."""
    horizon = n + 10 if horizon is None else horizon
    p = np.zeros(n)
    p[start] = 1.0
    reached = 0.0
    for _ in range(horizon):
        q = np.zeros(n)
        q[:-1] += 0.5 * p[1:]  # step left
        q[1:] += 0.5 * p[:-1]  # step right
        q[0] = 0.0             # absorbed by the distractor
        reached += q[-1]
        q[-1] = 0.0            # absorbed by the goal
        p = q
    return float(reached)


class ChainEnv(gym.Env):
    """A chain of `n` states: a distractor one step left of the start, the goal n - 2 steps right."""

    metadata = {"render_modes": []}

    def __init__(self, n: int = 24, horizon: int | None = None, distractor: float = 0.01,
                 observation: str = "onehot"):
        if n < 3:
            raise ValueError(f"ChainEnv: n must be at least 3, got {n}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"ChainEnv: observation must be one of {OBSERVATIONS}, got {observation!r}")
        self.n, self.distractor, self.observation = int(n), float(distractor), observation
        self.horizon = self.n + 10 if horizon is None else int(horizon)
        self.start = 1
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.n,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position, self.steps = self.start, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n, np.float32)
        if self.observation == "onehot":
            obs[self.position] = 1.0
        else:
            obs[:self.position + 1] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)  # deterministic dynamics; seeded only for the gymnasium API
        self.position, self.steps = self.start, 0
        return self._obs(), {"task_metric": 0.0}

    def step(self, action):
        self.position += 1 if int(action) == 1 else -1
        self.steps += 1
        goal, trap = self.position == self.n - 1, self.position == 0
        reward = 1.0 if goal else self.distractor if trap else 0.0
        truncated = self.steps >= self.horizon and not (goal or trap)
        return self._obs(), reward, goal or trap, truncated, {"task_metric": float(goal)}
    # position and steps are plain attributes: runner/env_state.py snapshots them for resume.
