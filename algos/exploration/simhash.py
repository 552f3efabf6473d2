"""#Exploration (Tang et al., NIPS 2017, arXiv 1611.04717): count-based exploration with SimHash.

The paper's algorithm box (Algorithm 1), per iteration, on the batch of states {s_t}:

  1. code   phi(s) = sgn(A g(s)) in {-1, 1}^k        (Eq. 2; A is k x d with i.i.d. N(0, 1) entries,
                                                      drawn once and kept fixed)
  2. count  n(phi(s_t)) += 1 for every state in the batch
  3. bonus  r+(s_t) = beta / sqrt(n(phi(s_t)))      (Eq. 1; beta is the runner's `coef`)

Counts live in a count-min sketch (as in the reference code, docs/papers.md §3): the k bits are folded
into one key per table, key_j = sum_i b_i 2^i mod p_j, for several prime table sizes p_j, and the
count of a code is the minimum over the tables (never below the true count; equal to it unless every
table collides). As in the reference code the batch's own states are counted BEFORE the query, and
the bonus is 1 / max(1, sqrt(n)). The bonus counts states, not (state, action) pairs (paper §2):
r_int[t] prices obs[t], the state in which actions[t] was taken (the reference code's
`predict(path)` on the path's observations).

Preprocessing g (config keys below):
  - vector observations: the identity (the paper's rllab tasks, docs/papers.md §3.1);
  - pixel observations (uint8 [C, H, W] stacked frames): only the latest frame, the last channel of
    the stack (docs/papers.md §3: "the hash sees the last frame only"; SlicingPreprocessor in exp-027.py),
    average-pooled by `pixel_downsample` (1 keeps the 42 x 42 frames the paper's Atari setup uses),
    flattened and scaled to [-1, 1] (x / 127.5 - 1), so that the random hyperplanes pass through
    mid-grey rather than through the black image: the reference's range, (x / 255) * 2 - 1 (its Atari
    env's observations, hashed with count_target="observations"; docs/papers.md §16.7).

`observe` adds the new batch to the sketch; `intrinsic_reward` is then a pure query of the counts
(the batch's own states included, as in the reference code), so scoring a batch twice never counts it
twice, and an off-policy agent can price replay minibatches. The learned-hash variant (ae_simhash.py) reuses
`SimHash`, `CountMinSketch` and `count_bonus` from this file.
"""
from __future__ import annotations

import numpy as np
import torch

from algos.common.checks import require, require_positive
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements

# The reference code's "6M" buckets (hashing_bonus_evaluator.py, exp-027.py; docs/papers.md §3).
PAPER_BUCKET_SIZES = (999931, 999953, 999959, 999961, 999979, 999983)
CHUNK = 1024  # states preprocessed and projected at a time


def is_pixels(observation_space) -> bool:
    return len(observation_space.shape) == 3


def latest_frame(obs: np.ndarray, downsample: int = 1) -> np.ndarray:
    """[B, C, H, W] stacks -> [B, H / f, W / f] latest frames (the last channel), average-pooled by
    f (edges that do not fill a whole f x f cell are dropped); uint8 stays uint8 when f = 1."""
    frame = obs[:, -1]
    if downsample > 1:
        b, h, w = frame.shape
        h, w = h // downsample * downsample, w // downsample * downsample
        frame = frame[:, :h, :w].astype(np.float32)
        frame = frame.reshape(b, h // downsample, downsample, w // downsample, downsample).mean(axis=(2, 4))
    return frame


class Preprocessor:
    """g(s) for a flat batch of observations [B, ...] -> [B, d] float32 (module docstring).

    Writes into a buffer reused from call to call (valid until the next call): fresh 100k x 1764
    float arrays cost more in page faults than the projection itself."""

    def __init__(self, observation_space, downsample: int = 1):
        self.pixels, self.downsample = is_pixels(observation_space), int(downsample)
        self.buffer = np.empty(0, np.float32)
        dummy = np.zeros((1, *observation_space.shape), observation_space.dtype)
        self.dim = self(dummy).shape[1]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = latest_frame(obs, self.downsample) if self.pixels else obs
        x = x.reshape(len(x), -1)
        if self.buffer.size < x.size:
            self.buffer = np.empty(x.size, np.float32)
        out = self.buffer[:x.size].reshape(x.shape)
        if self.pixels:  # x / 127.5 - 1, in place
            np.multiply(x, np.float32(1 / 127.5), out=out, casting="unsafe")
            np.subtract(out, np.float32(1.0), out=out)
        else:
            np.copyto(out, x, casting="unsafe")
        return out


class SimHash:
    """phi(x) = sgn(A x) as k bits (1 where A x > 0), A a fixed k x d matrix of N(0, 1) entries."""

    def __init__(self, dim_in: int, dim_key: int, rng: np.random.Generator):
        self.projection = rng.standard_normal((dim_key, dim_in)).astype(np.float32)

    def bits(self, x: np.ndarray) -> np.ndarray:
        """[B, d] float32 -> [B, k] bool (torch's matmul: it honours the run's thread count)."""
        y = torch.from_numpy(np.ascontiguousarray(x, np.float32)) @ torch.from_numpy(self.projection).T
        return (y > 0).numpy()

    def state_dict(self) -> dict:
        return {"projection": self.projection.copy()}

    def load_state_dict(self, state: dict) -> None:
        require(state["projection"].shape == self.projection.shape, "exploration (checkpoint)",
                f"SimHash projection of shape {state['projection'].shape} does not fit "
                f"{self.projection.shape} (dim_key or the observation size changed)")
        self.projection = state["projection"].copy()


class CountMinSketch:
    """Counts of k-bit codes in len(bucket_sizes) tables, stored back to back in one int32 array.

    key_j(b) = sum_i b_i 2^i mod p_j (the reference code's sum_i b_i (2^i mod p_j) mod p_j), computed
    on the code packed into 64-bit words w_m: key_j = sum_m (w_m mod p_j)(2^(64 m) mod p_j) mod p_j,
    exact in uint64 for p_j < 2^26. count(b) = min_j table_j[key_j(b)] >= the true count of b."""

    def __init__(self, dim_key: int, bucket_sizes=PAPER_BUCKET_SIZES):
        self.dim_key, self.words = int(dim_key), (int(dim_key) + 63) // 64
        self.bucket_sizes = np.asarray(bucket_sizes, np.uint64)
        self.word_weights = np.array([[pow(2, 64 * m, int(p)) for p in bucket_sizes]
                                      for m in range(self.words)], np.uint64)
        self.offsets = np.concatenate([[0], np.cumsum(bucket_sizes)[:-1]]).astype(np.int64)
        self.counts = np.zeros(int(np.sum(bucket_sizes)), np.int32)  # < 2^31 visits per code

    def keys(self, bits: np.ndarray) -> np.ndarray:
        """[B, k] bits -> [B, J] indices into `counts` (one per table)."""
        pad = self.words * 64 - self.dim_key
        if pad:
            bits = np.concatenate([bits, np.zeros((len(bits), pad), bool)], axis=1)
        words = np.packbits(bits, axis=1, bitorder="little").view("<u8")  # [B, words]
        terms = (words[:, :, None] % self.bucket_sizes) * self.word_weights  # each < 2^52
        return (terms.sum(axis=1) % self.bucket_sizes).astype(np.int64) + self.offsets

    def query(self, keys: np.ndarray) -> np.ndarray:
        """Count of each row's code [B] (the minimum over the tables)."""
        return self.counts[keys].min(axis=1).astype(np.int64)

    def add(self, keys: np.ndarray) -> int:
        """Count every row of `keys` once; returns how many buckets of the first table were empty."""
        unique, batch_counts = np.unique(keys, return_counts=True)
        first = unique[unique < int(self.bucket_sizes[0])]
        new_in_first = int(np.count_nonzero(self.counts[first] == 0))
        self.counts[unique] += batch_counts.astype(np.int32)
        return new_in_first

    def state_dict(self) -> dict:
        nonzero = np.flatnonzero(self.counts)  # sparse: a few entries where 6M would be stored
        return {"bucket_sizes": self.bucket_sizes.copy(), "index": nonzero, "count": self.counts[nonzero]}

    def load_state_dict(self, state: dict) -> None:
        saved = np.asarray(state["bucket_sizes"], np.uint64)
        require(np.array_equal(saved, self.bucket_sizes), "exploration.bucket_sizes",
                f"the checkpoint's sketch has {saved.tolist()}")
        self.counts[:] = 0
        self.counts[state["index"]] = state["count"]


def count_bonus(counts: np.ndarray) -> np.ndarray:
    """r+ = 1 / max(1, sqrt(n)) (the reference code's form of the paper's beta / sqrt(n); beta is
    applied by the runner as `coef`)."""
    return 1.0 / np.maximum(1.0, np.sqrt(counts))


def check_hash_config(dim_key: int, bucket_sizes) -> None:
    require_positive("exploration.dim_key", dim_key)
    require(isinstance(bucket_sizes, (list, tuple)) and len(bucket_sizes) > 0
            and all(isinstance(p, int) and 1 < p < 2**26 for p in bucket_sizes), "exploration.bucket_sizes",
            f"must be a non-empty list of integers in (1, 2^26) (primes), got {bucket_sizes!r}")


class CodeCounter:
    """The counting half shared by SimHash and AE-SimHash: bits -> sketch keys -> counts -> bonus."""

    def __init__(self, dim_key: int, bucket_sizes):
        self.sketch = CountMinSketch(dim_key, bucket_sizes)
        self.distinct = 0     # non-empty buckets of the first table: distinct codes seen (lower bound)
        self.total = 0        # states counted so far

    def count(self, bits: np.ndarray) -> None:
        keys = self.sketch.keys(bits)
        self.distinct += self.sketch.add(keys)
        self.total += len(keys)

    def bonus(self, bits: np.ndarray) -> np.ndarray:
        return count_bonus(self.sketch.query(self.sketch.keys(bits)))

    def metrics(self) -> dict:
        return {"distinct_codes": self.distinct, "counted_states": self.total}

    def state_dict(self) -> dict:
        return {"sketch": self.sketch.state_dict(), "distinct": self.distinct, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.sketch.load_state_dict(state["sketch"])
        self.distinct, self.total = state["distinct"], state["total"]


class SimHashCount(ExplorationMethod):
    """TRPO-SimHash / TRPO-pixel-SimHash: r_int(s_t) = 1 / max(1, sqrt(n(sgn(A g(s_t)))))."""

    requires = Requirements(agent_families=("on_policy", "off_policy"))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 dim_key: int = 256, bucket_sizes=PAPER_BUCKET_SIZES, pixel_downsample: int = 1):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        check_hash_config(dim_key, bucket_sizes)
        require_positive("exploration.pixel_downsample", pixel_downsample)
        self.preprocess = Preprocessor(observation_space, pixel_downsample)
        self.dim_key = int(dim_key)
        self.hash = SimHash(self.preprocess.dim, dim_key, np.random.default_rng(seed))
        self.counter = CodeCounter(dim_key, list(bucket_sizes))

    def codes(self, obs: np.ndarray) -> np.ndarray:
        """phi(s) as bits [B, k] for a flat batch of observations [B, ...], in chunks (a 100k-frame
        float copy would cost more in page faults than the projection itself)."""
        return np.concatenate([self.hash.bits(self.preprocess(obs[i:i + CHUNK]))
                               for i in range(0, len(obs), CHUNK)] or [np.zeros((0, self.dim_key), bool)])

    def observe(self, transitions: Transitions) -> None:
        self.counter.count(self.codes(transitions.obs))

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        return self.counter.bonus(self.codes(transitions.obs))

    def update(self, transitions: Transitions, feedback=None) -> dict:
        return self.counter.metrics()

    def state_dict(self) -> dict:
        return {"hash": self.hash.state_dict(), "counter": self.counter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.hash.load_state_dict(state["hash"])
        self.counter.load_state_dict(state["counter"])
