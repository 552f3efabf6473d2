"""Trust Region Policy Optimization (Schulman et al. 2015) as configured in the rllab-era papers.

Each iteration, on the collected rollout:
  1. Values V(s_t) from the baseline, GAE advantages A_t (Schulman et al. 2016, Eq. 16), returns
     R_t = A_t + V(s_t); the baseline is then refit on R_t (rllab fits after computing advantages),
     or on the returns of the environment's reward alone (`baseline_returns: extrinsic`, VIME's code).
     As rllab: whole paths per iteration, value 0 after every path's end (`whole_paths`,
     `bootstrap_truncated`: algos/agents/base.py), so with lambda = 1, R_t is the path's discounted
     return-to-go.
  2. Advantages are centred and scaled to unit std (rllab's center_adv).
  3. Surrogate L(theta) = -mean_t[ pi_theta(a_t|s_t) / q(a_t|s_t) * A_t ]   (TRPO Eq. 14)
     with gradient g at theta_old; q is the sampling distribution: pi_old, or the behaviour
     distribution of an exploration method that changes actions (epsilon-greedy, Gaussian noise).
  4. Natural gradient direction x = H^-1 g by conjugate gradient, where H v is the Fisher-vector
     product: the Hessian of mean KL(pi_old || pi_theta) times v, plus damping * v
     (TRPO Appendix C; rllab's ConjugateGradientOptimizer with reg_coeff = damping).
  5. Largest step along -x allowed by the quadratic KL model: beta = sqrt(2 delta / x^T H x).
  6. Backtracking line search: try theta_old - ratio^k beta x for k = 0..max_backtracks, accept the
     first whose surrogate improves and whose mean KL <= delta; otherwise keep theta_old.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from algos.agents.base import OnPolicyAgent
from algos.common.baselines import BASELINES
from algos.common.checks import check_finite, require, require_bool, require_choice, require_in_range, require_positive
from algos.common.math import conjugate_gradient
from algos.common.nets import make_policy, observation_kind
from algos.common.rollout import Rollout


def fisher_vector_product(policy, obs: torch.Tensor, damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (d^2/dtheta^2 mean KL(pi_old || pi_theta)) v + damping v, at theta = theta_old.

    The KL gradient graph is built once and reused by every product (double backprop)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    new = policy(obs)
    old = policy.dist.detach(new)
    kl = policy.dist.kl(old, new).mean()
    kl_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, params, create_graph=True)])

    def product(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(kl_grad @ v, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]) + damping * v

    return product


def set_parameters(params: list[torch.Tensor], vector: torch.Tensor) -> None:
    """Copy `vector` into the parameters in place (views of the weights stay valid)."""
    offset = 0
    for p in params:
        p.data.copy_(vector[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def backtracking_line_search(policy, theta_old: torch.Tensor, full_step: torch.Tensor,
                             surrogate: Callable[[], torch.Tensor], mean_kl: Callable[[], torch.Tensor],
                             max_kl: float, ratio: float, max_backtracks: int) -> tuple[bool, int, float, float]:
    """Move the policy to theta_old - ratio^k * full_step for the first k whose surrogate loss is
    below the loss at theta_old and whose mean KL is within max_kl; restore theta_old if none is.

    Returns (accepted, k, loss after, kl after)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    with torch.no_grad():
        set_parameters(params, theta_old)
        loss_before = float(surrogate())
        for k in range(max_backtracks):
            set_parameters(params, theta_old - ratio**k * full_step)
            loss, kl = float(surrogate()), float(mean_kl())
            if loss < loss_before and kl <= max_kl:
                return True, k, loss, kl
        set_parameters(params, theta_old)
        return False, max_backtracks, loss_before, 0.0


class TRPO(OnPolicyAgent):
    """TRPO with a Gaussian (or categorical) MLP policy and rllab's linear feature baseline."""

    def __init__(self, observation_space, action_space, *, device="cpu", seed: int = 0,
                 num_iterations: int = 1, batch_size: int = 5000, num_envs: int = 10,
                 gamma: float = 0.99, gae_lambda: float = 1.0, max_kl: float = 0.01,
                 cg_iters: int = 10, cg_damping: float = 1e-5, fvp_subsample: float = 1.0,
                 backtrack_ratio: float = 0.8, max_backtracks: int = 15,
                 normalise_advantages: bool = True, normalise_observations: bool = False,
                 obs_clip: float = 10.0, policy_hidden: Sequence[int] = (64, 32),
                 activation: str = "tanh", init_log_std: float = 0.0, cnn: str = "nature",
                 baseline: dict | None = None, baseline_returns: str = "shaped",
                 whole_paths: bool = True, bootstrap_truncated: bool = False):
        super().__init__(observation_space, action_space, batch_size=batch_size, num_envs=num_envs,
                         gamma=gamma, gae_lambda=gae_lambda,
                         normalise_observations=normalise_observations, obs_clip=obs_clip,
                         device=device, seed=seed, bootstrap_truncated=bootstrap_truncated)
        self.whole_paths = require_bool("agent.whole_paths", whole_paths)
        require_positive("agent.max_kl", max_kl, integer=False)
        require_positive("agent.cg_iters", cg_iters)
        require_in_range("agent.cg_damping", cg_damping, 0.0, float("inf"))
        require_in_range("agent.fvp_subsample", fvp_subsample, 1e-9, 1.0)
        require_in_range("agent.backtrack_ratio", backtrack_ratio, 1e-9, 1 - 1e-9)
        require_positive("agent.max_backtracks", max_backtracks)
        require_choice("agent.baseline_returns", baseline_returns, ("shaped", "extrinsic"))
        self.baseline_returns = baseline_returns
        baseline = dict(baseline or {"kind": "auto"})
        require_choice("agent.baseline.kind", baseline.get("kind"), ("auto", *BASELINES))
        if baseline["kind"] == "auto":  # rllab: linear on states, a conv value net on pixels
            baseline["kind"] = "linear" if observation_kind(observation_space) == "vector" else "mlp"
        require(baseline["kind"] != "linear" or observation_kind(observation_space) == "vector",
                "agent.baseline.kind", "linear needs vector observations, and this env has pixels; "
                "allowed here: auto | mlp")
        self.max_kl, self.cg_iters, self.cg_damping = max_kl, cg_iters, cg_damping
        self.fvp_subsample = fvp_subsample
        self.backtrack_ratio, self.max_backtracks = backtrack_ratio, max_backtracks
        self.normalise_advantages = normalise_advantages
        self.policy = make_policy(observation_space, action_space, policy_hidden, activation,
                                  init_log_std, cnn=cnn).to(self.device)
        self.baseline = BASELINES[baseline.pop("kind")](observation_space, device=self.device,
                                                       generator=self.generator, cnn=cnn, **baseline)
        self.setup_fast_acting()

    def value(self, obs: np.ndarray, episode_step: np.ndarray) -> np.ndarray:
        if self.obs_rms is not None:
            obs = self.obs_rms.normalize(obs, self.obs_clip)
        return self.baseline.predict(obs, episode_step)

    def update(self, rollout: Rollout) -> dict:
        # 1-2. advantages, baseline refit, normalisation
        values = rollout.successor_values(self.value)
        adv, returns = self.advantages(rollout, rollout.rewards, values)
        if self.baseline_returns == "extrinsic":  # VIME's reference: the baseline never sees the bonus
            returns = self.advantages(rollout, rollout.rewards_ext, values)[1]
        obs_np = rollout.flat(rollout.obs)
        if self.obs_rms is not None:
            obs_np = self.obs_rms.normalize(obs_np, self.obs_clip)
        steps, flat_returns = rollout.flat(rollout.episode_step), rollout.flat(returns)
        metrics = self.baseline.fit(obs_np, steps, flat_returns)
        residual = flat_returns - self.baseline.predict(obs_np, steps)
        metrics["explained_variance"] = float(1.0 - residual.var() / (flat_returns.var() + 1e-8))
        adv = rollout.flat(adv)
        if self.normalise_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        obs = self.tensor(obs_np)
        actions = self.actions_tensor(rollout)
        adv_t = torch.as_tensor(adv, dtype=torch.float32, device=self.device)

        # 3. surrogate and its gradient at theta_old
        dist = self.policy.dist
        params = [p for p in self.policy.parameters() if p.requires_grad]
        old = dist.detach(self.policy(obs))
        old_logp = self.old_log_prob(rollout, dist.log_prob(old, actions))

        def surrogate() -> torch.Tensor:
            return -(torch.exp(dist.log_prob(self.policy(obs), actions) - old_logp) * adv_t).mean()

        def mean_kl() -> torch.Tensor:
            return dist.kl(old, self.policy(obs)).mean()

        loss_before = surrogate()
        grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_before, params)])
        check_finite("agent (TRPO)", surrogate_loss=loss_before.detach(), policy_gradient=grad)

        # 4-5. natural-gradient direction and the step that fills the trust region
        n = obs.shape[0]
        sub = slice(None) if self.fvp_subsample >= 1.0 else \
            torch.randperm(n, generator=self.generator, device=self.device)[:max(1, int(n * self.fvp_subsample))]
        fvp = fisher_vector_product(self.policy, obs[sub], self.cg_damping)
        direction = conjugate_gradient(fvp, grad, self.cg_iters)
        shs = direction @ fvp(direction)
        full_step = torch.sqrt(2 * self.max_kl / (shs + 1e-8)) * direction

        # 6. backtracking line search enforcing both the KL bound and improvement
        theta_old = parameters_to_vector(params).detach()
        accepted, backtracks, loss_after, kl = backtracking_line_search(
            self.policy, theta_old, full_step, surrogate, mean_kl, self.max_kl,
            self.backtrack_ratio, self.max_backtracks)
        check_finite("agent (TRPO)", policy_parameters=self.policy.parameters())
        self.refresh_acting()

        self.update_obs_stats(rollout)
        with torch.no_grad():
            entropy = float(dist.entropy(self.policy(obs)).mean())
        return {"loss_policy": float(loss_before.detach()), "loss_policy_after": loss_after, "kl": kl,
                "entropy": entropy, "step_accepted": int(accepted), "backtracks": backtracks,
                **metrics}

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "baseline": self.baseline.state_dict(),
                **self.base_state()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.baseline.load_state_dict(state["baseline"])
        self.load_base_state(state)
