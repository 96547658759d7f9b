"""Model registry: build any architecture by name with keyword arguments."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

from medrobust.checks import check_int
from medrobust.errors import ConfigError, MedrobustError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DOCS: dict[str, str] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])

_SIZE_ARGUMENTS = ("in_channels", "input_length", "num_classes")
"""Arguments every architecture reads as a positive size; checked before the constructor runs."""


def register_model(name: str, *, doc: str = "") -> Callable[[F], F]:
    """Decorator registering a model class or factory under ``name``."""

    def deco(fn: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ConfigError(f"model name {name!r} is already registered.")
        _REGISTRY[name] = fn
        _DOCS[name] = doc or (fn.__doc__ or "").strip().splitlines()[0] if (doc or fn.__doc__) else ""
        return fn

    return deco


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name
        Registered name, e.g. ``"cnn1"``, ``"mlp1"``, ``"resnet1d"``.
    **kwargs
        Architecture arguments (``in_channels``, ``input_length``, ``num_classes`` ...).

    Raises
    ------
    ConfigError
        For an unknown name or invalid arguments (also those that torch refuses inside a layer, e.g. a
        negative width), one line naming the arguments.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model name {name!r}; available: {', '.join(available_models())}."
        )
    for key in _SIZE_ARGUMENTS:
        if kwargs.get(key) is not None:  # None: the architecture's own default (e.g. any input length)
            check_int(kwargs[key], f"model {name!r}: {key}", minimum=1)
    try:
        model = _REGISTRY[name](**kwargs)
    except MedrobustError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        # torch reports a bad size or type from deep inside a layer constructor: name the arguments instead
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model {name!r}: invalid arguments {kwargs}: {first}") from None
    model.medrobust_arch = {"name": name, "kwargs": dict(kwargs)}  # type: ignore[assignment]
    return model
