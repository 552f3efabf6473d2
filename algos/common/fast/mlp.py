"""Making small-MLP updates cheap on CPU, where framework overhead dwarfs the arithmetic.

With 64-sample minibatches (PPO's defaults) a 64x64 MLP update is ~0.1 ms of arithmetic but ~1 ms
of autograd and optimizer bookkeeping. Three tools remove most of that:

- FlatParameters: all parameters live in one tensor and all gradients in another, so zeroing,
  global-norm clipping and (fused) Adam are single operations. (PPO's autograd path uses it too.)
- FastMLP: an MLP's forward pass keeping its activations, and the exact backward pass written
  out, writing into the flat gradient buffer. Tests check it against autograd.
- NumpyMLP: acting with numpy on views of the (CPU) weights, a few microseconds per step.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["FastMLP", "FlatAdam", "FlatParameters", "NumpyMLP", "mlp_parts", "tanh_"]


class FlatParameters:
    """Re-homes `params` into one contiguous tensor (`flat`) with gradients as views of `grad`."""

    def __init__(self, params: list[nn.Parameter]):
        total = sum(p.numel() for p in params)
        self.flat = nn.Parameter(torch.empty(total, device=params[0].device, dtype=params[0].dtype))
        self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            self.flat.data[offset:offset + n].copy_(p.data.reshape(-1))
            p.data = self.flat.data[offset:offset + n].view_as(p)
            p.grad = self.flat.grad[offset:offset + n].view_as(p)  # autograd accumulates in place
            offset += n

    @property
    def grad(self) -> torch.Tensor:
        return self.flat.grad

    def zero_grad(self) -> None:
        self.flat.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(self.flat.grad)
        self.flat.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm


def mlp_parts(net: nn.Sequential) -> tuple[list[nn.Linear], str] | None:
    """(linear layers, activation) if `net` is Linear (Act Linear)* with one activation kind."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    acts = {type(m) for m in net if not isinstance(m, nn.Linear)}
    if len(linears) + max(len(linears) - 1, 0) != len(net) or len(acts) > 1 or not linears:
        return None
    kind = {nn.Tanh: "tanh", nn.ReLU: "relu", None: "none"}.get(next(iter(acts), None))
    return (linears, kind) if kind else None


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh, in place on CPU outside autograd through numpy, whose vectorised tanh is ~6x faster
    than torch's here (1.9 us vs 11.5 us for 64x64 floats on this machine); torch.tanh otherwise."""
    if x.device.type == "cpu" and not x.requires_grad:
        array = x.numpy()
        np.tanh(array, out=array)
        return x
    return torch.tanh(x)


class FastMLP:
    """The forward pass of an nn.Sequential MLP keeping its activations, and its exact backward
    pass written out, without autograd: W-grad = g^T h, b-grad = sum g, g <- (g W) * act'(h).

    The weights, their transposes and their gradient buffers are looked up once here (they are
    views that stay valid: optimizers and load_state_dict update them in place), which saves
    ~20 us of attribute lookups per minibatch. Call after FlatParameters has re-homed the weights.
    """

    def __init__(self, linears: list[nn.Linear], activation: str):
        self.activation = activation
        self.layers = [(l.weight, l.bias, l.weight.t(), l.weight.grad, l.bias.grad) for l in linears]

    def forward(self, x: torch.Tensor):
        """Output and the hidden activations needed by backward()."""
        hidden = []
        for _, bias, weight_t, _, _ in self.layers[:-1]:
            x = torch.addmm(bias, x, weight_t)
            x = tanh_(x) if self.activation == "tanh" else x.relu_()
            hidden.append(x)
        _, bias, weight_t, _, _ = self.layers[-1]
        return torch.addmm(bias, x, weight_t), hidden

    def backward(self, x: torch.Tensor, hidden: list, grad_out: torch.Tensor) -> None:
        """Write d(loss)/d(weights) into the gradient buffers, given d(loss)/d(output)."""
        g = grad_out
        inputs = [x, *hidden]
        for i in range(len(self.layers) - 1, -1, -1):
            weight, _, _, weight_grad, bias_grad = self.layers[i]
            torch.mm(g.t(), inputs[i], out=weight_grad)
            torch.sum(g, 0, out=bias_grad)
            if i:
                g = torch.mm(g, weight)
                h = inputs[i]
                g = g - g * h * h if self.activation == "tanh" else g * (h > 0)


class FlatAdam:
    """Adam (Kingma & Ba 2015, Algorithm 1, with torch.optim.Adam's arithmetic) on one flat
    parameter tensor: six tensor operations per step and no per-call bookkeeping."""

    def __init__(self, flat: FlatParameters, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.flat, self.lr, self.betas, self.eps = flat, lr, betas, eps
        self.exp_avg = torch.zeros_like(flat.flat.data)
        self.exp_avg_sq = torch.zeros_like(flat.flat.data)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        grad = self.flat.grad
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        self.flat.flat.data.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - beta1**self.steps))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "steps": self.steps, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps, self.lr = state["steps"], state["lr"]


class NumpyMLP:
    """Forward pass of an MLP in numpy. On CPU the arrays are views of the torch weights, so the
    optimizer's in-place updates are seen without copying; on another device call refresh()."""

    def __init__(self, linears: list[nn.Linear], activation: str):
        self.linears, self.activation = linears, activation
        self.refresh()

    def refresh(self) -> None:
        self.layers = [(l.weight.detach().cpu().numpy().T, l.bias.detach().cpu().numpy())
                       for l in self.linears]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        for w, b in self.layers[:-1]:
            x = x @ w
            x += b
            np.tanh(x, out=x) if self.activation == "tanh" else np.maximum(x, 0, out=x)
        w, b = self.layers[-1]
        x = x @ w
        x += b
        return x
