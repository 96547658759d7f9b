"""Validators for user-supplied arguments: one home for every type/range check.

Each returns the validated (normalised) value or raises :class:`~medrobust.errors.ConfigError` with one line
that names the argument, the value received and what is allowed. Attacks, defences, the evaluation protocol and
the CLI all use these, so the same mistake gets the same message everywhere.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from medrobust.errors import ConfigError

BoundsArg = tuple[float, float] | str | None
"""``(lo, hi)``, ``None`` (unbounded) or ``"auto"`` (from the data's :class:`~medrobust.units.Units`)."""


def check_int(value: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An ``int`` in ``[minimum, maximum]`` (``bool`` is refused), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}.")
    return int(value)


def check_float(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                strict: bool = False) -> float:
    """A finite float within ``[minimum, maximum]`` (``strict``: ``> minimum``), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    v = float(value)
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}, got {v}.")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {v}.")
    return v


def check_positive(value: Any, name: str, *, allow_none: bool = True) -> Any:
    """A positive finite float (or a tensor of them), ``None`` when allowed, else :class:`ConfigError`."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name} is required.")
    if isinstance(value, torch.Tensor):
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ConfigError(f"{name} must be > 0 and finite everywhere.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or value == float("inf"):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` or :class:`ConfigError`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}.")
    return str(value)


def check_bool(value: Any, name: str) -> bool:
    """A real ``bool`` (``1``/``"yes"`` are refused: YAML and ``--option`` values are parsed before this)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}.")
    return value


def check_bounds(value: Any, name: str = "bounds") -> BoundsArg:
    """Validate a bounds argument (``None``, ``"auto"`` or ``(lo, hi)`` with ``lo < hi``)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo = check_float(value[0], f"{name}[0]")
        hi = check_float(value[1], f"{name}[1]")
        if not lo < hi:
            raise ConfigError(f"{name} needs lo < hi, got {value!r}.")
        return (lo, hi)
    raise ConfigError(f"{name} must be None, 'auto' or a pair (lo, hi), got {value!r}.")
