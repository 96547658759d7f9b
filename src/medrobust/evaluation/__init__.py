"""Evaluation: metrics, robustness protocol, reliability flags, result cards and exports.

>>> from medrobust.evaluation import ProtocolConfig, evaluate
>>> cfg = ProtocolConfig(attacks=["pgd", "sap"], eps=[0.01, 0.05, 0.1], mode="individual")  # doctest: +SKIP
>>> card = evaluate(model, test_set, cfg, out_dir="runs/eval")                               # doctest: +SKIP
>>> card["results"][0]["robust_accuracy"]   # {"numerator": ..., "denominator": ..., "value": ...}  # doctest: +SKIP
"""

from medrobust.evaluation.card import comparable, load_card
from medrobust.evaluation.flags import Flag, is_black_box
from medrobust.evaluation.metrics import classification_metrics, confusion_matrix, metrics_from_confusion
from medrobust.evaluation.perturbation import (
    high_frequency_fraction,
    lp_norms,
    perturbation_metrics,
    snr_db,
    total_variation,
    unit_scale,
)
from medrobust.evaluation.protocol import (
    STANDARD_PROTOCOLS,
    AttackSpec,
    ProtocolConfig,
    check_compatible,
    evaluate,
    select_indices,
    standard_protocol,
)
from medrobust.evaluation.robustness import (
    attack_success_rate,
    curve_auc,
    curve_from_minimal_eps,
    fooling_rate,
    ratio,
    robust_accuracy,
    targeted_success_rate,
)

from medrobust.evaluation.roc_auc import binary_auc, roc_auc


__all__ = [
    "classification_metrics", "confusion_matrix", "metrics_from_confusion", "roc_auc", "binary_auc",
    "lp_norms", "snr_db", "high_frequency_fraction", "total_variation", "perturbation_metrics", "unit_scale",
    "ratio", "robust_accuracy", "attack_success_rate", "fooling_rate", "targeted_success_rate", "curve_auc",
    "curve_from_minimal_eps",
    "AttackSpec", "ProtocolConfig", "STANDARD_PROTOCOLS", "standard_protocol", "evaluate", "select_indices",
    "check_compatible",
    "Flag", "is_black_box", "load_card", "comparable",
]
