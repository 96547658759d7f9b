"""PGD adversarial training (Madry et al. 2018) with a clean/adversarial mix and an ε ramp.

Madry, A., Makelov, A., Schmidt, L., Tsipras, D. & Vladu, A. "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018 (arXiv 1706.06083). Each batch::

    x_adv = PGD_ε(x, y)            (model in eval mode, parameters frozen)
    loss  = w_clean·CE(f(x), y) + w_adv·CE(f(x_adv), y)

Madry: ``w_clean = 0, w_adv = 1``. Ma & Liang (ICLR 2020 AI4AH workshop, arXiv 2005.09134, "adv"
baselines on MIT-BIH): ε ∈ {0.1, 0.2, 0.3}, 10 sign steps of a fixed 0.01 from a uniform random start,
clamp to [0, 1]; CNN1 ``0.5·CE(clean) + 0.5·CE(adv)``, MLP1 ``CE(clean) + 1.0·CE(adv)`` (the default
weights follow the model: ``(1, 1)`` for MLP1, ``(0.5, 0.5)`` otherwise; ``recipe="ma2020"`` of
:mod:`medrobust.defenses.recipes` also fixes the 0.01 step). Ma & Liang's CPSC2018 recipe "advls_ε"
(Comput. Biol. Med. 2022, arXiv 2110.09759) is ``warmup_epochs=10, eps_ramp=True, steps=20,
rel_step_size=0.2, attack_loss="soft_margin", attack_correct_only=True``: clean training for the warm-up
epochs, then the training radius grows linearly, ``ε_e = ε·(e − w + 1)/(E − w)`` for epoch ``e``
(0-based) of ``E``, only the samples classified correctly in the current forward pass are attacked, and
the perturbation is multiplied by the padding mask (padded samples stay untouched).

Known deviations from the reference code (deliberate): the optimiser steps once per batch (the CNN
script steps twice by accident), and the attack runs in eval mode (identical for models without
batch-norm or dropout, such as CNN1/MLP1).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import PGD
from medrobust.attacks.losses import LOSSES
from medrobust.checks import BoundsArg, check_bounds, check_choice, check_float, check_int
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import DefenseTrainer, is_mlp1
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig


@register_defense("pgd_at")
class AdversarialTraining(DefenseTrainer):
    """PGD adversarial training with a clean/adversarial mix (Madry et al., ICLR 2018, arXiv 1706.06083).

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`.
    eps
        L∞ (or L2) training radius in input units (Ma & Liang MIT-BIH: 0.1, 0.2 or 0.3).
    steps
        PGD steps per batch (``k``; Ma & Liang: 10).
    step_size
        Absolute PGD step (Ma & Liang: 0.01). Exclusive with ``rel_step_size``.
    rel_step_size
        Step as a fraction of the (possibly ramped) radius, e.g. ``4/20`` for the CPSC recipe.
        Default when neither is given: ``0.1`` (ε/10, i.e. Ma & Liang's 0.01 at ε = 0.1).
    adv_ratio
        Shortcut for ``clean_weight = 1 − r, adv_weight = r``; 1 trains on adversarial inputs only (Madry).
    clean_weight, adv_weight
        ``w_clean``, ``w_adv`` (default: ``(1, 1)`` for MLP1, ``(0.5, 0.5)`` otherwise, Ma & Liang).
    norm
        ``"linf"`` or ``"l2"``.
    random_start
        Uniform random start in the ball (Madry, Ma & Liang).
    bounds
        Input range of the adversarial examples: ``(lo, hi)``, ``None`` or ``"auto"`` (the data units'
        natural range: (0, 1) for normalised beats, (-1, 1) for max-abs scaled records, else unbounded).
    attack_loss
        Objective of the training attack: ``"ce"`` (default), ``"margin"``, ``"soft_margin"`` (CPSC
        recipe) or ``"dlr"``.
    attack_correct_only
        Attack only the samples that the current (train-mode) forward pass classifies correctly; the
        others enter the adversarial term unperturbed (CPSC recipe).
    warmup_epochs
        Leading epochs trained on clean inputs only.
    eps_ramp
        Grow ε linearly from ``ε/(E − w)`` after the warm-up to ``ε`` at the last epoch.

    Examples
    --------
    >>> trainer = AdversarialTraining(model, TrainConfig(epochs=10), eps=0.1, steps=10, step_size=0.01)  # doctest: +SKIP
    >>> result = trainer.fit(train, val)                                                                # doctest: +SKIP
    """

    name = "pgd_at"
    default_class_balance = "oversample"  # Ma & Liang's tiled class-balanced sampler (MIT-BIH and CPSC 2018)

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        eps: float = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        adv_ratio: float | None = None,
        clean_weight: float | None = None,
        adv_weight: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        bounds: BoundsArg = "auto",
        attack_loss: str = "ce",
        attack_correct_only: bool = False,
        warmup_epochs: int = 0,
        eps_ramp: bool = False,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.steps = check_int(steps, "steps", minimum=1)
        if step_size is not None and rel_step_size is not None:
            raise ConfigError("pass step_size (absolute) or rel_step_size (fraction of eps), not both.")
        if step_size is None and rel_step_size is None:
            rel_step_size = 0.1  # ε/10: Ma & Liang's 0.01 at ε = 0.1 (and Han's α/ε)
        self.step_size = None if step_size is None else check_float(step_size, "step_size", minimum=0.0, strict=True)
        self.rel_step_size = (None if rel_step_size is None
                              else check_float(rel_step_size, "rel_step_size", minimum=0.0, strict=True))
        self.clean_weight, self.adv_weight = _mix(model, adv_ratio, clean_weight, adv_weight)
        self.norm = check_choice(norm, "norm", ("linf", "l2"))
        self.random_start = bool(random_start)
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.attack_loss = check_choice(attack_loss, "attack_loss", LOSSES)
        self.attack_correct_only = bool(attack_correct_only)
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs")
        self.eps_ramp = bool(eps_ramp)
        if self.warmup_epochs >= self.config.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} leaves no adversarial epoch out of epochs={self.config.epochs}."
            )
        self._record_hp()

    def _record_hp(self) -> None:
        self.hp = {
            "eps": self.eps, "steps": self.steps, "step_size": self.step_size, "rel_step_size": self.rel_step_size,
            "clean_weight": self.clean_weight, "adv_weight": self.adv_weight, "norm": self.norm, "random_start": self.random_start,
            "bounds": list(self.bounds) if self.bounds is not None else None, "bounds_arg": self.bounds_arg,
            "attack_loss": self.attack_loss, "attack_correct_only": self.attack_correct_only,
            "warmup_epochs": self.warmup_epochs, "eps_ramp": self.eps_ramp, "attack_mode": "eval, frozen parameters",
        }

    def prepare(self, train: ECGDataset) -> None:
        self.bounds = self.resolve_bounds(self.bounds_arg)
        self.check_scale(self.eps, "eps")
        self._record_hp()

    # ------------------------------------------------------------------------------------
    def current_eps(self) -> float:
        """The training radius of the current epoch (0 during warm-up)."""
        if self.epoch < self.warmup_epochs:
            return 0.0
        if not self.eps_ramp:
            return self.eps
        span = self.config.epochs - self.warmup_epochs
        return self.eps * min(1.0, (self.epoch - self.warmup_epochs + 1) / span)

    def attack(self, x: torch.Tensor, y: torch.Tensor, eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
        """PGD examples for ``(x, y)`` at radius ``eps`` (eval mode, frozen parameters, no early stop; padded
        samples untouched)."""
        step = self.step_size
        return self.run_attack(PGD, x, y, mask, eps=eps, steps=self.steps, step_size=step,
                               rel_step_size=None if step is not None else self.rel_step_size, norm=self.norm,
                               random_start=self.random_start, early_stop=False, loss=self.attack_loss,
                               bounds=self.bounds, generator=self.generator)

    def _adversarial(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, logits: torch.Tensor | None,
                     eps: float) -> torch.Tensor:
        if not self.attack_correct_only:
            return self.attack(x, y, eps, mask)
        assert logits is not None
        x_adv = x.clone()
        ok = (logits.detach().argmax(1) == y).nonzero().squeeze(1)
        if ok.numel() > 0:
            m = None if mask is None else (mask if mask.shape[0] == 1 else mask[ok])
            x_adv[ok] = self.attack(x[ok], y[ok], eps, m)
        return x_adv

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.current_eps()
        cw, aw = (self.clean_weight, self.adv_weight) if eps > 0 else (1.0, 0.0)
        logits = self.forward(x, mask) if cw > 0 or self.attack_correct_only else None
        if aw == 0.0:
            assert logits is not None
            return F.cross_entropy(logits, y, weight=self.loss_weights), logits
        adv_logits = self.forward(self._adversarial(x, y, mask, logits, eps), mask)
        loss = aw * F.cross_entropy(adv_logits, y, weight=self.loss_weights)
        if cw > 0:
            assert logits is not None
            return loss + cw * F.cross_entropy(logits, y, weight=self.loss_weights), logits
        return loss, adv_logits


def _mix(model: nn.Module, adv_ratio: float | None, clean_weight: float | None,
         adv_weight: float | None) -> tuple[float, float]:
    """``(w_clean, w_adv)`` from ``adv_ratio`` or explicit weights (default: Ma & Liang's per-model mix)."""
    if adv_ratio is not None:
        if clean_weight is not None or adv_weight is not None:
            raise ConfigError("pass adv_ratio or clean_weight/adv_weight, not both.")
        r = check_float(adv_ratio, "adv_ratio", minimum=0.0, maximum=1.0)
        return 1.0 - r, r
    default = 1.0 if is_mlp1(model) else 0.5
    cw = default if clean_weight is None else check_float(clean_weight, "clean_weight", minimum=0.0)
    aw = default if adv_weight is None else check_float(adv_weight, "adv_weight", minimum=0.0)
    if aw == 0.0:
        raise ConfigError("adv_weight must be > 0 (with adv_weight=0 this is plain CE training: use defence 'ce').")
    return cw, aw
