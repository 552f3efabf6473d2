"""The agent contracts, one per family, and what the on-policy agents (TRPO, PPO) share.

An agent's `family` says which collection loop drives it (runner/train.py checks it against what
the exploration method supports):

- on_policy:  collect a rollout with act(), update(rollout) on it, discard it (TRPO, PPO).
- off_policy: act() step by step, observe() the new steps into the agent's own replay,
              update(reward_fn) on replay minibatches (e.g. DDPG).
- meta:       per task of a meta-batch: start_task(), collect episodes, adapt(); then
              meta_update() across the tasks (e.g. MAML).

Every agent is built by the runner as Agent(observation_space, action_space, device=..., seed=...,
num_iterations=..., **the agent's config keys); the base classes add no constructor arguments.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import gymnasium as gym
import numpy as np
import torch

from algos.common.checks import require_bool, require_in_range, require_positive
from algos.common.fast.acting import NumpyActor
from algos.common.math import gae
from algos.common.nets import action_kind, observation_kind
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Rollout

if TYPE_CHECKING:  # the flat batch of steps (algos/common/rollout.py)
    from algos.common.rollout import Transitions

AGENT_FAMILIES = ("on_policy", "off_policy", "meta")


class Agent:
    """What every agent offers the runner, whatever its family.

    `family`: one of AGENT_FAMILIES. `action_kinds`: the action spaces it handles, a subset of
    ("continuous", "discrete").
    """

    family: str
    action_kinds: tuple[str, ...]

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Actions [N, ...] for observations [N, ...] of N envs, and `info`: per-env arrays of
        what exploration methods and the loops may need beside the actions, e.g. "log_prob" [N]
        (of the returned actions under the policy), "logits" [N, K] (categorical policies),
        "mean" and "std" [N, A] (Gaussian policies).

        deterministic=True returns the policy's mode (Gaussian mean, categorical argmax) and draws
        from no random generator, so that evaluation episodes leave training unchanged."""
        raise NotImplementedError

    def episode_start(self, mask: np.ndarray) -> None:
        """Called when the envs where `mask` ([N] bool) is True start a new episode: resample
        per-episode latents or skills there. Nothing to do by default."""

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class OnPolicyAgent(Agent):
    """Learns from the rollout it just collected; also the plumbing TRPO and PPO share: acting with
    a stochastic policy, observation normalisation, GAE.

    Two choices of path handling, which change what is learned (docs/papers.md §16.1):
    - `whole_paths` (read by the on-policy loop): every iteration starts fresh episodes and collects
      complete ones until at least `batch_size` steps (rllab's BatchPolopt), instead of
      `batch_size / num_envs` steps per env with episodes carried over between iterations.
    - `bootstrap_truncated`: a time-limit end is bootstrapped with V(final observation), or, when
      false, treated as the end of the path (value 0 after it: rllab, and CleanRL's
      done = terminated or truncated).
    """

    family = "on_policy"
    action_kinds = ("continuous", "discrete")
    whole_paths = False

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, *, batch_size: int,
                 num_envs: int, gamma: float, gae_lambda: float, normalise_observations: bool,
                 obs_clip: float, device: torch.device | str, seed: int, bootstrap_truncated: bool):
        require_positive("agent.batch_size", batch_size)
        require_positive("agent.num_envs", num_envs)
        require_in_range("agent.gamma", gamma, 0.0, 1.0)
        require_in_range("agent.gae_lambda", gae_lambda, 0.0, 1.0)
        self.observation_space, self.action_space = observation_space, action_space
        self.discrete = action_kind(action_space) == "discrete"
        self.batch_size, self.num_envs = batch_size, num_envs
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.bootstrap_truncated = require_bool("agent.bootstrap_truncated", bootstrap_truncated)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # action sampling on the numpy fast path
        self.fast_actor = None
        # Pixels are scaled by the CNN itself; running normalisation is for vector observations.
        self.pixels = observation_kind(observation_space) == "pixels"
        normalise_observations = normalise_observations and not self.pixels
        self.obs_rms = RunningMeanStd(observation_space.shape) if normalise_observations else None
        self.obs_clip = obs_clip

    def update(self, rollout: Rollout) -> dict:
        """Learn from `rollout` (its `rewards` set by the loop); returns metrics for progress.csv."""
        raise NotImplementedError

    # -- acting ---------------------------------------------------------------------------------
    def preprocess(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as the networks see them: normalised with the statistics frozen during
        the current iteration (so the update sees exactly what the behaviour policy saw)."""
        if self.obs_rms is not None:
            obs = self.obs_rms.normalize(obs, self.obs_clip)
        return self.tensor(obs)

    def tensor(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as a tensor on the agent's device: pixels stay uint8 (the CNN scales)."""
        return torch.as_tensor(obs, dtype=torch.uint8 if self.pixels else torch.float32, device=self.device)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Sampled actions (the mode when `deterministic`) and {"log_prob", "logits"} for
        categorical policies, {"log_prob", "mean", "std"} for Gaussian ones."""
        if self.fast_actor is not None:  # MLP policies: the numpy fast path, same distribution
            x = self.obs_rms.normalize(obs, self.obs_clip) if self.obs_rms is not None else obs
            return self.fast_actor(x, self.rng, deterministic)
        return self._act_torch(obs, deterministic)

    @torch.inference_mode()
    def _act_torch(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """act() through the torch policy: the plain version, used for CNN policies."""
        dist = self.policy.dist
        params = self.policy(self.preprocess(obs))
        actions = dist.mode(params) if deterministic else dist.sample(params, self.generator)
        info = {"log_prob": dist.log_prob(params, actions).cpu().numpy()}
        if self.discrete:
            info["logits"] = params[0].cpu().numpy()
        else:
            mean, log_std = params
            info["mean"], info["std"] = mean.cpu().numpy(), log_std.exp().expand_as(mean).cpu().numpy()
        actions = actions.cpu().numpy()
        return (actions.copy() if deterministic else actions), info  # the mode is not info["mean"]

    def setup_fast_acting(self) -> None:
        """Act through NumpyActor (algos/common/fast/acting.py) when the policy is an MLP. Call
        at the end of the constructor, and refresh_acting() after every change of the weights."""
        self.fast_actor = NumpyActor.for_policy(self.policy, on_cpu=self.device.type == "cpu")

    def refresh_acting(self) -> None:
        if self.fast_actor is not None:
            self.fast_actor.refresh()

    def actions_tensor(self, rollout: Rollout) -> torch.Tensor:
        dtype = torch.long if self.discrete else torch.float32
        return torch.as_tensor(rollout.flat(rollout.actions), dtype=dtype, device=self.device)

    # -- learning -------------------------------------------------------------------------------
    def advantages(self, rollout: Rollout, rewards: np.ndarray,
                   successor_values: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """GAE advantages and lambda-returns (advantage + value), both [T, N], from
        `successor_values` = rollout.successor_values(value_fn), (V(s_t), V(s'_t)). Without
        `bootstrap_truncated`, every episode end (terminated or truncated) has value 0 after it."""
        values, next_values = successor_values
        ends_path = rollout.terminated if self.bootstrap_truncated else rollout.episode_end
        adv = gae(rewards, values, next_values, ends_path.astype(np.float64),
                  rollout.episode_end.astype(np.float64), self.gamma, self.gae_lambda)
        return adv, adv + values

    def old_log_prob(self, rollout: Rollout, policy_log_prob: torch.Tensor) -> torch.Tensor:
        """The denominator of the importance ratio, flat [T * N]: log mu(a|s) of the behaviour
        distribution where an exploration method changed the actions (epsilon-greedy's mixture,
        Gaussian noise's widened Gaussian), else `policy_log_prob`, log pi_old(a|s) recomputed."""
        if rollout.behaviour_log_prob is None:
            return policy_log_prob
        return torch.as_tensor(rollout.flat(rollout.behaviour_log_prob), dtype=policy_log_prob.dtype,
                               device=self.device)

    def update_obs_stats(self, rollout: Rollout) -> None:
        if self.obs_rms is not None:
            self.obs_rms.update(rollout.flat(rollout.obs))

    def base_state(self) -> dict:
        return {"generator": self.generator.get_state(), "rng": self.rng.bit_generator.state,
                "obs_rms": self.obs_rms.state_dict() if self.obs_rms is not None else None}

    def load_base_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        if self.obs_rms is not None:
            self.obs_rms.load_state_dict(state["obs_rms"])
        self.refresh_acting()  # the acting copies follow the loaded weights


class OffPolicyAgent(Agent):
    """Learns from a replay of past steps that the agent owns (e.g. DDPG). The contract only.

    The loop calls act() every step, observe() with the steps just taken, and update() as often
    as the agent's schedule asks. The agent stores extrinsic rewards only; the loop's reward
    (r_ext + coef * normalise(r_int)) is computed per minibatch by `reward_fn`, so intrinsic
    rewards follow the exploration model's current state rather than the one at collection.

    Config keys `minibatch_size`: transitions per update minibatch; `collect_steps` (optional): env
    steps per env between two update() calls (default: a whole iteration's, agent.batch_size / num_envs).
    """

    family = "off_policy"
    minibatch_size: int

    def observe(self, transitions: Transitions) -> None:
        """Store new steps (s, a, r_ext, s', terminated, truncated, agent_info) in the replay."""
        raise NotImplementedError

    def update(self, reward_fn: Callable[[Transitions], np.ndarray]) -> dict:
        """Sample minibatches of `minibatch_size` from the replay, get their rewards [B] from
        `reward_fn(minibatch)`, and take the agent's gradient steps; returns metrics."""
        raise NotImplementedError


class MetaAgent(Agent):
    """Learns an initialisation that adapts to a task in a few steps (e.g. MAML). The contract only.

    Per meta-iteration the loop takes `meta_batch_size` tasks; for each, start_task(i), then
    `inner_steps` times: collect `fast_batch_size` episodes with act() and adapt(i, rollout);
    then collects the post-adaptation episodes and calls meta_update with all of them.

    Config keys `meta_batch_size`, `inner_steps`, `fast_batch_size`.
    """

    family = "meta"
    meta_batch_size: int
    inner_steps: int
    fast_batch_size: int

    def start_task(self, task_index: int) -> None:
        """Act with task `task_index`'s current parameters from now on: the pre-update
        (meta-learned) ones until adapt() is called for that task."""
        raise NotImplementedError

    def adapt(self, task_index: int, rollout: Rollout) -> dict:
        """One inner-loop step of task `task_index` on `rollout`; returns metrics."""
        raise NotImplementedError

    def meta_update(self, rollouts_per_task: list[list[Rollout]]) -> dict:
        """The outer update from every task's rollouts, rollouts_per_task[i][k] being task i's
        rollout after k inner steps (k = 0 .. inner_steps); returns metrics."""
        raise NotImplementedError
