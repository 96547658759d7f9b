"""Defence registry: build any defence's trainer by name (used by the CLI and the benchmarks).

>>> from medrobust.defenses import available_defenses, get_defense
>>> "nsr" in available_defenses()
True
>>> trainer = get_defense("nsr", model, TrainConfig(epochs=50), beta=0.3)   # doctest: +SKIP
>>> result = trainer.fit(train, val)                                        # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from torch import nn

from medrobust.errors import ConfigError

if TYPE_CHECKING:
    from medrobust.train.trainer import TrainConfig, Trainer

_DEFENSES: dict[str, tuple[type, dict[str, Any]]] = {}

T = TypeVar("T", bound=type)

_RESERVED = ("self", "model", "config", "out_dir", "generator")


def register_defense(name: str, *, defaults: dict[str, Any] | None = None) -> Callable[[T], T]:
    """Class decorator registering a trainer class under ``name`` (optionally with preset defaults).

    The same class may be registered under several names with different ``defaults`` (e.g. ``"mse"``
    is the NSR trainer with ``beta=0`` and ``margin_weight=0``).
    """

    def deco(cls: T) -> T:
        key = name.lower()
        if key in _DEFENSES and _DEFENSES[key][0] is not cls:
            raise ConfigError(f"a defence named {name!r} is already registered ({_DEFENSES[key][0].__name__}).")
        _DEFENSES[key] = (cls, dict(defaults or {}))
        return cls

    return deco


def available_defenses() -> list[str]:
    """Names of all registered defences, sorted."""
    _ensure_loaded()
    return sorted(_DEFENSES)


def defense_class(name: str) -> type:
    """The trainer class registered under ``name`` (case-insensitive)."""
    _ensure_loaded()
    key = str(name).lower()
    if key not in _DEFENSES:
        raise ConfigError(f"unknown defence {name!r}; available: {', '.join(available_defenses())}.")
    return _DEFENSES[key][0]


def defense_options(name: str) -> list[str]:
    """Keyword arguments accepted by the defence ``name`` (its hyper-parameters)."""
    cls = defense_class(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in _RESERVED]


def get_defense(
    name: str,
    model: nn.Module,
    config: "TrainConfig | None" = None,
    *,
    out_dir: str | Path | None = None,
    recipe: str | None = None,
    **hp: Any,
) -> "Trainer":
    """Build the trainer of defence ``name`` for ``model``.

    Parameters
    ----------
    name
        A registered name (see :func:`available_defenses`): ``"ce"``, ``"pgd_at"``, ``"trades"``,
        ``"nsr"``, ``"nsr_align"``, ``"mse"``, ``"mse_margin"``, ``"jacobian"``, ``"distillation"``,
        ``"adt"``, ``"uap_retraining"``, ``"smoothing"``.
    model
        The model to train.
    config
        :class:`~medrobust.train.TrainConfig`.
    out_dir
        Output folder (checkpoint, history).
    recipe
        A paper's recipe (``"ma2020"``, ``"ma2022-cpsc"``, ``"shao2022"``, ``"han2020"``; see
        :mod:`medrobust.defenses.recipes`): its defence options become the defaults (``**hp`` overrides
        them) and, when ``config`` is ``None``, its :class:`~medrobust.train.TrainConfig` is used. For a
        defence with its own ``recipe`` option (NSR, Jacobian: ``"mitdb"``, ``"cpsc2018"``,
        ``"cardiodefense"``) a name that is not a paper recipe is that option.
    **hp
        The defence's hyper-parameters (and ``generator=``, a ``torch.Generator``); unknown names
        raise :class:`ConfigError` listing the accepted ones.
    """
    cls = defense_class(name)
    defaults = _DEFENSES[str(name).lower()][1]
    accepted = defense_options(name)
    if recipe is not None and "recipe" in accepted and "recipe" not in hp:
        from medrobust.defenses.recipes import RECIPES

        if recipe not in RECIPES:  # the defence's own variant option (NSR's / Jacobian's "mitdb", "cpsc2018", ...)
            hp, recipe = {**hp, "recipe": recipe}, None
    unknown = [k for k in hp if k not in accepted and not (k == "generator" and _takes_generator(cls))]
    if unknown:
        raise ConfigError(
            f"defence {name!r} got unknown option(s) {unknown}; accepted: {', '.join(accepted) or '(none)'}."
        )
    kwargs = {**defaults, **hp}
    if recipe is not None:
        from medrobust.defenses.recipes import recipe_config
        from medrobust.train.trainer import TrainConfig

        arch = (getattr(model, "medrobust_arch", None) or {}).get("name")
        train_kw, options = recipe_config(recipe, name, model=arch)
        kwargs = {**defaults, **options, **hp}
        config = config if config is not None else TrainConfig(**train_kw)
    trainer = cls(model, config, out_dir=out_dir, **kwargs)
    trainer.name = str(name).lower()  # the card records the registered name (e.g. "mse_margin")
    return trainer


def _takes_generator(cls: type) -> bool:
    return "generator" in inspect.signature(cls.__init__).parameters


def _ensure_loaded() -> None:
    """Import the defence modules so that they register (lazy: the package imports this module first)."""
    import medrobust.defenses  # noqa: F401
