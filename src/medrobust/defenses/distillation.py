"""Defensive distillation (Papernot et al. 2016) and Adversarial Distillation Training (ADT, Shao et al. 2022).

**Defensive distillation** — Papernot, N., McDaniel, P., Wu, X., Jha, S. & Swami, A. "Distillation as
a Defense to Adversarial Perturbations against Deep Neural Networks", IEEE S&P 2016 (arXiv
1511.04508). Stage 1 trains a teacher with ``softmax(z/T)``; stage 2 trains the student on the
teacher's soft labels ``q = softmax(z_teacher(x)/T)`` with the loss ``H(q, z/T) = −Σ_k q_k log
softmax(z/T)_k``; the student is used at ``T = 1`` (its plain logits). Papernot et al. used ``T = 100``;
CardioDefense's DD baseline uses ``T = 1`` (methods-ecg.md §5.4). Large ``T`` is known to mask
gradients rather than remove adversarial examples (Carlini & Wagner, arXiv 1607.04311): evaluate
distilled models with margin-loss attacks too.

**ADT / CardioDefense** — Shao, H. et al., arXiv 2203.09487 (methods-ecg.md §5.3)::

    stage 1  f₁:  x_adv = SAP(x; f₁, y);  loss = ½[H(y, f₁(x_adv)/T) + H(y, f₁(x)/T)]
    stage 2  q = softmax(f₁(x)/T);  f₂:  x_adv = SAP(x; f₂, q);  loss = ½[H(q, f₂(x_adv)/T) + H(q, f₂(x)/T)]

with the training SAP adversary of ε = 10, α = 1 (ADC units), 5 PGD + 5 smoothed steps, loss = soft
cross-entropy, and ``T = 1``. Ablations: ``ablation="init"`` (Init-CardioDefense: adversarial stage 1,
clean stage 2) and ``ablation="dist"`` (Dist-CardioDefense: clean stage 1, adversarial stage 2).

Choices where the reference differs (flags reproduce it):

* Soft labels are computed with the teacher in **eval mode** (the reference constructs the teacher
  afresh and leaves it in train mode, so dropout is active): ``soft_labels_train_mode=True``
  reproduces that (our soft labels are drawn per batch, so dropout masks are re-drawn every epoch,
  whereas the reference draws them once).
* The training adversary runs in eval mode with frozen parameters (the reference attacks in train
  mode, batch-norm statistics included): ``attack_train_mode=True`` reproduces it.
* Losses are batch means (the reference sums; with Adam the difference is negligible).
* Without ``teacher=``, the teacher starts from a copy of the student's initial weights (the reference
  initialises the student afresh).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import frozen_eval, sap_kernel
from medrobust.attacks.smoothing import smooth, smoothing_matrix
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import (
    BoundsArg,
    DefenseTrainer,
    check_bounds,
    check_choice,
    check_count,
    check_float,
    clip,
)
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig, TrainResult

ABLATIONS: tuple[str, ...] = ("none", "init", "dist")


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor, *, temperature: float = 1.0,
                       reduction: str = "mean") -> torch.Tensor:
    """``H(q, z/T) = −Σ_k q_k log softmax(z/T)_k`` per sample, averaged (``"mean"``), summed or not reduced."""
    per = -(q * F.log_softmax(logits / temperature, dim=1)).sum(1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


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
) -> torch.Tensor:
    """SAP (Han et al. 2020, methods-ecg.md §2.6) against *soft* labels: ADT's training adversary.

    ``pgd_steps`` sign steps on ``δ`` (no random start) maximising ``Σ_i H(q_i, f(x_i + δ_i)/T)``,
    then ``smooth_steps`` sign steps on ``θ`` (initialised with ``δ``) through the smoothing filter,
    ``x_adv = x + S(θ)``; ``θ`` and ``δ`` are clamped to ``[−ε, ε]`` and the input to ``bounds``. The
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

    def objective(inp: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(model(inp), q, temperature=temperature, reduction="sum")

    with _attack_mode(model, train_mode), torch.enable_grad():
        for _ in range(pgd_steps):
            delta = delta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(clip(x + delta, bounds)), delta)
            delta = (delta + step_size * g.sign()).clamp(-eps, eps)
        theta = delta.detach()
        for _ in range(smooth_steps):
            theta = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(clip(x + smooth(theta, kern, matrix=matrix), bounds)), theta)
            theta = (theta + step_size * g.sign()).clamp(-eps, eps)
        with torch.no_grad():
            out = clip(x + smooth(theta.detach(), kern, matrix=matrix), bounds) if smooth_steps > 0 else \
                clip(x + theta.detach(), bounds)
    return out.detach()


class _StageTrainer(DefenseTrainer):
    """A trainer whose loss is given as a callable (stage 1 of the two-stage recipes)."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, out_dir: str | Path | None,
                 generator: torch.Generator, loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 name: str, hp: dict[str, Any]) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self._loss_fn = loss_fn
        self.name = name
        self.hp = hp

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss_fn(x, y)


class _TwoStageDistillation(DefenseTrainer):
    """Teacher (stage 1) then student on the teacher's soft labels (stage 2), each optionally adversarial."""

    adversarial_teacher = False
    adversarial_student = False

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None,
        *,
        out_dir: str | Path | None,
        generator: torch.Generator | None,
        temperature: float,
        teacher: nn.Module | str | Path | None,
        soft_labels_train_mode: bool,
        eps: float | None = None,
        step_size: float | None = None,
        pgd_steps: int = 0,
        smooth_steps: int = 0,
        bounds: BoundsArg = "auto",
        attack_train_mode: bool = False,
        reference_fs: float | None = None,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.temperature = check_float(temperature, "temperature", minimum=0.0, strict=True)
        self.soft_labels_train_mode = bool(soft_labels_train_mode)
        self.initial_state = copy.deepcopy(model.state_dict())
        self.teacher_source: str
        self.teacher: nn.Module | None
        if teacher is None:
            self.teacher, self.teacher_source = None, "trained in stage 1 from the student's initial weights"
        elif isinstance(teacher, nn.Module):
            self.teacher, self.teacher_source = teacher, "given (in-memory model)"
        elif isinstance(teacher, (str, Path)):
            from medrobust.models.checkpoint import load_checkpoint

            self.teacher, self.teacher_source = load_checkpoint(teacher), f"checkpoint {teacher}"
        else:
            raise ConfigError(f"teacher must be None, a model or a checkpoint path, got {type(teacher).__name__}.")
        self.eps = None if eps is None else check_float(eps, "eps", minimum=0.0, strict=True)
        self.step_size = None if step_size is None else check_float(step_size, "step_size", minimum=0.0, strict=True)
        self.pgd_steps = check_count(pgd_steps, "pgd_steps")
        self.smooth_steps = check_count(smooth_steps, "smooth_steps")
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.attack_train_mode = bool(attack_train_mode)
        self.reference_fs = None if reference_fs is None else check_float(reference_fs, "reference_fs", minimum=0.0,
                                                                          strict=True)
        self.kernel = sap_kernel()
        self.teacher_result: dict[str, Any] | None = None
        self._val: ECGDataset | None = None

    # ---------------------------------------------------------------------------------------
    def _record_hp(self) -> None:
        self.hp = {"temperature": self.temperature, "teacher": self.teacher_source,
                   "soft_labels_mode": "train" if self.soft_labels_train_mode else "eval",
                   "adversarial_teacher": self.adversarial_teacher, "adversarial_student": self.adversarial_student}
        if self.adversarial_teacher or self.adversarial_student:
            self.hp.update({"attack": "sap", "eps": self.eps, "step_size": self.step_size, "pgd_steps": self.pgd_steps,
                            "smooth_steps": self.smooth_steps, "bounds": list(self.bounds) if self.bounds else None,
                            "bounds_arg": self.bounds_arg, "attack_mode": "train" if self.attack_train_mode else "eval",
                            "kernel_reference_fs": self.reference_fs})
        if self.teacher_result is not None:
            self.hp["teacher_training"] = self.teacher_result

    def _prepare_attack(self, train: ECGDataset) -> None:
        self.bounds = self.resolve_bounds(self.bounds_arg)
        if self.reference_fs is not None and train.meta.fs > 0:
            self.kernel = sap_kernel(fs=train.meta.fs, reference_fs=self.reference_fs)
        if (self.adversarial_teacher or self.adversarial_student) and self.eps is not None:
            self.check_scale(self.eps, "eps")
        self._record_hp()

    def _adversarial(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        assert self.eps is not None and self.step_size is not None
        return sap_soft(model, x, q, eps=self.eps, step_size=self.step_size, pgd_steps=self.pgd_steps,
                        smooth_steps=self.smooth_steps, kernel=self.kernel, temperature=self.temperature,
                        bounds=self.bounds, train_mode=self.attack_train_mode)

    def _loss(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor,
              adversarial: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        loss = soft_cross_entropy(logits, q, temperature=self.temperature)
        if adversarial:
            x_adv = self._adversarial(model, x, q)
            loss = 0.5 * (soft_cross_entropy(model(x_adv), q, temperature=self.temperature) + loss)
        return loss, logits

    def soft_labels(self, x: torch.Tensor) -> torch.Tensor:
        """``softmax(teacher(x)/T)`` (teacher in eval mode unless ``soft_labels_train_mode``)."""
        if self.teacher is None:
            raise ConfigError("no teacher yet: call fit() (which trains one) or pass teacher=.")
        self.teacher.train(self.soft_labels_train_mode)
        with torch.no_grad():
            return F.softmax(self.teacher(x) / self.temperature, dim=1)

    # ---------------------------------------------------------------------------------------
    def train_teacher(self, train: ECGDataset, val: ECGDataset) -> nn.Module:
        """Stage 1: train a teacher (a copy of the student's initial model) with ``H(y, f(x)/T)``."""
        teacher = copy.deepcopy(self.model)
        teacher.load_state_dict(self.initial_state)
        k = train.num_classes

        def loss_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._loss(teacher, x, F.one_hot(y, k).to(x.dtype), self.adversarial_teacher)

        out = None if self.out_dir is None else self.out_dir / "teacher"
        stage = _StageTrainer(teacher, copy.deepcopy(self.config), out_dir=out, generator=self.generator,
                              loss_fn=loss_fn, name=f"{self.name}-teacher",
                              hp={"temperature": self.temperature, "adversarial": self.adversarial_teacher})
        result: TrainResult = stage.fit(train, val)
        self.teacher_result = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                               "seconds": result.seconds,
                               "val_accuracy": result.best_metrics.get("accuracy"),
                               "checkpoint": result.checkpoint}
        return stage.model

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """Train the teacher if none was given (stage 1), then the student on its soft labels (stage 2)."""
        self._val = val
        try:
            return super().fit(train, val)
        finally:
            self._val = None

    def prepare(self, train: ECGDataset) -> None:
        self._prepare_attack(train)
        if self.teacher is None:
            if self._val is None:
                raise ConfigError("the teacher is trained inside fit(train, val); call fit or pass teacher=.")
            self.teacher = self.train_teacher(train, self._val)
        self.teacher = self.teacher.to(self.config.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._record_hp()

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss(self.model, x, self.soft_labels(x), self.adversarial_student)


@register_defense("distillation")
class DefensiveDistillation(_TwoStageDistillation):
    """Defensive distillation at temperature ``T`` (Papernot et al., IEEE S&P 2016, arXiv 1511.04508).

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`; ``model`` becomes the student.
    temperature
        ``T`` of both stages (Papernot et al.: 100; CardioDefense's DD baseline: 1).
    teacher
        A trained teacher (model or checkpoint path); ``None`` trains one first with the same
        :class:`TrainConfig` (its checkpoint goes to ``out_dir/teacher``).
    soft_labels_train_mode
        Compute soft labels with the teacher in train mode (reference quirk; default eval mode).
    """

    name = "distillation"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 100.0,
        teacher: nn.Module | str | Path | None = None,
        soft_labels_train_mode: bool = False,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator, temperature=temperature,
                         teacher=teacher, soft_labels_train_mode=soft_labels_train_mode)
        self._record_hp()


@register_defense("adt")
class ADT(_TwoStageDistillation):
    """Adversarial Distillation Training, "CardioDefense" (Shao et al., arXiv 2203.09487; methods-ecg.md §5.3).

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
        ``(lo, hi)``, ``None`` or ``"auto"`` ((0, 1) for normalised data; ADC data: unbounded).
    reference_fs
        Define the SAP kernels in seconds at this rate (``None``: in samples, as Han).
    """

    name = "adt"

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
                         teacher=teacher, soft_labels_train_mode=soft_labels_train_mode, eps=eps,
                         step_size=step_size, pgd_steps=pgd_steps, smooth_steps=smooth_steps, bounds=bounds,
                         attack_train_mode=attack_train_mode, reference_fs=reference_fs)
        self.ablation = check_choice(ablation, "ablation", ABLATIONS)
        if self.pgd_steps + self.smooth_steps == 0:
            raise ConfigError("ADT needs pgd_steps + smooth_steps >= 1.")
        self.adversarial_teacher = self.ablation in ("none", "init")
        self.adversarial_student = self.ablation in ("none", "dist")
        self._record_hp()

    def _record_hp(self) -> None:
        super()._record_hp()
        self.hp["ablation"] = getattr(self, "ablation", "none")
