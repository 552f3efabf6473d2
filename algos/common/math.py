"""Numerical pieces shared by the agents: GAE and conjugate gradient."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
        episode_end: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) over a [T, N] rollout.

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - episode_end_t) * A_{t+1}

    `next_values[t]` is V of the true successor of step t (the final observation when the episode
    ended there), so truncated episodes and the end of the rollout are bootstrapped, terminated
    ones are not; `episode_end` (terminated or truncated) stops the trace at episode boundaries.
    """
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    decay = gamma * lam * (1.0 - episode_end)
    advantages = np.empty_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iterations: int = 10, residual_tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Hestenes & Stiefel)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = torch.dot(r, r)
    for _ in range(iterations):
        if r_dot_r <= residual_tol:
            break
        Ap = matvec(p)
        alpha = r_dot_r / torch.dot(p, Ap)
        x += alpha * p
        r -= alpha * Ap
        new_r_dot_r = torch.dot(r, r)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x
