"""Area under the ROC curve from ranks (no scikit-learn needed).

Binary AUC is the Mann-Whitney U statistic divided by ``n_pos * n_neg`` (Hanley & McNeil, Radiology
143:29-36, 1982): the probability that a random positive scores above a random negative, ties counted
one half; tied scores get their average rank. Multi-class AUC is the mean one-vs-rest AUC over classes
and multi-label AUC the mean over labels, as in the MedMNIST v2 evaluator (Yang et al., Sci. Data
10:41, 2023); a two-column score matrix uses the score of class 1 (MedMNIST's binary rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from medrobust.errors import ConfigError


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def binary_auc(y_true: Any, score: Any) -> float:
    """ROC AUC of ``score`` for binary labels ``y_true`` in {0, 1}.

    Raises
    ------
    ConfigError
        Shapes differ, labels are not 0/1, scores are not finite, or one class is absent (AUC undefined).
    """
    y = _as_numpy(y_true).reshape(-1)
    s = _as_numpy(score).reshape(-1)
    if y.shape != s.shape:
        raise ConfigError(f"roc_auc: {y.size} labels but {s.size} scores.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ConfigError("roc_auc: binary labels must be 0 or 1.")
    if not np.isfinite(s).all():
        raise ConfigError("roc_auc: scores contain NaN or inf.")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"roc_auc is undefined with {n_pos} positive and {n_neg} negative samples; both must be present.")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(y_true: Any, scores: Any, *, multilabel: bool = False) -> float:
    """ROC AUC for binary, multi-class (mean one-vs-rest) or multi-label (mean over labels) tasks.

    Parameters
    ----------
    y_true
        ``(N,)`` class indices, or ``(N, K)`` 0/1 targets when ``multilabel``.
    scores
        ``(N,)`` scores of class 1 (binary), or ``(N, K)`` per-class scores (probabilities or logits:
        only their order within each column matters). With ``K = 2`` and single-label targets the
        class-1 column is used.
    multilabel
        Average per-label AUC over the ``K`` columns of ``y_true``.
    """
    y = _as_numpy(y_true)
    s = _as_numpy(scores)
    if multilabel:
        if y.ndim != 2 or s.shape != y.shape:
            raise ConfigError(f"roc_auc: multi-label needs (N, K) labels and scores of the same shape, got {y.shape}, {s.shape}.")
        return float(np.mean([binary_auc(y[:, k], s[:, k]) for k in range(y.shape[1])]))
    y = y.reshape(-1)
    if s.ndim == 1:
        return binary_auc(y, s)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ConfigError(f"roc_auc: scores must be (N,) or (N, K) with N = {y.size}, got {s.shape}.")
    k = s.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k or not np.all(y == np.round(y))):
        raise ConfigError(f"roc_auc: labels must be class indices in 0..{k - 1}.")
    if k == 2:
        return binary_auc(y, s[:, 1])
    return float(np.mean([binary_auc(y == c, s[:, c]) for c in range(k)]))
