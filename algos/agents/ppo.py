"""Proximal Policy Optimization (Schulman et al. 2017) with CleanRL's MuJoCo defaults.

Each iteration, on the collected rollout (all networks see observations normalised with the
statistics frozen during collection; rewards optionally scaled by the running std of the
discounted return):
  1. V(s_t) from the critic, GAE advantages A_t (lambda 0.95) and returns R_t = A_t + V(s_t).
  2. For `update_epochs` epochs, over `num_minibatches` shuffled minibatches:
       r_t(theta) = pi_theta(a_t|s_t) / pi_old(a_t|s_t)
       L_clip     = mean[ max(-A_t r_t, -A_t clip(r_t, 1 - eps, 1 + eps)) ]      (PPO Eq. 7)
       L_value    = 0.5 mean[ max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2) ]
       loss       = L_clip - c_ent * entropy + c_v * L_value
     with advantages normalised per minibatch, gradients clipped to a global norm, Adam with the
     learning rate annealed linearly to zero over the run, and an optional early stop when the
     approximate KL exceeds `target_kl`.

Each minibatch's gradient is autograd's on `ppo_loss` (`autograd_step`). With MLP networks,
`agent.gradient: closed_form` (the default) computes the same gradient in closed form instead, about
twice as fast on CPU: a fast path kept in algos/common/fast/ppo_gradient.py, tested against autograd.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from algos.agents.base import OnPolicyAgent
from algos.common.checks import check_finite, require, require_choice, require_positive
from algos.common.fast.mlp import FlatAdam, FlatParameters
from algos.common.fast.ppo_gradient import ClosedFormPPOGradient
from algos.common.nets import make_policy, network
from algos.common.normalizers import DiscountedReturnScaler
from algos.common.rollout import Rollout

log = logging.getLogger("explorebench")
GRADIENTS = ("closed_form", "autograd")


def ppo_loss(policy, critic, obs, actions, old_logp, adv, returns, old_values, clip_coef: float,
             clip_value_loss: bool, vf_coef: float, ent_coef: float):
    """The PPO objective on one minibatch: (loss, policy loss, value loss, log-ratio)."""
    dist = policy.dist
    params = policy(obs)
    log_ratio = dist.log_prob(params, actions) - old_logp
    ratio = log_ratio.exp()
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    v = critic(obs).squeeze(-1)
    v_loss = (v - returns).square()
    if clip_value_loss:
        v_clipped = old_values + (v - old_values).clamp(-clip_coef, clip_coef)
        v_loss = torch.max(v_loss, (v_clipped - returns).square())
    v_loss = 0.5 * v_loss.mean()
    loss = pg_loss + vf_coef * v_loss - ent_coef * dist.entropy(params).mean()
    return loss, pg_loss, v_loss, log_ratio


class PPO(OnPolicyAgent):
    def __init__(self, observation_space, action_space, *, device="cpu", seed: int = 0,
                 num_iterations: int = 1, batch_size: int = 2048, num_envs: int = 1,
                 learning_rate: float = 3e-4, anneal_lr: bool = True, gamma: float = 0.99,
                 gae_lambda: float = 0.95, update_epochs: int = 10, num_minibatches: int = 32,
                 clip_coef: float = 0.2, clip_value_loss: bool = True, ent_coef: float = 0.0,
                 vf_coef: float = 0.5, max_grad_norm: float = 0.5, target_kl: float | None = None,
                 normalise_advantages: bool = True, normalise_observations: bool = True,
                 normalise_rewards: bool = True, obs_clip: float = 10.0, reward_clip: float = 10.0,
                 hidden: Sequence[int] = (64, 64), activation: str = "tanh", cnn: str = "nature",
                 gradient: str = "closed_form", bootstrap_truncated: bool = False):
        super().__init__(observation_space, action_space, batch_size=batch_size, num_envs=num_envs,
                         gamma=gamma, gae_lambda=gae_lambda,
                         normalise_observations=normalise_observations, obs_clip=obs_clip,
                         device=device, seed=seed, bootstrap_truncated=bootstrap_truncated)
        require_positive("agent.learning_rate", learning_rate, integer=False)
        require_positive("agent.update_epochs", update_epochs)
        require_positive("agent.num_minibatches", num_minibatches)
        require(batch_size % num_minibatches == 0, "agent.num_minibatches",
                f"must divide agent.batch_size ({batch_size}), got {num_minibatches}")
        require_positive("agent.clip_coef", clip_coef, integer=False)
        require_positive("agent.max_grad_norm", max_grad_norm, integer=False)
        require(target_kl is None or target_kl > 0, "agent.target_kl",
                f"must be null or a positive number, got {target_kl!r}")
        require_choice("agent.gradient", gradient, GRADIENTS)
        self.num_iterations, self.learning_rate, self.anneal_lr = num_iterations, learning_rate, anneal_lr
        self.update_epochs, self.num_minibatches = update_epochs, num_minibatches
        self.clip_coef, self.clip_value_loss = clip_coef, clip_value_loss
        self.ent_coef, self.vf_coef = ent_coef, vf_coef
        self.max_grad_norm, self.target_kl = max_grad_norm, target_kl
        self.normalise_advantages = normalise_advantages
        self.reward_scaler = DiscountedReturnScaler(gamma, reward_clip, num_envs) if normalise_rewards else None
        # CleanRL's initialisation: orthogonal, gain sqrt(2); policy output 0.01, critic output 1.
        self.policy = make_policy(observation_space, action_space, hidden, activation,
                                  orthogonal_init=True, out_gain=0.01, cnn=cnn).to(self.device)
        self.critic = network(observation_space, 1, hidden, activation, orthogonal_init=True,
                              out_gain=1.0, cnn=cnn).to(self.device)
        self.flat = FlatParameters([*self.policy.parameters(), *self.critic.parameters()])
        self.optimizer = FlatAdam(self.flat, lr=learning_rate, eps=1e-5)
        # Minibatch gradients: autograd on ppo_loss, or the same gradient in closed form (a fast
        # path for MLP networks, algos/common/fast/ppo_gradient.py).
        self.gradient, self.gradient_step = "autograd", self.autograd_step
        if gradient == "closed_form" and ClosedFormPPOGradient.applicable(self.policy, self.critic):
            self.gradient, self.gradient_step = "closed_form", ClosedFormPPOGradient(
                self.policy, self.critic, clip_coef=clip_coef, clip_value_loss=clip_value_loss,
                vf_coef=vf_coef, ent_coef=ent_coef)
        elif gradient == "closed_form":
            log.info("agent.gradient=closed_form needs MLP policy and critic networks, and these "
                     "have a CNN torso: PPO computes its gradients with autograd instead")
        self.iteration = 0
        self.setup_fast_acting()

    @torch.no_grad()
    def value(self, obs: np.ndarray, episode_step: np.ndarray | None = None) -> np.ndarray:
        return self.critic(self.preprocess(obs)).squeeze(-1).double().cpu().numpy()

    def update(self, rollout: Rollout) -> dict:
        self.iteration += 1
        if self.anneal_lr:
            lr = self.learning_rate * (1.0 - (self.iteration - 1) / self.num_iterations)
            self.optimizer.lr = lr
        rewards = rollout.rewards
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, rollout.episode_end)

        # 1. advantages and returns under the behaviour policy's critic
        adv, returns = self.advantages(rollout, rewards, rollout.successor_values(self.value))
        obs = self.preprocess(rollout.flat(rollout.obs))
        actions = self.actions_tensor(rollout)
        with torch.no_grad():
            old_logp = self.old_log_prob(rollout, self.policy.dist.log_prob(self.policy(obs), actions))
            old_values = self.critic(obs).squeeze(-1)
        adv_t = torch.as_tensor(rollout.flat(adv), dtype=torch.float32, device=self.device)
        ret_t = torch.as_tensor(rollout.flat(returns), dtype=torch.float32, device=self.device)

        # 2. clipped-surrogate epochs over shuffled minibatches
        n, mb = obs.shape[0], obs.shape[0] // self.num_minibatches
        epochs = 0
        for _ in range(self.update_epochs):
            epochs += 1
            order = torch.randperm(n, generator=self.generator, device=self.device)
            order = order.view(self.num_minibatches, mb)
            # Gather the epoch's minibatches at once; normalise advantages per minibatch.
            mb_obs, mb_act, mb_logp = obs[order], actions[order], old_logp[order]
            mb_ret, mb_val, mb_adv = ret_t[order], old_values[order], adv_t[order]
            if self.normalise_advantages:
                mb_adv = (mb_adv - mb_adv.mean(1, keepdim=True)) / (mb_adv.std(1, keepdim=True) + 1e-8)
            for k in range(self.num_minibatches):
                pg_loss, v_loss, log_ratio = self.gradient_step(
                    mb_obs[k], mb_act[k], mb_logp[k], mb_adv[k], mb_ret[k], mb_val[k])
                grad_norm = self.flat.clip_grad_norm(self.max_grad_norm)
                self.optimizer.step()
            with torch.no_grad():  # CleanRL's approx_kl = mean((r - 1) - log r), last minibatch
                approx_kl = float((log_ratio.exp() - 1 - log_ratio).mean())
            if self.target_kl is not None and approx_kl > self.target_kl:
                break
        self.refresh_acting()
        pg_loss, v_loss = float(pg_loss), float(v_loss)
        check_finite("agent (PPO)", policy_loss=pg_loss, value_loss=v_loss, parameters=self.flat.flat)
        with torch.no_grad():
            entropy = float(self.policy.dist.entropy(self.policy(obs)).mean())
        self.update_obs_stats(rollout)
        old_v = old_values.double().cpu().numpy().reshape(returns.shape)
        explained = 1.0 - np.var(returns - old_v) / (np.var(returns) + 1e-8)
        return {"loss_policy": pg_loss, "loss_value": v_loss, "kl": approx_kl, "entropy": entropy,
                "grad_norm": float(grad_norm), "epochs": epochs,
                "learning_rate": self.optimizer.lr,
                "explained_variance": float(explained)}

    def autograd_step(self, obs, actions, old_logp, adv, returns, old_values):
        """Gradient of ppo_loss by autograd, into the flat gradient buffer; returns (policy loss,
        value loss, log-ratio)."""
        loss, pg_loss, v_loss, log_ratio = ppo_loss(
            self.policy, self.critic, obs, actions, old_logp, adv, returns, old_values,
            self.clip_coef, self.clip_value_loss, self.vf_coef, self.ent_coef)
        self.flat.zero_grad()
        loss.backward()
        return pg_loss.detach(), v_loss.detach(), log_ratio.detach()

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(), "iteration": self.iteration,
                "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
                **self.base_state()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.load_base_state(state)
