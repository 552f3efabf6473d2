"""The classic exploration strategies of the lecture (docs/papers.md §14, seed 002): action noise and UCB counts.

- EpsilonGreedy (discrete): with probability eps replace the action by a uniform random one.
- Boltzmann (discrete): sample a ~ softmax(preferences / T), preferences = the agent's logits or
  Q-values ("pick action proportionally to transformed Q-values", P(a) = softmax(Q(a) / T)).
- GaussianNoise, OrnsteinUhlenbeckNoise (continuous): a + noise, clipped to the normalised action
  bounds [-1, 1]; OU is the temporally correlated noise of DDPG (Lillicrap et al. 2016, §7).
- UCBCountBonus (discrete actions, vector observations): r_int(s, a) = alpha sqrt(2 log N_s / n_{s,a})
  over a grid discretisation of the observation (the lecture's "UCB generalised to many states").

Noise methods change the actions the collector sends to the environment (`changes_actions`); the
rollout records the executed actions, so an on-policy agent's update sees what was executed, and
`behaviour_action` also returns their log-probability under the behaviour distribution (the policy
composed with the noise), so that an agent can correct its ratios. They give no intrinsic reward.
Schedules count env steps themselves (one per env per `behaviour_action` call) and checkpoint the
count together with their RNG.

The collector calls behaviour_action(obs, actions, episode_step=..., agent_info=...)
(algos/exploration/base.py). Boltzmann needs `agent_info["logits"]` (categorical policies) or
`agent_info["q_values"]` (value-based agents), [N, A]; without them it raises
MissingActionPreferences. OU restarts each env's process where `episode_step == 0`.

Behaviour log-probabilities: epsilon-greedy log((1 - eps) pi(a|s) + eps / |A|), with pi from the
agent's logits (a point mass on the agent's action without them); Boltzmann log softmax(pref / T)[a];
Gaussian and OU noise the log-density of the executed action under N(mean + m, std^2 + s^2), the
policy's N(mean, std^2) (agent_info "mean", "std"; a point mass at the agent's action for a
deterministic actor) plus the noise's N(m, s^2) (m = 0, s = sigma for Gaussian noise; for OU, m and
s^2 = sigma^2 dt given the process's previous state). Clipping to [-1, 1] is not modelled: the density
is that of the unclipped sum, evaluated at the executed action.
"""
from __future__ import annotations

import math

import numpy as np

from algos.agents.base import AGENT_FAMILIES
from algos.common.checks import require, require_in_range, require_positive
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

PREFERENCE_KEYS = ("logits", "q_values")


class MissingActionPreferences(RuntimeError):
    """Boltzmann exploration was called without the agent's logits / Q-values."""


def linear_schedule(start: float, end: float, decay_steps: int, step: int) -> float:
    """start -> end linearly over decay_steps env steps, then end (constant when decay_steps = 0)."""
    if decay_steps <= 0:
        return float(start)
    frac = min(1.0, step / decay_steps)
    return float(start + frac * (end - start))


def _require_schedule(name: str, start, end, decay_steps, low: float, high: float) -> None:
    require_in_range(f"exploration.{name}_start", start, low, high)
    require_in_range(f"exploration.{name}_end", end, low, high)
    require(isinstance(decay_steps, int) and not isinstance(decay_steps, bool) and decay_steps >= 0,
            "exploration.decay_steps", f"must be an integer >= 0 (0 = constant), got {decay_steps!r}")


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log N(x; mean, diag var) summed over the last axis, [N]."""
    var = np.broadcast_to(np.asarray(var, np.float64), np.shape(x))
    return -0.5 * np.sum((np.asarray(x, np.float64) - mean) ** 2 / var + np.log(2 * np.pi * var), -1)


def _policy_gaussian(actions: np.ndarray, agent_info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The policy's action mean and variance: the agent's "mean" and "std", or a point mass at its
    actions (a deterministic actor)."""
    if agent_info and "mean" in agent_info:
        return np.asarray(agent_info["mean"], np.float64), np.asarray(agent_info["std"], np.float64) ** 2
    return np.asarray(actions, np.float64), np.zeros(np.shape(actions))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


class _ActionNoise(ExplorationMethod):
    """Shared plumbing: an RNG, an env-step counter, checkpointing of both."""

    changes_actions = True
    requires = Requirements(agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu"):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0  # env steps perturbed so far (drives the schedules)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = state["env_steps"]


class EpsilonGreedy(_ActionNoise):
    """With probability eps(t) take a uniformly random action, otherwise the agent's action.

    eps(t) = eps_start + min(1, t / decay_steps) (eps_end - eps_start), t = env steps so far; the
    uniform action may equal the agent's (so the action *changes* w.p. eps (1 - 1/|A|)).
    """

    requires = Requirements(action_kinds=("discrete",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 epsilon_start: float = 1.0, epsilon_end: float = 0.1, decay_steps: int = 1_000_000):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        _require_schedule("epsilon", epsilon_start, epsilon_end, decay_steps, 0.0, 1.0)
        self.epsilon_start, self.epsilon_end, self.decay_steps = epsilon_start, epsilon_end, decay_steps
        self.num_actions = getattr(action_space, "n", None)  # None: refused by `requires`
        self.replaced = self.perturbed = 0  # since the last update (a metric)

    @property
    def epsilon(self) -> float:
        return linear_schedule(self.epsilon_start, self.epsilon_end, self.decay_steps, self.env_steps)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        actions = np.asarray(actions)
        epsilon = self.epsilon
        replace = self.rng.random(actions.shape) < epsilon
        random_actions = self.rng.integers(0, self.num_actions, actions.shape)
        self.env_steps += actions.size
        self.replaced += int(replace.sum())
        self.perturbed += actions.size
        executed = np.where(replace, random_actions, actions).astype(actions.dtype, copy=False)
        if agent_info and "logits" in agent_info:
            policy = np.take_along_axis(_softmax(np.asarray(agent_info["logits"], np.float64)),
                                        executed.astype(np.int64).reshape(-1, 1), 1)[:, 0]
        else:  # a greedy agent: its own action for sure
            policy = (executed == actions).astype(np.float64).reshape(-1)
        return executed, np.log((1.0 - epsilon) * policy + epsilon / self.num_actions)

    def update(self, transitions: Transitions, feedback=None) -> dict:
        metrics = {"epsilon": self.epsilon, "random_fraction": self.replaced / max(self.perturbed, 1)}
        self.replaced = self.perturbed = 0
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "replaced": self.replaced, "perturbed": self.perturbed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.replaced, self.perturbed = state["replaced"], state["perturbed"]


class Boltzmann(_ActionNoise):
    """Sample a ~ softmax(preferences / T(t)), replacing the agent's own sample.

    Preferences are the agent's action logits (policy agents; T = 1 then reproduces the policy,
    T > 1 flattens it) or its Q-values (value-based agents). T(t) follows the same linear schedule
    as epsilon-greedy's eps.
    """

    requires = Requirements(action_kinds=("discrete",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 temperature_start: float = 1.0, temperature_end: float = 1.0, decay_steps: int = 0):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        _require_schedule("temperature", temperature_start, temperature_end, decay_steps, 1e-6, math.inf)
        self.temperature_start, self.temperature_end = temperature_start, temperature_end
        self.decay_steps = decay_steps
        self.num_actions = getattr(action_space, "n", None)  # None: refused by `requires`

    @property
    def temperature(self) -> float:
        return linear_schedule(self.temperature_start, self.temperature_end, self.decay_steps, self.env_steps)

    @staticmethod
    def preferences(agent_info) -> np.ndarray:
        for key in PREFERENCE_KEYS:
            if agent_info and key in agent_info:
                return np.asarray(agent_info[key], np.float64)
        raise MissingActionPreferences(
            "exploration=boltzmann needs the agent's action preferences: behaviour_action(obs, actions, "
            f"agent_info=...) with one of {PREFERENCE_KEYS} ([N, num_actions]); this collector/agent "
            "does not pass them")

    def probabilities(self, preferences: np.ndarray) -> np.ndarray:
        return _softmax(preferences / self.temperature)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        actions = np.asarray(actions)
        probs = self.probabilities(self.preferences(agent_info)).reshape(-1, self.num_actions)
        cdf = np.cumsum(probs, -1)
        u = self.rng.random((len(probs), 1)) * cdf[:, -1:]
        sampled = np.minimum((cdf < u).sum(-1), self.num_actions - 1)
        self.env_steps += actions.size
        log_prob = np.log(np.take_along_axis(probs, sampled.reshape(-1, 1), 1)[:, 0])
        return sampled.reshape(actions.shape).astype(actions.dtype, copy=False), log_prob

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"temperature": self.temperature}


class GaussianNoise(_ActionNoise):
    """a + N(0, sigma^2 I), clipped to [-1, 1] (actions are in normalised units)."""

    requires = Requirements(action_kinds=("continuous",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu", sigma: float = 0.1):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_in_range("exploration.sigma", sigma, 0.0, math.inf)
        self.sigma = float(sigma)

    def noise(self, shape) -> np.ndarray:
        return self.sigma * self.rng.standard_normal(shape)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        actions = np.asarray(actions)
        self.env_steps += len(actions)
        executed = np.clip(actions + self.noise(actions.shape), -1.0, 1.0).astype(actions.dtype, copy=False)
        mean, var = _policy_gaussian(actions, agent_info)
        return executed, gaussian_log_density(executed, mean, var + self.sigma**2)


class OrnsteinUhlenbeckNoise(_ActionNoise):
    """a + x_t, clipped to [-1, 1], with one OU process x per env (Euler-Maruyama, as DDPG's code):

        x_t = x_{t-1} + theta (mu - x_{t-1}) dt + sigma sqrt(dt) eps_t,  eps_t ~ N(0, I),  x_{-1} = mu,

    the noise of step t being x_t (so an episode's first action already gets one step of noise).

    Stationary variance sigma^2 dt / (1 - (1 - theta dt)^2) = sigma^2 / (2 theta - theta^2 dt)
    (-> sigma^2 / (2 theta) as dt -> 0); lag-k autocorrelation (1 - theta dt)^k. A process restarts
    at mu at every episode's first step. rllab's OUStrategy is the dt = 1 case.
    """

    requires = Requirements(action_kinds=("continuous",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 theta: float = 0.15, sigma: float = 0.2, dt: float = 1e-2, mu: float = 0.0):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_positive("exploration.dt", dt, integer=False)
        require_in_range("exploration.theta", theta, 0.0, 2.0 / dt)  # stable for theta dt < 2
        require_in_range("exploration.sigma", sigma, 0.0, math.inf)
        self.theta, self.sigma, self.dt, self.mu = float(theta), float(sigma), float(dt), float(mu)
        self.action_dim = int(np.prod(action_space.shape))
        self.state: np.ndarray | None = None  # [N, action_dim], created at the first call

    def stationary_variance(self) -> float:
        return self.sigma**2 * self.dt / (1.0 - (1.0 - self.theta * self.dt) ** 2)

    def noise(self, episode_step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every env's process one step: (the noise to add [N, action_dim], its conditional
        mean given the previous state)."""
        if self.state is None or len(self.state) != len(episode_step):
            self.state = np.full((len(episode_step), self.action_dim), self.mu)
        self.state[np.asarray(episode_step) == 0] = self.mu
        eps = self.rng.standard_normal(self.state.shape)
        drift = self.state + self.theta * (self.mu - self.state) * self.dt
        self.state += self.theta * (self.mu - self.state) * self.dt + self.sigma * math.sqrt(self.dt) * eps
        return self.state.copy(), drift

    def behaviour_action(self, obs, actions, *, episode_step, agent_info=None):
        actions = np.asarray(actions)
        self.env_steps += len(actions)
        noise, drift = self.noise(episode_step)
        executed = np.clip(actions + noise.reshape(actions.shape), -1.0, 1.0).astype(actions.dtype, copy=False)
        mean, var = _policy_gaussian(actions, agent_info)
        log_prob = gaussian_log_density(executed, mean + drift.reshape(actions.shape),
                                        var + self.sigma**2 * self.dt)
        return executed, log_prob

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"ou_state_std": float(self.state.std()) if self.state is not None else 0.0}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "state": None if self.state is None else self.state.copy()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.state = None if state["state"] is None else state["state"].copy()


class UCBCountBonus(ExplorationMethod):
    """r_int(s_t, a_t) = alpha sqrt(2 log N_s / n_{s,a}) over grid cells of the observation.

    s is the cell floor(obs / cell_size) (per coordinate; a Discrete observation is its own cell),
    N_s the visits of cell s and n_{s,a} those of (s, a), counted in exact (dict) tables.
    Order: `observe` adds the new batch to the counts; `intrinsic_reward` then reads the counts of
    all batches observed so far, this one included (every step of it, before and after step t alike).
    So N_s, n_{s,a} >= 1 for observed data, and a cell seen once has log N_s = 0.
    """

    requires = Requirements(action_kinds=("discrete",), agent_families=("on_policy", "off_policy"),
                            observation_kinds=("vector",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 alpha: float = 1.0, cell_size=0.1):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_in_range("exploration.alpha", alpha, 0.0, math.inf)
        cells = np.atleast_1d(np.asarray(cell_size, np.float64))
        dim = int(np.prod(observation_space.shape)) or 1
        require(bool(np.all(cells > 0)) and len(cells) in (1, dim), "exploration.cell_size",
                f"must be a positive number or a list of {dim}, got {cell_size!r}")
        self.alpha, self.cell_size = float(alpha), cells
        self.state_counts: dict[bytes, int] = {}
        self.pair_counts: dict[bytes, int] = {}

    def cells(self, obs: np.ndarray) -> np.ndarray:
        """Integer grid coordinates [B, D] of observations [B, ...]."""
        x = np.asarray(obs, np.float64).reshape(len(obs), -1)
        return np.floor(x / self.cell_size).astype(np.int64)

    @staticmethod
    def _stored_counts(keys: np.ndarray, stored: dict) -> np.ndarray:
        """For every row of `keys`, its stored count (at least 1: an unobserved row counts once)."""
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        totals = np.array([stored.get(row.tobytes(), 0) for row in unique], np.int64)
        return np.maximum(totals[inverse.reshape(-1)], 1)

    def _keys(self, transitions: Transitions) -> tuple[np.ndarray, np.ndarray]:
        s = self.cells(transitions.obs)
        a = np.asarray(transitions.actions, np.int64).reshape(-1, 1)
        return s, np.concatenate([s, a], 1)

    def observe(self, transitions: Transitions) -> None:
        for keys, table in zip(self._keys(transitions), (self.state_counts, self.pair_counts)):
            unique, counts = np.unique(keys, axis=0, return_counts=True)
            for row, c in zip(unique, counts):
                k = row.tobytes()
                table[k] = table.get(k, 0) + int(c)

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        s, sa = self._keys(transitions)
        n_s = self._stored_counts(s, self.state_counts)
        n_sa = self._stored_counts(sa, self.pair_counts)
        return self.alpha * np.sqrt(2.0 * np.log(n_s) / n_sa)

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"distinct_states": len(self.state_counts), "distinct_pairs": len(self.pair_counts)}

    def state_dict(self) -> dict:
        return {"state_counts": dict(self.state_counts), "pair_counts": dict(self.pair_counts)}

    def load_state_dict(self, state: dict) -> None:
        self.state_counts = dict(state["state_counts"])
        self.pair_counts = dict(state["pair_counts"])
