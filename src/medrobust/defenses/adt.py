"""Adversarial Distillation Training, "CardioDefense" (Shao et al. 2022).

Shao, H. et al., "Defending against adversarial attack in ECG classification with adversarial
distillation training", arXiv 2203.09487 (2022; released as CardioDefense)::

    stage 1  f₁:  x_adv = SAP(x; f₁, y);  loss = ½[H(y, f₁(x_adv)/T) + H(y, f₁(x)/T)]
    stage 2  q = softmax(f₁(x)/T);  f₂:  x_adv = SAP(x; f₂, q);  loss = ½[H(q, f₂(x_adv)/T) + H(q, f₂(x)/T)]

with ``H`` the soft cross-entropy, ``T = 1``, and the training adversary SAP (Han et al., "Deep learning
models for electrocardiograms are susceptible to adversarial attack", Nature Medicine 26:360-363, 2020):
``pgd_steps`` sign steps on ``δ`` then ``smooth_steps`` sign steps on ``θ`` through the SAP smoothing
filter, ``x_adv = x + S(θ)``; Shao et al.: ε = 10, α = 1 (ADC units), 5 + 5 steps. ``f₁`` and ``f₂`` start
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

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from medrobust.attacks import frozen_eval, sap_kernel
from medrobust.attacks.smoothing import smooth, smoothing_matrix
from medrobust.checks import BoundsArg, check_bounds, check_choice, check_float, check_int
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import clip, masked
from medrobust.defenses.distillation import _TwoStageDistillation, soft_cross_entropy
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.models.inference import forward
from medrobust.train.trainer import TrainConfig

ABLATIONS: tuple[str, ...] = ("none", "init", "dist")


@contextlib.contextmanager
def _attack_mode(model: nn.Module, train_mode: bool) -> Iterator[None]:
    """Frozen parameters, and eval mode unless ``train_mode`` (the reference's quirk)."""
    if not train_mode:
        with frozen_eval(model):
            yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, req in flags:
            p.requires_grad_(req)


def sap_soft(
    model: nn.Module,
    x: torch.Tensor,
    q: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    pgd_steps: int,
    smooth_steps: int,
    kernel: torch.Tensor,
    temperature: float = 1.0,
    bounds: tuple[float, float] | None = None,
    train_mode: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SAP (Han et al., Nature Medicine 2020) against *soft* labels: ADT's training adversary.

    ``pgd_steps`` sign steps on ``δ`` (no random start) maximising ``Σ_i H(q_i, f(x_i + δ_i)/T)``,
    then ``smooth_steps`` sign steps on ``θ`` (initialised with ``δ``) through the smoothing filter,
    ``x_adv = x + S(θ)``; ``θ`` and ``δ`` are clamped to ``[−ε, ε]``, the input to ``bounds``, and the
    perturbation is multiplied by ``mask`` (padding untouched; the model receives the mask). The
    public :class:`~medrobust.attacks.SAP` takes hard labels only, hence this small routine; with
    one-hot ``q`` and ``T = 1`` it optimises the same objective.

    Returns
    -------
    torch.Tensor
        Detached adversarial batch.
    """
    length = x.shape[-1]
    kern = kernel.to(device=x.device, dtype=x.dtype)
    matrix = smoothing_matrix(kernel, length, dtype=x.dtype, device=x.device) if length <= 1024 else None
    delta = torch.zeros_like(x)

    def perturbed(d: torch.Tensor) -> torch.Tensor:
        return clip(x + masked(d, mask), bounds)

    def objective(inp: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(forward(model, inp, mask), q, temperature=temperature, reduction="sum")

    with _attack_mode(model, train_mode), torch.enable_grad():
        for _ in range(pgd_steps):
            delta = delta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(perturbed(delta)), delta)
            delta = (delta + step_size * g.sign()).clamp(-eps, eps)
        theta = delta.detach()
        for _ in range(smooth_steps):
            theta = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(perturbed(smooth(theta, kern, matrix=matrix))), theta)
            theta = (theta + step_size * g.sign()).clamp(-eps, eps)
        with torch.no_grad():
            final = smooth(theta.detach(), kern, matrix=matrix) if smooth_steps > 0 else theta.detach()
            out = perturbed(final)
    return out.detach()


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
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator, temperature=temperature,
                         teacher=teacher, soft_labels_train_mode=soft_labels_train_mode)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.step_size = check_float(step_size, "step_size", minimum=0.0, strict=True)
        self.pgd_steps = check_int(pgd_steps, "pgd_steps")
        self.smooth_steps = check_int(smooth_steps, "smooth_steps")
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.attack_train_mode = bool(attack_train_mode)
        self.reference_fs = None if reference_fs is None else check_float(reference_fs, "reference_fs", minimum=0.0,
                                                                          strict=True)
        self.kernel = sap_kernel()
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
            self.kernel = sap_kernel(fs=train.meta.fs, reference_fs=self.reference_fs)
        self.check_scale(self.eps, "eps")
        super().prepare(train)

    def _adversarial(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        return sap_soft(model, x, q, eps=self.eps, step_size=self.step_size, pgd_steps=self.pgd_steps,
                        smooth_steps=self.smooth_steps, kernel=self.kernel, temperature=self.temperature,
                        bounds=self.bounds, train_mode=self.attack_train_mode, mask=mask)
