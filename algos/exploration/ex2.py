"""EX2: exploration with exemplar models (Fu, Co-Reyes, Levine, NIPS 2017, arXiv 1703.01260).

A novel state is one that is easy to tell apart from the states seen before. An exemplar model
trains a discriminator D_{x*} per exemplar x* against the background distribution P_X (the replay
of past states), and the optimal discriminator reveals the density (paper §3.1):

  D_{x*} = argmax_D  E_{delta_{x*}}[log D(x)] + E_{P_X}[log(1 - D(x))]             (Eq. 1)
  D_{x*}(x) = delta_{x*}(x) / (delta_{x*}(x) + P_X(x))                              (Eq. 2)
  P_X(x*) = (1 - D_{x*}(x*)) / D_{x*}(x*)                                           (Eq. 3)

For continuous states the delta is smoothed; EX2 puts the noise in a latent space (§3.2): an encoder
q(z | x) with a Gaussian latent (mean and log-variance), a latent classifier p(y | z) = D(z)^y
(1 - D(z))^(1-y), trained on the variational information-bottleneck objective

  max  E_{p~(x, y)} [ E_{q(z|x)}[log p(y | z)] - KL(q(z | x) || p(z)) ],  p(z) = N(0, I)   (Eq. 5)

which we maximise as the reference code does: Bernoulli log-likelihood - kl_weight * KL, one latent
sample per pair (reparameterised), the KL in closed form (`kl_to_standard_normal`).

Algorithm (the project page's box, and `parallel_trpo/batch_polopt.py` of jcoreyes/ex2 with its
default `eval_first=False`), once per policy iteration: `observe` takes the batch as the next
exemplars, `update` (called before `intrinsic_reward`: `fit_before_scoring`) does steps 1-2, and
`intrinsic_reward` step 3:

  1. if the replay holds >= min_replay_size states: train the discriminator for `first_train_itrs`
     steps the first time, `train_itrs` after, each on `batch_size` positive pairs (x, x), label 1,
     x drawn from the new batch (the exemplars), and `batch_size` negative pairs (x, x'), label 0,
     x' drawn from the replay (the past);
  2. append the batch to the replay (FIFO of `replay_size`);
  3. score every state of the batch: D = D(x, x) with deterministic latents (the means), clipped to
     [1e-5, 1 - 1e-5]; p = (1 - D) / D (Eq. 3); bonus r_int = -log p (the reference's "-log(p)").
  The runner then forms r = r_ext + coef * (r_int - median(r_int)) (`normalise: batch_median`).

The discriminator is trained on the batch before the batch is scored, because that is EX2's
algorithm: the batch's states are the exemplars, and the density they are scored under is that of
the PAST states (the negatives never include the batch), so the bonus still measures novelty with
respect to the past. `fit_before_scoring: false` scores first and trains in `update` after the agent's
update (the reference's `eval_first=True`). Scoring is pure and per row, so an off-policy agent can
price replay minibatches with the amortized model. "States" are observations concatenated with
actions when `use_actions` (discrete actions one-hot); on pixels, the LAST frame [H, W] of each
observation stack, without actions (the Atari runs, docs/papers.md §4).

The discriminators (the amortized, K-exemplar and conv models, and their hand-written training
step) are in ex2_models.py.

Differences from the reference code (all small; see the README): each encoder's log-variance head
reads its own encoder (the reference's second log-variance net reads encoder 1's features, a slip);
the Bernoulli likelihood is computed from the logit instead of a probability clipped at 1e-6 (equal
except at saturation); no bonus until the discriminator has been trained once (the reference scores
one batch with the untrained network, which the median subtraction turns into noise around 0).
On pixels, docs/papers.md §4 gives the conv layers, the feature size and the hidden sizes but not the conv
nonlinearity nor how the conv features meet the MLPs: ReLU, and the vector model's trunk after the
flattened features, are our choices.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from algos.common.buffers import RingBuffer
from algos.common.checks import NonFiniteError, require, require_in_range, require_positive
from algos.common.nets import observation_kind
from algos.common.rollout import Transitions
from algos.exploration.base import ExplorationMethod, Requirements
from algos.exploration.ex2_models import (
    _conv_output_size,
    _ConvLatentDiscriminator,
    _LatentDiscriminator,
    density_from_discriminator,
)


def _state_features(observation_space, action_space, use_actions: bool):
    """(dimension, function transitions -> states [B, dim] float32) for vector observations [+ actions]."""
    obs_dim = int(np.prod(observation_space.shape))
    if not use_actions:
        return obs_dim, lambda t: t.obs.reshape(len(t), obs_dim).astype(np.float32)
    if isinstance(action_space, gym.spaces.Discrete):
        n = int(action_space.n)
        act = lambda t: t.actions_one_hot(n)  # noqa: E731  (rllab's flat one-hot)
    else:
        n = int(np.prod(action_space.shape))
        act = lambda t: t.actions.reshape(len(t), n).astype(np.float32)  # noqa: E731
    return obs_dim + n, lambda t: np.concatenate([t.obs.reshape(len(t), obs_dim).astype(np.float32), act(t)], -1)


def _last_frame_features(observation_space):
    """(frame shape [H, W], function transitions -> states [B, H, W]) for pixel stacks [C, H, W]: only
    the LAST frame of the stack (docs/papers.md §4, Atari: "last frame only"), uint8 kept as uint8 (the
    replay stores bytes; the model scales them to [0, 1])."""
    dtype = np.uint8 if observation_space.dtype == np.uint8 else np.float32
    return (tuple(int(n) for n in observation_space.shape[1:]),
            lambda t: t.last_frame(t.obs).astype(dtype, copy=False))


def _check_conv(conv_filters, kernel, stride, frame_shape: tuple) -> tuple:
    filters = tuple(conv_filters) if isinstance(conv_filters, (list, tuple)) else ()
    require(len(filters) > 0 and all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters),
            "exploration.conv_filters", f"must be a non-empty list of positive integers, got {conv_filters!r}")
    require_positive("exploration.conv_kernel_size", kernel)
    require_positive("exploration.conv_stride", stride)
    size = _conv_output_size(min(frame_shape), filters, int(kernel), int(stride))
    require(size >= 1, "exploration.conv_filters", f"{len(filters)} conv layers of kernel {kernel}, stride "
            f"{stride} do not fit frames of {frame_shape[0]}x{frame_shape[1]}")
    return filters


class EX2(ExplorationMethod):
    """Amortized EX2: r_int(x) = -log p(x), p = (1 - D(x, x)) / D(x, x) (Eq. 3) from the exemplar-
    conditioned latent discriminator, trained on (x, x) vs (x, replay) pairs (Eq. 1, Eq. 5)."""

    requires = Requirements(agent_families=("on_policy", "off_policy"), observation_kinds=("vector", "pixels"))
    n_encoders = 2
    num_discriminators = 1

    def __init__(self, observation_space, action_space, *, seed: int = 0, device="cpu",
                 hidden_sizes=(32,), feature_dim: int | None = None, kl_weight: float = 0.1,
                 learning_rate: float = 1e-4, use_actions: bool = True, replay_size: int = 250_000,
                 min_replay_size: int = 10_000, train_itrs: int = 2000, first_train_itrs: int = 5000,
                 batch_size: int = 128, fit_before_scoring: bool = True, steps_per_draw: int = 100,
                 conv_filters=None, conv_kernel_size: int = 4, conv_stride: int = 2):
        super().__init__(observation_space, action_space, seed=seed, device=device)
        if conv_filters is not None:  # the Atari model's settings (exploration=ex2_atari): pixels only
            self.requires = Requirements(agent_families=self.requires.agent_families, observation_kinds=("pixels",),
                                         because=f"exploration.conv_filters={list(conv_filters)}")
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        require(len(hidden_sizes) > 0 and all(h > 0 for h in hidden_sizes), "exploration.hidden_sizes",
                f"must be a non-empty list of positive integers, got {list(hidden_sizes)}")
        feature_dim = hidden_sizes[-1] // 2 if feature_dim is None else feature_dim
        for key, value in [("feature_dim", feature_dim), ("replay_size", replay_size),
                           ("min_replay_size", min_replay_size), ("batch_size", batch_size),
                           ("first_train_itrs", first_train_itrs), ("steps_per_draw", steps_per_draw),
                           ("num_discriminators", self.num_discriminators)]:
            require_positive(f"exploration.{key}", value)
        require(isinstance(train_itrs, (int, float)) and train_itrs >= 0 and float(train_itrs).is_integer(),
                "exploration.train_itrs", f"must be a non-negative integer, got {train_itrs!r}")
        require_positive("exploration.learning_rate", learning_rate, integer=False)
        require_in_range("exploration.kl_weight", kl_weight, 0.0, math.inf)
        self.pixels = observation_kind(observation_space) == "pixels"
        self.train_itrs, self.first_train_itrs = int(train_itrs), int(first_train_itrs)
        self.batch_size, self.min_replay_size = int(batch_size), int(min_replay_size)
        self.fit_before_scoring, self.steps_per_draw = bool(fit_before_scoring), int(steps_per_draw)
        self.rng = np.random.default_rng(seed)                         # exemplar / replay indices
        self.torch_rng = torch.Generator().manual_seed(int(seed) % 2**63)  # init and latent noise
        if self.pixels:                                                # the Siamese conv model (Atari)
            require(not use_actions, "exploration.use_actions", "must be false with pixel observations "
                    f"(shape {observation_space.shape}): the conv encoders read the last frame only "
                    "(exploration=ex2_atari has EX2's Atari settings)")
            conv_filters = _check_conv((16, 8) if conv_filters is None else conv_filters, conv_kernel_size,
                                       conv_stride, observation_space.shape[1:])
            self.state_shape, self._features = _last_frame_features(observation_space)
            self.dim = math.prod(self.state_shape)
            self.model = _ConvLatentDiscriminator(self.state_shape, conv_filters, int(conv_kernel_size),
                                                  int(conv_stride), hidden_sizes, int(feature_dim),
                                                  self.n_encoders, kl_weight, learning_rate, self.torch_rng,
                                                  device)
            replay_dtype = np.uint8 if observation_space.dtype == np.uint8 else np.float32
        else:                                                          # the hand-differentiated MLP model
            self.dim, self._features = _state_features(observation_space, action_space, use_actions)
            self.state_shape = (self.dim,)
            self.model = _LatentDiscriminator(self.dim, hidden_sizes, int(feature_dim), self.n_encoders,
                                              self.num_discriminators, kl_weight, learning_rate, self.torch_rng)
            replay_dtype = np.float32
        self.replay = RingBuffer(replay_size, self.state_shape, replay_dtype)
        self.trainings = 0                                             # fits done (0: next is the first)
        self.exemplars: list[np.ndarray] = []                          # observed batches awaiting their fit

    # -- the exploration contract ---------------------------------------------------------------------
    def observe(self, transitions: Transitions) -> None:
        """The new states become the exemplars of the next fit; they join the replay (the negatives)
        only after it, so the discriminator always tells them apart from the PAST."""
        self.exemplars.append(self._exemplars(transitions))

    def update(self, transitions: Transitions, feedback=None) -> dict:
        """Fit on every observed batch in turn (algorithm steps 1-2). `discriminator_mean` is the mean D
        of the newest batch as `intrinsic_reward` scores it (after the fit when fit_before_scoring)."""
        metrics: dict = {}
        for exemplars in self.exemplars:
            d_scored = None if self.fit_before_scoring else self._mean_d(exemplars)
            metrics = self._fit(exemplars)
            if self.fit_before_scoring:
                d_scored = self._mean_d(exemplars)
            if d_scored is not None:
                metrics["discriminator_mean"] = d_scored
        self.exemplars = []
        return metrics

    def intrinsic_reward(self, transitions: Transitions) -> np.ndarray:
        """r_int = -log p(x) = -log((1 - D) / D) (Eq. 3, algorithm step 3), zero until the discriminator
        has trained."""
        if self.trainings == 0:
            return np.zeros(len(transitions))
        order, positions, total = self._exemplar_positions(transitions)
        d = torch.sigmoid(self._discriminate(self._features(transitions)[order], positions[order], total))
        bonus = np.empty(len(transitions))
        bonus[order] = -np.log(density_from_discriminator(d.double().numpy()))
        return bonus

    # -- EX2 ------------------------------------------------------------------------------------------
    def _fit(self, exemplars: np.ndarray) -> dict:
        """Train on (exemplar, exemplar) vs (exemplar, replay) pairs if the replay is full enough, then
        append the batch to the replay (Exemplar.fit)."""
        metrics = {}
        if self.replay.added >= self.min_replay_size:
            steps = self.first_train_itrs if self.trainings == 0 else self.train_itrs
            if steps:  # train_itrs = 0: the first training only
                metrics = self._train(exemplars, steps)
                self.trainings += 1
        self.replay.add(exemplars)
        metrics.update(replay_size=float(self.replay.size))
        return metrics

    def _mean_d(self, exemplars: np.ndarray) -> float | None:
        if self.trainings == 0:
            return None
        return float(np.mean(torch.sigmoid(self._discriminate(exemplars)).double().numpy()))

    @staticmethod
    def _exemplar_positions(transitions: Transitions) -> tuple[np.ndarray, np.ndarray, int]:
        """(order, position, total): rows from a rollout are read trajectory by trajectory (env-major:
        env 0's steps in time order, then env 1's, ...), row i sitting at `position[i]` of the rollout's
        `total` = T * N exemplars, and `order` sorts the rows by position; other batches as given."""
        if transitions.index is None:
            rows = np.arange(len(transitions))
            return rows, rows, len(transitions)
        T, N = transitions.layout
        positions = transitions.index[:, 1] * T + transitions.index[:, 0]
        return np.argsort(positions, kind="stable"), positions, T * N

    def _exemplars(self, transitions: Transitions) -> np.ndarray:
        """The batch's states in exemplar order, [B, ...]."""
        order = self._exemplar_positions(transitions)[0]
        return np.ascontiguousarray(self._features(transitions)[order])

    def _groups(self, positions: np.ndarray, total: int) -> np.ndarray:
        """Discriminator index of the exemplars at `positions` of a batch of `total` (all 0 for the
        amortized model)."""
        return np.zeros(len(positions), np.int64)

    def _pairs(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """[S, E, 2B, dim] inputs of S steps: encoder 1 reads (x*, x*), encoder 2 (x*, x_replay)."""
        return torch.stack([torch.cat([pos, pos], 1), torch.cat([pos, neg], 1)], 1)

    def _train(self, exemplars: np.ndarray, steps: int) -> dict:
        B, E, F = self.batch_size, self.n_encoders, self.model.F
        exemplars_t, replay_t = torch.from_numpy(exemplars), torch.from_numpy(self.replay.data[:self.replay.size])
        groups = torch.from_numpy(self._groups(np.arange(len(exemplars)), len(exemplars)))
        labels = torch.cat([torch.ones(B), torch.zeros(B)])
        multi = self.num_discriminators > 1
        x = out_index = None
        for start in range(0, steps, self.steps_per_draw):
            S = min(self.steps_per_draw, steps - start)
            pos_idx = torch.from_numpy(self.rng.integers(0, len(exemplars), (S, B)))
            neg_idx = torch.from_numpy(self.rng.integers(0, self.replay.size, (S, B)))
            x = self._pairs(exemplars_t[pos_idx], replay_t[neg_idx])
            eps = torch.randn((S, E, 2 * B, F), generator=self.torch_rng)
            out_index = groups[pos_idx].repeat(1, 2) if multi else None
            for s in range(S):
                self.model.step(x[s], eps[s], labels, out_index[s] if multi else None)
        with torch.no_grad():  # the last step's pairs, with fresh noise: how well the model separates them
            eps = torch.randn((E, 2 * B, F), generator=self.torch_rng)
            loss, nll, kl = self.model.loss(x[-1], eps, labels, out_index[-1] if multi else None)
        if not torch.isfinite(self.model.flat).all():
            raise NonFiniteError("exploration (ex2): non-finite value (NaN/inf) in discriminator parameters")
        return {"loss": float(loss), "class_loss": float(nll), "kl": float(kl), "train_steps": float(steps)}

    def _discriminate(self, exemplars: np.ndarray, positions=None, total=None) -> torch.Tensor:
        """Deterministic logit of D(x, x) for exemplars [M, ...] (both encoders read x: a view, no copy);
        `positions` and `total` place them in their batch (the K-exemplar model's groups)."""
        x = torch.from_numpy(np.ascontiguousarray(exemplars))
        return self.model.logits(x.expand(2, *x.shape))

    def density(self, states: np.ndarray) -> np.ndarray:
        """p(x) = (1 - D(x, x)) / D(x, x) for states [M, dim], or frames [M, H, W] on pixels (Eq. 3; for
        inspection and tests)."""
        dtype = self.replay.data.dtype                                 # float32, or uint8 frames
        x = np.ascontiguousarray(np.asarray(states).reshape(-1, *self.state_shape), dtype)
        return density_from_discriminator(torch.sigmoid(self._discriminate(x)).double().numpy())

    # -- checkpoint -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "replay": self.replay.state_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": self.torch_rng.get_state(),
                "trainings": self.trainings, "exemplars": [e.copy() for e in self.exemplars]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.trainings = int(state["trainings"])
        self.exemplars = [e.copy() for e in state["exemplars"]]


class EX2KExemplar(EX2):
    """K-exemplar EX2: K discriminators D_k(x) over contiguous groups of adjacent states of the batch,
    sharing all but their last linear layer; r_int(x) = -log((1 - D_k(x)) / D_k(x)) for x in group k.
    Vector observations only (no conv encoder for this model)."""

    requires = Requirements(observation_kinds=("vector",))
    n_encoders = 1

    def __init__(self, observation_space, action_space, *, num_discriminators: int = 100, **config):
        kind = observation_kind(observation_space)
        require(kind in self.requires.observation_kinds, "exploration", "the K-exemplar model (ex2_kexemplar) "
                f"takes vector observations only, got {kind} of shape {observation_space.shape}; on pixels "
                "use exploration=ex2_atari (the amortized model with EX2's Siamese conv encoder)")
        self.num_discriminators = num_discriminators                  # K (checked by EX2.__init__)
        super().__init__(observation_space, action_space, **config)
        self.num_discriminators = int(num_discriminators)

    def _groups(self, positions: np.ndarray, total: int) -> np.ndarray:
        size = -(-total // self.num_discriminators)                    # ceil(n / K) adjacent states
        return np.asarray(positions, np.int64) // size

    def _pairs(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return torch.cat([pos, neg], 1)[:, None]                      # [S, 1, 2B, dim]

    def _discriminate(self, exemplars: np.ndarray, positions=None, total=None) -> torch.Tensor:
        if positions is None:
            positions, total = np.arange(len(exemplars)), len(exemplars)
        groups = torch.from_numpy(self._groups(positions, total))
        return self.model.logits(torch.from_numpy(exemplars)[None], groups)

    def density(self, states: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """p(x) = (1 - D_k(x)) / D_k(x), x of group k (default: the groups of a batch of these states)."""
        x = torch.from_numpy(np.asarray(states, np.float32).reshape(-1, self.dim))
        groups = self._groups(np.arange(len(x)), len(x)) if groups is None else np.asarray(groups, np.int64)
        g = torch.from_numpy(groups)
        return density_from_discriminator(torch.sigmoid(self.model.logits(x[None], g)).double().numpy())
