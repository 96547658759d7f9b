"""Class balancing: Ma & Liang's tiled oversampling and inverse-frequency class weights.

Ma & Liang (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134): each class's index list is tiled until it reaches the majority
count, truncated, and the classes are interleaved, so an epoch holds ``K x majority`` items.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.errors import DataError


def oversample_indices(labels: np.ndarray | torch.Tensor, *, seed: int | None = 0, shuffle: bool = True) -> np.ndarray:
    """Indices that repeat every class up to the majority count.

    Parameters
    ----------
    labels
        ``(N,)`` integer labels.
    seed
        Seed of the within-class and class-order shuffle (``shuffle=False``: deterministic tiling).
    shuffle
        Shuffle within each class before tiling and the final interleaved order.

    Returns
    -------
    np.ndarray
        ``K_present x majority`` indices; classes interleaved (c0, c1, ..., c0, c1, ...).
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) == 0:
        raise DataError("oversample_indices: no labels given.")
    rng = np.random.default_rng(seed)
    groups = [np.nonzero(labels == c)[0] for c in classes]
    majority = max(len(g) for g in groups)
    tiled = []
    for g in groups:
        g = rng.permutation(g) if shuffle else g
        tiled.append(np.resize(g, majority))
    order = np.stack(tiled, axis=1).reshape(-1)
    return order


def class_weights(labels: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (K * n_k)`` (0 for absent classes), as float32."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)
