"""Evaluation: metrics (and, as they land, protocols, result cards and reports)."""

from medrobust.evaluation.metrics import classification_metrics, confusion_matrix, metrics_from_confusion

__all__ = ["classification_metrics", "confusion_matrix", "metrics_from_confusion"]
