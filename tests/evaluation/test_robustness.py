"""Robustness metrics equal hand computations (numerators, denominators, AUC of the ε curve)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation import metrics_from_confusion
from medrobust.evaluation.robustness import (
    attack_success_rate,
    clean_accuracy,
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


def test_clean_accuracy_and_unsymmetric_success_rate() -> None:
    assert clean_accuracy(Y, CLEAN) == {"numerator": 6, "denominator": 8, "value": 0.75}
    # 4 clean-correct samples, the attack flips only one of them: 1/4 (counting the ones it did not
    # flip would give 3/4).
    y, clean, adv = np.array([0, 1, 2, 0]), np.array([0, 1, 2, 0]), np.array([0, 1, 0, 0])
    assert attack_success_rate(y, clean, adv) == {"numerator": 1, "denominator": 4, "value": 0.25}


def test_tensor_and_batched_labels() -> None:
    # Labels as torch tensors and as a (batches, batch size) grid count per sample.
    ty, tadv = torch.as_tensor(Y), torch.as_tensor(ADV)
    assert robust_accuracy(ty, tadv) == robust_accuracy(Y, ADV)
    assert attack_success_rate(ty, torch.as_tensor(CLEAN), tadv)["value"] == 0.5
    assert robust_accuracy(Y.reshape(2, 4), ADV.reshape(2, 4)) == {"numerator": 3, "denominator": 8, "value": 3 / 8}
    assert fooling_rate(CLEAN.reshape(4, 2), ADV) == {"numerator": 3, "denominator": 8, "value": 3 / 8}


_LABEL_ARGS = [
    pytest.param(robust_accuracy, ("y", "adv_pred"), id="robust_accuracy"),
    pytest.param(clean_accuracy, ("y", "clean_pred"), id="clean_accuracy"),
    pytest.param(attack_success_rate, ("y", "clean_pred", "adv_pred"), id="attack_success_rate"),
    pytest.param(fooling_rate, ("clean_pred", "adv_pred"), id="fooling_rate"),
    pytest.param(targeted_success_rate, ("y", "target", "adv_pred"), id="targeted_success_rate"),
]


@pytest.mark.parametrize(("fn", "names"), _LABEL_ARGS)
def test_non_integer_labels_name_the_argument(fn: Any, names: tuple[str, ...]) -> None:
    for bad in names:
        args = {n: Y.copy() for n in names}
        args[bad] = Y.astype(np.float32) + 0.5            # probabilities / logits passed by mistake
        with pytest.raises(DataError, match=rf"^{bad} must hold integer class indices, got dtype float32\.$"):
            fn(**args)
    args = {n: Y.copy() for n in names}
    args[names[-1]] = np.array(["N"] * len(Y))          # class names instead of indices
    with pytest.raises(DataError, match=rf"^{names[-1]} must hold integer class indices"):
        fn(**args)


@pytest.mark.parametrize(("fn", "names"), _LABEL_ARGS)
def test_length_mismatch_is_a_data_error(fn: Any, names: tuple[str, ...]) -> None:
    for short in names:
        for n_short in (1, len(Y) - 1):                   # length 1 would otherwise broadcast silently
            args = {n: Y.copy() for n in names}
            args[short] = Y[:n_short]
            with pytest.raises(DataError, match=r"^label arrays differ in length: \{.*'" + short + rf"': {n_short}"):
                fn(**args)


def test_three_different_lengths_are_rejected() -> None:
    with pytest.raises(DataError, match="differ in length"):
        attack_success_rate(Y, CLEAN[:7], ADV[:6])


def test_curve_auc_edge_cases() -> None:
    # One radius: the trapezoid from (0, clean) to (ε, acc), divided by ε.
    assert curve_auc([0.1], [0.5], clean_accuracy=1.0) == pytest.approx(0.75)
    # Column-shaped inputs (e.g. read from a table) are flattened.
    col = curve_auc(np.array([[0.0], [0.1], [0.2]]), np.array([[1.0], [0.5], [0.0]]))
    assert col == pytest.approx(0.5) and col == pytest.approx(curve_auc([0.0, 0.1, 0.2], np.array([[1.0], [0.5], [0.0]])))
    with pytest.raises(ConfigError, match=r"^eps and accuracy must be non-empty and of equal length, got 0 and 0\.$"):
        curve_auc([], [])
    with pytest.raises(ConfigError, match=r"^eps and accuracy must be non-empty and of equal length, got 2 and 1\.$"):
        curve_auc([0.0, 0.1], [1.0])
    with pytest.raises(ConfigError, match=r"^eps must be non-negative and strictly increasing"):
        curve_auc([0.0, 0.1, 0.1], [1.0, 0.5, 0.5])      # a repeated ε
    with pytest.raises(ConfigError, match=r"^eps does not start at 0: pass clean_accuracy"):
        curve_auc([0.1], [0.5])
    with pytest.raises(ConfigError, match=r"^the largest ε must be > 0\.$"):
        curve_auc([0.0], [0.9])


def test_curve_auc_computes_in_float64() -> None:
    # float16 inputs: the area of the float16 values, computed in double precision (in float16 the
    # width 0.7 - 0.013 alone is off by 2e-4).
    e16 = np.array([0.0, 0.013, 0.7], dtype=np.float16)
    a16 = np.array([0.9, 0.7, 0.3], dtype=np.float16)
    e, a = e16.astype(np.float64), a16.astype(np.float64)
    hand = ((e[1] - e[0]) * (a[0] + a[1]) + (e[2] - e[1]) * (a[1] + a[2])) / 2 / e[2]
    assert curve_auc(e16, a16) == pytest.approx(hand, rel=1e-12)
    assert curve_auc(e16, a) == pytest.approx(hand, rel=1e-12)


def test_curve_from_minimal_eps_options() -> None:
    m = np.array([[0.0, 0.02], [0.05, np.inf]])          # collected per batch: 4 samples
    assert curve_from_minimal_eps(m, [0.01]) == [{"numerator": 3, "denominator": 4, "value": 0.75}]
    # Denominator of the whole test set when only some samples were attacked.
    assert curve_from_minimal_eps(m, [0.01, 0.05], n_total=10) == [
        {"numerator": 3, "denominator": 10, "value": 0.3}, {"numerator": 1, "denominator": 10, "value": 0.1}]
    # A float16 radius is compared exactly: float16(0.1) = 0.09997558… is above 0.09997.
    assert curve_from_minimal_eps(np.array([0.1], dtype=np.float16), [0.09997])[0]["numerator"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_on_the_gpu() -> None:
    dev = torch.device("cuda")
    assert robust_accuracy(torch.as_tensor(Y, device=dev), torch.as_tensor(ADV, device=dev))["numerator"] == 3
