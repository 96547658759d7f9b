"""Attack objectives (per-sample losses to *maximise*) and the single-logit binary wrapper.

Every loss takes logits ``z`` of shape ``(N, K)``, labels ``y`` (integer ``(N,)`` or soft ``(N, K)``:
probabilities whose rows sum to 1) and optional target labels ``t`` ``(N,)``, and returns a per-sample
value ``(N,)`` that the attack increases. A user loss is any callable with that signature
(:func:`get_loss` passes callables through; it receives ``y`` exactly as given to the attack).

* ``"ce"`` — cross-entropy. Untargeted ``CE(z, y)``; with soft labels ``−Σ_k y_k log softmax(z)_k``;
  targeted ``−CE(z, t)``.
* ``"kl"`` — ``KL(y ‖ softmax(z)) = Σ_k y_k (log y_k − log softmax(z)_k)``, TRADES' inner maximisation
  (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019,
  arXiv 1901.08573, eq. 5) with ``y = softmax(f(x))`` of the clean input. With integer labels it equals
  the cross-entropy; targeted ``−CE(z, t)``.
* ``"margin"`` — Carlini & Wagner's logit margin (Carlini & Wagner, "Towards Evaluating the
  Robustness of Neural Networks", IEEE S&P 2017, arXiv 1608.04644). Untargeted
  ``max_{j≠y} z_j − z_y``; targeted ``z_t − max_{j≠t} z_j``. Positive exactly when the attack succeeds.
* ``"soft_margin"`` — the smooth version used by Ma & Liang's CPSC2018 adversarial training
  (Ma & Liang, Comput. Biol. Med. 2022, arXiv 2110.09759): untargeted ``logsumexp_{j≠y} z_j − z_y``; targeted ``z_t − logsumexp_{j≠t} z_j``.
* ``"dlr"`` — Difference of Logits Ratio (Croce & Hein, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks", ICML 2020, arXiv 2003.01690):
  untargeted ``−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)``; targeted
  ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`` with ``π`` sorting the logits in decreasing order.
  Invariant to shifting and scaling the logits. Needs at least 4 classes here.

The margin losses and DLR use ``argmax(y)`` as the label when given soft labels.

Losses are per sample (never averaged over the batch), so an attack's per-sample gradient does not
depend on the batch size or on which other samples are still active.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

LOSSES: tuple[str, ...] = ("ce", "margin", "soft_margin", "dlr", "kl")

_NEG = -1e30


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Integer labels: ``y`` itself, or ``argmax(y)`` for soft labels ``(N, K)``."""
    return y.argmax(1) if y.ndim == 2 else y


def _others(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Logits with the entry of class ``k`` replaced by a very negative number."""
    return z.scatter(1, k.view(-1, 1), _NEG)


def _pick(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return z.gather(1, k.view(-1, 1)).squeeze(1)


def ce_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy objective: ``CE(z, y)`` untargeted, ``−CE(z, target)`` targeted."""
    if target is None:
        if y.ndim == 2:
            return -(y.to(z.dtype) * F.log_softmax(z, dim=1)).sum(1)
        return F.cross_entropy(z, y, reduction="none")
    return -F.cross_entropy(z, target, reduction="none")


def kl_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(y ‖ softmax(z))`` for soft labels (TRADES, Zhang et al. ICML 2019, eq. 5); CE for integer labels."""
    if target is not None or y.ndim == 1:
        return ce_loss(z, y, target)
    p = y.to(z.dtype)
    return (torch.special.xlogy(p, p) - p * F.log_softmax(z, dim=1)).sum(1)


def margin_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini-Wagner logit margin: ``max_{j≠y} z_j − z_y`` (targeted: ``z_t − max_{j≠t} z_j``)."""
    y = hard_labels(y)
    if target is None:
        return _others(z, y).amax(1) - _pick(z, y)
    return _pick(z, target) - _others(z, target).amax(1)


def soft_margin_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Soft logit margin: ``logsumexp_{j≠y} z_j − z_y`` (targeted: ``z_t − logsumexp_{j≠t} z_j``)."""
    y = hard_labels(y)
    if target is None:
        return torch.logsumexp(_others(z, y), 1) - _pick(z, y)
    return _pick(z, target) - torch.logsumexp(_others(z, target), 1)


def dlr_loss(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Croce & Hein's Difference of Logits Ratio (untargeted or targeted); needs K >= 4 classes."""
    if z.shape[1] < 4:
        raise ConfigError(f"the DLR loss needs at least 4 classes, the model has {z.shape[1]}; use loss='margin'.")
    y = hard_labels(y)
    zs = z.sort(dim=1, descending=True).values
    zy = _pick(z, y)
    if target is None:
        return -(zy - _others(z, y).amax(1)) / (zs[:, 0] - zs[:, 2] + 1e-12)
    return -(zy - _pick(z, target)) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


_REGISTRY: dict[str, LossFn] = {
    "ce": ce_loss,
    "margin": margin_loss,
    "soft_margin": soft_margin_loss,
    "dlr": dlr_loss,
    "kl": kl_loss,
}


def get_loss(name: str | LossFn) -> LossFn:
    """Look up a loss by name (``"ce"``, ``"margin"``, ``"soft_margin"``, ``"dlr"``, ``"kl"``); callables pass through."""
    if callable(name):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key == "cw":
        key = "margin"
    if key not in _REGISTRY:
        raise ConfigError(f"unknown loss {name!r}; choose one of {LOSSES} or pass a callable loss(logits, y, target).")
    return _REGISTRY[key]


def loss_name(loss: str | LossFn) -> str:
    """A printable name of a loss (its name, or the callable's qualified name)."""
    if isinstance(loss, str):
        return loss
    return str(getattr(loss, "__qualname__", None) or type(loss).__name__)


def is_success(z: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample success: prediction differs from ``y`` (untargeted) or equals ``target`` (targeted)."""
    y = hard_labels(y)
    pred = z.argmax(1)
    return pred != y if target is None else pred == target


class BinaryLogitWrapper(nn.Module):
    """Turn a single-logit binary classifier into a two-logit one.

    A head that returns one logit ``s`` per sample (shape ``(N,)`` or ``(N, 1)``, class 1 when
    ``sigmoid(s) > 0.5``) becomes ``[0, s]``: ``softmax([0, s])[1] = sigmoid(s)`` exactly, so
    cross-entropy equals binary cross-entropy and the logit margin equals ``±s``. Use it for
    medical binary heads with every attack.

    Parameters
    ----------
    model
        The single-logit model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.model(x)
        if s.ndim == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.ndim != 1:
            raise ConfigError(
                f"BinaryLogitWrapper expects one logit per sample ((N,) or (N, 1)), got shape {tuple(s.shape)}."
            )
        return torch.stack([torch.zeros_like(s), s], dim=1)
