"""The classic exploration strategies of the lecture (docs/papers.md §14, seed 002): action noise and UCB counts.

- EpsilonGreedy (discrete): with probability eps replace the action by a uniform random one.
- Boltzmann (discrete): sample a ~ softmax(preferences / T), preferences = the agent's logits or
  Q-values ("pick action proportionally to transformed Q-values", P(a) = softmax(Q(a) / T)).
- GaussianNoise (continuous): a + N(0, sigma^2 I).
- OrnsteinUhlenbeckNoise (continuous, off-policy agents only): a + x_t, x an OU process per env, the
  temporally correlated noise of DDPG (Lillicrap et al. 2016, §7).
- UCBCounts (discrete actions, vector observations), over a grid discretisation of the observation:
  rule=bonus (default) pays r_int(s, a) = alpha sqrt(2 log N_s / n_{s,a}) as an intrinsic reward (the
  lecture's "UCB generalised to many states" added to the reward); rule=ucb1_action acts by the UCB-1
  rule a = argmax_a Q(s, a) + alpha sqrt(2 log N_s / n_{s,a}) (the lecture's bandit rule per state).

Noise methods change the actions the collector sends to the environment (`changes_actions`); the
rollout records the executed actions, and `behaviour_action` also returns their log-probability under
the behaviour distribution b (the policy composed with the noise), the `old_logp` of an importance
ratio pi_theta(a|s) / b(a|s). They give no intrinsic reward. Schedules count env steps themselves
(one per env per `behaviour_action` call) and checkpoint the count together with their RNG.

The collector calls behaviour_action(obs, actions, episode_step=..., agent_info=...)
(algos/exploration/base.py); agent_info holds "logits" (categorical policies), "mean" and "std"
(Gaussian policies) or "q_values" (value-based agents), [N, ...].

Behaviour log-probabilities (exact, per executed action):
- epsilon-greedy: b(a|s) = (1 - eps) pi(a|s) + eps / |A|, pi = softmax(logits) (a point mass on the
  agent's action for an agent without logits);
- Boltzmann: b(a|s) = softmax(pref / T)[a] (the agent's own sample is discarded);
- Gaussian noise: the policy's sample a ~ N(mean, std^2) plus independent N(0, sigma^2) is
  N(mean, std^2 + sigma^2) per coordinate (mean = a, std = 0 for a deterministic actor);
- OU noise: given the process's previous state, x_t ~ N(drift, sigma^2 dt), so the executed action is
  N(mean + drift, std^2 + sigma^2 dt) per coordinate (conditional on the noise's history).
Clipping (`clip_actions`): unclipped, the executed action is the sum itself and the log-density above
is exact; the environment's ClipAction wrapper clips what it executes, as it does for the policy's own
samples. Clipped to the action bounds, the executed action has a point mass at each bound: a
coordinate at a bound contributes its tail mass log P(Y >= high) (or log P(Y <= low)), an interior one
its log-density, the exact log-likelihood of the censored Gaussian. An on-policy ratio needs the
target policy's log-probability of the same kind, so clipping noise is refused for on-policy and meta
agents (Gaussian noise's `clip_actions: true`, and OU noise, which serves off-policy agents only).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

from algos.agents.base import AGENT_FAMILIES
from algos.common.checks import require, require_bool, require_choice, require_in_range, require_positive
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

PREFERENCE_KEYS = ("logits", "q_values")
UCB_RULES = ("bonus", "ucb1_action")


class MissingActionPreferences(RuntimeError):
    """A method that acts on the agent's logits / Q-values was called without them."""


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


def gaussian_log_likelihood(x: np.ndarray, mean: np.ndarray, var: np.ndarray,
                            low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
    """log-likelihood of x, summed over the last axis, [N]: of Y ~ N(mean, diag var), or with bounds of
    clip(Y, low, high), whose coordinates at a bound carry the point mass log Phi((low - mean) / sd)
    or log Phi((mean - high) / sd) and the others the density log N(x; mean, var)."""
    x = np.asarray(x, np.float64)
    var = np.broadcast_to(np.asarray(var, np.float64), x.shape)
    out = -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))
    if low is not None:
        sd = np.sqrt(var)
        low, high = np.broadcast_to(low, x.shape), np.broadcast_to(high, x.shape)
        at_low, at_high = x <= low, x >= high
        out[at_low] = log_ndtr(((low - mean) / sd)[at_low])
        out[at_high] = log_ndtr(((mean - high) / sd)[at_high])
    return out.sum(-1)


def _policy_gaussian(actions: np.ndarray, agent_info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The policy's action mean and variance: the agent's "mean" and "std", or a point mass at its
    actions (a deterministic actor)."""
    if agent_info and "mean" in agent_info:
        return np.asarray(agent_info["mean"], np.float64), np.asarray(agent_info["std"], np.float64) ** 2
    return np.asarray(actions, np.float64), np.zeros(np.shape(actions))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _sample_categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of probs [N, A] by inverting the CDF."""
    cdf = np.cumsum(probs, -1)
    u = rng.random((len(probs), 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(-1), probs.shape[-1] - 1)


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
    uniform action may equal the agent's (so the action *changes* w.p. eps (1 - 1/|A|)). The behaviour
    is b(a|s) = (1 - eps) pi(a|s) + eps / |A|, so b >= (1 - eps) pi and KL(pi || b) <= -log(1 - eps):
    the default constant eps = 0.01 keeps an on-policy agent's behaviour within TRPO's step size
    (0.01) of its policy (conf/exploration/egreedy.yaml; DQN's 1 -> 0.1 schedule is an override).
    """

    requires = Requirements(action_kinds=("discrete",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 epsilon_start: float = 0.01, epsilon_end: float = 0.01, decay_steps: int = 0):
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


def _preferences(agent_info, keys, method: str) -> np.ndarray:
    for key in keys:
        if agent_info and key in agent_info:
            return np.asarray(agent_info[key], np.float64)
    raise MissingActionPreferences(
        f"{method} needs the agent's action preferences: behaviour_action(obs, actions, agent_info=...) "
        f"with one of {keys} ([N, num_actions]); this collector/agent does not pass them")


class Boltzmann(_ActionNoise):
    """Sample a ~ softmax(preferences / T(t)), replacing the agent's own sample.

    Preferences are the agent's action logits (policy agents; T = 1 then reproduces the policy,
    T > 1 flattens it) or its Q-values (value-based agents). T(t) follows the same linear schedule
    as epsilon-greedy's eps. The behaviour log-probability is log softmax(preferences / T)[a].
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

    def log_probabilities(self, preferences: np.ndarray) -> np.ndarray:
        z = preferences / self.temperature
        return z - logsumexp(z, -1, keepdims=True)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        actions = np.asarray(actions)
        prefs = _preferences(agent_info, PREFERENCE_KEYS, "exploration=boltzmann")
        log_probs = self.log_probabilities(prefs).reshape(-1, self.num_actions)
        sampled = _sample_categorical(self.rng, np.exp(log_probs))
        self.env_steps += actions.size
        log_prob = np.take_along_axis(log_probs, sampled.reshape(-1, 1), 1)[:, 0]
        return sampled.reshape(actions.shape).astype(actions.dtype, copy=False), log_prob

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"temperature": self.temperature}


class _ContinuousNoise(_ActionNoise):
    """a + noise, optionally clipped to the action space's bounds (`clip_actions`)."""

    requires = Requirements(action_kinds=("continuous",), agent_families=AGENT_FAMILIES)

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu", clip_actions: bool):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        self.clip_actions = require_bool("exploration.clip_actions", clip_actions)
        self.low = np.asarray(getattr(action_space, "low", -np.inf), np.float64)
        self.high = np.asarray(getattr(action_space, "high", np.inf), np.float64)

    def execute(self, actions: np.ndarray, noise: np.ndarray, mean: np.ndarray, var: np.ndarray):
        """(the executed actions, their log-likelihood under N(mean, var), censored when clipped)."""
        executed = actions + noise.reshape(actions.shape)
        if not self.clip_actions:  # evaluated at the recorded value (the agent's dtype)
            executed = executed.astype(actions.dtype, copy=False)
            return executed, gaussian_log_likelihood(executed, mean, var)
        executed = np.clip(executed, self.low, self.high).astype(actions.dtype, copy=False)
        return executed, gaussian_log_likelihood(executed, mean, var, self.low, self.high)


class GaussianNoise(_ContinuousNoise):
    """a + N(0, sigma^2 I): with the policy's a ~ N(mean, std^2), the executed action is
    N(mean, std^2 + sigma^2) per coordinate (actions are in the normalised units [-1, 1]).
    With clip_actions=true, off-policy agents only (see the module docstring)."""

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu", sigma: float = 0.1,
                 clip_actions: bool = False):
        super().__init__(observation_space, action_space, seed=seed, device=device, clip_actions=clip_actions)
        require_positive("exploration.sigma", sigma, integer=False)
        self.sigma = float(sigma)
        if self.clip_actions:  # a censored likelihood is no density for an on-policy ratio to divide
            self.requires = Requirements(action_kinds=("continuous",), agent_families=("off_policy",),
                                         because="exploration.clip_actions=true")

    def noise(self, shape) -> np.ndarray:
        return self.sigma * self.rng.standard_normal(shape)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        actions = np.asarray(actions)
        self.env_steps += len(actions)
        mean, var = _policy_gaussian(actions, agent_info)
        return self.execute(actions, self.noise(actions.shape), mean, var + self.sigma**2)


class OrnsteinUhlenbeckNoise(_ContinuousNoise):
    """a + x_t, one OU process x per env (Euler-Maruyama, as DDPG's code):

        x_t = x_{t-1} + theta (mu - x_{t-1}) dt + sigma sqrt(dt) eps_t,  eps_t ~ N(0, I),  x_{-1} = mu,

    the noise of step t being x_t (so an episode's first action already gets one step of noise).

    Stationary variance sigma^2 dt / (1 - (1 - theta dt)^2) = sigma^2 / (2 theta - theta^2 dt)
    (-> sigma^2 / (2 theta) as dt -> 0); lag-k autocorrelation (1 - theta dt)^k. A process restarts
    at mu at every episode's first step. rllab's OUStrategy is the dt = 1 case.

    Off-policy agents only: the behaviour depends on the noise's history, not on the state alone, so
    it is no policy b(a|s) that an on-policy importance ratio could correct for (its log-probability is
    the density given the process's previous state). This is DDPG's exploration.
    """

    requires = Requirements(action_kinds=("continuous",), agent_families=("off_policy",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 theta: float = 0.15, sigma: float = 0.2, dt: float = 1e-2, mu: float = 0.0,
                 clip_actions: bool = True):
        super().__init__(observation_space, action_space, seed=seed, device=device, clip_actions=clip_actions)
        require_positive("exploration.dt", dt, integer=False)
        require_in_range("exploration.theta", theta, 0.0, 2.0 / dt)  # stable for theta dt < 2
        require_positive("exploration.sigma", sigma, integer=False)
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
        mean, var = _policy_gaussian(actions, agent_info)
        return self.execute(actions, noise, mean + drift.reshape(actions.shape), var + self.sigma**2 * self.dt)

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"ou_state_std": float(self.state.std()) if self.state is not None else 0.0}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "state": None if self.state is None else self.state.copy()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.state = None if state["state"] is None else state["state"].copy()


class UCBCounts(ExplorationMethod):
    """UCB over grid cells of the observation, with exact (dict) counts N_s of cell s and n_{s,a} of
    (s, a); s is the cell floor(obs / cell_size) per coordinate (a Discrete observation is its own cell).

    rule=bonus (default): a count bonus on the reward, r_int(s_t, a_t) = alpha sqrt(2 log N_s / n_{s,a}),
    the lecture's Q~(s, a) = Q(s, a) + alpha sqrt(2 log N_s / n_{s,a}) paid as reward, so that any agent
    learns it into its values. `observe` adds the new batch to the counts; `intrinsic_reward` then reads
    the counts of all batches observed so far, this one included (every step of it, before and after
    step t alike). So N_s, n_{s,a} >= 1 for observed data, and a cell seen once has log N_s = 0.

    rule=ucb1_action: the UCB-1 action rule, per cell (seed 002: v~_a = v_a + sqrt(2 log N / n_a) for
    bandits, Q~(s, a) for many states): a_t = argmax_a Q(s_t, a) + alpha sqrt(2 log N_s / n_{s,a}) with Q
    the agent's "q_values", an untried action (n_{s,a} = 0) first (the lowest index among them, as
    UCB-1 plays every arm once), ties to the lowest index. The counts are those before step t and
    advance with every vector step (the N envs of one step act on the same counts); no intrinsic
    reward. A bandit is the one-cell case, with Q the arms' empirical mean rewards. The rule is
    deterministic, a point mass (log-probability 0) that no importance ratio pi(a|s) / b(a|s) can
    correct for, so it serves off-policy (value-based) agents only and is refused for on-policy ones.
    """

    requires = Requirements(action_kinds=("discrete",), agent_families=("on_policy", "off_policy"),
                            observation_kinds=("vector",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 rule: str = "bonus", alpha: float = 1.0, cell_size=0.1):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_choice("exploration.rule", rule, UCB_RULES)
        require_in_range("exploration.alpha", alpha, 0.0, math.inf)
        cells = np.atleast_1d(np.asarray(cell_size, np.float64))
        dim = int(np.prod(observation_space.shape)) or 1
        require(bool(np.all(cells > 0)) and len(cells) in (1, dim), "exploration.cell_size",
                f"must be a positive number or a list of {dim}, got {cell_size!r}")
        self.rule, self.alpha, self.cell_size = rule, float(alpha), cells
        self.num_actions = getattr(action_space, "n", None)  # None: refused by `requires`
        if rule == "ucb1_action":  # what the rule needs differs from the bonus's (class attributes)
            self.changes_actions = True
            self.requires = Requirements(action_kinds=("discrete",), agent_families=("off_policy",),
                                         observation_kinds=("vector",), because="exploration.rule=ucb1_action")
        self.state_counts: dict[bytes, int] = {}
        self.pair_counts: dict[bytes, int] = {}

    def cells(self, obs: np.ndarray) -> np.ndarray:
        """Integer grid coordinates [B, D] of observations [B, ...]."""
        x = np.asarray(obs, np.float64).reshape(len(obs), -1)
        return np.floor(x / self.cell_size).astype(np.int64)

    @staticmethod
    def _stored_counts(keys: np.ndarray, stored: dict) -> np.ndarray:
        """For every row of `keys`, its stored count (0 if never counted)."""
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        totals = np.array([stored.get(row.tobytes(), 0) for row in unique], np.int64)
        return totals[inverse.reshape(-1)]

    @staticmethod
    def _add(keys: np.ndarray, table: dict) -> None:
        unique, counts = np.unique(keys, axis=0, return_counts=True)
        for row, c in zip(unique, counts):
            k = row.tobytes()
            table[k] = table.get(k, 0) + int(c)

    @staticmethod
    def _pairs(s: np.ndarray, actions) -> np.ndarray:
        return np.concatenate([s, np.asarray(actions, np.int64).reshape(-1, 1)], 1)

    def observe(self, transitions: Transitions) -> None:
        if self.rule == "bonus":  # the action rule counts as it acts
            s = self.cells(transitions.obs)
            self._add(s, self.state_counts)
            self._add(self._pairs(s, transitions.actions), self.pair_counts)

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        if self.rule == "ucb1_action":
            return np.zeros(len(transitions))
        s = self.cells(transitions.obs)
        n_s = np.maximum(self._stored_counts(s, self.state_counts), 1)  # an unobserved row counts once
        n_sa = np.maximum(self._stored_counts(self._pairs(s, transitions.actions), self.pair_counts), 1)
        return self.alpha * np.sqrt(2.0 * np.log(n_s) / n_sa)

    def ucb_index(self, obs: np.ndarray, q_values: np.ndarray) -> np.ndarray:
        """Q(s, a) + alpha sqrt(2 log N_s / n_{s,a}) for every action, [N, A] (+inf where n_{s,a} = 0)."""
        s = self.cells(obs)
        n_s = self._stored_counts(s, self.state_counts).astype(np.float64)
        n_sa = np.stack([self._stored_counts(self._pairs(s, np.full(len(s), a)), self.pair_counts)
                         for a in range(self.num_actions)], 1).astype(np.float64)
        bonus = np.sqrt(2.0 * np.log(np.maximum(n_s, 1.0))[:, None] / np.maximum(n_sa, 1.0))
        return np.where(n_sa > 0, q_values + self.alpha * bonus, np.inf)

    def behaviour_action(self, obs, actions, *, episode_step=None, agent_info=None):
        if self.rule == "bonus":
            return super().behaviour_action(obs, actions, episode_step=episode_step, agent_info=agent_info)
        actions = np.asarray(actions)
        q_values = _preferences(agent_info, ("q_values",), "exploration=ucb with exploration.rule=ucb1_action")
        chosen = self.ucb_index(obs, q_values.reshape(len(actions), self.num_actions)).argmax(-1)
        s = self.cells(obs)
        self._add(s, self.state_counts)
        self._add(self._pairs(s, chosen), self.pair_counts)
        return chosen.reshape(actions.shape).astype(actions.dtype, copy=False), np.zeros(len(actions))

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return {"distinct_states": len(self.state_counts), "distinct_pairs": len(self.pair_counts)}

    def state_dict(self) -> dict:
        return {"state_counts": dict(self.state_counts), "pair_counts": dict(self.pair_counts)}

    def load_state_dict(self, state: dict) -> None:
        self.state_counts = dict(state["state_counts"])
        self.pair_counts = dict(state["pair_counts"])
