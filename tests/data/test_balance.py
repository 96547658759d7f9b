from __future__ import annotations

import numpy as np
import torch

from medrobust.data import class_weights, oversample_indices


def test_oversample_tiles_every_class_to_the_majority() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [3] * 1)
    idx = oversample_indices(labels, seed=0)
    assert len(idx) == 3 * 10
    assert np.bincount(labels[idx]).tolist() == [10, 10, 0, 10]
    assert set(idx[labels[idx] == 1]) == {10, 11, 12}
    assert labels[idx[:3]].tolist() == [0, 1, 3]  # interleaved


def test_class_weights_inverse_frequency() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
