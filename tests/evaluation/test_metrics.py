from __future__ import annotations

import warnings

import numpy as np
import pytest

from medrobust.errors import DataError
import torch

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


def test_default_class_names_and_support() -> None:
    # 5 samples: class 0 twice, class 1 once (predicted once, correctly), class 2 twice.
    m = classification_metrics([0, 0, 1, 2, 2], [0, 2, 1, 2, 0], 3)
    assert list(m["sensitivity"]) == ["0", "1", "2"] and list(m["precision"]) == ["0", "1", "2"]
    assert m["support"] == {"0": 2, "1": 1, "2": 2}
    named = classification_metrics([0, 0, 1, 2, 2], [0, 2, 1, 2, 0], 3, classes=["N", "S", "V"])
    assert list(named["sensitivity"]) == ["N", "S", "V"] and named["support"] == {"N": 2, "S": 1, "V": 2}


def test_single_sample_class_counts_fully() -> None:
    # A class with one sample, predicted once and correctly: recall = precision = F1 = 1, and it
    # takes part in the class-balanced accuracy (a rare arrhythmia class with a single beat).
    cm = np.array([[3, 1, 0], [0, 1, 0], [2, 0, 2]])
    m = metrics_from_confusion(cm)
    assert m["sensitivity"] == {"0": pytest.approx(0.75), "1": 1.0, "2": pytest.approx(0.5)}
    assert m["precision"] == {"0": pytest.approx(0.6), "1": pytest.approx(0.5), "2": 1.0}
    only = np.array([[2, 0], [0, 1]])                   # class 1: one sample, predicted once
    assert metrics_from_confusion(only)["precision"]["1"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 1.0 + 0.5) / 3)
    f1 = [2 * 3 / (4 + 5), 2 * 1 / (1 + 2), 2 * 2 / (4 + 2)]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_absent_class_scores_zero_without_numpy_warnings() -> None:
    # Class 2 neither occurs nor is predicted: its sensitivity and precision are 0 (not nan), it is
    # left out of the balanced accuracy and macro-F1, and no 0/0 warning leaks into the CLI output.
    cm = np.array([[4, 1, 0], [2, 3, 0], [0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["sensitivity"]["c"] == 0.0 and m["precision"]["c"] == 0.0
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.6) / 2)
    assert m["macro_f1"] == pytest.approx((2 * 4 / (5 + 6) + 2 * 3 / (5 + 4)) / 2)


def test_empty_confusion_is_all_zero_not_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_from_confusion(np.zeros((3, 3), dtype=int))
    assert (m["n"], m["correct"]) == (0, 0)
    assert (m["accuracy"], m["balanced_accuracy"], m["macro_f1"]) == (0.0, 0.0, 0.0)
    assert m["sensitivity"] == {"0": 0.0, "1": 0.0, "2": 0.0}


def test_counts_stay_integers_for_float_confusion() -> None:
    # A confusion matrix read back from JSON/CSV as floats still reports integer counts.
    m = metrics_from_confusion(np.array([[8.0, 2.0], [1.0, 3.0]]))
    assert m["confusion"] == [[8, 2], [1, 3]]
    assert all(type(v) is int for row in m["confusion"] for v in row)
    assert type(m["n"]) is int and type(m["correct"]) is int and m["support"] == {"0": 10, "1": 4}


def test_label_dtypes_and_shapes() -> None:
    # uint8 labels (as stored by many datasets) with 17 classes: 16 * 17 + 16 overflows uint8 unless
    # the labels are widened before the bin index is formed.
    y8 = torch.tensor([16, 16, 0], dtype=torch.uint8)
    m = classification_metrics(y8, torch.tensor([16, 0, 0]), 17)
    assert m["confusion"][16][16] == 1 and m["confusion"][16][0] == 1 and m["confusion"][0][0] == 1
    # Class indices held as floats (e.g. a float label column) count like integers.
    as_float = classification_metrics(torch.tensor([0.0, 1.0, 2.0, 2.0]), np.array([0.0, 2.0, 2.0, 1.0]), 3)
    assert as_float["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    # Any shape is flattened: a (2, 2) batch of labels is 4 samples.
    grid = classification_metrics(np.array([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]), 2)
    assert grid["confusion"] == [[1, 0], [1, 2]] and grid["n"] == 4


def test_unseen_classes_keep_the_full_matrix_shape() -> None:
    m = classification_metrics([0, 0], [0, 0], 4)
    assert m["confusion"] == [[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_length_mismatch_error_names_both_counts() -> None:
    with pytest.raises(DataError, match=r"^y_true has 3 entries but y_pred has 2\.$"):
        classification_metrics([0, 1, 1], [0, 1], 2)


def test_predicted_but_absent_class_has_zero_sensitivity() -> None:
    # Class c never occurs but is predicted twice: its sensitivity is 0 (not whatever memory the
    # division left in the unset entry), its precision 0/2.
    m = metrics_from_confusion(np.array([[3, 1, 2], [1, 3, 0], [0, 0, 0]]), ["a", "b", "c"])
    assert m["sensitivity"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.75), "c": 0.0}
    assert m["precision"]["c"] == 0.0 and m["support"]["c"] == 0
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)


def test_wilson_interval_by_hand_and_edges() -> None:
    """Wilson's interval for 81/263 at 95 % (z = 1.959964): centre and half-width by hand; at 0/n it starts at 0
    and is not empty (the Wald interval would be [0, 0]); levels order the widths."""
    import math

    from medrobust.evaluation.metrics import wilson_interval

    z, s, n = 1.959963984540054, 81, 263
    p = s / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = wilson_interval(s, n)
    assert lo == pytest.approx(c - h, abs=1e-12) and hi == pytest.approx(c + h, abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo0, hi0 = wilson_interval(0, 10)
    assert lo0 == 0.0 and hi0 == pytest.approx(z * z / (10 + z * z), abs=1e-12)
    assert wilson_interval(10, 10)[1] == 1.0
    lo90, hi90 = wilson_interval(s, n, level=0.9)
    assert lo < lo90 < p < hi90 < hi
    for bad in ((5, 0), (6, 5), (-1, 5)):
        with pytest.raises(DataError, match="successes <= n"):
            wilson_interval(*bad)
    with pytest.raises(DataError, match="level"):
        wilson_interval(1, 2, level=1.0)


def test_newcombe_difference_interval_by_hand() -> None:
    """Newcombe (1998) method 10 on his example 56/70 − 48/80: (0.0524, 0.3339)."""
    from medrobust.evaluation.metrics import difference_interval

    lo, hi = difference_interval((56, 70), (48, 80))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo2, hi2 = difference_interval((48, 80), (56, 70))
    assert lo2 == pytest.approx(-hi, abs=1e-12) and hi2 == pytest.approx(-lo, abs=1e-12)
