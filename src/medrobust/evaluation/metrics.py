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
