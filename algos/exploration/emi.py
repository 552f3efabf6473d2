"""EMI: Exploration with Mutual Information (Kim, Kim, Jeong, Levine, Song, ICML 2019, arXiv 1810.01176).

EMI learns a state embedding phi(s) and an action embedding psi(a) in R^d (d = 2) in which
transitions are linear, with an error model e(s, a) (the authors' "reconciler") that absorbs what a
linear model cannot explain:

    phi(s') = phi(s) + psi(a) + e(s, a),   min E||e(s, a)||^2          (the constrained problem, Eq. 3*)

The embeddings maximise two mutual informations, each through the Jensen-Shannon lower bound of
Deep InfoMax with a discriminator T (an MLP (64, 64) on the concatenated 3d-vector):

    I([s, a]; s')  via phi:  max  E_P[-sp(-T(phi(s'), phi(s), psi(a)))] - E_PxP[sp(T(phi(s~'), phi(s), psi(a)))]
    I([s, s']; a)  via psi:  max  E_P[-sp(-T(psi(a), phi(s'), phi(s)))] - E_PxP[sp(T(psi(a~), phi(s'), phi(s)))]
                                                                 (the MI objectives, Eq. 1* and 2*)

where sp is softplus and the product of marginals pairs the first half of a minibatch with the
target embedding of its second half (the reference code, dsae/dsae.py). The estimate of I is
2 log 2 minus the loss below. Together with the linear-dynamics residual, the error penalty
(the Lagrangian of Eq. 3*) and a KL of the action embeddings' batch Gaussian to N(0, I):

    L = E||phi(s') - (phi(s) + psi(a) + e(s, a))||^2 + lambda_e E||e(s, a)||^2            (Eq. 4*)
        + lambda_a L_JSD(a) + lambda_s L_JSD(s') + lambda_kl KL(N(mean psi, cov psi) || N(0, I))

    KL(N(m, S) || N(0, I)) = 1/2 (tr S + m^T m - d - log det S)    (S: unbiased batch covariance)

minimised with Adam (lr 1e-3) for 3 epochs of minibatches of 512 on each iteration's batch.

Intrinsic reward (`intrinsic_reward` config key):

- residual (the paper's intrinsic reward r_i, the Atari default):
      r = ||phi(s') - (phi(s) + psi(a) + e(s, a))||^2
- diversity (the reference code's MuJoCo default, `diversity_seeking_calc='relative'`):
      r = -[mean_k k(phi(s'), phi_k) - mean_k k(phi(s), phi_k)],  k(x, y) = exp(-||x - y||^2 / 2h^2)
  with the pool phi_k = phi of the batch's states (the code's replay pool of size 0) and h = 5.

Order of scoring and training (`fit_before_scoring`, the exploration contract's flag). The reference
(dsae/dsae.py `train_and_compute_intrinsic_rewards`) evaluates the residuals of the batch, then
trains the embeddings on it (`_optimize`), then embeds the batch again: the diversity reward uses
the embeddings AFTER the update on the batch, the residual reward those BEFORE it (unless
`residual_error_ir_calc_after_opt`, off by default). So `fit_before_scoring` defaults to the
reference's order for the chosen reward: true for diversity (the loop trains on the batch, then
scores it), false for residual (scored with the embeddings trained up to the previous batch, then
trained after the agent's update). Either reward can be given either order.

Continuous actions enter psi and e clipped to the action bounds (the code's clip_actions); discrete
actions one-hot. Pixel observations ([C, H, W] uint8 stacks) are embedded from their last frame
only, with the conv torso 16x8x8/4 -> 32x4x4/2 -> fc 256 (ReLU). All hyperparameters: docs/papers.md §5.

* Equation numbers marked * follow the method summary of docs/papers.md §5 (seed 001) (the paper's own text was
  not available to us, so its numbering is not checked); the terms and weights follow the reference
  code, dsae/dsae.py and dsae/calc_utils.py of snu-mllab/EMI.
"""
from __future__ import annotations

import math
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algos.common.checks import check_finite, require, require_choice, require_positive
from algos.common.nets import AtariCNN, action_kind, mlp, observation_kind
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

REWARDS = ("residual", "diversity")
DIVERSITY_FORMS = ("relative", "naive")
LOG4 = 2.0 * math.log(2.0)


# -- the objective's pieces, as functions (tested on their own) ------------------------------------

def jsd_loss(discriminator: nn.Module, joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """E_joint[sp(-T)] + E_marginal[sp(T)]: minus the Jensen-Shannon MI bound, up to 2 log 2."""
    scores = discriminator(torch.cat([joint, marginal])).squeeze(-1)
    n = len(joint)
    return F.softplus(-scores[:n]).mean() + F.softplus(scores[n:]).mean()


def jsd_mutual_information(discriminator: nn.Module, joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """The JSD estimate of I (Deep InfoMax): 2 log 2 - jsd_loss; 0 when T cannot tell the two apart."""
    return LOG4 - jsd_loss(discriminator, joint, marginal)


def gaussian_kl_to_standard(samples: torch.Tensor, min_eigenvalue: float = 1e-6) -> torch.Tensor:
    """KL(N(m, S) || N(0, I)) for the batch mean m and unbiased covariance S of `samples` [B, d].

    As in the reference code (dsae/calc_utils.py), S is symmetrised and its eigenvalues are
    floored at 1e-6 so that a collapsed batch gives a large finite penalty."""
    d = samples.shape[1]
    mean = samples.mean(0)
    centred = samples - mean
    cov = centred.T @ centred / (len(samples) - 1)
    eig = torch.linalg.eigvalsh(0.5 * (cov + cov.T)).clamp_min(min_eigenvalue)
    return 0.5 * (eig.sum() + mean.pow(2).sum() - d - eig.log().sum())


def _kernel_block(x: np.ndarray, p: np.ndarray, bandwidth: float) -> np.ndarray:
    """exp(-||x_i - p_k||^2 / 2h^2) for blocks x [b, d], p [c, d], one dimension at a time
    (exact differences, no |x|^2 + |p|^2 - 2 x.p cancellation; numpy's vectorised exp)."""
    sq = np.zeros((len(x), len(p)), x.dtype)
    for j in range(x.shape[1]):
        diff = np.subtract.outer(x[:, j], p[:, j])
        diff *= diff
        sq += diff
    sq *= -1.0 / (2.0 * bandwidth ** 2)
    return np.exp(sq, out=sq)


def rbf_similarity(targets, pool, bandwidth: float, block: int = 256, dtype=np.float32) -> np.ndarray:
    """mean_k exp(-||x - p_k||^2 / 2h^2) for every row x of `targets` [B, d], pool [P, d].
    Kernel values in `dtype` (float32: ~1e-7 relative error, twice as fast), sums in float64."""
    x, p = np.asarray(targets, dtype), np.asarray(pool, dtype)
    out = np.zeros(len(x))
    for i in range(0, len(x), block):
        out[i:i + block] = _kernel_block(x[i:i + block], p, bandwidth).sum(1, dtype=np.float64)
    return out / len(p)


def pool_self_similarity(pool, bandwidth: float, block: int = 256, dtype=np.float32) -> np.ndarray:
    """rbf_similarity(pool, pool), using the kernel's symmetry: each block pair is computed once."""
    p = np.asarray(pool, dtype)
    sums = np.zeros(len(p))
    for i in range(0, len(p), block):
        # the diagonal block and everything to its right, in one strip
        k = _kernel_block(p[i:i + block], p[i:], bandwidth)
        sums[i:i + block] += k.sum(1, dtype=np.float64)
        sums[i + block:] += k[:, block:].sum(0, dtype=np.float64)
    return sums / len(p)


# -- networks --------------------------------------------------------------------------------------

def _xavier(module: nn.Module) -> None:
    """rllab's initialisation: Xavier-uniform weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class _Scale(nn.Module):
    """uint8 pixels -> float in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0 if x.dtype == torch.uint8 else x


def _hidden_mlp(in_dim: int, hidden: Sequence[int], activation: str) -> tuple[nn.Module, int]:
    """Hidden layers only, activation after each (rllab's MLP with output_dim=None)."""
    if not hidden:
        return nn.Identity(), in_dim
    net = mlp(in_dim, hidden[:-1], hidden[-1], activation)
    return nn.Sequential(net, nn.ReLU() if activation == "relu" else nn.Tanh()), hidden[-1]


class Reconciler(nn.Module):
    """The error model e(s, a): a state torso and a (linear) action layer, concatenated, then a
    common MLP to R^d (dsae/reconciler.py). Pixels: the conv layers 16x8x8/4 -> 32x4x4/2 alone."""

    def __init__(self, state_shape: tuple, action_dim: int, dim: int, state_hidden: Sequence[int],
                 action_linear: bool, common_hidden: Sequence[int], activation: str):
        super().__init__()
        if len(state_shape) == 3:
            self.state = nn.Sequential(_Scale(), nn.Conv2d(state_shape[0], 16, 8, 4), nn.ReLU(),
                                       nn.Conv2d(16, 32, 4, 2), nn.ReLU(), nn.Flatten())
            with torch.no_grad():
                state_out = self.state(torch.zeros(1, *state_shape)).shape[1]
        else:
            self.state, state_out = _hidden_mlp(state_shape[0], state_hidden, activation)
        self.action = nn.Linear(action_dim, action_dim) if action_linear else nn.Identity()
        self.common = mlp(state_out + action_dim, common_hidden, dim, activation)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.common(torch.cat([self.state(s), self.action(a)], 1))


def state_embedding(state_shape: tuple, dim: int, hidden: Sequence[int], activation: str) -> nn.Module:
    if len(state_shape) == 3:  # conv 16x8x8/4 -> 32x4x4/2 -> fc 256, then linear to R^d
        torso = AtariCNN(state_shape, "nips")
        return nn.Sequential(torso, nn.Linear(torso.out_dim, dim))
    return mlp(state_shape[0], hidden, dim, activation)


# -- the exploration method ------------------------------------------------------------------------

class EMI(ExplorationMethod):
    """phi, psi, e and the two discriminators, trained on each batch; the bonus from them."""

    requires = Requirements(agent_families=("on_policy",))

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, *, seed: int = 0,
                 device="cpu", intrinsic_reward: str = "diversity", embedding_dim: int = 2,
                 state_hidden: Sequence[int] = (64, 32), action_hidden: Sequence[int] = (64,),
                 activation: str = "relu", reconciler_hidden: Sequence[int] = (256,),
                 reconciler_state_hidden: Sequence[int] = (64, 32), reconciler_action_linear: bool = True,
                 discriminator_hidden: Sequence[int] = (64, 64), reconciler_loss_weight: float = 1e4,
                 mi_action_loss_weight: float = 5e-2, mi_obs_loss_weight: float = 5e-2,
                 action_kl_loss_weight: float = 1e-1, learning_rate: float = 1e-3, epochs: int = 3,
                 minibatch_size: int = 512, diversity_bandwidth: float = 5.0,
                 diversity_form: str = "relative", last_frame_only: bool = True,
                 clip_actions: bool = True, eval_chunk_size: int = 4096,
                 fit_before_scoring: bool | None = None):
        super().__init__(observation_space, action_space, seed=seed, device=torch.device(device))
        require_choice("exploration.intrinsic_reward", intrinsic_reward, REWARDS)
        require_choice("exploration.diversity_form", diversity_form, DIVERSITY_FORMS)
        require_choice("exploration.activation", activation, ("relu", "tanh"))
        for key, value in (("embedding_dim", embedding_dim), ("epochs", epochs),
                           ("minibatch_size", minibatch_size), ("eval_chunk_size", eval_chunk_size)):
            require_positive(f"exploration.{key}", value)
        require_positive("exploration.diversity_bandwidth", diversity_bandwidth, integer=False)
        require_positive("exploration.learning_rate", learning_rate, integer=False)
        require(fit_before_scoring is None or isinstance(fit_before_scoring, bool), "exploration.fit_before_scoring",
                f"must be true, false or null (the reference's order for the reward), got {fit_before_scoring!r}")
        self.reward_kind, self.diversity_form = intrinsic_reward, diversity_form
        # the reference's order (module docstring): diversity after the update on the batch, residual before
        self.fit_before_scoring = intrinsic_reward == "diversity" if fit_before_scoring is None else fit_before_scoring
        self.bandwidth = float(diversity_bandwidth)
        self.weights = {"error": reconciler_loss_weight, "mi_action": mi_action_loss_weight,
                        "mi_obs": mi_obs_loss_weight, "action_kl": action_kl_loss_weight}
        self.epochs, self.minibatch_size, self.eval_chunk = int(epochs), int(minibatch_size), int(eval_chunk_size)
        self.clip_actions = clip_actions

        self.pixels = observation_kind(observation_space) == "pixels"
        self.last_frame_only = self.pixels and last_frame_only
        state_shape = tuple(observation_space.shape)
        if self.last_frame_only:
            state_shape = (1, *state_shape[1:])
        self.discrete = action_kind(action_space) == "discrete"
        action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        if not self.discrete:
            self.action_low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
            self.action_high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)

        with torch.random.fork_rng(devices=[]):  # networks from `seed`, the global RNG untouched
            torch.manual_seed(seed)
            self.nets = nn.ModuleDict({
                "phi": state_embedding(state_shape, embedding_dim, state_hidden, activation),
                "psi": mlp(action_dim, action_hidden, embedding_dim, activation),
                "error": Reconciler(state_shape, action_dim, embedding_dim, reconciler_state_hidden,
                                    reconciler_action_linear, reconciler_hidden, activation),
                "disc_action": mlp(3 * embedding_dim, discriminator_hidden, 1, activation),
                "disc_obs": mlp(3 * embedding_dim, discriminator_hidden, 1, activation),
            })
            self.nets.apply(_xavier)
        self.nets.to(self.device)
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=learning_rate)
        self.rng = np.random.Generator(np.random.PCG64(seed))  # minibatch order
        self.updates = 0

    # -- data -----------------------------------------------------------------------------------
    def _data(self, transitions: Transitions) -> dict:
        """s, a, s' on the device (pixels reduced to the last frame), and the batch's successor
        encoding: phi of every distinct state is computed once, over cat([s, extra]) (Transitions)."""
        frame = (lambda x: x[..., -1:, :, :]) if self.last_frame_only else (lambda x: x)
        obs = frame(transitions.obs)
        dtype = torch.uint8 if obs.dtype == np.uint8 else torch.float32
        tensor = lambda x: torch.as_tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        a = torch.as_tensor(transitions.actions, device=self.device)
        if self.discrete:
            a = F.one_hot(a.long().reshape(-1), int(self.action_space.n)).float()
        else:
            a = a.float().reshape(len(obs), -1)
            if self.clip_actions:
                a = torch.clamp(a, self.action_low, self.action_high)
        return {"s": tensor(obs), "a": a, "s2": lambda: tensor(frame(transitions.next_obs)),
                "extra": tensor(frame(transitions.extra_next_obs)),
                "successor": torch.as_tensor(transitions.successor, device=self.device)}

    # -- bonus ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _chunked(self, net: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(*(x[i:i + self.eval_chunk] for x in inputs))
                          for i in range(0, len(inputs[0]), self.eval_chunk)])

    @torch.no_grad()
    def embed(self, data: dict) -> dict:
        """phi(s), phi(s'), psi(a), e(s, a) for a whole batch (each distinct state embedded once),
        and phi of every distinct state (`phi_all`: the batch's states, then the extra successors)."""
        s, a = data["s"], data["a"]
        phi_all = self._chunked(self.nets["phi"], torch.cat([s, data["extra"]]))
        return {"phi": phi_all[:len(s)], "phi_next": phi_all[data["successor"]], "phi_all": phi_all,
                "psi": self._chunked(self.nets["psi"], a), "error": self._chunked(self.nets["error"], s, a)}

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        data = self._data(transitions)
        z = self.embed(data)
        if self.reward_kind == "residual":  # the paper's r_i
            r = (z["phi_next"] - z["phi"] - z["psi"] - z["error"]).pow(2).sum(1).double().cpu().numpy()
        else:  # diversity against the pool = the batch's states (the code's replay pool of size 0)
            n = len(data["s"])
            phi_all = z["phi_all"].double().cpu().numpy()
            pool = phi_all[:n]
            sim = np.concatenate([pool_self_similarity(pool, self.bandwidth),
                                  rbf_similarity(phi_all[n:], pool, self.bandwidth)])
            r = -sim[data["successor"].cpu().numpy()]
            if self.diversity_form == "relative":
                r += sim[:n]
        return r

    # -- embedding update -----------------------------------------------------------------------
    def loss(self, s: torch.Tensor, a: torch.Tensor, s2: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The EMI objective on one minibatch; returns (total, components)."""
        n = len(s)
        phi_both = self.nets["phi"](torch.cat([s, s2]))
        phi, phi_next = phi_both[:n], phi_both[n:]
        psi = self.nets["psi"](a)
        error = self.nets["error"](s, a)
        residual = (phi_next - phi - psi - error).pow(2).sum(1).mean()
        error_norm = error.pow(2).sum(1).mean()
        h = n // 2  # product of marginals: the first half with the second half's target embedding
        mi_action = jsd_loss(self.nets["disc_action"], torch.cat([psi[:h], phi_next[:h], phi[:h]], 1),
                             torch.cat([psi[h:2 * h], phi_next[:h], phi[:h]], 1))
        mi_obs = jsd_loss(self.nets["disc_obs"], torch.cat([phi_next[:h], phi[:h], psi[:h]], 1),
                          torch.cat([phi_next[h:2 * h], phi[:h], psi[:h]], 1))
        action_kl = gaussian_kl_to_standard(psi)
        w = self.weights
        total = (residual + w["error"] * error_norm + w["mi_action"] * mi_action
                 + w["mi_obs"] * mi_obs + w["action_kl"] * action_kl)
        return total, {"loss": total, "residual": residual, "error_norm": error_norm,
                       "mi_action": LOG4 - mi_action, "mi_obs": LOG4 - mi_obs, "action_kl": action_kl}

    def update(self, transitions: Transitions, feedback=None) -> dict:
        data = self._data(transitions)
        next_states = data["s2"]()
        n = len(data["s"])
        size = min(self.minibatch_size, n)
        sums: dict = {}
        steps = 0
        for _ in range(self.epochs):
            order = torch.as_tensor(self.rng.permutation(n), device=self.device)
            s, a, s2 = data["s"][order], data["a"][order], next_states[order]
            for start in range(0, n - size + 1, size):  # the last partial minibatch is dropped
                mb = slice(start, start + size)
                total, parts = self.loss(s[mb], a[mb], s2[mb])
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()
                steps += 1
        self.updates += 1
        metrics = {k: float(v) / steps for k, v in sums.items()}
        check_finite("exploration (emi)", loss=metrics["loss"], parameters=self.nets.parameters())
        return metrics

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.updates = state["updates"]
