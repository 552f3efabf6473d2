"""The NaN/inf check of losses, parameters and rewards; the configuration checks of explorebench.checks,
re-exported so that algos/ has one place to import them from."""
from __future__ import annotations

import numpy as np
import torch

from explorebench.checks import (  # noqa: F401
    ConfigError,
    NonFiniteError,
    require,
    require_bool,
    require_choice,
    require_in_range,
    require_positive,
)


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
