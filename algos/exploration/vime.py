"""VIME: Variational Information Maximizing Exploration (Houthooft et al., NIPS 2016, arXiv 1605.09674).

The agent is paid for transitions that teach it something about the environment's dynamics: the
bonus is the information gain about the parameters θ of a dynamics model p(s' | s, a, θ).

Paper, top to bottom (equation numbers of the arXiv/NIPS text; see the note at the end):

- The bonus is the information gain I(S_{t+1}; Θ | ξ_t, a_t), the expected KL between the posterior
  after and before seeing s_{t+1} (Eqs. 1-2), added to the reward: r' = r + η KL (Eq. 3).
- The posterior is replaced by a variational one, q(θ; φ) = Π_i N(θ_i | μ_i, σ_i²) with
  σ = log(1 + e^ρ), fitted by maximising the evidence lower bound
  L[q, D] = E_q[log p(D | θ)] − KL[q(θ; φ) ‖ p(θ)] (the variational lower bound of §2.3), so the
  bonus becomes KL[q(θ; φ_{t+1}) ‖ q(θ; φ_t)] (the variational form of Eq. 3).
- `BayesianDynamics` is that model: a ReLU MLP whose every weight and bias is Bayesian, prior
  N(0, prior_sd²), Gaussian likelihood of std `likelihood_sd`, sampled with the local
  reparameterisation trick (pre-activations ~ N(x·μ_W + μ_b, x²·σ_W² + σ_b²)). It is trained on
  minibatches of a FIFO replay pool, inputs (s, a) and targets s' standardised with the pool's
  mean and std, by Adam on  KL[q ‖ p] / n_batches − (1/S) Σ_samples log p(minibatch | θ)  (the
  reference's `BNN.loss`: n_batches = 5, S = n_samples = 10).
- Training noise (`train_noise`). The reference's BNNLayer (dynamics/bnn.py,
  `get_output_for_reparametrization`) draws its standard normal ε with shape (num_units,) at every
  forward pass, and `BNN.loss` makes one forward pass per MC sample over the whole minibatch: each of
  the S samples has ONE noise vector per layer, shared by all rows of the minibatch, so identical
  inputs give identical outputs within it (a correlated draw; not a weight sample, and not the
  per-example noise of Kingma et al.'s local reparameterisation). `train_noise: minibatch` (default)
  does that; `per_example` draws ε for every row, sample and unit (independent local
  reparameterisation noise, this project's former behaviour).
- The posterior after one transition solves Eq. (12):
  φ' = argmin_φ ℓ(φ),   ℓ(φ) = KL[q(θ; φ) ‖ q(θ; φ_old)] − E_{θ~q(·;φ)}[log p(s_{t+1} | s_t, a_t; θ)],
  approximated by ONE second-order step from φ_old (Eq. 13):  Δφ = H⁻¹ ∇_φ ℓ, with H the diagonal
  Hessian of the KL term at the origin φ = φ_old, and step size λ = 0.01:  φ' = φ_old − λ Δφ.

Derivation of the closed form used here (`second_order_kl`). At φ = φ_old the KL term and its
gradient vanish, so g = ∇_φ ℓ = −∇_φ E_q[log p(s' | θ)] (estimated with S = 10 noise draws).
Per weight, with σ_old = softplus(ρ_old):
  KL_i(μ, ρ) = (μ − μ_old)² / (2σ_old²) + σ²/(2σ_old²) − 1/2 − log(σ/σ_old),     σ = softplus(ρ)
  ∂²KL_i/∂μ² = 1/σ_old²;   ∂²KL_i/∂ρ² |_old = (2/σ_old²)(dσ/dρ)² = 2 sigmoid(ρ)² / softplus(ρ)²
  (the first-order term in σ vanishes at the origin) — the diagonal Hessian of the paper.
The step is Δμ = −λ σ_old² g_μ and Δρ = −λ g_ρ / H_ρ, and the KL between the stepped and the old
posterior is EXACTLY, weight by weight,
  KL_μ-part = Δμ² / (2σ_old²) = ½ λ² σ_old² g_μ²                       (= ½ λ² g²/H, exact)
  KL_ρ-part = ½(r² − 1) − log r,  r = softplus(ρ + Δρ) / softplus(ρ) = 1 + d,
              d = log1p(sigmoid(ρ) · expm1(Δρ)) / softplus(ρ)   (cancellation-free)
            = d + d²/2 − log1p(d) = ½ λ² g_ρ²/H_ρ + O(λ³).
Summed, KL[q(φ + λΔφ) ‖ q(φ)] = ½ λ² gᵀ H⁻¹ g + O(λ³): the paper's quadratic approximation
following Eq. (13). `kl_form: quadratic` (default) returns ½ λ² gᵀ H⁻¹ g, as the paper; at λ = 0.01
it differs from the exact KL by ~1e-5 relative and costs a third of it. `kl_form: exact` returns
the exact sum above, which equals the KL after the explicit update. (The reference code,
`fast_kl_div`, returns λ² gᵀ H⁻¹ g, twice the quadratic form; under VIME's median-ratio
normalisation a constant factor cancels.) The KL is clipped to [0, 1000] and nothing is updated.

Per-transition gradients are computed for the whole batch at once with torch.func
(vmap of grad of a functional call), in chunks; no Python loop over transitions.

Iteration schedule (reference `batch_polopt_expl.py`): the bonus is zero until the model has been
trained (the reference's `itr > 0`); each batch enters the pool (`observe`) and, after the agent's
update, once the pool holds `min_pool_size` transitions, the model takes `n_updates_per_sample` Adam
steps on minibatches of `pool_batch_size`. The bonus standardises inputs with the pool statistics the
model was trained with, i.e. those before the current batch joined, as the reference does. Its S
noise draws are per transition, as in the reference, whose bonus passes one transition at a time
(`kl_batch_size=1`) through the network; they are hashed from the transition (`hashed_noise`) rather
than drawn from a generator, so that the bonus is a pure function of the transition and the model
(the exploration contract), and are as independent across transitions and model versions as fresh
draws.
The runner's `normalise: running_median_ratio` divides each KL by the mean of the last 10
per-iteration medians (`use_kl_ratio_q`), then multiplies by `coef` (η).

Equation numbers: Eq. (12) (the one-step objective ℓ) and Eq. (13) (Δφ = H⁻¹∇ℓ) are checked against
a quotation of the paper; the others are named by content because no full copy of the paper was
available (docs/papers.md §11).
"""
from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from algos.common.buffers import RingBuffer
from algos.common.checks import ConfigError, NonFiniteError, require, require_choice, require_positive
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

KL_FORMS = ("exact", "quadratic")
TRAIN_NOISE = ("minibatch", "per_example")


def softplus_inverse(sd: float) -> float:
    return math.log(math.expm1(sd))


def kl_factorised_gaussians(mu_p, sd_p, mu_q, sd_q) -> torch.Tensor:
    """KL[N(mu_p, sd_p²) ‖ N(mu_q, sd_q²)] summed over all (independent) coordinates."""
    return (torch.log(sd_q / sd_p) + (sd_p ** 2 + (mu_p - mu_q) ** 2) / (2 * sd_q ** 2) - 0.5).sum()


# -- the Bayesian dynamics model --------------------------------------------------------------------
# Functional core (a dict of parameters in, tensors out), so that torch.func can take per-transition
# gradients of the same code the module trains with.

def predict(params: dict, x: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
    """Sampled predictions [S, B, n_out] for inputs x [B, n_in] with the local reparameterisation
    trick: each pre-activation ~ N(h·μ_W + μ_b, h²·σ_W² + σ_b²), noise[l] is [S, B, units_l], or
    [S, 1, units_l] for one draw shared by the B rows (the reference's training noise)."""
    n_layers = len(noise)
    h = x
    for l in range(n_layers):
        w_sd, b_sd = F.softplus(params[f"w_rho{l}"]), F.softplus(params[f"b_rho{l}"])
        mean = h @ params[f"w_mu{l}"] + params[f"b_mu{l}"]
        var = (h * h) @ (w_sd * w_sd) + b_sd * b_sd
        h = mean + var.sqrt() * noise[l]
        if l < n_layers - 1:
            h = torch.relu(h)
    return h


def log_likelihood(params: dict, x, y, noise, likelihood_sd: float) -> torch.Tensor:
    """(1/S) Σ_samples Σ_outputs log N(y | prediction, likelihood_sd²), per row: [B]."""
    z = (y - predict(params, x, noise)) / likelihood_sd
    log_n = -0.5 * z * z - math.log(likelihood_sd) - 0.5 * math.log(2 * math.pi)
    return log_n.sum(-1).mean(0)


def elbo_loss(params: dict, x, y, noise, prior_sd: float, likelihood_sd: float, n_batches: float) -> torch.Tensor:
    """The negative evidence lower bound of a minibatch, scaled as the reference's BNN.loss:
    KL[q ‖ N(0, prior_sd²)] / n_batches − (1/S) Σ_samples Σ_rows log p(y | x, θ_s). (Autograd
    version; training uses the hand-derived gradient of `BayesianDynamics.train_step`.)"""
    kl = 0.0
    for name, mu in params.items():
        if "_mu" in name:
            sd = F.softplus(params[name.replace("_mu", "_rho")])
            kl = kl + kl_factorised_gaussians(mu, sd, torch.zeros_like(mu), torch.full_like(mu, prior_sd))
    return kl / n_batches - log_likelihood(params, x, y, noise, likelihood_sd).sum()


class BayesianDynamics:
    """p(s' | s, a, θ): a ReLU MLP with a linear output whose every weight and bias is Bayesian
    (fully factorised Gaussian, σ = softplus(ρ)); prior N(0, prior_sd²); likelihood
    N(prediction, likelihood_sd²).

    All variational parameters live in one flat array `theta` = [all μ | all ρ]; `params()` gives
    zero-copy torch views named w_mu{l}, w_rho{l} [in, out], b_mu{l}, b_rho{l} [out] for the
    functional code above. Training is Adam on a hand-derived gradient in numpy: with minibatches
    of 10, one step is ~60 tiny array operations, and numpy's per-operation overhead is several
    times lower than torch's (autograd + torch.optim.Adam took ~25x longer per step here).
    Initialised as the reference's BNNLayer: μ ~ N(0, 1), ρ = softplus⁻¹(prior_sd).
    """

    ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8   # lasagne.updates.adam's (and torch's) defaults

    def __init__(self, n_in: int, hidden, n_out: int, prior_sd: float, likelihood_sd: float,
                 learning_rate: float, rng: np.random.Generator, dtype=np.float32):
        self.sizes = [int(n_in), *map(int, hidden), int(n_out)]
        self.prior_sd, self.likelihood_sd, self.lr = float(prior_sd), float(likelihood_sd), float(learning_rate)
        self.layers = []   # per layer: (w slice, w shape, b slice)
        offset = 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:]):
            self.layers.append((slice(offset, offset + i * o), (i, o), slice(offset + i * o, offset + i * o + o)))
            offset += i * o + o
        self.n = offset
        self.theta = np.empty(2 * self.n, dtype)
        for w, shape, b in self.layers:
            self.theta[w] = rng.standard_normal(shape).ravel()
            self.theta[b] = rng.standard_normal(shape[1])
        self.theta[self.n:] = softplus_inverse(prior_sd)
        self.adam_m, self.adam_v, self.adam_t = np.zeros_like(self.theta), np.zeros_like(self.theta), 0
        self._torch = {}
        for l, (w, shape, b) in enumerate(self.layers):
            for half, tag in ((0, "mu"), (self.n, "rho")):
                self._torch[f"w_{tag}{l}"] = torch.from_numpy(self.theta[half + w.start:half + w.stop].reshape(shape))
                self._torch[f"b_{tag}{l}"] = torch.from_numpy(self.theta[half + b.start:half + b.stop])

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def params(self) -> dict:
        """Torch views of the parameters (they share memory with `theta`)."""
        return self._torch

    def noise(self, *shape: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Standard normal local-reparameterisation noise [*shape, units_l] for every layer."""
        return [rng.standard_normal((*shape, o), dtype=self.theta.dtype) for o in self.sizes[1:]]

    def predict_mean(self, x: np.ndarray) -> np.ndarray:
        """The posterior-mean network's prediction (diagnostics only)."""
        mu, h = self.theta[:self.n], x
        for l, (w, shape, b) in enumerate(self.layers):
            h = h @ mu[w].reshape(shape) + mu[b]
            h = np.maximum(h, 0) if l < self.n_layers - 1 else h
        return h

    def kl_to_prior(self) -> float:
        mu, p = self.theta[:self.n].astype(np.float64), self.prior_sd
        sd = np.logaddexp(0, self.theta[self.n:].astype(np.float64))
        return float(np.sum(np.log(p / sd) + (sd * sd + mu * mu) / (2 * p * p) - 0.5))

    def train_step(self, x: np.ndarray, y: np.ndarray, noise: list[np.ndarray], n_batches: float) -> float:
        """One Adam step on `elbo_loss` (x [n, n_in], y [n, n_out], noise[l] [S, n, units_l], or
        [S, 1, units_l] for one draw shared by the n rows); returns the minibatch's negative
        log-likelihood term (1/S) Σ_s Σ_rows −log p(y | x, θ_s)."""
        n, theta = self.n, self.theta
        mu, rho = theta[:n], theta[n:]
        sd = np.log1p(np.exp(-np.abs(rho))) + np.maximum(rho, 0)   # σ = softplus(ρ), overflow-free
        dsd = -np.expm1(-sd)                                        # dσ/dρ = sigmoid(ρ) = 1 − e^{−σ}
        var_w = sd * sd
        n_samples, rows = noise[0].shape[0], x.shape[0]
        noise = [np.broadcast_to(e, (n_samples, rows, e.shape[-1])) for e in noise]
        # forward (local reparameterisation); layer 0's input is shared by the S samples, later
        # layers work on [S * rows, units]
        h, inputs, stds, acts = x, [], [], []
        for l, (w, shape, b) in enumerate(self.layers):
            mean = h @ mu[w].reshape(shape) + mu[b]
            std = np.sqrt((h * h) @ var_w[w].reshape(shape) + var_w[b])
            a = mean + std * noise[l].reshape(-1, shape[1]) if l else (mean + std * noise[l]).reshape(-1, shape[1])
            inputs.append(h), stds.append(std), acts.append(a)
            h = np.maximum(a, 0) if l < self.n_layers - 1 else a
        lik_var = self.likelihood_sd ** 2
        resid = h - np.tile(y, (n_samples, 1))
        nll = 0.5 * float(np.vdot(resid, resid)) / (lik_var * n_samples) + \
            y.size * (math.log(self.likelihood_sd) + 0.5 * math.log(2 * math.pi))
        # backward: g = ∂(−ELBO)/∂θ, with ∂/∂σ² collected in the ρ half first
        g = np.empty_like(theta)
        g_mu, g_var = g[:n], g[n:]
        d_a = resid / (lik_var * n_samples)                          # [S * rows, out]
        for l in range(self.n_layers - 1, -1, -1):
            w, shape, b = self.layers[l]
            h = inputs[l]
            if l == 0:   # sum the S samples first: the input is the same for all of them
                d_var = (d_a * noise[0].reshape(-1, shape[1])).reshape(n_samples, rows, -1).sum(0) / (2 * stds[0])
                d_a = d_a.reshape(n_samples, rows, -1).sum(0)
            else:
                d_var = d_a * noise[l].reshape(-1, shape[1]) / (2 * stds[l])
            g_mu[w] = (h.T @ d_a).ravel()
            g_var[w] = ((h * h).T @ d_var).ravel()
            g_mu[b], g_var[b] = d_a.sum(0), d_var.sum(0)
            if l:
                d_h = d_a @ mu[w].reshape(shape).T + 2 * h * (d_var @ var_w[w].reshape(shape).T)
                d_a = d_h * (acts[l - 1] > 0)
        p2 = self.prior_sd ** 2
        g_var *= 2 * sd * dsd                                   # ∂σ²/∂ρ = 2σ sigmoid(ρ)
        g_mu += mu / (p2 * n_batches)                           # ∂KL[q‖p]/∂μ = μ/p²
        g_var += (sd / p2 - 1 / sd) * dsd / n_batches           # ∂KL[q‖p]/∂ρ = (σ/p² − 1/σ) sigmoid(ρ)
        # Adam (torch.optim.Adam's arithmetic)
        b1, b2 = self.ADAM_BETAS
        self.adam_t += 1
        self.adam_m *= b1
        self.adam_m += (1 - b1) * g
        self.adam_v *= b2
        self.adam_v += (1 - b2) * g * g
        denom = np.sqrt(self.adam_v)
        denom /= math.sqrt(1 - b2 ** self.adam_t)
        denom += self.ADAM_EPS
        theta -= (self.lr / (1 - b1 ** self.adam_t)) * self.adam_m / denom
        return nll

    def state_dict(self) -> dict:
        return {"theta": self.theta.copy(), "adam_m": self.adam_m.copy(), "adam_v": self.adam_v.copy(),
                "adam_t": self.adam_t}

    def load_state_dict(self, state: dict) -> None:
        self.theta[:] = state["theta"]          # in place: the torch views stay valid
        self.adam_m[:], self.adam_v[:], self.adam_t = state["adam_m"], state["adam_v"], int(state["adam_t"])


def second_order_kl(params: dict, likelihood_sd: float, x: torch.Tensor, y: torch.Tensor,
                    noise: list[torch.Tensor], step_size: float = 0.01, form: str = "exact") -> torch.Tensor:
    """KL[q(φ_old − λ H⁻¹∇ℓ) ‖ q(φ_old)] for every row of x [B, n_in], y [B, n_out] at once.

    noise[l] is [B, S, units_l]: each transition its own S draws. Per-transition gradients of
    ℓ (Eq. 12) come from vmap(grad(.)); the rest is elementwise (module docstring). Returns a
    float64 tensor [B], not clipped.
    """
    params = {k: v.detach() for k, v in params.items()}
    lik_sd = likelihood_sd

    def ell(p, xi, yi, *eps):  # ℓ of one transition minus its KL term, whose gradient is 0 here
        return -log_likelihood(p, xi[None], yi[None], [e[:, None] for e in eps], lik_sd).sum()

    grads = vmap(grad(ell), in_dims=(None, 0, 0, *[0] * len(noise)))(params, x, y, *noise)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    lam2 = step_size * step_size
    for l in range(len(noise)):
        for k in ("w", "b"):
            rho = params[f"{k}_rho{l}"]
            sd = F.softplus(rho)
            g_mu, g_rho = grads[f"{k}_mu{l}"], grads[f"{k}_rho{l}"]
            dims = tuple(range(1, g_mu.dim()))
            total += (0.5 * lam2 * sd * sd * g_mu * g_mu).sum(dims).double()   # exact in μ
            h_rho = 2 * torch.sigmoid(rho) ** 2 / (sd * sd)                    # ∂²KL/∂ρ² at the origin
            if form == "quadratic":
                total += (0.5 * lam2 * g_rho * g_rho / h_rho).sum(dims).double()
            else:
                delta = -step_size * g_rho / h_rho
                d = (torch.log1p(torch.sigmoid(rho) * torch.expm1(delta)) / sd).double()
                total += (d + 0.5 * d * d - torch.log1p(d)).sum(dims)
    return total


# -- the bonus's noise: a counter-based hash of each transition ------------------------------------

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014), elementwise on uint64: a bijective, well-mixed hash."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def row_keys(rows: np.ndarray, key: np.uint64) -> np.ndarray:
    """One 64-bit hash per float32 row [B, D] (its bytes, chained through SplitMix64), salted by `key`."""
    words = np.ascontiguousarray(rows, np.float32).view(np.uint32).astype(np.uint64)
    h = np.full(len(rows), key, np.uint64)
    for j in range(words.shape[1]):
        h = _splitmix64(h ^ words[:, j])
    return h


def hashed_noise(keys: np.ndarray, n_samples: int, units) -> list[np.ndarray]:
    """Standard normal noise [B, S, units_l] for every layer, a deterministic function of each row's
    key (Box-Muller on the two 32-bit halves of SplitMix64(key ^ counter)): the same transition always
    draws the same noise, independently of the other rows of its batch."""
    out, offset = [], 0
    for n_units in units:
        counter = _splitmix64(np.arange(offset, offset + n_samples * n_units, dtype=np.uint64))
        bits = _splitmix64(keys[:, None] ^ counter[None, :])
        u1 = ((bits >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
        u2 = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0**32
        normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        out.append(normal.astype(np.float32).reshape(len(keys), n_samples, n_units))
        offset += n_samples * n_units
    return out


# -- the replay pool ---------------------------------------------------------------------------------

class ReplayPool(RingBuffer):
    """FIFO pool of (s, a, s') rows (float32), as the reference's SimpleReplayPool but with the
    successor stored explicitly (so no row pairs an episode's last state with the next reset)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, std_epsilon: float = 1e-8):
        super().__init__(capacity, (2 * obs_dim + act_dim,))  # zeros: lazily paged in
        self.obs_dim, self.act_dim, self.std_epsilon = obs_dim, act_dim, float(std_epsilon)
        self._stats = None

    def add(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> None:
        super().add(np.concatenate([obs, act, next_obs], 1).astype(np.float32))
        self._stats = None

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of (s, a) over the pool; s' is standardised with the stats of s."""
        if self._stats is None:
            sa = self.data[:self.size, :self.obs_dim + self.act_dim].astype(np.float64)
            self._stats = sa.mean(0), sa.std(0)
        return self._stats

    def standardise(self, rows: np.ndarray, stats: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (s, a), targets s') standardised as the reference: (v − mean) / (std + ε), ε = 1e-8
        there (`std_epsilon`), with the pool's current statistics or the given (mean, std). A coordinate
        that is constant over the pool's states but not over their successors (a terminal state is only
        ever a successor) gets targets of ±1/ε: with the reference's ε they swamp the likelihood, so
        environments with such states need a larger ε."""
        mean, std = self.stats() if stats is None else stats
        d = self.obs_dim + self.act_dim
        inputs = (rows[..., :d] - mean) / (std + self.std_epsilon)
        targets = (rows[..., d:] - mean[:self.obs_dim]) / (std[:self.obs_dim] + self.std_epsilon)
        return inputs.astype(np.float32), targets.astype(np.float32)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._stats = None


# -- the exploration method --------------------------------------------------------------------------

class VIME(ExplorationMethod):
    """Information gain of a Bayesian dynamics model as the intrinsic reward (module docstring).

    The model is tiny and trained with minibatches of 10, so it always runs on the CPU (in numpy
    and torch), whatever `device` says."""

    requires = Requirements(agent_families=("on_policy", "off_policy"), observation_kinds=("vector",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 hidden=(32,), prior_sd: float = 0.5, likelihood_sd: float = 5.0, n_samples: int = 10,
                 n_batches: int = 5, learning_rate: float = 1e-3, replay_pool_size: int = 100000,
                 min_pool_size: int = 500, n_updates_per_sample: int = 500, pool_batch_size: int = 10,
                 second_order_update: bool = True, step_size: float = 0.01, kl_form: str = "quadratic",
                 kl_clip: float = 1000.0, kl_chunk: int = 2048, std_epsilon: float = 1e-8,
                 train_noise: str = "minibatch"):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        hidden = list(hidden)
        if not hidden or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in hidden):
            raise ConfigError(f"exploration.hidden: must be a non-empty list of positive integers, got {hidden!r}")
        for key, value in [("n_samples", n_samples), ("n_batches", n_batches), ("replay_pool_size", replay_pool_size),
                           ("min_pool_size", min_pool_size), ("pool_batch_size", pool_batch_size),
                           ("kl_chunk", kl_chunk)]:
            require_positive(f"exploration.{key}", value)
        require(isinstance(n_updates_per_sample, int) and n_updates_per_sample >= 0,
                "exploration.n_updates_per_sample", f"must be an integer >= 0, got {n_updates_per_sample!r}")
        for key, value in [("prior_sd", prior_sd), ("likelihood_sd", likelihood_sd),
                           ("learning_rate", learning_rate), ("step_size", step_size), ("kl_clip", kl_clip),
                           ("std_epsilon", std_epsilon)]:
            require_positive(f"exploration.{key}", value, integer=False)
        require_choice("exploration.kl_form", kl_form, KL_FORMS)
        require_choice("exploration.train_noise", train_noise, TRAIN_NOISE)
        require(second_order_update is True, "exploration.second_order_update",
                f"only true (the paper's second-order step, Eq. 13) is implemented, got {second_order_update!r}")
        if isinstance(action_space, gym.spaces.Discrete):
            self.n_actions, act_dim = int(action_space.n), int(action_space.n)   # one-hot
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.n_actions, act_dim = None, int(action_space.shape[0])
        else:
            raise ConfigError(f"exploration=vime: action space {action_space} is not supported")
        obs_dim = int(np.prod(observation_space.shape))
        self.n_samples, self.n_batches = int(n_samples), float(n_batches)
        self.min_pool_size, self.n_updates = int(min_pool_size), int(n_updates_per_sample)
        self.pool_batch_size, self.step_size, self.kl_form = int(pool_batch_size), float(step_size), kl_form
        self.kl_clip, self.kl_chunk = float(kl_clip), int(kl_chunk)
        self.train_noise = train_noise

        init_ss, rng_ss = np.random.SeedSequence(seed).spawn(2)
        self.bnn = BayesianDynamics(obs_dim + act_dim, hidden, obs_dim, prior_sd, likelihood_sd,
                                    learning_rate, np.random.default_rng(init_ss))
        self.rng = np.random.default_rng(rng_ss)     # pool minibatches and their noise
        self.noise_key = np.uint64(rng_ss.generate_state(1, np.uint64)[0])  # the bonus's noise (hashed_noise)
        self.pool = ReplayPool(replay_pool_size, obs_dim, act_dim, std_epsilon)
        self.trainings = 0                           # model updates so far (no bonus before the first)
        self.input_stats: tuple | None = None        # the pool's statistics the model was last trained with

    def _rows(self, transitions: Transitions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, a, s') of every row, flat; discrete actions one-hot."""
        obs = transitions.obs.reshape(len(transitions), -1)
        nxt = transitions.next_obs.reshape(len(obs), -1)
        act = transitions.actions_one_hot(self.n_actions) if self.n_actions is not None else transitions.actions
        return obs, act.reshape(len(obs), -1), nxt

    def information_gain(self, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """The clipped second-order-step KL of every transition (flat arrays; act one-hot if discrete),
        standardised with the statistics the model was trained with. Pure: the S noise draws of a
        transition are a hash of the transition and of the model's version (`hashed_noise`), so a
        transition gets the same bonus in any batch, and a fresh draw after each model update."""
        rows = np.concatenate([obs, act, next_obs], 1).astype(np.float32)
        x, y = self.pool.standardise(rows, self.input_stats)
        keys = row_keys(rows, self.noise_key ^ np.uint64(self.trainings))
        kls = []
        for start in range(0, len(x), self.kl_chunk):
            xb, yb = x[start:start + self.kl_chunk], y[start:start + self.kl_chunk]
            noise = hashed_noise(keys[start:start + self.kl_chunk], self.n_samples, self.bnn.sizes[1:])
            kls.append(second_order_kl(self.bnn.params(), self.bnn.likelihood_sd, torch.from_numpy(xb),
                                       torch.from_numpy(yb), [torch.from_numpy(e) for e in noise],
                                       self.step_size, self.kl_form).numpy())
        return np.clip(np.concatenate(kls), 0.0, self.kl_clip)

    def training_noise(self, n_steps: int) -> list[np.ndarray]:
        """The noise of `n_steps` training minibatches, per layer [n_steps, S, 1, units] (one draw per
        minibatch and MC sample, shared by its rows: the reference) or [n_steps, S, pool_batch_size,
        units] (`train_noise: per_example`), from the method's generator."""
        rows = 1 if self.train_noise == "minibatch" else self.pool_batch_size
        return self.bnn.noise(n_steps, self.n_samples, rows, rng=self.rng)

    def observe(self, transitions: Transitions) -> None:
        """The new transitions enter the pool."""
        self.pool.add(*self._rows(transitions))

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        """KL[q(θ; φ') ‖ q(θ; φ)] of one second-order step on each transition, clipped to
        [0, kl_clip]; zero until the model has been trained once (the reference's first iteration,
        `itr > 0`, and any iteration before the pool reaches min_pool_size)."""
        if self.trainings == 0:
            return np.zeros(len(transitions))
        return self.information_gain(*self._rows(transitions)).astype(np.float64)

    def update(self, transitions: Transitions, feedback=None) -> dict:
        """Once the pool holds min_pool_size transitions, take n_updates_per_sample Adam steps on the
        −ELBO of minibatches of pool_batch_size, standardised with the pool's statistics, which the
        bonus then keeps using until the next update; the noise is `training_noise`'s."""
        metrics = {"pool_size": float(self.pool.size)}
        if self.pool.size < self.min_pool_size or self.n_updates == 0:
            return metrics
        idx = self.rng.integers(0, self.pool.size, (self.n_updates, self.pool_batch_size))
        x, y = self.pool.standardise(self.pool.data[idx])
        probe_x, probe_y = x[:100].reshape(-1, x.shape[-1]), y[:100].reshape(-1, y.shape[-1])
        before = float(np.mean((self.bnn.predict_mean(probe_x) - probe_y) ** 2))
        nll, chunk = 0.0, 256
        for start in range(0, self.n_updates, chunk):
            noise = self.training_noise(min(chunk, self.n_updates - start))
            for j in range(noise[0].shape[0]):
                nll += self.bnn.train_step(x[start + j], y[start + j], [e[j] for e in noise], self.n_batches)
        after = float(np.mean((self.bnn.predict_mean(probe_x) - probe_y) ** 2))
        self.trainings += 1
        self.input_stats = self.pool.stats()
        metrics.update(nll=nll / self.n_updates, kl_prior=self.bnn.kl_to_prior(),
                       dyn_sq_loss_before=before, dyn_sq_loss_after=after)
        if not (np.isfinite(list(metrics.values())).all() and np.isfinite(self.bnn.theta).all()):
            raise NonFiniteError(f"exploration (vime): non-finite BNN parameters or training metrics {metrics}")
        return metrics

    def state_dict(self) -> dict:
        return {"bnn": self.bnn.state_dict(), "pool": self.pool.state_dict(),
                "rng": copy.deepcopy(self.rng.bit_generator.state), "noise_key": int(self.noise_key),
                "trainings": self.trainings,
                "input_stats": copy.deepcopy(self.input_stats)}

    def load_state_dict(self, state: dict) -> None:
        self.bnn.load_state_dict(state["bnn"])
        self.pool.load_state_dict(state["pool"])
        self.rng.bit_generator.state = state["rng"]
        self.trainings, self.input_stats = int(state["trainings"]), copy.deepcopy(state["input_stats"])
        self.noise_key = np.uint64(state["noise_key"])
