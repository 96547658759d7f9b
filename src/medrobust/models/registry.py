"""Model registry: build any architecture by name with keyword arguments."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from torch import nn

from medrobust.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DOCS: dict[str, str] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


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
        For an unknown name or invalid arguments.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model name {name!r}; available: {', '.join(available_models())}."
        )
    try:
        model = _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: invalid arguments {sorted(kwargs)}: {exc}") from exc
    model.medrobust_arch = {"name": name, "kwargs": dict(kwargs)}  # type: ignore[assignment]
    return model
