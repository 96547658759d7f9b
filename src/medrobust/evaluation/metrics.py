"""Classification metrics from a confusion matrix.

Definitions (as in Ma & Liang, Comput. Biol. Med. 2022, arXiv 2110.09759): class-balanced accuracy = mean per-class recall over the
classes present in ``y_true``; macro-F1 = mean over classes of ``2 TP / (row sum + column sum)``;
sensitivity = recall = ``TP / row sum``; precision = ``TP / column sum`` (0 when undefined).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medrobust.errors import DataError


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    t = np.asarray(torch.as_tensor(y_true).cpu(), dtype=np.int64).reshape(-1)
    p = np.asarray(torch.as_tensor(y_pred).cpu(), dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.size} entries but y_pred has {p.size}.")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, classes: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Accuracy, class-balanced accuracy, macro-F1, per-class sensitivity and precision.

    Counts are returned too (``n``, ``correct``, ``confusion``) so ratios can be re-derived.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    tp = np.diag(cm).astype(np.float64)
    rows, cols = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
    present = rows > 0
    recall = np.divide(tp, rows, out=np.zeros(k), where=rows > 0)
    precision = np.divide(tp, cols, out=np.zeros(k), where=cols > 0)
    f1 = np.divide(2 * tp, rows + cols, out=np.zeros(k), where=(rows + cols) > 0)
    n = int(cm.sum())
    return {
        "n": n,
        "correct": int(tp.sum()),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "sensitivity": {c: float(r) for c, r in zip(names, recall)},
        "precision": {c: float(p) for c, p in zip(names, precision)},
        "support": {c: int(r) for c, r in zip(names, rows)},
        "confusion": cm.tolist(),
    }


def classification_metrics(
    y_true: Any, y_pred: Any, num_classes: int, classes: list[str] | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of :func:`confusion_matrix`."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes), classes)


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (Wilson, JASA 22:209-212, 1927).

    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z`` the ``(1+level)/2`` normal quantile;
    unlike the Wald interval it stays inside [0, 1] and is not empty at ``p̂ = 0`` or ``1``.
    """
    from scipy.stats import norm

    if not (isinstance(n, (int, np.integer)) and n > 0 and 0 <= successes <= n):
        raise DataError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got successes={successes}, n={n}.")
    if not 0.0 < level < 1.0:
        raise DataError(f"level must be in (0, 1), got {level}.")
    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, float(centre - half))   # exact ends: 0 and 1 (rounding aside)
    hi = 1.0 if successes == n else min(1.0, float(centre + half))
    return lo, hi


def difference_interval(a: tuple[int, int], b: tuple[int, int], *, level: float = 0.95) -> tuple[float, float]:
    """Interval for the difference ``a − b`` of two independent proportions, each given as ``(successes, n)``:
    Newcombe's hybrid score interval (Newcombe, Stat. Med. 17:873-890, 1998, method 10), built from the two
    Wilson intervals ``(l₁, u₁)`` and ``(l₂, u₂)``: ``d − sqrt((p₁−l₁)² + (u₂−p₂)²)`` to
    ``d + sqrt((u₁−p₁)² + (p₂−l₂)²)`` with ``d = p₁ − p₂``."""
    (s1, n1), (s2, n2) = a, b
    l1, u1 = wilson_interval(s1, n1, level=level)
    l2, u2 = wilson_interval(s2, n2, level=level)
    p1, p2 = s1 / n1, s2 / n2
    d = p1 - p2
    return d - float(np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)), d + float(np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
