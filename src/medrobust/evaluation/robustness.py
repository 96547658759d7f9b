"""Robustness metrics, each reported as numerator, denominator and value.

Definitions (as in Ma & Liang, Comput. Biol. Med. 2022, arXiv 2110.09759, and Croce et al., RobustBench, NeurIPS 2021 Datasets and Benchmarks):

* **robust accuracy** (accuracy under attack) = #(adversarial prediction = label) / N over *all* N
  samples. Samples misclassified when clean are not attacked and keep their clean prediction
  (Ma & Liang's convention: an attack never helps), so robust accuracy ≤ clean accuracy.
* **attack success rate** = #(clean-correct and adversarial-wrong) / #(clean-correct).
* **fooling rate** = #(adversarial prediction ≠ clean prediction) / N (Moosavi-Dezfooli et al.,
  CVPR 2017; used for universal perturbations).
* **targeted success rate** = #(adversarial prediction = target) / #(target ≠ label).
* **robustness AUC** = trapezoidal area under accuracy(ε) from ε = 0 to the largest ε, divided by
  that ε (Ma & Liang, Comput. Biol. Med. 2022, arXiv 2110.09759); in [0, 1],
  1 for a model that keeps 100 % accuracy at every ε.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from medrobust.errors import ConfigError, DataError


def ratio(numerator: int, denominator: int) -> dict[str, Any]:
    """``{"numerator", "denominator", "value"}`` with ``value = None`` when the denominator is 0."""
    numerator, denominator = int(numerator), int(denominator)
    return {"numerator": numerator, "denominator": denominator,
            "value": (numerator / denominator) if denominator else None}


def _labels(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(torch.as_tensor(a).cpu() if isinstance(a, torch.Tensor) else a).reshape(-1)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{name} must hold integer class indices, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"label arrays differ in length: {lengths}.")


def _accuracy(y: Any, pred: Any, name: str) -> dict[str, Any]:
    yy, pp = _labels(y, "y"), _labels(pred, name)
    _same_length(**{"y": yy, name: pp})
    return ratio(int((yy == pp).sum()), len(yy))


def robust_accuracy(y: Any, adv_pred: Any) -> dict[str, Any]:
    """#(``adv_pred == y``) / N."""
    return _accuracy(y, adv_pred, "adv_pred")


def clean_accuracy(y: Any, clean_pred: Any) -> dict[str, Any]:
    """#(``clean_pred == y``) / N (errors name ``clean_pred``)."""
    return _accuracy(y, clean_pred, "clean_pred")


def attack_success_rate(y: Any, clean_pred: Any, adv_pred: Any) -> dict[str, Any]:
    """#(clean-correct and adversarial-wrong) / #(clean-correct)."""
    yy, cp, ap = _labels(y, "y"), _labels(clean_pred, "clean_pred"), _labels(adv_pred, "adv_pred")
    _same_length(y=yy, clean_pred=cp, adv_pred=ap)
    cc = cp == yy
    return ratio(int((cc & (ap != yy)).sum()), int(cc.sum()))


def fooling_rate(clean_pred: Any, adv_pred: Any) -> dict[str, Any]:
    """#(``adv_pred != clean_pred``) / N."""
    cp, ap = _labels(clean_pred, "clean_pred"), _labels(adv_pred, "adv_pred")
    _same_length(clean_pred=cp, adv_pred=ap)
    return ratio(int((cp != ap).sum()), len(cp))


def targeted_success_rate(y: Any, target: Any, adv_pred: Any) -> dict[str, Any]:
    """#(``adv_pred == target``) / #(``target != y``); samples whose target is their label are ignored."""
    yy, tt, ap = _labels(y, "y"), _labels(target, "target"), _labels(adv_pred, "adv_pred")
    _same_length(y=yy, target=tt, adv_pred=ap)
    valid = tt != yy
    return ratio(int(((ap == tt) & valid).sum()), int(valid.sum()))


def curve_auc(eps: Sequence[float], accuracy: Sequence[float], *, clean_accuracy: float | None = None) -> float:
    """Normalised area under the accuracy-versus-ε curve (Ma & Liang 2022).

    Parameters
    ----------
    eps
        Increasing radii (ε ≥ 0).
    accuracy
        Accuracy at each ε.
    clean_accuracy
        Accuracy at ε = 0, prepended when ``eps`` does not start at 0 (required then).

    Returns
    -------
    float
        ``∫₀^{ε_max} acc(ε) dε / ε_max`` by the trapezoid rule.

    Examples
    --------
    >>> curve_auc([0.0, 0.1], [1.0, 0.0])
    0.5
    >>> round(curve_auc([0.01, 0.03, 0.05, 0.1], [0.9, 0.7, 0.5, 0.2], clean_accuracy=0.95), 6)
    0.5475
    """
    e = np.asarray(eps, dtype=np.float64).reshape(-1)
    a = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if e.size == 0 or e.size != a.size:
        raise ConfigError(f"eps and accuracy must be non-empty and of equal length, got {e.size} and {a.size}.")
    if (e < 0).any() or (np.diff(e) <= 0).any():
        raise ConfigError(f"eps must be non-negative and strictly increasing, got {e.tolist()}.")
    if e[0] > 0:
        if clean_accuracy is None:
            raise ConfigError("eps does not start at 0: pass clean_accuracy (the accuracy at ε = 0).")
        e = np.concatenate([[0.0], e])
        a = np.concatenate([[float(clean_accuracy)], a])
    if e[-1] <= 0:
        raise ConfigError("the largest ε must be > 0.")
    area = float(np.sum((e[1:] - e[:-1]) * (a[1:] + a[:-1]) / 2.0))
    return area / float(e[-1])


def curve_from_minimal_eps(min_eps: Any, eps: Sequence[float], n_total: int | None = None) -> list[dict[str, Any]]:
    """Robust accuracy at every ε from per-sample minimal adversarial radii.

    Parameters
    ----------
    min_eps
        Per-sample minimal adversarial ε: ``0`` for samples misclassified when clean, ``inf`` for
        samples no attack broke within the search range.
    eps
        Radii at which to read the curve.
    n_total
        Denominator (default ``len(min_eps)``).

    Returns
    -------
    list of dict
        One :func:`ratio` per ε: a sample counts as robust at ε when its minimal ε is larger.
    """
    m = np.asarray(min_eps, dtype=np.float64).reshape(-1)
    n = len(m) if n_total is None else int(n_total)
    return [ratio(int((m > float(e)).sum()), n) for e in eps]
