"""Evaluation: metrics (and, as they land, protocols, result cards and reports)."""

from medrobust.evaluation.metrics import classification_metrics, confusion_matrix, metrics_from_confusion
from medrobust.evaluation.roc_auc import binary_auc, roc_auc

__all__ = ["classification_metrics", "confusion_matrix", "metrics_from_confusion", "roc_auc", "binary_auc"]
