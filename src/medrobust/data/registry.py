"""Dataset registry behind :func:`medrobust.data.load_dataset`."""

from __future__ import annotations

from typing import Any, Callable

from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError

Loader = Callable[..., ECGDataset]
_LOADERS: dict[str, Loader] = {}

SPLITS = ("train", "val", "test")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register ``loader(*, root=None, split=..., **options) -> ECGDataset`` under ``name``."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return deco


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_LOADERS)


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
        Loader options (format, split scheme, seed, lead, ...); see each loader.

    Returns
    -------
    ECGDataset
        ``.x`` ``(N, leads, samples)`` float32, ``.y`` ``(N,)`` long, ``.meta``.
    """
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}.")
    if split not in SPLITS and split != "all":
        raise ConfigError(f"split must be one of {SPLITS} (or 'all'), got {split!r}.")
    if name == "synthetic":
        return _LOADERS[name](split=split, **options)
    return _LOADERS[name](root=root, split=split, **options)
