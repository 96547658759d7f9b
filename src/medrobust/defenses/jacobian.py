"""Jacobian regularisation: penalise the input-output Jacobian ``J_i = ∂z(x_i)/∂x_i`` of the logits.

Variants, as implemented by the ECG papers (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134, and
Comput. Biol. Med. 2022, arXiv 2110.09759; Shao et al., arXiv 2203.09487, JR baseline), with ``N`` the batch
size, ``D`` the number of input values per sample and ``K`` the number of classes:

* ``"l1"`` (Ma & Liang, MIT-BIH): ``R = (1/(N·D)) Σ_i Σ_m ‖∂z_m/∂x_i‖₁``; loss ``CE + β·R`` with β = 0.7
  (CNN1) / 0.9 (MLP1), from epoch 0.
* ``"frobenius"`` (Ma & Liang, CPSC2018): ``R = sqrt(Σ_i Σ_m ‖∂z_m/∂x_i‖₂²) / (N·K)``; λ = 24 from epoch
  10 (journal code) or λ = 44 from epoch 0 (ICMLA 2020 code).
* ``"squared"`` (CardioDefense's JR baseline): ``R = (1/N) Σ_i Σ_m ‖∂z_m/∂x_i‖₂²``; λ = 44 from epoch 10.

``method="exact"`` computes one backward pass per class (``K`` double-back-propagation passes).
``method="projection"`` estimates ``Σ_m ‖∂z_m/∂x_i‖₂² = ‖J_i‖_F²`` from ``P`` random projections
``v ~ N(0, I_K)``: ``E‖vᵀJ_i‖₂² = ‖J_i‖_F²`` (unbiased; Hoffman, Roberts & Yaida, "Robust Learning with
Jacobian Regularization", arXiv 1908.02729, 2019, use directions on the unit sphere scaled by ``K``;
the Gaussian version is equally unbiased), at the cost of ``P`` backward passes instead of ``K``. It
applies to the squared-norm variants only (no unbiased projection estimator of an L1 norm exists);
for ``"frobenius"`` the quantity under the square root is estimated without bias.

As with NSR, the gradient of a batch sum equals per-sample gradients only when samples do not
interact (no batch-norm in train mode; CardioDefense's base CNN violates this). Padded samples of
variable-length records do not count (the gradient is multiplied by the padding mask). Default class
balancing: Ma & Liang's tiled sampler (``class_balance="auto"`` → ``"oversample"``).
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

VARIANTS: tuple[str, ...] = ("l1", "frobenius", "squared")
METHODS: tuple[str, ...] = ("exact", "projection")

JACOBIAN_RECIPES: dict[str, dict[str, Any]] = {
    "mitdb": {"variant": "l1", "weight": None, "warmup_epochs": 0},
    "cpsc2018": {"variant": "frobenius", "weight": 24.0, "warmup_epochs": 10},
    "icmla2020": {"variant": "frobenius", "weight": 44.0, "warmup_epochs": 0},
    "cardiodefense": {"variant": "squared", "weight": 44.0, "warmup_epochs": 10},
}


def jacobian_norm(
    x: torch.Tensor,
    logits: torch.Tensor,
    *,
    variant: str = "l1",
    method: str = "exact",
    projections: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Jacobian regulariser ``R`` of a batch (see the module docstring for the three variants).

    Parameters
    ----------
    x
        Input batch with ``requires_grad=True``.
    logits
        ``(N, K)`` logits computed from ``x``.
    variant
        ``"l1"``, ``"frobenius"`` or ``"squared"``.
    method
        ``"exact"`` (one backward per class) or ``"projection"`` (``projections`` random Gaussian
        projections; squared-norm variants only).
    projections
        Number of random projections ``P``.
    generator
        Source of the projections (default: a generator seeded with 0).
    create_graph
        Keep the graph so that ``R`` can be back-propagated (training).
    mask
        Padding mask: padded samples do not enter the norms.

    Returns
    -------
    torch.Tensor
        Scalar ``R``.
    """
    check_choice(variant, "variant", VARIANTS)
    check_choice(method, "method", METHODS)
    if not x.requires_grad:
        raise ConfigError("jacobian_norm needs x with requires_grad=True and logits computed from it.")
    n, k = logits.shape
    if method == "projection" and variant == "l1":
        raise ConfigError(
            "random projections estimate squared Frobenius norms only; use method='exact' for variant='l1', "
            "or variant='frobenius' / 'squared'."
        )
    if method == "exact":
        acc: torch.Tensor | None = None
        for m in range(k):
            (g,) = torch.autograd.grad(logits[:, m].sum(), x, create_graph=create_graph, retain_graph=True)
            g = masked(g, mask).flatten(1)
            term = g.abs().sum() if variant == "l1" else (g * g).sum()
            acc = term if acc is None else acc + term
        assert acc is not None
        total = acc
    else:
        p = check_int(projections, "projections", minimum=1)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        total = logits.new_zeros(())
        for _ in range(p):
            v = torch.randn((n, k), generator=gen, device=gen.device, dtype=torch.float32).to(logits)
            (g,) = torch.autograd.grad((logits * v).sum(), x, create_graph=create_graph, retain_graph=True)
            total = total + (masked(g, mask).flatten(1) ** 2).sum()
        total = total / p
    if variant == "l1":
        return total / (n * x[0].numel())
    if variant == "frobenius":
        return torch.sqrt(total + 1e-20) / (n * k)
    return total / n


@register_defense("jacobian")
class JacobianTrainer(DefenseTrainer):
    """Jacobian regularisation: ``CE + λ·R`` after ``warmup_epochs`` epochs of plain CE.

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`.
    recipe
        ``"mitdb"`` (L1, β 0.7 CNN / 0.9 MLP1, no warm-up; default), ``"cpsc2018"`` (Frobenius, λ 24,
        warm-up 10), ``"icmla2020"`` (Frobenius, λ 44, no warm-up) or ``"cardiodefense"`` (squared, λ 44,
        warm-up 10). Explicit arguments override the recipe.
    variant
        ``"l1"``, ``"frobenius"`` or ``"squared"`` (``None``: the recipe's).
    weight
        β / λ (``None``: the recipe's).
    warmup_epochs
        Leading epochs of plain CE (``None``: the recipe's).
    method
        ``"exact"`` or ``"projection"``.
    projections
        Random projections per batch for ``method="projection"``.
    """

    name = "jacobian"
    default_class_balance = "oversample"  # Ma & Liang's tiled class-balanced sampler

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        recipe: str = "mitdb",
        variant: str | None = None,
        weight: float | None = None,
        warmup_epochs: int | None = None,
        method: str = "exact",
        projections: int = 1,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        r = JACOBIAN_RECIPES[check_choice(recipe, "recipe", tuple(JACOBIAN_RECIPES))]
        self.variant = check_choice(r["variant"] if variant is None else variant, "variant", VARIANTS)
        if weight is None:
            weight = r["weight"] if r["weight"] is not None else (0.9 if is_mlp1(model) else 0.7)
        self.weight = check_float(weight, "weight", minimum=0.0)
        self.warmup_epochs = check_int(r["warmup_epochs"] if warmup_epochs is None else warmup_epochs,
                                         "warmup_epochs")
        self.method = check_choice(method, "method", METHODS)
        self.projections = check_int(projections, "projections", minimum=1)
        if self.method == "projection" and self.variant == "l1":
            raise ConfigError("method='projection' estimates squared norms; use variant='frobenius' or 'squared' "
                              "(or method='exact' for the L1 variant).")
        self.recipe = recipe
        self.last_terms: dict[str, float] = {}
        self.hp = {"recipe": recipe, "variant": self.variant, "weight": self.weight,
                   "warmup_epochs": self.warmup_epochs, "method": self.method,
                   "projections": self.projections if self.method == "projection" else None}

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        active = self.epoch >= self.warmup_epochs and self.weight > 0
        x = x.detach().requires_grad_(active)
        logits = self.forward(x, mask)
        loss = F.cross_entropy(logits, y, weight=self.loss_weights)
        self.last_terms = {"ce": float(loss.detach())}
        if active:
            r = jacobian_norm(x, logits, variant=self.variant, method=self.method, projections=self.projections,
                              generator=self.generator, mask=mask)
            loss = loss + self.weight * r
            self.last_terms["regularizer"] = float(r.detach())
        return loss, logits
