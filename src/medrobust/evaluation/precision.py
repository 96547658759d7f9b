"""Is a reduced-precision forward safe for this evaluation? Robust accuracy with bf16 against float32.

Issue of the GPU fast path: bf16 autocast (:mod:`medrobust.models.precision`) is allowed only when the robust
accuracy an attack measures stays within ``tolerance_pp`` percentage points of the float32 one on the same
samples, seeds and radius; otherwise the evaluation keeps float32 and says why in its card.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from medrobust.checks import check_float
from medrobust.errors import DataError
from medrobust.models.precision import with_precision

DEFAULT_TOLERANCE_PP = 0.5
CHECK_SAMPLES = 256


def precision_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: Callable[[nn.Module], Any],
                    precision: str = "bf16", tolerance_pp: float = DEFAULT_TOLERANCE_PP,
                    mask: torch.Tensor | None = None) -> dict[str, Any]:
    """Run ``attack(model)`` and ``attack(<model at precision>)`` on ``(x, y)``; compare robust accuracy.

    ``attack`` builds a seeded attack for a model (the same seed both times, so the two runs differ only by
    the arithmetic). Returns both accuracies (clean and robust, over all samples), their difference in
    percentage points (reduced minus float32), the fraction of samples whose clean prediction agrees, and
    ``within``: ``|difference| <= tolerance_pp``.
    """
    tol = check_float(tolerance_pp, "tolerance_pp", minimum=0.0)
    if int(y.shape[0]) == 0:
        raise DataError("precision_check needs at least one sample (x and y are empty).")
    runs = {}
    for name, m in (("fp32", model), (precision, with_precision(model, precision))):
        res = attack(m)(x, y, mask=mask)
        runs[name] = res
    full, low = runs["fp32"], runs[precision]
    n = int(y.shape[0])
    robust = {k: float(((r.clean_pred == r.y) & ~r.success).sum()) / n for k, r in runs.items()}
    clean = {k: float((r.clean_pred == r.y).sum()) / n for k, r in runs.items()}
    diff = 100.0 * (robust[precision] - robust["fp32"])
    return {"precision": precision, "n": n, "attack": full.attack, "eps": float(f"{float(full.eps.reshape(-1)[0]):.6g}"),
            "clean_accuracy": clean, "robust_accuracy": robust, "difference_pp": diff, "tolerance_pp": tol,
            "clean_agreement": float((full.clean_pred == low.clean_pred).float().mean()),
            "within": abs(diff) <= tol}
