"""Reduced-precision forwards: a model run under ``torch.autocast`` (bf16) that still returns float32 logits.

bfloat16 (8 exponent bits, 7 mantissa bits; Kalamkar et al., "A study of BFLOAT16 for deep learning training",
arXiv 1905.12322, 2019) halves the memory traffic of a forward on GPUs with bf16 tensor cores. Attacks then see
logits and input gradients rounded at about 3 significant digits, which can change which samples an attack
flips; :func:`medrobust.evaluation.precision.precision_check` measures that before an evaluation uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.checks import check_choice
from medrobust.models.inference import accepts_mask

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class Autocast(nn.Module):
    """``model``'s forward under ``torch.autocast(device_type=<input device>, dtype=dtype)``, float32 logits out.

    The wrapped model's parameters stay float32 (autocast casts per operation); a padding mask is passed on
    when the wrapped model takes one.
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        for attr in ("input_shape", "card"):
            if hasattr(model, attr):
                object.__setattr__(self, attr, getattr(model, attr))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            z = self.model(x) if mask is None or not accepts_mask(self.model) else self.model(x, mask=mask)
        return z.float()


def with_precision(model: nn.Module, precision: Any) -> nn.Module:
    """``model`` itself for ``"fp32"``, else wrapped in :class:`Autocast` with that dtype."""
    dtype = PRECISIONS[check_choice(precision, "precision", tuple(PRECISIONS))]
    return model if dtype is None else Autocast(model, dtype=dtype)
