"""Seeded, stratified and record-level splits."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held) with ``round(fraction * n_c)`` of every class held out.

    Both outputs are sorted; the split is a pure function of ``labels``, ``fraction`` and ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        idx = rng.permutation(idx)
        held.append(idx[: int(round(fraction * len(idx)))])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.nonzero(mask)[0], held_idx


def train_val_test(
    labels: np.ndarray, *, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test: ``test_fraction`` of all, then ``val_fraction`` of the rest."""
    rest, test = stratified_split(labels, test_fraction, seed)
    tr, va = stratified_split(labels[rest], val_fraction, seed + 1)
    return {"train": rest[tr], "val": rest[va], "test": test}
