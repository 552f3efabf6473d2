"""PPO's minibatch gradient in closed form, for an MLP policy and an MLP critic.

The fast path of PPO.autograd_step (algos/agents/ppo.py), selected by `agent.gradient: closed_form`:
the derivative of `ppo_loss` with respect to the networks' outputs, written out, then the MLPs'
backward pass (FastMLP). It is the same gradient as autograd's (tests/test_fast_mlp.py compares
every entry, for Gaussian and categorical policies, value clipping on and off, entropy on and off),
about twice as fast at PPO's 64-sample minibatches on CPU, where autograd's bookkeeping costs more
than the arithmetic (`python -m runner.bench agent=ppo agent.gradient=...` shows the difference).
"""
from __future__ import annotations

import torch

from algos.common.distributions import HALF_LOG_2PI
from algos.common.fast.mlp import FastMLP, mlp_parts
from algos.common.nets import CategoricalPolicy


def _policy_net(policy):
    return policy.logits if isinstance(policy, CategoricalPolicy) else policy.mean


class ClosedFormPPOGradient:
    """Called like PPO.autograd_step: writes the gradient of ppo_loss on one minibatch into the
    flat gradient buffer and returns (policy loss, value loss, log-ratio).

    Policy: with r = exp(log pi - log pi_old), the loss term max(-A r, -A clip(r)) has
    d/dr = -A on the unclipped branch and -A * 1[r inside the clip range] on the clipped one;
    d log pi / d mean = z / sigma, d log pi / d log sigma = z^2 - 1 (z = (a - mean) / sigma),
    d log pi / d logits = onehot(a) - softmax(logits). Entropy: d H / d log sigma = 1,
    d H / d logits = -p (log p + H). Value: d/dv of vf_coef * 0.5 * max(e_u^2, e_c^2) is
    vf_coef * e_u, or vf_coef * e_c * 1[|v - v_old| <= clip] on the clipped branch.

    Every entry of the gradient buffer is written (not accumulated), so no zeroing is needed.
    Build it after FlatParameters has re-homed the weights (FastMLP keeps views of them).
    """

    @staticmethod
    def applicable(policy, critic) -> bool:
        """Whether both networks are plain MLPs (not, e.g., a CNN torso with a linear head)."""
        return mlp_parts(_policy_net(policy)) is not None and mlp_parts(critic) is not None

    def __init__(self, policy, critic, *, clip_coef: float, clip_value_loss: bool, vf_coef: float,
                 ent_coef: float):
        self.policy, self.discrete = policy, isinstance(policy, CategoricalPolicy)
        self.clip_coef, self.clip_value_loss = clip_coef, clip_value_loss
        self.vf_coef, self.ent_coef = vf_coef, ent_coef
        self.policy_mlp = FastMLP(*mlp_parts(_policy_net(policy)))
        self.critic_mlp = FastMLP(*mlp_parts(critic))

    @torch.no_grad()
    def __call__(self, obs, actions, old_logp, adv, returns, old_values):
        B, c = obs.shape[0], self.clip_coef
        out, hidden = self.policy_mlp.forward(obs)
        if self.discrete:
            log_p = torch.log_softmax(out, -1)
            p = log_p.exp()
            onehot = torch.zeros_like(out).scatter_(1, actions.unsqueeze(1), 1.0)
            logp = (log_p * onehot).sum(-1)
        else:
            log_std = self.policy.log_std
            inv_std = torch.exp(-log_std)
            z = (actions - out) * inv_std
            logp = -0.5 * z.square().sum(-1) - log_std.sum() - HALF_LOG_2PI * out.shape[1]
        log_ratio = logp - old_logp
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - c, 1 + c)
        surr_unclipped, surr_clipped = -adv * ratio, -adv * clipped
        g_ratio = torch.where(surr_unclipped >= surr_clipped, -adv, -adv * (ratio == clipped)) / B
        g_logp = (g_ratio * ratio).unsqueeze(1)
        if self.discrete:
            g_out = g_logp * (onehot - p)
            if self.ent_coef:
                entropy = -(p * log_p).sum(-1, keepdim=True)
                g_out += (self.ent_coef / B) * p * (log_p + entropy)
        else:
            g_out = g_logp * z * inv_std
            torch.sum(g_logp * (z.square() - 1), 0, out=self.policy.log_std.grad)
            if self.ent_coef:
                self.policy.log_std.grad -= self.ent_coef
        self.policy_mlp.backward(obs, hidden, g_out)

        v, v_hidden = self.critic_mlp.forward(obs)
        v = v.squeeze(-1)
        err = v - returns
        v_sq = err.square()
        if self.clip_value_loss:
            delta = v - old_values
            err_clipped = old_values + delta.clamp(-c, c) - returns
            v_sq_clipped = err_clipped.square()
            g_v = torch.where(v_sq >= v_sq_clipped, err, err_clipped * (delta.abs() <= c))
            v_sq = torch.max(v_sq, v_sq_clipped)
        else:
            g_v = err
        self.critic_mlp.backward(obs, v_hidden, (self.vf_coef / B) * g_v.unsqueeze(1))
        return torch.max(surr_unclipped, surr_clipped).mean(), 0.5 * v_sq.mean(), log_ratio
