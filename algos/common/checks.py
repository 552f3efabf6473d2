"""Errors the runner turns into clean exits, and the checks that raise them."""
from __future__ import annotations

import numpy as np
import torch


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and the allowed values."""


class NonFiniteError(RuntimeError):
    """A NaN or inf appeared in a loss, a parameter or a reward. The message names the component."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError("<key>: <message>") unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def require_positive(key: str, value, integer: bool = True) -> None:
    kind = "a positive integer" if integer else "a positive number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    require(ok, key, f"must be {kind}, got {value!r}")


def require_in_range(key: str, value, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    require(ok, key, f"must be a number in [{low}, {high}], got {value!r}")


def require_choice(key: str, value, allowed) -> None:
    require(value in allowed, key, f"got {value!r}; allowed values: {' | '.join(map(str, allowed))}")


def check_finite(component: str, **values) -> None:
    """Raise NonFiniteError naming `component` and the offending value if any value is NaN/inf.

    Values may be floats, numpy arrays, tensors or iterables of tensors (e.g. module parameters).
    """
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            bad = not bool(torch.isfinite(value).all())
        elif isinstance(value, (float, int, np.ndarray, np.generic)):
            bad = not bool(np.isfinite(value).all())
        else:  # iterable of tensors
            bad = any(not bool(torch.isfinite(t).all()) for t in value)
        if bad:
            raise NonFiniteError(f"{component}: non-finite value (NaN/inf) in {name}")
