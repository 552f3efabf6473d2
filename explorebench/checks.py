"""Errors the runner turns into clean exits, and the checks that raise them.

A neutral module: envs/, algos/ and runner/ all import it, and it imports none of them (nor numpy
or torch), so the layering envs <- algos <- runner holds (tests/test_layers.py).
"""
from __future__ import annotations


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


def require_bool(key: str, value) -> bool:
    """`value` if it is a boolean (true | false), else a ConfigError naming `key`."""
    require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
    return value


def require_choice(key: str, value, allowed) -> None:
    require(value in allowed, key, f"got {value!r}; allowed values: {' | '.join(map(str, allowed))}")
