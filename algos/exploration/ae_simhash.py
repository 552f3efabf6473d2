"""#Exploration's learned hash (Tang et al., NIPS 2017, §2.3): AE-SimHash, "TRPO-AE-SimHash" of Table 1.

An autoencoder with a sigmoid code layer b(s) in [0, 1]^D learns a binary code of the states; the
count bonus is then SimHash applied to the rounded code (docs/papers.md §3):

  1. code     b(s) = sigmoid(f(g(s))), the code layer's output (no noise: this is what is rounded
              and hashed, and what the binarisation term acts on)
  2. decoder  input during training: b(s) + u, u ~ U(-a, a) i.i.d. per unit, a = 0.3, added to the
              SIGMOID OUTPUT (§2.3: with a > 1/4 the decoder can tell codes apart only when their
              units sit near 0 or 1, so training drives b(s) towards binary values, as in semantic
              hashing). The reference code adds it there too: `sigmoid(x + b) + U(-0.3, 0.3)` in
              `DiscreteEmbeddingNonlinearityLayer` (rllab-curriculum, conv_bnn_count.py)
  3. loss     L = 1/N sum_n [ -log p(s_n | b(s_n) + u_n) + lambda / D sum_i min((1 - b_i(s_n))^2, b_i(s_n)^2) ]
              (Eq. 4: reconstruction plus the binarisation term, on the noise-free b(s_n) as in the
              reference code's `noise_mask=0` pass), minimised with Adam on minibatches from a replay
              of recent states, `train_steps` steps after every iteration
  4. hash     phi(s) = sgn(A (2 round(b(s)) - 1)),  A a fixed k x D N(0, 1) matrix (the rounded code,
              downsampled to k bits by SimHash; simhash.py's SimHash, sketch and bonus; the reference
              code's `obs_to_key` maps round(b) to {-1, 1} and projects it the same way)
  5. bonus    r_int(s) = 1 / max(1, sqrt(n(phi(s))))  (beta is the runner's `coef`)

The input g(s): for pixels the latest frame of the stack (last channel), average-pooled by
`pixel_downsample`, quantised into `intensity_bins` levels q = round(x / 255 (bins - 1)); the AE
sees q scaled to [-1, 1] and reconstructs q (the reference code's `encode_obs`/`decode_obs`: its
replay stores the quantised frame, the AE's input is the frame decoded back from it into [-1, 1],
and the same quantised frame is hashed). For vectors, g(s) is the observation itself.

Reconstruction -log p(s | z):
  - pixels: a pixel-wise softmax over the `intensity_bins` intensity levels (64 in the reference
    launcher, `ind_softmax=True, num_classes=64`): -log p is the categorical cross-entropy of each
    pixel's bin, summed over pixels. As in the reference's `IndependentSoftmaxLayer`, the logits get a
    learned bias per pixel and bin, so the mean frame costs the code nothing. Not copied: the
    reference's label smoothing of the targets (0.003 per bin), a regulariser outside Eq. 4;
  - vectors (our extension: the paper uses the AE on Atari frames only): 0.5 ||x - x_hat||^2, a
    unit-variance Gaussian (up to a constant); unbounded values have no intensity bins.

Architecture (the paper's AE details, appendix A, are NOT FOUND in docs/papers.md; the reference
launcher's AE is a larger conv net on 52 x 52 frames; these are our choices, kept small for a CPU):
  - pixels, 1 x 42 x 42: conv 16 4x4/2 -> conv 32 3x3/2 -> conv 32 3x3/2 (ReLU) -> linear D (the code
    pre-activation); decoder: linear -> 32 x 6 x 6 -> transposed convs mirroring the encoder ->
    `intensity_bins` logits per pixel (resized to the frame if the mirror does not land on its size);
  - vectors: MLP d -> 64 -> 64 -> D, and D -> 64 -> 64 -> d (ReLU).

`code_batch_norm` (off by default) batch-normalises the code pre-activations over the minibatch
(BatchNorm1d with its default scale 1 and shift 0; hashing then uses the running statistics, eval
mode). §2.3 describes no normalisation of the code layer; the reference launcher (`batch_norm=True`)
does put a BatchNormLayer before the code sigmoid, as after all its layers. Measured here: on
vector clusters (tests/test_ae_simhash.py) the noise and the binarisation term alone make the codes
binary and distinct per cluster, while with batch norm the units stay near 0.5 for hundreds of
steps (the normalised pre-activations keep unit variance until the scale grows). On four synthetic
42 x 42 "rooms" without batch norm the code saturated within ~40 steps into codes that told only
2 of the rooms apart for the next ~100 steps (Adam moves every unit along the frames' common
component) and the reconstruction stalled; with batch norm all 4 stayed apart, but not yet binary
after 200 steps. Hence the option.
As in the paper, the code is recomputed with the current AE every iteration, so a state's code can
drift as the AE learns; counts keep whatever codes they were made with.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algos.common.buffers import RingBuffer
from algos.common.checks import check_finite, require, require_bool, require_in_range, require_positive
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements
from algos.exploration.simhash import (
    CHUNK,
    PAPER_BUCKET_SIZES,
    CodeCounter,
    SimHash,
    check_hash_config,
    is_pixels,
    latest_frame,
)


def code_norm(code_dim: int, enabled: bool) -> nn.Module:
    """`code_batch_norm`: batch normalisation of the code pre-activations, or nothing (the default)."""
    return nn.BatchNorm1d(code_dim) if enabled else nn.Identity()


class ConvAE(nn.Module):
    """Pixels: 1 x H x W in [-1, 1] -> D code pre-activations; codes -> [bins, H, W] softmax logits."""

    def __init__(self, height: int, width: int, code_dim: int, bins: int, batch_norm: bool):
        super().__init__()
        self.size = (height, width)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            self.torso_shape = self.encoder[:-1](torch.zeros(1, 1, height, width)).shape[1:]
        flat = int(np.prod(self.torso_shape))
        self.to_code = nn.Sequential(nn.Linear(flat, code_dim), code_norm(code_dim, batch_norm))
        self.from_code = nn.Sequential(nn.Linear(code_dim, flat), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 3, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 16, 3, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(16, bins, 4, 2, 1))
        self.pixel_bias = nn.Parameter(torch.zeros(bins, height, width))  # the reference's `pixel_b`

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(x.unsqueeze(1)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.from_code(z).view(-1, *self.torso_shape))
        if out.shape[-2:] != self.size:
            out = F.interpolate(out, size=self.size, mode="bilinear", align_corners=False)
        return out + self.pixel_bias

    @staticmethod
    def neg_log_likelihood(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(s | z) [B]: the per-pixel softmax cross-entropy of the target bins [B, H, W]
        under the logits [B, bins, H, W], summed over pixels."""
        return F.cross_entropy(logits, target, reduction="none").flatten(1).sum(1)


class MlpAE(nn.Module):
    """Vectors: d -> D code pre-activations -> d reconstruction."""

    def __init__(self, dim: int, code_dim: int, batch_norm: bool, hidden=(64, 64)):
        super().__init__()
        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
            return nn.Sequential(*layers)
        self.encode = nn.Sequential(mlp([dim, *hidden, code_dim]), code_norm(code_dim, batch_norm))
        self.decode = mlp([code_dim, *reversed(hidden), dim])

    @staticmethod
    def neg_log_likelihood(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (recon - x).pow(2).sum(1)


class AESimHashCount(ExplorationMethod):
    """TRPO-AE-SimHash: counts of SimHash(round(b(s))) for the AE code b(s)."""

    requires = Requirements(agent_families=("on_policy", "off_policy"))

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 dim_key: int = 64, code_dim: int = 256, noise: float = 0.3, binarisation: float = 10.0,
                 intensity_bins: int = 64, code_batch_norm: bool = False,
                 learning_rate: float = 1e-3, train_steps: int = 20, minibatch_size: int = 64,
                 replay_size: int = 20000, pixel_downsample: int = 1, bucket_sizes=PAPER_BUCKET_SIZES):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        check_hash_config(dim_key, bucket_sizes)
        for key, value in [("code_dim", code_dim), ("train_steps", train_steps), ("replay_size", replay_size),
                           ("minibatch_size", minibatch_size), ("pixel_downsample", pixel_downsample)]:
            require_positive(f"exploration.{key}", value)
        require_in_range("exploration.noise", noise, 0.0, 100.0)
        require_in_range("exploration.binarisation", binarisation, 0.0, 1e9)
        require_positive("exploration.learning_rate", learning_rate, integer=False)
        require_positive("exploration.intensity_bins", intensity_bins)
        require(2 <= intensity_bins <= 256, "exploration.intensity_bins",
                f"must be an integer in [2, 256] (levels of a uint8 pixel), got {intensity_bins!r}")
        batch_norm = require_bool("exploration.code_batch_norm", code_batch_norm)
        self.pixels, self.downsample = is_pixels(observation_space), int(pixel_downsample)
        self.noise, self.binarisation, self.bins = float(noise), float(binarisation), int(intensity_bins)
        self.train_steps, self.minibatch_size = int(train_steps), int(minibatch_size)
        self.device = torch.device(device)
        ss = np.random.SeedSequence(seed).spawn(3)  # AE init + noise, minibatches, SimHash matrix
        sample = self._inputs(np.zeros((1, *observation_space.shape), observation_space.dtype))
        torch_seed = int(ss[0].generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            self.ae = (ConvAE(*sample.shape[1:], code_dim, self.bins, batch_norm) if self.pixels
                       else MlpAE(sample.shape[1], code_dim, batch_norm)).to(self.device)
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=learning_rate)
        self.noise_rng = torch.Generator(device=self.device)
        self.noise_rng.manual_seed(torch_seed)
        self.rng = np.random.default_rng(ss[1])
        self.replay = RingBuffer(replay_size, sample.shape[1:], sample.dtype)
        self.hash = SimHash(code_dim, dim_key, np.random.default_rng(ss[2]))
        self.counter = CodeCounter(dim_key, list(bucket_sizes))

    # -- the AE ---------------------------------------------------------------------------------------
    def _inputs(self, obs: np.ndarray) -> np.ndarray:
        """What the replay stores: latest frames [B, H, W] (uint8 unless pooled) for pixels, float32
        vectors [B, d] otherwise."""
        if self.pixels:
            return latest_frame(obs, self.downsample)
        return np.asarray(obs, np.float32).reshape(len(obs), -1)

    def _tensors(self, inputs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(AE input, reconstruction target): for pixels the quantised frame scaled to [-1, 1] and
        the bins q [B, H, W] (int64); for vectors the vector twice."""
        x = torch.as_tensor(inputs, device=self.device).float()
        if not self.pixels:
            return x, x
        q = torch.round(x * ((self.bins - 1) / 255.0))
        return q * (2.0 / (self.bins - 1)) - 1.0, q.long()

    def code(self, obs: np.ndarray) -> np.ndarray:
        """b(s) in [0, 1]^D, without noise, for a flat batch of observations [B, ...]."""
        out = []
        self.ae.eval()
        with torch.no_grad():
            for i in range(0, len(obs), CHUNK):
                x, _ = self._tensors(self._inputs(obs[i:i + CHUNK]))
                out.append(torch.sigmoid(self.ae.encode(x)).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.hash.projection.shape[1]), np.float32)

    def codes(self, obs: np.ndarray) -> np.ndarray:
        """phi(s) = sgn(A (2 round(b(s)) - 1)) as bits [B, k]."""
        rounded = (self.code(obs) > 0.5).astype(np.float32)
        return self.hash.bits(2.0 * rounded - 1.0)

    def loss(self, inputs: np.ndarray) -> tuple[torch.Tensor, dict]:
        """Eq. 4 on a minibatch of replay inputs (module docstring, steps 1-3)."""
        x, target = self._tensors(inputs)
        self.ae.train()
        b = torch.sigmoid(self.ae.encode(x))
        u = torch.rand(b.shape, generator=self.noise_rng, device=self.device)
        u = (2 * u - 1) * self.noise  # U(-a, a), on the sigmoid output
        nll = self.ae.neg_log_likelihood(self.ae.decode(b + u), target).mean()
        binary = torch.minimum((1 - b).pow(2), b.pow(2)).mean(1).mean()
        return nll + self.binarisation * binary, {"ae_nll": nll.item(), "ae_binarisation": binary.item()}

    # -- the exploration contract --------------------------------------------------------------------
    def observe(self, transitions: Transitions) -> None:
        """Count the batch with the current AE's codes, and keep its inputs for the AE's training."""
        self.counter.count(self.codes(transitions.obs))
        self.replay.add(self._inputs(transitions.obs))

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        return self.counter.bonus(self.codes(transitions.obs))

    def update(self, transitions: Transitions, feedback=None) -> dict:
        """Train the AE on recent states (Eq. 4)."""
        metrics, parts = self.counter.metrics(), {}
        for _ in range(self.train_steps):
            loss, parts = self.loss(self.replay.sample(self.rng, self.minibatch_size))
            check_finite("exploration (ae_simhash)", ae_loss=loss)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return {**metrics, **parts}

    def state_dict(self) -> dict:
        # A snapshot, not views: optimizer.load_state_dict keeps the tensors it is given.
        return {"ae": copy.deepcopy(self.ae.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "noise_rng": self.noise_rng.get_state(), "rng": self.rng.bit_generator.state,
                "replay": self.replay.state_dict(), "hash": self.hash.state_dict(),
                "counter": self.counter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.ae.load_state_dict(state["ae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise_rng.set_state(state["noise_rng"])
        self.rng.bit_generator.state = state["rng"]
        self.replay.load_state_dict(state["replay"])
        self.hash.load_state_dict(state["hash"])
        self.counter.load_state_dict(state["counter"])
