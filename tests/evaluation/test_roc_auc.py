"""Rank-based ROC AUC against hand computations and the pairwise definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.evaluation.roc_auc import binary_auc, roc_auc


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), by enumerating every pair."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_hand_computed_values() -> None:
    assert binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert binary_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert binary_auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert binary_auc([0, 0, 1], [0.3, 0.2, 0.1]) == 0.0


def test_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 12, 300).astype(float)  # many ties
    assert binary_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)
    # only the order matters: a strictly increasing transform leaves AUC unchanged
    assert binary_auc(y, np.exp(s / 3)) == pytest.approx(binary_auc(y, s), abs=1e-12)
    assert binary_auc(torch.from_numpy(y), torch.from_numpy(s)) == pytest.approx(binary_auc(y, s))


def test_multiclass_is_mean_one_vs_rest_and_binary_uses_class_1() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    s = rng.normal(size=(200, 3)) + np.eye(3)[y]
    expected = np.mean([_pairwise_auc((y == c).astype(int), s[:, c]) for c in range(3)])
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    yb = rng.integers(0, 2, 100)
    sb = rng.normal(size=(100, 2))
    assert roc_auc(yb, sb) == pytest.approx(_pairwise_auc(yb, sb[:, 1]), abs=1e-12)
    assert roc_auc(yb, sb[:, 1]) == roc_auc(yb, sb)


def test_multilabel_mean_over_labels() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (150, 4))
    s = rng.normal(size=(150, 4)) + y
    expected = np.mean([_pairwise_auc(y[:, k], s[:, k]) for k in range(4)])
    assert roc_auc(y, s, multilabel=True) == pytest.approx(expected, abs=1e-12)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="undefined"):
        binary_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="labels but"):
        binary_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="0 or 1"):
        binary_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ConfigError, match="NaN"):
        binary_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ConfigError, match="class indices"):
        roc_auc([0, 3], np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="multi-label"):
        roc_auc([0, 1], np.zeros((2, 2)), multilabel=True)
