"""Attack registry: build any attack by name (used by the CLI and the evaluation protocol).

>>> from medrobust.attacks import get_attack, available_attacks
>>> {"apgd", "fgsm", "pgd", "sap", "spsa", "square", "boundary"} <= set(available_attacks())
True
>>> atk = get_attack("pgd", model, eps=0.05, steps=100)   # doctest: +SKIP
>>> atk = get_attack("spsa", model, eps=0.05, steps=100, nb_samples=2048)   # black-box   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from torch import nn

from medrobust.errors import ConfigError

if TYPE_CHECKING:
    from medrobust.attacks.base import Attack

_ATTACKS: dict[str, type["Attack"]] = {}

A = TypeVar("A", bound=type)


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator registering an :class:`~medrobust.attacks.Attack` subclass under ``name``."""

    def deco(cls: A) -> A:
        key = name.lower()
        if key in _ATTACKS and _ATTACKS[key] is not cls:
            raise ConfigError(f"an attack named {name!r} is already registered ({_ATTACKS[key].__name__}).")
        _ATTACKS[key] = cls  # type: ignore[assignment]
        return cls

    return deco


def available_attacks() -> list[str]:
    """Names of all registered attacks, sorted."""
    return sorted(_ATTACKS)


def attack_class(name: str) -> type["Attack"]:
    """The class registered under ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in _ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; available: {', '.join(available_attacks())}.")
    return _ATTACKS[key]


def accepted_arguments(cls: type["Attack"]) -> list[str]:
    """Keyword arguments ``cls(model, ...)`` accepts: its own, then the shared threat arguments.

    Reads ``inspect.signature(cls.__init__)``, which :class:`~medrobust.attacks.Attack` completes with the
    shared :class:`~medrobust.attacks.base.ThreatArgs` for subclasses that take ``**threat_kwargs``.
    """
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name not in ("self", "model") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def get_attack(name: str, model: nn.Module, **kwargs: Any) -> "Attack":
    """Build the attack ``name`` for ``model`` with keyword arguments ``kwargs``.

    Unknown keyword arguments raise :class:`~medrobust.errors.ConfigError` naming the argument and
    listing the accepted ones.
    """
    cls = attack_class(name)
    accepted = accepted_arguments(cls)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"{cls.__name__} got unknown argument(s) {unknown}; accepted: {', '.join(accepted)}."
        )
    return cls(model, **kwargs)
