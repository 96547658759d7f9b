"""Noise-to-signal-ratio (NSR) regularisation (Ma & Liang 2020, 2022), Methods 2 and 1.

Ma, L. & Liang, L. "Improve robustness of DNN for ECG signal classification: a noise-to-signal ratio
perspective", ICLR 2020 AI4AH workshop (arXiv 2005.09134); Ma & Liang, "Enhancing adversarial
robustness of DNN-based ECG classifiers with an NSR regularisation", Comput. Biol. Med. 2022 (arXiv
2110.09759), NSR loss (Method 2) and its MIT-BIH / CPSC 2018 settings.

Around ``x`` a ReLU network is locally linear, ``z_y(x) = wᵀx + b`` with ``w = ∇ₓz_y(x)``; the worst
first-order change of ``z_y`` under ``‖δ‖∞ ≤ ε`` is ``ε‖w‖₁``, hence ``NSR(x) = ε‖∇ₓz_y‖₁ / |z_y|``.

* **MSE to one-hot**: ``L_mse = mean_i Σ_k (z_ik − 1[k = y_i])²`` pins ``z_y ≈ 1`` so the signal cannot
  be inflated as cross-entropy logits can.
* **Within-margin hinge** (margin ``m = 1``), on the samples classified correctly in the current
  forward pass: ``t_ij = m − z_{i,y_i} + z_ij`` for ``j ≠ y_i``; terms with ``0 < t_ij < 2m`` are kept and
  averaged (a single kept term, or none, is not divided).
* **Method 2** (``L_NSR``): ``(1/N_c) Σ_{i correct} log(1 + ‖∇ₓz_{y_i}(x_i)‖₁ / (|z_{y_i}(x_i)| + e))`` with
  ``e = 0.01``; the gradient is taken with ``create_graph`` (double back-propagation). Loss
  ``L_mse + L_margin + β·L_NSR``, β = 0.3 (CNN1) / 0.4 (MLP1) on MIT-BIH. The MIT-BIH code uses the raw
  ``z_y`` as the signal (``signal="abs"``; its intended ReLU is guarded by a shape test that never holds);
  the CPSC2018 code applies it (``signal="relu"``: ``‖∇ₓReLU(z_y)‖₁ / (ReLU(z_y) + e)``).
* **Method 1** (``L_align``): for a bias-free ReLU network ``z_y(x) = ∇ₓz_y(x)ᵀx`` exactly; the
  minimum-norm gradient with ``wᵀx = 1`` is ``x/‖x‖₂²``, so
  ``L_align = (1/N_c) Σ_{i correct} ‖∇ₓz_{y_i}(x_i) − x_i/(‖x_i‖₂² + 1e-8)‖₂²`` with weight 0.2, on bias-free
  models only.

Recipes (``recipe=``, explicit arguments override them):

============== ===================== ============ ======== =========
recipe         β                     margin wt.   warm-up  signal
============== ===================== ============ ======== =========
``mitdb``      0.3 CNN / 0.4 MLP1    1            0        ``abs``
``cpsc2018``   1.0                   1            10       ``relu``
``cardiodefense`` 1.0                1            10       ``abs``
============== ===================== ============ ======== =========

During warm-up epochs only ``L_mse`` is trained (Ma & Liang 2022 on CPSC 2018; Shao et al., arXiv
2203.09487, NSR baseline). Padded samples of variable-length records do not count: the input gradient
is multiplied by the padding mask before its norm. Ma & Liang train with their tiled class-balanced
sampler, the default class balancing here (``class_balance="auto"`` → ``"oversample"``).

The per-sample gradient is the gradient of the batch sum ``Σ_i z_{y_i}(x_i)``, which equals the
per-sample gradients only when samples do not interact (no batch-norm in train mode; true for CNN1
and MLP1). The reference code's fresh second forward pass is folded into the training forward
pass (same values, one forward fewer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.checks import check_choice, check_float, check_int
from medrobust.defenses.base import DefenseTrainer, is_mlp1, masked
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig

SIGNALS: tuple[str, ...] = ("abs", "relu")

NSR_RECIPES: dict[str, dict[str, Any]] = {
    "mitdb": {"beta": None, "margin_weight": 1.0, "warmup_epochs": 0, "signal": "abs"},
    "cpsc2018": {"beta": 1.0, "margin_weight": 1.0, "warmup_epochs": 10, "signal": "relu"},
    "cardiodefense": {"beta": 1.0, "margin_weight": 1.0, "warmup_epochs": 10, "signal": "abs"},
}


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A differentiable zero attached to the graph of ``logits``."""
    return logits.sum() * 0.0


def mse_onehot_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i Σ_k (z_ik − onehot(y_i)_k)²`` (Ma & Liang's MSE loss)."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return ((logits - target) ** 2).sum(1).mean()


def within_margin_loss(logits: torch.Tensor, y: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
    """Ma & Liang's "within margin" multi-class hinge on the correctly classified samples.

    Parameters
    ----------
    logits
        ``(N, K)`` logits of the current forward pass.
    y
        ``(N,)`` labels.
    margin
        ``m`` (1 in the papers).

    Returns
    -------
    torch.Tensor
        ``Σ kept t / #kept`` over ``t_ij = m − z_{i,y_i} + z_ij`` (``j ≠ y_i``, ``i`` correct) with
        ``0 < t_ij < 2m``; the plain sum when at most one term is kept.
    """
    correct = logits.detach().argmax(1) == y
    if not bool(correct.any()):
        return _zero(logits)
    z, yc = logits[correct], y[correct]
    t = margin - z.gather(1, yc.view(-1, 1)) + z
    keep = (t > 0) & (t < 2 * margin)
    keep[torch.arange(len(yc), device=z.device), yc] = False
    kept = t[keep]
    if kept.numel() <= 1:
        return kept.sum() + _zero(logits)
    return kept.sum() / kept.numel()


def class_logit_gradient(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, select: torch.Tensor | None = None,
                         *, signal: str = "abs", create_graph: bool = True,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``∇ₓ s_i`` and ``s_i`` for the true-class signal ``s_i = z_{y_i}`` (or ``ReLU(z_{y_i})``).

    Parameters
    ----------
    x
        The batch that ``logits`` was computed from, with ``requires_grad=True``.
    logits
        ``(N, K)`` logits.
    y
        Labels.
    select
        Bool ``(N,)``: samples whose gradient is needed (others get a zero row).
    signal
        ``"abs"`` (raw ``z_y``) or ``"relu"`` (``ReLU(z_y)``).
    create_graph
        Keep the graph for double back-propagation.
    mask
        Padding mask (1 on the signal): the gradient is zeroed on padded samples.

    Returns
    -------
    grad, s
        ``(N, *x.shape[1:])`` gradient and the ``(N,)`` signal.
    """
    if not x.requires_grad:
        raise ConfigError("the input batch must have requires_grad=True and logits must be computed from it.")
    s = logits.gather(1, y.view(-1, 1)).squeeze(1)
    if signal == "relu":
        s = torch.relu(s)
    w = s if select is None else s * select.to(s.dtype)
    (g,) = torch.autograd.grad(w.sum(), x, create_graph=create_graph)
    return masked(g, mask), s


def nsr_loss(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, *, e: float = 0.01, signal: str = "abs",
             correct: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Method 2: ``(1/N_c) Σ_{i correct} log(1 + ‖∇ₓs_i‖₁ / (|s_i| + e))`` (double back-propagation).

    Parameters
    ----------
    x, logits
        Batch with ``requires_grad=True`` and the logits computed from it.
    y
        Labels.
    e
        Stabiliser of the denominator (0.01).
    signal
        ``"abs"`` (MIT-BIH: ``s = z_y``, denominator ``|z_y|``) or ``"relu"`` (CPSC2018: ``s = ReLU(z_y)``).
    correct
        Bool ``(N,)`` of correctly classified samples (default: from ``logits``).
    mask
        Padding mask: padded samples do not enter ``‖∇ₓs_i‖₁``.

    Returns
    -------
    torch.Tensor
        The scalar regulariser (0 when no sample is correct).
    """
    check_choice(signal, "signal", SIGNALS)
    if correct is None:
        correct = logits.detach().argmax(1) == y
    n_c = int(correct.sum())
    if n_c == 0:
        return _zero(logits)
    g, s = class_logit_gradient(x, logits, y, correct, signal=signal, mask=mask)
    noise = g.flatten(1).abs().sum(1)
    ratio = torch.log1p(noise / (s.abs() + e))
    return (ratio * correct.to(ratio.dtype)).sum() / n_c


def alignment_loss(x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, *, correct: torch.Tensor | None = None,
                   eps: float = 1e-8, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Method 1: ``(1/N_c) Σ_{i correct} ‖∇ₓz_{y_i}(x_i) − x_i/(‖x_i‖₂² + eps)‖₂²``."""
    if correct is None:
        correct = logits.detach().argmax(1) == y
    n_c = int(correct.sum())
    if n_c == 0:
        return _zero(logits)
    g, _ = class_logit_gradient(x, logits, y, correct, signal="abs", mask=mask)
    xf = masked(x.detach(), mask).flatten(1)
    target = xf / ((xf**2).sum(1, keepdim=True) + eps)
    err = ((g.flatten(1) - target) ** 2).sum(1)
    return (err * correct.to(err.dtype)).sum() / n_c


def _has_bias(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if n.split(".")[-1] == "bias"]


class _MSEMarginBase(DefenseTrainer):
    """``L_mse + margin_weight·L_margin`` plus a regulariser from ``regularizer()`` after the warm-up."""

    default_class_balance = "oversample"  # Ma & Liang's tiled class-balanced sampler

    def __init__(self, model: nn.Module, config: TrainConfig | None, *, out_dir: str | Path | None,
                 generator: torch.Generator | None, margin: float, margin_weight: float, warmup_epochs: int) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.margin = check_float(margin, "margin", minimum=0.0, strict=True)
        self.margin_weight = check_float(margin_weight, "margin_weight", minimum=0.0)
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs")
        self.last_terms: dict[str, float] = {}

    def regularizer_weight(self) -> float:
        return 0.0

    def regularizer(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        warm = self.epoch < self.warmup_epochs
        weight = 0.0 if warm else self.regularizer_weight()
        x = x.detach().requires_grad_(weight > 0)
        logits = self.forward(x, mask)
        loss = mse_onehot_loss(logits, y)
        terms = {"mse": float(loss.detach())}
        if not warm:
            correct = logits.detach().argmax(1) == y
            if self.margin_weight > 0:
                m = within_margin_loss(logits, y, margin=self.margin)
                loss = loss + self.margin_weight * m
                terms["margin"] = float(m.detach())
            if weight > 0:
                r = self.regularizer(x, logits, y, correct, mask)
                loss = loss + weight * r
                terms["regularizer"] = float(r.detach())
        self.last_terms = terms
        return loss, logits


@register_defense("nsr")
@register_defense("mse", defaults={"beta": 0.0, "margin_weight": 0.0})
@register_defense("mse_margin", defaults={"beta": 0.0})
class NSRTrainer(_MSEMarginBase):
    """NSR regularisation, Method 2 (Ma & Liang 2020/2022; arXiv 2005.09134 §3, arXiv 2110.09759).

    Loss ``L_mse + margin_weight·L_margin + β·L_NSR`` (only ``L_mse`` during warm-up). With ``beta=0``
    it is Ma & Liang's "mseMargin" baseline (registered as ``"mse_margin"``), and with
    ``margin_weight=0`` too their "mse" baseline (``"mse"``).

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`. Ma & Liang train with Adamax, lr 1e-3,
        batch 128 and kernel normalisation (``build_model("cnn1", weight_norm=True)``).
    recipe
        ``"mitdb"`` (default), ``"cpsc2018"`` or ``"cardiodefense"``: the defaults of the table in the
        module docstring.
    beta
        Weight of ``L_NSR`` (``None``: the recipe's; MIT-BIH: 0.3 for CNN-type models, 0.4 for MLP1).
    e
        Denominator stabiliser (0.01).
    margin
        Hinge margin ``m`` (1).
    margin_weight
        Weight of ``L_margin`` (``None``: the recipe's, 1).
    warmup_epochs
        Leading epochs of ``L_mse`` only (``None``: the recipe's).
    signal
        ``"abs"`` or ``"relu"`` (``None``: the recipe's).
    """

    name = "nsr"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        recipe: str = "mitdb",
        beta: float | None = None,
        e: float = 0.01,
        margin: float = 1.0,
        margin_weight: float | None = None,
        warmup_epochs: int | None = None,
        signal: str | None = None,
    ) -> None:
        r = NSR_RECIPES[check_choice(recipe, "recipe", tuple(NSR_RECIPES))]
        super().__init__(model, config, out_dir=out_dir, generator=generator, margin=margin,
                         margin_weight=r["margin_weight"] if margin_weight is None else margin_weight,
                         warmup_epochs=r["warmup_epochs"] if warmup_epochs is None else warmup_epochs)
        if beta is None:
            beta = r["beta"] if r["beta"] is not None else (0.4 if is_mlp1(model) else 0.3)
        self.recipe = recipe
        self.beta = check_float(beta, "beta", minimum=0.0)
        self.e = check_float(e, "e", minimum=0.0, strict=True)
        self.signal = check_choice(r["signal"] if signal is None else signal, "signal", SIGNALS)
        self.hp = {"method": 2, "recipe": recipe, "beta": self.beta, "e": self.e, "margin": self.margin,
                   "margin_weight": self.margin_weight, "warmup_epochs": self.warmup_epochs, "signal": self.signal}

    def regularizer_weight(self) -> float:
        return self.beta

    def regularizer(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        return nsr_loss(x, logits, y, e=self.e, signal=self.signal, correct=correct, mask=mask)


@register_defense("nsr_align")
class NSRAlignTrainer(_MSEMarginBase):
    """NSR regularisation, Method 1: gradient alignment on bias-free models (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134).

    Loss ``L_mse + margin_weight·L_margin + weight·L_align``, weight 0.2. The model must have no bias
    parameters (build it with ``bias=False``), because the method relies on ``z_y(x) = ∇ₓz_y(x)ᵀx``.

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`.
    weight
        Weight of ``L_align`` (0.2).
    margin, margin_weight
        Hinge margin (1) and its weight (1).
    warmup_epochs
        Leading epochs of ``L_mse`` only (0).
    """

    name = "nsr_align"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        weight: float = 0.2,
        margin: float = 1.0,
        margin_weight: float = 1.0,
        warmup_epochs: int = 0,
    ) -> None:
        biases = _has_bias(model)
        if biases:
            raise ConfigError(
                f"NSR Method 1 needs a bias-free model (z_y(x) = grad·x holds only without biases); "
                f"this model has bias parameters {biases[:3]}{' ...' if len(biases) > 3 else ''}. "
                "Build it with bias=False, e.g. build_model('mlp1', bias=False)."
            )
        super().__init__(model, config, out_dir=out_dir, generator=generator, margin=margin,
                         margin_weight=margin_weight, warmup_epochs=warmup_epochs)
        self.weight = check_float(weight, "weight", minimum=0.0)
        self.hp = {"method": 1, "weight": self.weight, "margin": self.margin, "margin_weight": self.margin_weight,
                   "warmup_epochs": self.warmup_epochs}

    def regularizer_weight(self) -> float:
        return self.weight

    def regularizer(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        return alignment_loss(x, logits, y, correct=correct, mask=mask)
