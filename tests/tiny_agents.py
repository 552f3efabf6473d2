"""Small agents and a two-task env that prove the off-policy and meta loops (tests/conf/agent, /env).

They are real learners, just tiny: `TinyReplayAgent` is a linear deterministic actor with a linear Q
on (s, a) features, trained from its replay by one-step TD with rewards computed at sample time;
`TinyMetaAgent` is a Gaussian policy with a learned mean bias, adapted by one policy-gradient step per
task and meta-trained by the first-order MAML update of the bias's initial value.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from algos.agents.base import MetaAgent, OffPolicyAgent
from algos.common.buffers import RingBuffer
from algos.common.rollout import Transitions


class TinyReplayAgent(OffPolicyAgent):
    action_kinds = ("continuous",)

    def __init__(self, observation_space, action_space, *, device="cpu", seed: int = 0, num_iterations: int = 1,
                 batch_size: int = 100, num_envs: int = 1, collect_steps: int | None = None,
                 replay_size: int = 100_000, minibatch_size: int = 32, gradient_steps: int = 8,
                 learning_rate: float = 1e-2, gamma: float = 0.99, learning_starts: int = 100):
        self.obs_dim, self.act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.collect_steps, self.minibatch_size, self.gradient_steps = collect_steps, minibatch_size, gradient_steps
        self.lr, self.gamma, self.learning_starts = learning_rate, gamma, learning_starts
        self.rng = np.random.default_rng(seed)
        self.actor = np.zeros((self.obs_dim + 1, self.act_dim))
        self.q = np.zeros(self.obs_dim + self.act_dim + 1)
        # one row per transition: obs, action, r_ext, next_obs, terminated, truncated
        self.replay = RingBuffer(replay_size, (2 * self.obs_dim + self.act_dim + 3,), np.float32)

    def _policy(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(np.concatenate([obs, np.ones((len(obs), 1))], 1) @ self.actor)

    def _features(self, obs, actions) -> np.ndarray:
        return np.concatenate([obs, actions, np.ones((len(obs), 1))], 1)

    def act(self, obs, deterministic: bool = False):
        obs = np.asarray(obs, np.float64).reshape(len(obs), -1)
        if not deterministic and self.replay.added < self.learning_starts:
            return self.rng.uniform(-1, 1, (len(obs), self.act_dim)).astype(np.float32), {}
        return self._policy(obs).astype(np.float32), {}

    def observe(self, transitions: Transitions) -> None:
        n = len(transitions)
        self.replay.add(np.concatenate([
            transitions.obs.reshape(n, -1), transitions.actions.reshape(n, -1), transitions.rewards_ext[:, None],
            transitions.next_obs.reshape(n, -1), transitions.terminated[:, None], transitions.truncated[:, None]],
            1).astype(np.float32))

    def update(self, reward_fn) -> dict:
        if self.replay.added < self.learning_starts:
            return {"replay_size": float(self.replay.size)}
        o, a = self.obs_dim, self.act_dim
        td = []
        for _ in range(self.gradient_steps):
            rows = self.replay.sample(self.rng, self.minibatch_size).astype(np.float64)
            obs, act, next_obs = rows[:, :o], rows[:, o:o + a], rows[:, o + a + 1:2 * o + a + 1]
            terminated, truncated = rows[:, -2].astype(bool), rows[:, -1].astype(bool)
            batch = Transitions(obs, act, rows[:, o + a], terminated, truncated, np.zeros(len(rows), np.int64),
                                next_obs=next_obs)
            phi = self._features(obs, act)
            next_q = self._features(next_obs, self._policy(next_obs)) @ self.q
            target = reward_fn(batch) + self.gamma * (1 - terminated) * next_q
            error = phi @ self.q - target
            self.q -= self.lr * (phi * error[:, None]).mean(0) / (1 + (phi * phi).sum(1).mean())
            # actor: ascend dQ/da = q_a through tanh
            pi = self._policy(obs)
            grad_pre = (1 - pi * pi) * self.q[o:o + a]
            x = np.concatenate([obs, np.ones((len(obs), 1))], 1)
            self.actor += self.lr * x.T @ grad_pre / len(obs)
            td.append(float(np.mean(error * error)))
        return {"loss_q": float(np.mean(td)), "replay_size": float(self.replay.size)}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "actor": self.actor.copy(), "q": self.q.copy(),
                "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.actor, self.q = state["actor"].copy(), state["q"].copy()
        self.replay.load_state_dict(state["replay"])


class TinyMetaAgent(MetaAgent):
    """pi(a | s) = N(b, sigma^2) with a per-task bias b; adapt: b_i = b0 + alpha * dJ/db on the task's
    rollout (REINFORCE with the rollout's mean return as baseline); meta-update: b0 += beta * mean_i
    dJ_i/db at b_i (first-order MAML)."""

    action_kinds = ("continuous",)

    def __init__(self, observation_space, action_space, *, device="cpu", seed: int = 0, num_iterations: int = 1,
                 num_envs: int = 2, meta_batch_size: int = 2, inner_steps: int = 1, fast_batch_size: int = 2,
                 inner_lr: float = 0.5, outer_lr: float = 0.2, std: float = 0.5):
        self.meta_batch_size, self.inner_steps, self.fast_batch_size = meta_batch_size, inner_steps, fast_batch_size
        self.inner_lr, self.outer_lr, self.std = inner_lr, outer_lr, std
        self.rng = np.random.default_rng(seed)
        self.bias = np.zeros(int(np.prod(action_space.shape)))
        self.task_bias: dict[int, np.ndarray] = {}
        self.current = self.bias

    def start_task(self, task_index: int) -> None:
        self.task_bias[task_index] = self.bias.copy()
        self.current = self.task_bias[task_index]

    def act(self, obs, deterministic: bool = False):
        mean = np.broadcast_to(self.current, (len(obs), len(self.current)))
        if deterministic:
            return mean.astype(np.float32), {}
        noise = self.rng.standard_normal(mean.shape)
        log_prob = -0.5 * (noise * noise).sum(1) - len(self.current) * np.log(self.std * np.sqrt(2 * np.pi))
        return (mean + self.std * noise).astype(np.float32), {"log_prob": log_prob}

    def _gradient(self, rollout, bias) -> np.ndarray:
        returns = rollout.rewards.sum(0)                                  # per env, whole episodes
        advantage = returns - returns.mean()
        score = (rollout.actions - bias) / self.std**2                    # d log pi / d b, [T, N, A]
        return (score.sum(0) * advantage[:, None]).mean(0) / len(rollout.actions)

    def adapt(self, task_index: int, rollout) -> dict:
        step = self.inner_lr * self._gradient(rollout, self.current)
        self.current += step
        return {"step_norm": float(np.linalg.norm(step))}

    def meta_update(self, rollouts_per_task) -> dict:
        grads = [self._gradient(rollouts[-1], self.task_bias[i]) for i, rollouts in enumerate(rollouts_per_task)]
        self.bias = self.bias + self.outer_lr * np.mean(grads, 0)
        self.current = self.bias
        return {"bias_norm": float(np.linalg.norm(self.bias))}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "bias": self.bias.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.bias = state["bias"].copy()
        self.current = self.bias


class TwoGoals(gym.Env):
    """A point on a line, x' = x + 0.1 a; reward -|x' - goal|; goal = -1 or +1 (the task)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.goal, self.x = 1.0, 0.0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list:
        return [float(g) for g in rng.choice([-1.0, 1.0], n)]

    def set_task(self, task) -> None:
        self.goal = float(task)

    def get_task(self):
        return self.goal

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.1, 0.1))
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += 0.1 * float(np.clip(action, -1, 1)[0])
        reward = -abs(self.x - self.goal)
        return np.array([self.x], np.float32), reward, False, False, {"task_metric": -abs(self.x - self.goal)}


gym.register("TwoGoals-v0", entry_point=TwoGoals)


class UnknownFamilyAgent(TinyReplayAgent):
    family = "offline"  # not one of AGENT_FAMILIES: refused naming `agent`
