"""Dataset registry behind :func:`medrobust.data.load_dataset`."""

from __future__ import annotations

from typing import Any, Callable

from medrobust.data.base import ECGDataset
from medrobust.data.options import check_options, parameter_schema
from medrobust.errors import ConfigError

Loader = Callable[..., ECGDataset]
_LOADERS: dict[str, Loader] = {}
_OPTIONS_FROM: dict[str, tuple[Callable[..., Any], ...]] = {}

SPLITS = ("train", "val", "test")


def register_dataset(name: str, *, options_from: tuple[Callable[..., Any], ...] = ()) -> Callable[[Loader], Loader]:
    """Register ``loader(*, root=None, split=..., **options) -> ECGDataset`` under ``name``.

    The loader's keyword parameters (and those of ``options_from``, the functions its ``**options``
    are passed on to) are the options :func:`load_dataset` accepts, checked against their annotations.
    """

    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        _OPTIONS_FROM[name] = tuple(options_from)
        return fn

    return deco


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_LOADERS)


def dataset_options(name: str) -> dict[str, Any]:
    """The options ``name``'s loader accepts -> their type annotations."""
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}.")
    return parameter_schema(_LOADERS[name], *_OPTIONS_FROM[name], exclude=("root", "split"))


def check_dataset_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for dataset ``name`` checked (allowed keys, types) and normalised; one-line :class:`ConfigError`."""
    return check_options(options, dataset_options(name), owner=f"dataset {name!r}")


def load_dataset(name: str, root: Any = None, split: str = "train", **options: Any) -> ECGDataset:
    """Load a dataset split.

    Parameters
    ----------
    name
        ``"mitdb"``, ``"kaggle_heartbeat"``, ``"synthetic"`` ... (see :func:`available_datasets`).
    root
        Data folder (the dataset folder or its parent); ``None`` uses ``MEDROBUST_DATA`` or the user
        cache. Ignored by ``synthetic``.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    **options
        Loader options (format, split scheme, seed, lead, ...); see each loader. Unknown keys and values
        of the wrong type are refused before any file is read (:func:`check_dataset_options`).

    Returns
    -------
    ECGDataset
        ``.x`` ``(N, leads, samples)`` float32, ``.y`` ``(N,)`` long, ``.meta``.
    """
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}.")
    if split not in SPLITS and split != "all":
        raise ConfigError(f"split must be one of {SPLITS} (or 'all'), got {split!r}.")
    options = check_dataset_options(name, options)
    if name == "synthetic":
        return _LOADERS[name](split=split, **options)
    return _LOADERS[name](root=root, split=split, **options)
