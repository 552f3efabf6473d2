"""EX2's exemplar models (Fu, Co-Reyes, Levine, NIPS 2017): the discriminators and their training step.

The method (ex2.py) trains these on (exemplar, exemplar) vs (exemplar, replay) pairs and reads the
density off the trained discriminator. The objective, Eq. 5 of the paper:

  max  E_{p~(x, y)} [ E_{q(z|x)}[log p(y | z)] - KL(q(z | x) || p(z)) ],  p(z) = N(0, I)

maximised as the reference code does: Bernoulli log-likelihood - kl_weight * KL, one latent sample per
pair (reparameterised), the KL in closed form (`kl_to_standard_normal`).

Two architectures (§4.3):

- `EX2` (amortized multi-exemplar): one network conditioned on the exemplar. Two encoders (the
  reference's Siamese model, models/siamese.py): for each, an MLP of `hidden_sizes` plus one more
  tanh layer of hidden_sizes[0] units, then a mean and a log-variance MLP (`hidden_sizes`, tanh) to a
  latent of `feature_dim` (default hidden_sizes[-1] // 2). Encoder 1 reads the exemplar x*, encoder
  2 the query x; the two sampled latents are concatenated and classified by an MLP (`hidden_sizes`,
  tanh) with a sigmoid output: D(x*, x).
- `EX2KExemplar` (K-exemplar): K discriminators D_1..D_K, one per group of adjacent states of the
  batch, sharing everything but the last layer: one encoder (as above) -> sampled latent z -> shared
  classifier hidden layers -> discriminator k's own linear output -> sigmoid. The batch is read
  trajectory by trajectory (environment-major: env 0's steps in time order, then env 1's, ...) and
  cut into K contiguous groups of ceil(T * N / K) states (adjacency as temporal regularisation,
  §4.3); group k's states are the positives of D_k. Every training pair is routed to one
  discriminator: positive i to its group's, and negative i (from the replay) to the same one as
  positive i, so each discriminator sees as many positives as negatives (balanced, as Eq. 1
  assumes). A state of group k is scored by D_k(x) with the deterministic latent: Eq. 3 holds for
  a set B of exemplars up to the constant factor P_B(x*) ~ 1/|B|, which the median subtraction
  removes. K = 1 is one discriminator of the whole batch against the past. The paper gives no
  code, nor a value of K for its runs (docs/papers.md §4): `num_discriminators` is ours to choose.
  Discriminators carry over between iterations (group k of one batch covers about the same time
  window of the episodes as group k of the next).

Pixels (EX2's Atari runs, docs/papers.md §4; conf/exploration/ex2_atari.yaml): the amortized model with
Siamese conv encoders (`_SiameseConv`, driven by `_ConvLatentDiscriminator`). Each encoder reads one
frame, the last of the stack (42x42 in the paper), scaled from uint8 to [0, 1], through conv layers
(16, 8) of 4x4 kernels with stride 2 (the reference's SiameseConv as docs/papers.md §4 gives it), then the
vector model's trunk and heads (hidden (64,)) to a latent of 32; the classifier is the vector
model's. Same objective (`negative_eq5_objective`), pairs, replay, schedule and scoring (the EX2
class picks the model by the observation kind), but autograd and torch.optim.Adam on the run's
`device` instead of the hand-written CPU step, since convolutions dominate there (about 50 ms per
step of 2 x 128 pairs on one CPU thread, i.e. ~50 s per 1000 steps). The replay keeps frames as uint8
(60000 x 42 x 42 bytes = 106 MB; float32 would be
4x that). The K-exemplar model stays vector-only and refuses pixels.

Speed (vector model): the paper's 2,000 steps per iteration of 2 x 128 pairs dominate the cost on a
CPU, so the training step is written out by hand (`_LatentDiscriminator.gradient`): the encoders, the mean
and log-variance heads and the classifier are each one batched matmul per layer (torch.baddbmm over
a stack of networks), the backward pass is explicit, all parameters and gradients live in one flat
tensor, and Adam is six tensor ops on it (algos/common/fast/mlp.py: FlatAdam); tanh runs in place through numpy
(torch's CPU tanh is several times slower at these sizes). Sampling indices and noise for many steps at once
keeps the per-step Python short. A test checks the hand-written gradient against autograd.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from algos.common.checks import require
from algos.common.fast.mlp import FlatAdam, FlatParameters, tanh_

D_CLIP = 1e-5  # models/siamese.py test(): D clipped to [1e-5, 1 - 1e-5] before p = (1 - D) / D


def kl_to_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag exp(log_var)) || N(0, I)) per element (sum over the latent for the total):
    0.5 * (mean^2 + exp(log_var) - 1 - log_var)."""
    return 0.5 * (mean * mean + torch.exp(log_var) - 1.0 - log_var)


def density_from_discriminator(d: np.ndarray) -> np.ndarray:
    """p = (1 - D) / D (Eq. 3), with D clipped to [1e-5, 1 - 1e-5] as the reference code does."""
    d = np.clip(np.asarray(d, np.float64), D_CLIP, 1.0 - D_CLIP)
    return (1.0 - d) / d


def negative_eq5_objective(logit: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                           log_var: torch.Tensor, kl_weight: float):
    """(loss, Bernoulli negative log-likelihood, KL) of a training batch, means over its B pairs: the
    negated Eq. 5 objective -(log p(y | z) - kl_weight * KL(q || N(0, I))), with the KL summed over all
    latents of a pair. logit and labels [B]; mean and log_var [E, B, F] (E encoders, latent size F)."""
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels)
    kl = kl_to_standard_normal(mean, log_var).sum((0, 2)).mean()
    return nll + kl_weight * kl, nll, kl


def _glorot(shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """Lasagne's default DenseLayer init (GlorotUniform) for a [..., in, out] weight."""
    bound = math.sqrt(6.0 / (shape[-2] + shape[-1]))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class _LatentDiscriminator:
    """E encoders q(z | x) -> concatenated latent samples -> shared tanh MLP -> one of K linear outputs.

    E = 2, K = 1: the amortized model D(x*, x); E = 1, K = K: the K-exemplar model D_k(x). A stack of
    same-shaped networks is one [S, in, out] weight, applied with one baddbmm: the E encoder trunks,
    the 2E mean / log-variance heads (ordered mean_1, log_var_1, mean_2, ...), the classifier (S=1).
    All parameters are views of one flat tensor, all gradients views of one flat gradient."""

    def __init__(self, in_dim: int, hidden_sizes: tuple, feature_dim: int, n_encoders: int,
                 n_outputs: int, kl_weight: float, learning_rate: float, generator: torch.Generator):
        E, F, H0 = n_encoders, feature_dim, hidden_sizes[0]
        self.E, self.F, self.K, self.kl_weight = E, F, n_outputs, float(kl_weight)
        trunk = [in_dim, *hidden_sizes, H0]           # MLP(hidden_sizes) with a tanh output of H0
        head = [H0, *hidden_sizes, F]                 # mean / log-variance MLPs, linear output
        classifier = [E * F, *hidden_sizes]           # shared hidden layers of the classifier
        shapes = ([(E, a, b) for a, b in zip(trunk, trunk[1:])]
                  + [(2 * E, a, b) for a, b in zip(head, head[1:])]
                  + [(1, a, b) for a, b in zip(classifier, classifier[1:])])
        init = [(_glorot(s, generator), torch.zeros(s[0], 1, s[2])) for s in shapes]
        init.append((_glorot((n_outputs, hidden_sizes[-1], 1), generator)[..., 0], torch.zeros(n_outputs)))
        self._shapes = [(w.shape, b.shape) for w, b in init]
        self._counts = (len(trunk) - 1, len(head) - 1, len(classifier) - 1)
        self.flat = torch.nn.Parameter(torch.cat([t.reshape(-1) for pair in init for t in pair]))
        self._buffer = FlatParameters([self.flat])                     # gives self.flat a flat .grad
        self.params = self._unflatten(self.flat.data)                 # (trunk, head, classifier, output)
        *grads, out_grad = self._unflatten(self.flat.grad)
        self.grads = [g for part in grads for g in part] + [out_grad]
        self.optimizer = FlatAdam(self._buffer, lr=learning_rate)     # Adam in six tensor ops
        self._head_select = torch.arange(2 * E) // 2  # head j reads trunk j // 2

    def _unflatten(self, flat: torch.Tensor):
        """Views of `flat` (parameters, gradients, or the Parameter itself for autograd) as
        (trunk layers, head layers, classifier layers, output (W [K, H], b [K]))."""
        sizes = [math.prod(shape) for pair in self._shapes for shape in pair]
        parts = iter(flat.split(sizes))
        pairs = [(next(parts).view(ws), next(parts).view(bs)) for ws, bs in self._shapes]
        n_t, n_h, n_c = self._counts
        return pairs[:n_t], pairs[n_t:n_t + n_h], pairs[n_t + n_h:n_t + n_h + n_c], pairs[-1]

    # -- forward ----------------------------------------------------------------------------------
    @staticmethod
    def _mlp(layers, x, tanh_out: bool) -> list:
        acts = [x]
        for i, (w, b) in enumerate(layers):
            x = torch.baddbmm(b, x, w)
            if tanh_out or i < len(layers) - 1:
                x = tanh_(x)
            acts.append(x)
        return acts

    def _forward(self, x: torch.Tensor, eps: torch.Tensor | None, out_index: torch.Tensor | None, params=None):
        """x [E, B, in] -> (activations, logit [B]). eps [E, B, F] samples the latents; None uses the
        means (the deterministic latents of the density estimate)."""
        E, B, F = x.shape[0], x.shape[1], self.F
        trunk_p, head_p, classifier_p, (w, b) = self.params if params is None else params
        trunk = self._mlp(trunk_p, x, tanh_out=True)
        head = self._mlp(head_p, trunk[-1].index_select(0, self._head_select), tanh_out=False)
        out = head[-1].view(E, 2, B, F)
        mean, log_var = out[:, 0], out[:, 1]
        std = z = None
        if eps is None:
            z = mean
        else:
            std = torch.exp(0.5 * log_var)
            z = torch.addcmul(mean, std, eps)
        zc = z.permute(1, 0, 2).reshape(1, B, E * F)
        cls = self._mlp(classifier_p, zc, tanh_out=True)
        h = cls[-1][0]
        if self.K == 1:
            logit = torch.addmv(b, h, w[0])
        else:
            logit = torch.sum(h * w.index_select(0, out_index), 1) + b.index_select(0, out_index)
        return (trunk, head, mean, log_var, std, cls), logit

    @torch.no_grad()
    def logits(self, x: torch.Tensor, out_index: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
        """Deterministic logit of D for x [E, B, in] (latents = means), in chunks of `chunk` rows."""
        return torch.cat([self._forward(x[:, i:i + chunk], None,
                                        None if out_index is None else out_index[i:i + chunk])[1]
                          for i in range(0, x.shape[1], chunk)])

    # -- loss and training --------------------------------------------------------------------------
    def loss(self, x, eps, labels, out_index=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Bernoulli negative log-likelihood, KL), means over the B pairs: the negated Eq. 5
        objective, -(log p(y | z) - kl_weight * KL(q || N(0, I))), with the KL summed over all latents
        of a pair. Differentiable (used by the tests as the reference for the hand-written gradient)."""
        (_, _, mean, log_var, _, _), logit = self._forward(x, eps, out_index, self._unflatten(self.flat))
        return negative_eq5_objective(logit, labels, mean, log_var, self.kl_weight)

    def gradient(self, x, eps, labels, out_index=None) -> None:
        """Write d(loss)/d(parameters) into self.flat.grad, by hand (the backward pass of `loss`)."""
        (trunk, head, mean, log_var, std, cls), logit = self._forward(x, eps, out_index)
        E, B, F = x.shape[0], x.shape[1], self.F
        g = (torch.sigmoid(logit) - labels) / B                       # d nll / d logit
        h = cls[-1][0]
        trunk_p, head_p, classifier_p, (w, _) = self.params
        (gw, gb) = self.grads[-1]
        if self.K == 1:
            torch.mv(h.t(), g, out=gw[0])
            gb.copy_(g.sum().reshape(1))
            gh = torch.outer(g, w[0])
        else:
            gw.zero_()
            gb.zero_()
            gw.index_add_(0, out_index, h * g[:, None])
            gb.index_add_(0, out_index, g)
            gh = g[:, None] * w.index_select(0, out_index)
        n_t, n_h, _ = self._counts
        gz = self._mlp_backward(classifier_p, self.grads[n_t + n_h:-1], cls, gh[None], True)
        gz = gz.view(B, E, F).permute(1, 0, 2)                        # d nll / d z, [E, B, F]
        c = self.kl_weight / B                                         # d (kl_weight * KL) per element
        g_mean = torch.add(gz, mean, alpha=c)
        g_log_var = 0.5 * (gz * eps * std + c * (std * std - 1.0))
        g_head = torch.stack([g_mean, g_log_var], 1).view(2 * E, B, F)
        g_trunk = self._mlp_backward(head_p, self.grads[n_t:n_t + n_h], head, g_head, False)
        g_trunk = g_trunk.view(E, 2, B, -1).sum(1)
        self._mlp_backward(trunk_p, self.grads[:n_t], trunk, g_trunk, True, input_grad=False)

    @staticmethod
    def _mlp_backward(layers, grads, acts, g, tanh_out: bool, input_grad: bool = True):
        for i in range(len(layers) - 1, -1, -1):
            if tanh_out or i < len(layers) - 1:
                a = acts[i + 1]
                g = torch.addcmul(g, g * a, a, value=-1.0)            # g * (1 - tanh^2)
            w, _ = layers[i]
            gw, gb = grads[i]
            torch.bmm(acts[i].transpose(1, 2), g, out=gw)
            torch.sum(g, 1, keepdim=True, out=gb)
            if i or input_grad:
                g = torch.bmm(g, w.transpose(1, 2))
        return g

    def step(self, x, eps, labels, out_index=None) -> None:
        self.gradient(x, eps, labels, out_index)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"flat": self.flat.detach().clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        require(state["flat"].shape == self.flat.shape, "exploration (checkpoint)",
                f"discriminator with {state['flat'].numel()} parameters does not fit {self.flat.numel()} "
                "(hidden_sizes, feature_dim, num_discriminators, use_actions or the env changed)")
        with torch.no_grad():
            self.flat.copy_(state["flat"])
        self.optimizer.load_state_dict(state["optimizer"])


def _to_cpu(value):
    """`value` (nested dicts / lists of tensors) with every tensor copied to the CPU, so that a
    checkpoint written on a GPU loads anywhere (the runner loads with map_location='cpu')."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return copy.deepcopy(value)


def _conv_output_size(size: int, filters: tuple, kernel: int, stride: int) -> int:
    for _ in filters:
        size = (size - kernel) // stride + 1  # no padding (Lasagne's Conv2DLayer default)
    return size


class _SiameseConv(torch.nn.Module):
    """The amortized model's networks for pixels, one frame [H, W] per input (the Atari runs'
    SiameseConv as docs/papers.md §4 gives it): per encoder, conv layers (conv_filters, kernel x kernel, stride) with
    ReLU, then the vector model's trunk (MLP(hidden_sizes) + a tanh layer of hidden_sizes[0]) on the
    flattened features, and mean / log-variance MLPs (hidden_sizes, tanh) to a latent of feature_dim;
    the E sampled latents, concatenated, go through the classifier MLP (hidden_sizes, tanh) to one
    logit. The conv nonlinearity is not in docs/papers.md: ReLU is our choice (as in the project's other
    conv nets). Weights Glorot-uniform, biases zero (Lasagne's defaults), drawn from `generator`."""

    def __init__(self, frame_shape: tuple, conv_filters: tuple, kernel: int, stride: int,
                 hidden_sizes: tuple, feature_dim: int, n_encoders: int, generator: torch.Generator):
        super().__init__()
        nn = torch.nn
        H, W = frame_shape
        flat = conv_filters[-1] * _conv_output_size(H, conv_filters, kernel, stride) \
            * _conv_output_size(W, conv_filters, kernel, stride)
        H0 = hidden_sizes[0]

        def dense(sizes: list, tanh_out: bool) -> list:
            layers = []
            for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
                layers.append(nn.Linear(a, b))
                if tanh_out or i < len(sizes) - 2:
                    layers.append(nn.Tanh())
            return layers

        def encoder() -> nn.Sequential:
            convs, channels = [], 1
            for filters in conv_filters:
                convs += [nn.Conv2d(channels, filters, kernel, stride), nn.ReLU()]
                channels = filters
            return nn.Sequential(*convs, nn.Flatten(), *dense([flat, *hidden_sizes, H0], tanh_out=True))

        def head() -> nn.Sequential:
            return nn.Sequential(*dense([H0, *hidden_sizes, feature_dim], tanh_out=False))

        self.encoders = nn.ModuleList(encoder() for _ in range(n_encoders))
        self.means = nn.ModuleList(head() for _ in range(n_encoders))
        self.log_vars = nn.ModuleList(head() for _ in range(n_encoders))
        self.classifier = nn.Sequential(*dense([n_encoders * feature_dim, *hidden_sizes, 1], tanh_out=False))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None):
        """x [E, B, H, W] (uint8 pixels are scaled to [0, 1] here) -> (mean, log_var [E, B, F], logit [B]).
        eps [E, B, F] samples the latents (reparameterised); None uses the means."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        means, log_vars, latents = [], [], []
        for e, (encoder, mean_net, log_var_net) in enumerate(zip(self.encoders, self.means, self.log_vars)):
            h = encoder(x[e].unsqueeze(1))                            # one channel: the last frame
            mean, log_var = mean_net(h), log_var_net(h)
            latents.append(mean if eps is None else mean + torch.exp(0.5 * log_var) * eps[e])
            means.append(mean)
            log_vars.append(log_var)
        logit = self.classifier(torch.cat(latents, 1))[:, 0]
        return torch.stack(means), torch.stack(log_vars), logit


class _ConvLatentDiscriminator:
    """The amortized D(x*, x) on pixels: the same mechanism and objective as _LatentDiscriminator
    (E = 2 encoders, Gaussian latents, concatenated samples, tanh classifier, sigmoid; Eq. 5 through
    `negative_eq5_objective`), with the Siamese conv encoders of the Atari runs (`_SiameseConv`),
    trained by autograd and torch.optim.Adam on `device`. Same interface as _LatentDiscriminator
    (F, logits, loss, step, flat, state_dict), so the EX2 class drives either."""

    K = 1

    def __init__(self, frame_shape: tuple, conv_filters: tuple, kernel: int, stride: int,
                 hidden_sizes: tuple, feature_dim: int, n_encoders: int, kl_weight: float,
                 learning_rate: float, generator: torch.Generator, device="cpu"):
        self.E, self.F, self.kl_weight = n_encoders, feature_dim, float(kl_weight)
        self.device = torch.device(device)
        self.net = _SiameseConv(frame_shape, conv_filters, kernel, stride, hidden_sizes, feature_dim,
                                n_encoders, generator).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=learning_rate)

    @property
    def flat(self) -> torch.Tensor:
        """All parameters as one CPU vector (for the finiteness check and the tests)."""
        return torch.nn.utils.parameters_to_vector(self.net.parameters()).detach().cpu()

    def _forward(self, x, eps):
        return self.net(x.to(self.device), None if eps is None else eps.to(self.device))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, out_index=None, chunk: int = 1024) -> torch.Tensor:
        """Deterministic logit of D for x [E, B, H, W] (latents = means), on the CPU, `chunk` rows at a
        time (the conv activations of a 100k batch would not fit at once)."""
        return torch.cat([self._forward(x[:, i:i + chunk], None)[2].cpu() for i in range(0, x.shape[1], chunk)])

    def loss(self, x, eps, labels, out_index=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, Bernoulli negative log-likelihood, KL), means over the pairs (negated Eq. 5)."""
        mean, log_var, logit = self._forward(x, eps)
        return negative_eq5_objective(logit, labels.to(self.device), mean, log_var, self.kl_weight)

    def step(self, x, eps, labels, out_index=None) -> None:
        loss, _, _ = self.loss(x, eps, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"net": _to_cpu(self.net.state_dict()), "optimizer": _to_cpu(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        ours = self.net.state_dict()
        fits = "net" in state and state["net"].keys() == ours.keys() and all(
            state["net"][k].shape == v.shape for k, v in ours.items())
        require(fits, "exploration (checkpoint)", "the saved discriminator does not fit this conv model "
                "(hidden_sizes, feature_dim, conv_filters, conv_kernel_size, conv_stride, the screen size "
                "or the observation kind changed)")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
