"""Adversarial Distillation Training, "CardioDefense" (Shao et al. 2022).

Shao, H. et al., "Defending against adversarial attack in ECG classification with adversarial
distillation training", arXiv 2203.09487 (2022; released as CardioDefense)::

    stage 1  f₁:  x_adv = SAP(x; f₁, y);  loss = ½[H(y, f₁(x_adv)/T) + H(y, f₁(x)/T)]
    stage 2  q = softmax(f₁(x)/T);  f₂:  x_adv = SAP(x; f₂, q);  loss = ½[H(q, f₂(x_adv)/T) + H(q, f₂(x)/T)]

with ``H`` the soft cross-entropy, ``T = 1``, and the training adversary SAP (Han et al., "Deep learning
models for electrocardiograms are susceptible to adversarial attack", Nature Medicine 26:360-363, 2020):
``pgd_steps`` sign steps on ``δ`` then ``smooth_steps`` sign steps on ``θ`` through the SAP smoothing
filter, ``x_adv = x + S(θ)``; Shao et al.: ε = 10, α = 1 (ADC units), 5 + 5 steps. It is
:class:`medrobust.attacks.SAP` called with the soft labels (``loss="ce"`` is the soft cross-entropy; a
callable ``H(q, f(x')/T)`` when ``T ≠ 1``), ``early_stop=False`` and Han's final iterate (``output="final"``). ``f₁`` and ``f₂`` start
from independent random initialisations (as in the paper; not the student's initial weights).
Ablations: ``ablation="init"`` (Init-CardioDefense: adversarial stage 1, clean stage 2) and
``ablation="dist"`` (Dist-CardioDefense: clean stage 1, adversarial stage 2).

The adversary respects the data: its radius is checked against the data's amplitude, ``bounds="auto"``
clamps to the units' natural range (``(0, 1)`` normalised, ``(-1, 1)`` max-abs, none for ADC/mV), and
the padding mask of variable-length records keeps padded samples untouched (Han and Shao re-zero the
padding after the attack) and reaches models with masked pooling.

Choices where the reference differs (flags reproduce it): the training adversary runs in eval mode with
frozen parameters (the reference attacks in train mode, batch-norm statistics included:
``attack_train_mode=True``); soft labels come from the teacher in eval mode
(``soft_labels_train_mode=True`` for the reference's train mode); losses are batch means (the reference
sums). Class balancing: Shao et al. duplicate the rare classes of CinC 2017 (Noisy ×6, AF ×2); the generic
default here is Ma & Liang's tiled oversampling (``class_balance="auto"`` → ``"oversample"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medrobust.attacks import PGD, SAP, Attack
from medrobust.checks import BoundsArg, check_bounds, check_choice, check_float, check_int
from medrobust.data.base import ECGDataset
from medrobust.defenses.distillation import _TwoStageDistillation, soft_cross_entropy
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.models.inference import forward
from medrobust.train.trainer import TrainConfig

ABLATIONS: tuple[str, ...] = ("none", "init", "dist")


class _TrainModeView(nn.Module):
    """``model`` forced into train mode at every forward (the reference's train-mode adversary).

    Attacks put their model in eval mode; this view switches the wrapped model back to train mode
    (dropout, batch-norm batch statistics) inside each forward. The attack restores every module's mode
    on exit. The padding mask is passed on to models with masked pooling.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.model.train()
        return forward(self.model, x, mask)


class TemperedSoftCE:
    """Per-sample soft cross-entropy ``H(q, f(x)/T)`` as an attack loss ``loss(logits, q, target) -> (n,)``."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.__qualname__ = f"soft_ce(T={temperature:g})"

    def __call__(self, logits: torch.Tensor, q: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return soft_cross_entropy(logits, q, temperature=self.temperature, reduction="none")


@register_defense("adt")
class ADT(_TwoStageDistillation):
    """Adversarial Distillation Training, "CardioDefense" (Shao et al., arXiv 2203.09487, 2022).

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`; ``model`` becomes the distilled network f₂.
    temperature
        ``T`` (1, the reported setting).
    eps, step_size
        SAP radius and step in input units (CardioDefense: 10 and 1 ADC units; on MIT-BIH beats in
        [0, 1] use e.g. 0.05 and 0.01 — a radius as large as the data's amplitude is refused).
    pgd_steps, smooth_steps
        SAP warm-start PGD steps and smoothed steps (5 and 5).
    ablation
        ``"none"`` (ADT), ``"init"`` (Init-CardioDefense: adversarial stage 1, clean stage 2) or
        ``"dist"`` (Dist-CardioDefense: clean stage 1, adversarial stage 2).
    teacher
        A trained f₁ (model or checkpoint path); ``None`` trains it (stage 1).
    soft_labels_train_mode, attack_train_mode
        Reproduce the reference's train-mode soft labels / train-mode adversary (defaults: eval mode).
    bounds
        ``(lo, hi)``, ``None`` or ``"auto"`` (the data units' natural range; ADC data: unbounded).
    reference_fs
        Define the SAP kernels in seconds at this rate (``None``: in samples, as Han).
    teacher_init
        How stage 1 starts: ``"fresh"`` (the paper) or ``"student"`` (a copy of the student's starting weights,
        for fine-tuning from a trained model).
    """

    name = "adt"
    default_class_balance = "oversample"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        eps: float = 10.0,
        step_size: float = 1.0,
        pgd_steps: int = 5,
        smooth_steps: int = 5,
        ablation: str = "none",
        teacher: nn.Module | str | Path | None = None,
        soft_labels_train_mode: bool = False,
        attack_train_mode: bool = False,
        bounds: BoundsArg = "auto",
        reference_fs: float | None = None,
        teacher_init: str = "fresh",
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator, temperature=temperature,
                         teacher=teacher, soft_labels_train_mode=soft_labels_train_mode, teacher_init=teacher_init)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.step_size = check_float(step_size, "step_size", minimum=0.0, strict=True)
        self.pgd_steps = check_int(pgd_steps, "pgd_steps")
        self.smooth_steps = check_int(smooth_steps, "smooth_steps")
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.attack_train_mode = bool(attack_train_mode)
        self.reference_fs = None if reference_fs is None else check_float(reference_fs, "reference_fs", minimum=0.0,
                                                                          strict=True)
        self.fs: float | None = None
        self.ablation = check_choice(ablation, "ablation", ABLATIONS)
        if self.pgd_steps + self.smooth_steps == 0:
            raise ConfigError("ADT needs pgd_steps + smooth_steps >= 1.")
        self.adversarial_teacher = self.ablation in ("none", "init")
        self.adversarial_student = self.ablation in ("none", "dist")
        self._record_hp()

    def _record_hp(self) -> None:
        super()._record_hp()
        self.hp.update({"ablation": self.ablation, "attack": "sap", "eps": self.eps, "step_size": self.step_size,
                        "pgd_steps": self.pgd_steps, "smooth_steps": self.smooth_steps,
                        "bounds": list(self.bounds) if self.bounds else None, "bounds_arg": self.bounds_arg,
                        "attack_mode": "train" if self.attack_train_mode else "eval",
                        "kernel_reference_fs": self.reference_fs, "padding": "untouched (mask)"})

    def prepare(self, train: ECGDataset) -> None:
        """Resolve the adversary's bounds and kernel from the training data, check ε, then stage 1."""
        self.bounds = self.resolve_bounds(self.bounds_arg)
        if self.reference_fs is not None and train.meta.fs > 0:
            self.fs = float(train.meta.fs)
        self.check_scale(self.eps, "eps")
        super().prepare(train)

    def _adversarial(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """SAP against the soft labels ``q`` (Han's final iterate, no early stop), padding untouched."""
        atk = self.adversary(model)
        return atk(x, q, mask=None if mask is None else mask.to(x.dtype)).x_adv.detach()

    def adversary(self, model: nn.Module) -> Attack:
        """The training adversary against ``model``: :class:`~medrobust.attacks.SAP` with ``pgd_steps`` warm-start
        steps (none: ``warm_start="zero"``) and ``smooth_steps`` smoothed steps, ``output="final"``,
        ``early_stop=False``, the soft cross-entropy ``H(q, f(x')/T)`` as loss (``"ce"`` with soft labels at
        ``T = 1``), no random start; plain :class:`~medrobust.attacks.PGD` when ``smooth_steps=0``."""
        target = _TrainModeView(model) if self.attack_train_mode else model
        common = dict(eps=self.eps, norm="linf", step_size=self.step_size, random_start=False, early_stop=False,
                      loss="ce" if self.temperature == 1.0 else TemperedSoftCE(self.temperature),
                      bounds=self.bounds, generator=self.generator)
        if self.smooth_steps == 0:
            return PGD(target, steps=self.pgd_steps, **common)  # type: ignore[arg-type]
        return SAP(target, steps=self.pgd_steps, smooth_steps=self.smooth_steps,  # type: ignore[arg-type]
                   warm_start="pgd" if self.pgd_steps > 0 else "zero", output="final", fs=self.fs,
                   reference_fs=self.reference_fs if self.fs is not None else None, **common)
