"""Robustness metrics equal hand computations (numerators, denominators, AUC of the ε curve)."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.errors import ConfigError
from medrobust.evaluation import metrics_from_confusion
from medrobust.evaluation.robustness import (
    attack_success_rate,
    curve_auc,
    curve_from_minimal_eps,
    fooling_rate,
    ratio,
    robust_accuracy,
    targeted_success_rate,
)

# 8 samples, 3 classes: clean-correct at 0, 1, 2, 4, 5, 7; the attack flips 1, 4 and 7.
Y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
CLEAN = np.array([0, 0, 1, 2, 2, 2, 1, 1])
ADV = np.array([0, 2, 1, 2, 0, 2, 1, 0])


def test_rates_by_hand() -> None:
    assert robust_accuracy(Y, ADV) == {"numerator": 3, "denominator": 8, "value": 3 / 8}
    assert attack_success_rate(Y, CLEAN, ADV) == {"numerator": 3, "denominator": 6, "value": 0.5}
    assert fooling_rate(CLEAN, ADV) == {"numerator": 3, "denominator": 8, "value": 3 / 8}
    target = np.array([1, 2, 1, 0, 0, 1, 2, 0])           # sample 2 targets its own label: ignored
    assert targeted_success_rate(Y, target, ADV) == {"numerator": 3, "denominator": 7, "value": 3 / 7}
    assert ratio(0, 0)["value"] is None


def test_adversarial_confusion_metrics_by_hand() -> None:
    cm = np.zeros((3, 3), dtype=int)
    for t, p in zip(Y, ADV):
        cm[t, p] += 1
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    # rows: a -> [1, 0, 1] + sample 6 predicted b -> [1, 1, 1]; b -> [1, 1, 1]; c -> [1, 0, 1]
    assert cm.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 1]]
    assert m["balanced_accuracy"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert m["precision"]["c"] == pytest.approx(1 / 3) and m["sensitivity"]["c"] == pytest.approx(1 / 2)
    f1 = [2 * 1 / (3 + 3), 2 * 1 / (3 + 2), 2 * 1 / (2 + 3)]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_curve_auc_by_hand() -> None:
    # Ma & Liang's AUC_0.1 over ε = 0, 0.01, 0.03, 0.05, 0.1 (trapezoids / 0.1)
    eps, acc = [0.01, 0.03, 0.05, 0.1], [0.9, 0.7, 0.5, 0.2]
    hand = (0.01 * (0.95 + 0.9) + 0.02 * (0.9 + 0.7) + 0.02 * (0.7 + 0.5) + 0.05 * (0.5 + 0.2)) / 2 / 0.1
    assert curve_auc(eps, acc, clean_accuracy=0.95) == pytest.approx(hand)
    assert curve_auc([0.0, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="clean_accuracy"):
        curve_auc(eps, acc)
    with pytest.raises(ConfigError, match="increasing"):
        curve_auc([0.1, 0.05], [0.5, 0.6], clean_accuracy=1.0)


def test_curve_from_minimal_eps() -> None:
    m = np.array([0.0, 0.02, 0.05, np.inf, 0.05])      # sample 0 misclassified when clean
    got = [r["numerator"] for r in curve_from_minimal_eps(m, [0.0, 0.01, 0.02, 0.05, 1.0])]
    assert got == [4, 4, 3, 1, 1]
