from __future__ import annotations

import numpy as np
import pytest

from medrobust.evaluation import classification_metrics, metrics_from_confusion


def test_metrics_equal_hand_computation() -> None:
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(11 / 14)
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.75) / 2)  # absent class c excluded
    f1_a, f1_b = 2 * 8 / (10 + 9), 2 * 3 / (4 + 5)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert m["precision"] == {"a": pytest.approx(8 / 9), "b": pytest.approx(3 / 5), "c": 0.0}
    assert m["sensitivity"]["b"] == pytest.approx(0.75)
    assert (m["n"], m["correct"]) == (14, 11)


def test_from_labels() -> None:
    m = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
