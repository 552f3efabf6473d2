"""KDE density bonus: r_int(s) = -log p(s), p an RBF kernel density over recently visited states.

The density-model baseline of the CS294-112 homework (HW5a, `hw5/exp/density_model.py`,
reference/papers.md §10). Its `RBF(sigma)` model places one Gaussian kernel on every stored state
mu_j and estimates

    p(s) = 1/M * sum_j exp(-||s - mu_j||^2 / (2 sigma^2))                                   (1)

i.e. the average of *unnormalised* Gaussians: the homework's docstring says the reference solution
leaves out the (2 pi sigma^2)^(-D/2) factor. We follow it, so p(s) lies in (0, 1] and the bonus

    B(s) = -log p(s) = log M - logsumexp_j(-||s - mu_j||^2 / (2 sigma^2))  >= 0             (2)

only differs from the normalised density's by a constant (which a batch-median normalisation or
the policy's baseline removes anyway); ">= 0" holds up to float32 rounding (~1e-3 for raw
HalfCheetah states at sigma = 0.2). Eq. (2) is computed with a log-sum-exp, so states far from
every reference (all kernels underflow to 0 in float32) still get a finite, ordered bonus.

Reference set. The homework's means are the states in the replay buffer; here they are the last
`max_reference` states visited (a ring buffer, `reference_update: ring`, default) or a uniform
sample of all states visited so far (`reference_update: reservoir`, Vitter's algorithm R).
Order within an iteration: `intrinsic_reward(rollout)` scores the batch against the reference set
*before* the batch is added; `update(rollout)` then adds it. The first batch meets an empty
reference set and gets a zero bonus.

Scale. With `normalize_states: true` states (queries and references alike) are standardised with
the running mean / std of every state passed to `update`, so sigma is in units of each
coordinate's std. The default is false, as in the homework: sigma = 0.2 is in the environment's
observation units there (PointMass observations lie in [0, 1]).

Cost. ||s - mu||^2 = ||s||^2 + ||mu||^2 - 2 s.mu, so a block of queries against all references is
one matrix product (torch.addmm) and a row-wise log-sum-exp; the queries go in blocks so that the
[block, M] score matrix stays small. Both sides are centred on the reference mean first, which
keeps the float32 cancellation error of the expansion small: about 1e-7 (||s||^2 + ||mu||^2) /
(2 sigma^2) nats in log p, norms taken from the reference mean (~1e-3 for raw HalfCheetah states). The exponentials are the other half
of the cost: where sigma is small for the data (the homework's sigma = 0.2 on raw HalfCheetah
states) each state's density comes from a few near references, and tiles of references that all
lie > 80 nats below a row's largest kernel are left out (they change the float32 sum by < 1e-30).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from algos.common.checks import require_choice, require_positive
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Rollout
from algos.exploration.base import ExplorationMethod, Requirements

REFERENCE_UPDATES = ("ring", "reservoir")
TILE = 512     # references per tile: a tile whose every kernel is negligible is skipped
CUTOFF = 80.0  # exp(-80) ~ 2e-35: kernels this far below a row's largest are negligible in float32
DENSE_FRACTION = 0.25  # above this fraction of live tiles, exponentiate whole rows instead


class KDEBonus(ExplorationMethod):
    """-log of an RBF kernel density over a bounded reference set of visited states."""

    requires = Requirements(observation_kinds=("vector",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 sigma: float = 0.2, max_reference: int = 50000, reference_update: str = "ring",
                 normalize_states: bool = False, block_elements: int = 1 << 20):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_positive("exploration.sigma", sigma, integer=False)
        require_positive("exploration.max_reference", max_reference)
        require_choice("exploration.reference_update", reference_update, REFERENCE_UPDATES)
        require_positive("exploration.block_elements", block_elements)
        self.sigma, self.max_reference = float(sigma), int(max_reference)
        self.reference_update, self.normalize_states = reference_update, bool(normalize_states)
        self.block_elements = int(block_elements)
        self.dim = int(np.prod(observation_space.shape))
        self.torch_device = torch.device(device)
        # allocated at the first add (the runner refuses pixel observations after construction)
        self.reference = torch.zeros(0, self.dim, dtype=torch.float32, device=self.torch_device)
        self.size = 0  # filled rows of `reference`
        self.seen = 0  # states offered so far (ring: the next one goes to row seen % max_reference)
        self.rng = np.random.default_rng(seed)
        self.state_rms = RunningMeanStd((self.dim,))

    # -- the density (eq. 1, 2) -----------------------------------------------------------------
    def _standardise(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize_states:
            mean = torch.as_tensor(self.state_rms.mean, dtype=torch.float32, device=x.device)
            inv_std = torch.as_tensor(1.0 / np.sqrt(self.state_rms.var + 1e-8), dtype=torch.float32,
                                      device=x.device)
            x, ref = (x - mean) * inv_std, (ref - mean) * inv_std
        centre = ref.mean(0)
        return x - centre, ref - centre

    @torch.inference_mode()
    def log_density(self, states: np.ndarray) -> np.ndarray:
        """log p(s) of eq. (1) for states [B, ...] against the current reference set, float64 [B]."""
        if self.size == 0:
            raise ValueError("the reference set is empty")
        x = torch.as_tensor(np.asarray(states, np.float32).reshape(-1, self.dim), device=self.torch_device)
        x, ref = self._standardise(x, self.reference[:self.size])
        scale = 1.0 / (2.0 * self.sigma**2)
        # references padded to whole tiles; a padding column scores -inf (adds nothing)
        tiles = -(-self.size // TILE)
        ref_t = torch.zeros(self.dim, tiles * TILE, dtype=torch.float32, device=x.device)
        ref_t[:, :self.size] = ref.t()
        ref_term = torch.full((tiles * TILE,), -math.inf, dtype=torch.float32, device=x.device)
        ref_term[:self.size] = (ref * ref).sum(1).mul_(-scale)  # -||mu||^2 / 2 sigma^2
        block = max(1, min(len(x), self.block_elements // (tiles * TILE)))
        scores = torch.empty(block, tiles * TILE, dtype=torch.float32, device=x.device)
        out = torch.empty(len(x), dtype=torch.float32, device=x.device)
        for start in range(0, len(x), block):
            xb = x[start:start + block]
            n = len(xb)
            s = scores[:n]
            # (2 s.mu - ||mu||^2) / 2 sigma^2: the exponent of eq. (1) but for its per-row -||s||^2 term
            torch.addmm(ref_term, xb, ref_t, beta=1.0, alpha=2.0 * scale, out=s)
            # log-sum-exp, shifted by each row's peak. Terms more than CUTOFF below the peak add
            # < 1e-30 to a sum >= 1 (the peak's own term): they are clamped (float32 exp is ~10x
            # slower where its result is subnormal), and whole tiles of them are skipped.
            tile_peak = s.view(n, tiles, TILE).amax(2)
            peak = tile_peak.amax(1)
            live = tile_peak > (peak - CUTOFF).unsqueeze(1)
            if live.sum() > DENSE_FRACTION * live.numel():  # a dense neighbourhood: exp everything
                total = s.sub_(peak.unsqueeze(1)).clamp_min_(-CUTOFF).exp_().sum(1)
            else:  # kernels dominated by a few near references (e.g. sigma small for the data)
                rows, cols = live.nonzero(as_tuple=True)
                terms = s.view(n, tiles, TILE)[rows, cols]
                terms.sub_(peak[rows].unsqueeze(1)).clamp_min_(-CUTOFF).exp_()
                total = torch.zeros(n, dtype=torch.float32, device=x.device).index_add_(0, rows, terms.sum(1))
            out[start:start + n] = total.log_().add_(peak) - (xb * xb).sum(1) * scale
        return out.double().cpu().numpy() - math.log(self.size)

    def intrinsic_reward(self, rollout: Rollout) -> np.ndarray:
        """B(s_t) = -log p(s_t) for the state each action was taken in, [T, N] (zeros while the
        reference set is empty)."""
        if self.size == 0:
            return np.zeros(rollout.rewards_ext.shape)
        return -self.log_density(rollout.flat(rollout.obs)).reshape(rollout.rewards_ext.shape)

    # -- the reference set ----------------------------------------------------------------------
    def add(self, states: np.ndarray) -> None:
        """Put states [B, ...] into the reference set (ring buffer or reservoir)."""
        x = np.asarray(states, np.float32).reshape(-1, self.dim)
        n = len(x)
        if self.normalize_states:
            self.state_rms.update(x)
        if self.reference_update == "ring":
            x = x[-self.max_reference:]
            slots = (self.seen + n - len(x) + np.arange(len(x))) % self.max_reference
        else:  # reservoir: the k-th state offered (0-based) takes a uniform slot in [0, k], kept if < M
            k = self.seen + np.arange(n)
            slots = np.where(k < self.max_reference, k, self.rng.integers(0, k + 1))
            keep = slots < self.max_reference
            x, slots = x[keep], slots[keep]
            # a slot drawn twice: the later state wins, as in the sequential algorithm
            _, last_reversed = np.unique(slots[::-1], return_index=True)
            last = len(slots) - 1 - last_reversed
            x, slots = x[last], slots[last]
        if len(self.reference) < self.max_reference:
            self.reference = torch.zeros(self.max_reference, self.dim, dtype=torch.float32,
                                         device=self.torch_device)
        self.seen += n
        self.size = min(self.max_reference, self.seen)
        self.reference[torch.as_tensor(slots, device=self.torch_device)] = torch.as_tensor(
            x, device=self.torch_device)

    def update(self, rollout: Rollout) -> dict:
        self.add(rollout.flat(rollout.obs))
        return {"reference_size": self.size}

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reference": self.reference[:self.size].cpu().clone(), "size": self.size,
                "seen": self.seen, "rng": self.rng.bit_generator.state,
                "state_rms": self.state_rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.seen = state["size"], state["seen"]
        self.reference = torch.zeros(self.max_reference if self.size else 0, self.dim, dtype=torch.float32,
                                     device=self.torch_device)
        self.reference[:self.size] = state["reference"].to(self.torch_device)
        self.rng.bit_generator.state = state["rng"]
        self.state_rms.load_state_dict(state["state_rms"])
