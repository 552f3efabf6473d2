"""Action distributions as plain tensor formulas (cheaper than torch.distributions in hot loops).

A policy returns its distribution parameters as a tuple; these classes turn parameter tuples into
samples, modes (the deterministic action), log-probabilities, entropies and KL divergences, each
per sample (shape [B]).
"""
from __future__ import annotations

import math

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagGaussian:
    """N(mean, diag(exp(log_std))^2); params = (mean [B, A], log_std [A] or [B, A])."""

    @staticmethod
    def sample(params, generator=None):
        mean, log_std = params
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + log_std.exp() * noise

    @staticmethod
    def mode(params):
        """The mean (draws nothing)."""
        return params[0]

    @staticmethod
    def log_prob(params, actions):
        mean, log_std = params
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - HALF_LOG_2PI).sum(-1)

    @staticmethod
    def entropy(params):
        mean, log_std = params
        return (log_std + 0.5 + HALF_LOG_2PI).expand_as(mean).sum(-1)

    @staticmethod
    def kl(p, q):
        """KL(p || q) = sum log(sq/sp) + (sp^2 + (mp - mq)^2) / (2 sq^2) - 1/2."""
        (mean_p, log_std_p), (mean_q, log_std_q) = p, q
        var_ratio = torch.exp(2 * (log_std_p - log_std_q))
        mean_term = (mean_p - mean_q).square() * torch.exp(-2 * log_std_q)
        return (log_std_q - log_std_p + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)

    @staticmethod
    def detach(params):
        return tuple(p.detach() for p in params)


class Categorical:
    """Softmax over logits; params = (logits [B, K],); actions are integer indices [B]."""

    @staticmethod
    def sample(params, generator=None):
        (logits,) = params
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    @staticmethod
    def mode(params):
        """The most probable action (draws nothing)."""
        return params[0].argmax(-1)

    @staticmethod
    def log_prob(params, actions):
        (logits,) = params
        return torch.log_softmax(logits, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def entropy(params):
        (logits,) = params
        log_p = torch.log_softmax(logits, -1)
        return -(log_p.exp() * log_p).sum(-1)

    @staticmethod
    def kl(p, q):
        log_p, log_q = torch.log_softmax(p[0], -1), torch.log_softmax(q[0], -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    @staticmethod
    def detach(params):
        return tuple(x.detach() for x in params)
