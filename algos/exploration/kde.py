"""KDE density bonus: r_int(s) = -log p(s), p an RBF kernel density over recently visited states.

The density-model baseline of the CS294-112 homework (HW5a, `hw5/exp/density_model.py`,
reference/docs/papers.md §10). Its `RBF(sigma)` model places one Gaussian kernel on every stored state
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
Order within an iteration: `observe` holds the new batch back (`pending`), `intrinsic_reward` scores
it against the reference set of the states visited *before* it, and `update` then adds it. The
first batch meets an empty reference set and gets a zero bonus.

Scale. With `normalise_states: true` states (queries and references alike) are standardised with
the running mean / std of every state passed to `update`, so sigma is in units of each
coordinate's std. The default is false, as in the homework: sigma = 0.2 is in the environment's
observation units there (PointMass observations lie in [0, 1]).

Cost. Scoring B queries against M references is B x M squared distances, and where sigma is
small for the data almost all of them are wasted: with the homework's sigma = 0.2 on raw
HalfCheetah states the nearest reference lies ~2-3 apart (10-15 sigma) and only the ~10-50
references within sqrt(d_min^2 + 2 sigma^2 * 80) of a query -- the kernels within 80 nats of its
largest one -- change its float32 sum (the others add < M e^-80 ~ 1e-30 relative to it). So the
references are grouped into tiles that are compact in space, and a tile is scored against a query
only where it can hold such a reference:

1. Tiles (rebuilt whenever the references change, a deterministic function of them): a balanced
   k-d tree on the references' first `BOX_AXES` principal axes, with leaves of <= `TILE`
   references; each tile keeps its bounding box on those axes (a few axes carry most of the
   spread and keep the bound cheap: B x n_tiles x 4). The axes are orthonormal, so the distance
   from a query to a tile's box on them is a lower bound of its distance to every reference in
   the tile.
2. Pass 1: each query is scored against its nearest tile by that bound, which gives an exact
   distance d_best >= d_min (in practice ~d_min: the nearest reference is usually in that tile).
3. Pass 2: the query is scored against every tile whose lower bound is <= d_best^2 +
   2 sigma^2 * 80 (+ a float32 margin); the others are left out, since each of their kernels lies
   >= 80 nats below the query's largest. Each tile is scored against its remaining queries in
   one matrix product, a window of `block_elements` scores at a time, and the log-sum-exp is
   merged across windows online (running peak per query, sum rescaled when the peak rises).

On the paper's setting (50,000 HalfCheetah states, a batch of 5,000, sigma = 0.2) pass 2 scores
~9% of the (tile, query) pairs, and the tiles cost ~20 ms to rebuild per batch added, ~4x less in
all than scoring every pair (runner.bench_exploration --full-reference).

Where most pairs survive the bound (sigma large for the data, or few references), one matrix
product of all queries against all references is cheaper, and is used instead
(`DENSE_FRACTION`). Either way the sum is exact but for the terms more than 80 nats below a
query's largest, which are left out or, within a scored tile, rounded up to e^-80 (float32 exp is
~10x slower where its result is subnormal): both change log p by < M e^-80. Both sides are centred
on the reference mean first, which keeps the float32 cancellation error of
||s - mu||^2 = ||s||^2 + ||mu||^2 - 2 s.mu small: about 1e-7 (||s||^2 + ||mu||^2) / (2 sigma^2)
nats in log p, norms taken from the reference mean (~1e-3 for raw HalfCheetah states).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from algos.common.checks import require_choice, require_positive
from algos.common.normalizers import RunningMeanStd
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

REFERENCE_UPDATES = ("ring", "reservoir")
TILE = 256           # references per tile (a k-d tree leaf)
BOX_AXES = 4         # principal axes the tiles' bounding boxes live on
CUTOFF = 80.0        # exp(-80) ~ 2e-35: kernels this far below a query's largest are negligible in float32
DENSE_FRACTION = 0.6  # above this fraction of (tile, query) pairs left to score, score all pairs at once


class _Tiles(NamedTuple):
    """The reference set, standardised and centred, grouped into the leaves of a k-d tree."""
    mean: torch.Tensor | None      # state standardisation (normalise_states), [D]
    inv_std: torch.Tensor | None
    centre: torch.Tensor           # reference mean after standardisation, [D]
    axes: torch.Tensor             # orthonormal principal axes, [D, k]
    low: torch.Tensor              # each tile's bounding box on those axes, [n_tiles, k] (+inf if empty)
    high: torch.Tensor             # [n_tiles, k] (-inf if empty)
    columns: torch.Tensor          # [n_tiles, D + 1, size]: (mu, -||mu||^2 / 2) / sigma^2, padding (0, -inf)
    max_sq_norm: float             # max ||mu||^2, for the float32 margin


def kd_tree_leaves(points: np.ndarray, leaf_size: int) -> np.ndarray:
    """Leaves of a balanced k-d tree over points [M, k]: each node is split at its median along its
    widest axis, down to 2^depth leaves of ceil(M / 2^depth) <= leaf_size rows. Returns the row
    indices in each leaf, [2^depth, size], where M marks a padding slot."""
    m, k = points.shape
    depth = max(0, math.ceil(math.log2(m / leaf_size)))
    n_leaves, size = 1 << depth, -(-m // (1 << depth))
    slot = np.arange(n_leaves * size)
    coords = np.ascontiguousarray(points.T[:, slot % m], dtype=np.float32)  # padding repeats points
    for level in range(depth):
        nodes = coords.reshape(k, 1 << level, -1)
        widest = (nodes.max(2) - nodes.min(2)).argmax(0)
        key = nodes[widest, np.arange(1 << level)]                   # [nodes, node size]
        split = np.argpartition(key, key.shape[1] // 2, axis=1)      # lower half | upper half
        slot = np.take_along_axis(slot.reshape(1 << level, -1), split, 1).reshape(-1)
        coords = np.take_along_axis(nodes, np.broadcast_to(split, nodes.shape), 2).reshape(k, -1)
    return np.where(slot < m, slot, m).reshape(n_leaves, size)


class KDEBonus(ExplorationMethod):
    """-log of an RBF kernel density over a bounded reference set of visited states."""

    requires = Requirements(agent_families=("on_policy", "off_policy"), observation_kinds=("vector",))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 sigma: float = 0.2, max_reference: int = 50000, reference_update: str = "ring",
                 normalise_states: bool = False, block_elements: int = 1 << 20):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        require_positive("exploration.sigma", sigma, integer=False)
        require_positive("exploration.max_reference", max_reference)
        require_choice("exploration.reference_update", reference_update, REFERENCE_UPDATES)
        require_positive("exploration.block_elements", block_elements)
        self.sigma, self.max_reference = float(sigma), int(max_reference)
        self.reference_update, self.normalise_states = reference_update, bool(normalise_states)
        self.block_elements = int(block_elements)
        self.dim = int(np.prod(observation_space.shape))
        self.torch_device = torch.device(device)
        # allocated at the first add (the runner refuses pixel observations after construction)
        self.reference = torch.zeros(0, self.dim, dtype=torch.float32, device=self.torch_device)
        self.size = 0  # filled rows of `reference`
        self.seen = 0  # states offered so far (ring: the next one goes to row seen % max_reference)
        self.rng = np.random.default_rng(seed)
        self.state_rms = RunningMeanStd((self.dim,))
        self._tiles: _Tiles | None = None  # built on demand from the reference set, dropped when it changes
        self.pending: list[np.ndarray] = []  # observed states not yet in the reference set

    # -- the density (eq. 1, 2) -----------------------------------------------------------------
    def _build_tiles(self) -> _Tiles:
        """Standardise and centre the references, and group them into k-d tree tiles (step 1)."""
        ref = self.reference[:self.size]
        mean = inv_std = None
        if self.normalise_states:
            mean = torch.as_tensor(self.state_rms.mean, dtype=torch.float32, device=ref.device)
            inv_std = torch.as_tensor(1.0 / np.sqrt(self.state_rms.var + 1e-8), dtype=torch.float32,
                                      device=ref.device)
            ref = (ref - mean) * inv_std
        centre = ref.mean(0)
        ref = ref - centre
        # principal axes, orthonormal to float64 precision: the box bound needs ||A^T v|| <= ||v||
        _, vectors = torch.linalg.eigh((ref.t() @ ref).double())
        axes = vectors[:, -min(BOX_AXES, self.dim):].float()
        projected = ref @ axes
        leaves = torch.as_tensor(kd_tree_leaves(projected.cpu().numpy(), TILE), device=ref.device)
        pad = torch.full((1, axes.shape[1]), math.inf, device=ref.device)
        low = torch.cat([projected, pad])[leaves].amin(1)
        high = torch.cat([projected, -pad])[leaves].amax(1)
        # a query's score against mu is [s, 1] . column = (s.mu - ||mu||^2 / 2) / sigma^2
        sq_norm = (ref * ref).sum(1)
        column = torch.cat([ref, -0.5 * sq_norm[:, None]], 1) / self.sigma**2
        padding = torch.zeros(1, self.dim + 1, device=ref.device)
        padding[0, -1] = -math.inf  # a padding slot scores -inf (adds nothing)
        columns = torch.cat([column, padding])[leaves].transpose(1, 2).contiguous()
        return _Tiles(mean, inv_std, centre, axes, low, high, columns, float(sq_norm.max()))

    @torch.inference_mode()
    def log_density(self, states: np.ndarray) -> np.ndarray:
        """log p(s) of eq. (1) for states [B, ...] against the current reference set, float64 [B]."""
        if self.size == 0:
            raise ValueError("the reference set is empty")
        if self._tiles is None:
            self._tiles = self._build_tiles()
        tiles = self._tiles
        x = torch.as_tensor(np.asarray(states, np.float32).reshape(-1, self.dim), device=self.torch_device)
        if tiles.mean is not None:
            x = (x - tiles.mean) * tiles.inv_std
        x = x - tiles.centre
        scale = 1.0 / (2.0 * self.sigma**2)
        sq_norm = (x * x).sum(1)
        # [s, 1] . column = (2 s.mu - ||mu||^2) / 2 sigma^2: eq. (1)'s exponent but for its -||s||^2 term
        rows = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        bound = self._box_bound(tiles, x)  # [B, n_tiles] <= ||s - mu||^2 for every mu in the tile
        # pass 1: the nearest tile by the bound gives an exact score, hence d_best
        home = bound.argmin(1)
        first = torch.argsort(home, stable=True)
        peak = torch.full((len(x),), -math.inf, device=x.device)
        for queries, scores in self._pair_scores(tiles, rows, home[first], first):
            peak.scatter_reduce_(0, queries, scores.amax(1), "amax")
        # pass 2: tiles that may hold a kernel within CUTOFF of the largest; the margin covers float32
        # rounding in the scores, the axes and the boxes (~1e-6 of the squared norms)
        margin = 2e-5 * (sq_norm + tiles.max_sq_norm) + 1e-6
        live = bound <= (sq_norm - peak / scale + CUTOFF / scale + margin)[:, None]
        if torch.count_nonzero(live) > DENSE_FRACTION * live.numel():
            total, peak = self._dense_sums(tiles, rows)
        else:
            tile_of, query_of = live.t().contiguous().nonzero(as_tuple=True)  # grouped by tile
            total = torch.zeros(len(x), device=x.device)
            for queries, scores in self._pair_scores(tiles, rows, tile_of, query_of):
                # online log-sum-exp: raise the running peaks, rescale the sums, add the rows
                # (one query against one tile) that reach within CUTOFF of their query's peak
                row_peak = scores.amax(1)
                new_peak = peak.scatter_reduce(0, queries, row_peak, "amax")
                total.mul_(torch.exp(peak - new_peak))
                peak = new_peak
                keep = (row_peak > peak[queries] - CUTOFF).nonzero().squeeze(1)
                terms = scores[keep].sub_(peak[queries[keep], None])
                total.index_add_(0, queries[keep], terms.clamp_min_(-CUTOFF).exp_().sum(1))
        out = total.log_() + peak - sq_norm * scale
        return out.double().cpu().numpy() - math.log(self.size)

    @staticmethod
    def _box_bound(tiles: _Tiles, x: torch.Tensor) -> torch.Tensor:
        """Squared distance from each query to each tile's bounding box on the principal axes: a lower
        bound of ||s - mu||^2 over the tile's references, [B, n_tiles]. Blocks of 1024 queries, so
        that the temporaries stay in cache."""
        on_axes = x @ tiles.axes
        low, high = tiles.low.t().contiguous(), tiles.high.t().contiguous()  # [k, n_tiles]
        bound = x.new_zeros(len(x), len(tiles.low))
        for start in range(0, len(x), 1024):
            xb, out = on_axes[start:start + 1024], bound[start:start + 1024]
            for axis in range(xb.shape[1]):
                below = (low[axis] - xb[:, axis, None]).clamp_min_(0.0)  # an empty tile's box: +inf
                out.addcmul_(below, below)
                above = torch.sub(xb[:, axis, None], high[axis], out=below).clamp_min_(0.0)
                out.addcmul_(above, above)
        return bound

    def _pair_scores(self, tiles: _Tiles, rows: torch.Tensor, tile_of: torch.Tensor, query_of: torch.Tensor):
        """Scores of (tile, query) pairs sorted by tile, one matrix product per tile, a window of
        <= block_elements / size pairs at a time: yields (queries [R], scores [R, size]); the
        scores' buffer is reused by the next window."""
        size = tiles.columns.shape[2]
        ends = torch.cumsum(torch.bincount(tile_of, minlength=len(tiles.columns)), 0).tolist()
        window = max(1, self.block_elements // size)
        buffer = rows.new_empty(min(window, len(query_of)), size)
        tile = 0
        for start in range(0, len(query_of), window):
            stop = min(start + window, len(query_of))
            gathered = rows.index_select(0, query_of[start:stop])
            position = start
            while position < stop:
                while ends[tile] <= position:
                    tile += 1
                end = min(ends[tile], stop)
                torch.mm(gathered[position - start:end - start], tiles.columns[tile],
                         out=buffer[position - start:end - start])
                position = end
            yield query_of[start:stop], buffer[:stop - start]

    def _dense_sums(self, tiles: _Tiles, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every query against every reference, in blocks of queries: (sum of exp(score - peak), peak)."""
        columns = tiles.columns.transpose(0, 1).reshape(rows.shape[1], -1)  # [D + 1, n_tiles * size]
        block = max(1, self.block_elements // columns.shape[1])
        total, peak = torch.empty(len(rows), device=rows.device), torch.empty(len(rows), device=rows.device)
        for start in range(0, len(rows), block):
            scores = rows[start:start + block] @ columns
            peak[start:start + block] = scores.amax(1)
            terms = scores.sub_(peak[start:start + block, None]).clamp_min_(-CUTOFF).exp_()
            total[start:start + block] = terms.sum(1)
        return total, peak

    def observe(self, transitions: Transitions) -> None:
        """New states wait in `pending` until `update` adds them to the reference set, so that a
        batch is scored against the states visited before it."""
        self.pending.append(np.asarray(transitions.obs, np.float32).reshape(len(transitions), self.dim))

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        """B(s) = -log p(s) for the state each action was taken in, [B] (zeros while the reference
        set is empty)."""
        if self.size == 0:
            return np.zeros(len(transitions))
        return -self.log_density(transitions.obs)

    # -- the reference set ----------------------------------------------------------------------
    def add(self, states: np.ndarray) -> None:
        """Put states [B, ...] into the reference set (ring buffer or reservoir)."""
        x = np.asarray(states, np.float32).reshape(-1, self.dim)
        n = len(x)
        if self.normalise_states:
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
        self._tiles = None
        self.reference[torch.as_tensor(slots, device=self.torch_device)] = torch.as_tensor(
            x, device=self.torch_device)

    def update(self, transitions: Transitions, feedback=None) -> dict:
        for states in self.pending:
            self.add(states)
        self.pending = []
        return {"reference_size": self.size}

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reference": self.reference[:self.size].cpu().clone(), "size": self.size,
                "seen": self.seen, "rng": self.rng.bit_generator.state,
                "state_rms": self.state_rms.state_dict(), "pending": [p.copy() for p in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.seen = state["size"], state["seen"]
        self._tiles = None
        self.reference = torch.zeros(self.max_reference if self.size else 0, self.dim, dtype=torch.float32,
                                     device=self.torch_device)
        self.reference[:self.size] = state["reference"].to(self.torch_device)
        self.rng.bit_generator.state = state["rng"]
        self.state_rms.load_state_dict(state["state_rms"])
        self.pending = [p.copy() for p in state["pending"]]
