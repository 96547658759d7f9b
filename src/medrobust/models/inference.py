"""The one batched predictor, and the one place that knows how to hand a padding mask to a model.

Models of variable-length records (Ma & Liang's 12-lead ResNet-18 with masked average pooling, CPSC 2018) take
``forward(x, mask=None)``; every other model takes ``forward(x)``. :func:`forward` passes the mask exactly when
the model accepts one, so attacks, trainers, defences and the evaluation protocol call models the same way.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from medrobust.checks import check_int


def accepts_mask(model: Callable[..., Any]) -> bool:
    """``True`` when ``model``'s forward takes a ``mask`` keyword (cached on the module)."""
    cached = getattr(model, "_medrobust_accepts_mask", None)
    if cached is not None:
        return bool(cached)
    fn = model.forward if isinstance(model, nn.Module) else model
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        ok = False
    else:
        ok = "mask" in params
    if isinstance(model, nn.Module):
        object.__setattr__(model, "_medrobust_accepts_mask", ok)
    return ok


def forward(model: Callable[..., torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``model(x, mask=mask)`` when the model takes a mask and one is given, else ``model(x)``.

    A mask shared by the batch (leading dimension 1) is expanded to the batch for the model.
    """
    if mask is None or not accepts_mask(model):
        return model(x)
    if mask.shape[0] == 1 and x.shape[0] != 1:
        mask = mask.expand(x.shape[0], *mask.shape[1:])
    return model(x, mask=mask)


def predict_logits(model: Callable[..., torch.Tensor], x: torch.Tensor, *, batch_size: int = 1024,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``x`` in batches of ``batch_size`` without gradients (the model's mode is left as it is)."""
    check_int(batch_size, "batch_size", minimum=1)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            m = None
            if mask is not None:
                m = mask if mask.shape[0] == 1 else mask[i:i + batch_size]
            out.append(forward(model, x[i:i + batch_size], m).detach())
    if not out:
        return torch.empty(0)
    return torch.cat(out)


def predict(model: Callable[..., torch.Tensor], x: torch.Tensor, *, batch_size: int = 1024,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted classes ``(N,)`` (argmax of :func:`predict_logits`)."""
    return predict_logits(model, x, batch_size=batch_size, mask=mask).argmax(1)
