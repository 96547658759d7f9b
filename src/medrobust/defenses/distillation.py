"""Defensive distillation (Papernot et al. 2016) and the two-stage machinery that ADT (:mod:`.adt`) extends.

**Defensive distillation** — Papernot, N., McDaniel, P., Wu, X., Jha, S. & Swami, A. "Distillation as
a Defense to Adversarial Perturbations against Deep Neural Networks", IEEE S&P 2016 (arXiv
1511.04508). Stage 1 trains a teacher with ``softmax(z/T)``; stage 2 trains the student on the
teacher's soft labels ``q = softmax(z_teacher(x)/T)`` with the loss ``H(q, z/T) = −Σ_k q_k log
softmax(z/T)_k``; the student is used at ``T = 1`` (its plain logits). Papernot et al. used ``T = 100``;
the DD baseline of Shao et al. (arXiv 2203.09487) uses ``T = 1``. Large ``T`` is known to mask
gradients rather than remove adversarial examples (Carlini & Wagner, arXiv 1607.04311): evaluate
distilled models with margin-loss attacks too.

Both networks start from independent random initialisations, as in both papers: without ``teacher=``,
the teacher is a fresh initialisation of the student's architecture (seeded with ``config.seed + 1``),
not a copy of the student's initial weights. A fine-tuning budget, whose student starts from a trained model,
passes ``teacher_init="student"``: the teacher then starts from a copy of those weights too (a fresh teacher
trained for the same few batches would hand the student the soft labels of an untrained network).

Choices where the reference differs (flags reproduce it):

* Soft labels are computed with the teacher in **eval mode** (Shao et al.'s code constructs the teacher
  afresh and leaves it in train mode, so dropout is active): ``soft_labels_train_mode=True`` reproduces
  that (our soft labels are drawn per batch, so dropout masks are re-drawn every epoch, whereas the
  reference draws them once).
* Losses are batch means (the reference sums; with Adam the difference is negligible).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.checks import check_choice, check_float
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import DefenseTrainer
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.models.inference import forward
from medrobust.train.trainer import TrainConfig, TrainResult

TEACHER_INITS = {"fresh": "trained in stage 1 from a fresh initialisation",
                 "student": "trained in stage 1 from a copy of the student's starting weights"}
"""How stage 1 starts (``teacher_init``): ``"fresh"`` as both papers; ``"student"`` for a fine-tuning budget
whose student starts from a trained model (``--init-from``), so that the teacher does too."""

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor, *, temperature: float = 1.0,
                       reduction: str = "mean") -> torch.Tensor:
    """``H(q, z/T) = −Σ_k q_k log softmax(z/T)_k`` per sample, averaged (``"mean"``), summed or not reduced."""
    per = -(q * F.log_softmax(logits / temperature, dim=1)).sum(1)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


def fresh_initialisation(model: nn.Module, seed: int) -> tuple[nn.Module, bool]:
    """A copy of ``model`` with new random weights (every submodule's ``reset_parameters``, seeded).

    Ma & Liang's unit-norm layers (``weight_norm=True``) are re-drawn with unit-norm rows. Returns the
    copy and whether any weights were re-drawn (``False`` for models without resettable layers).
    """
    fresh = copy.deepcopy(model)
    reset = False
    with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that would re-seed every CUDA generator
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and m is not fresh:
                m.reset_parameters()  # type: ignore[operator]
                reset = True
        if getattr(fresh, "weight_norm", False) and hasattr(fresh, "norm_layers"):
            from medrobust.models.kernel_norm import unit_norm_init

            unit_norm_init(fresh.norm_layers(), generator=torch.Generator().manual_seed(seed))
    return fresh, reset


class _StageTrainer(DefenseTrainer):
    """A trainer whose loss is given as a callable (stage 1 of the two-stage recipes)."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, out_dir: str | Path | None,
                 generator: torch.Generator, loss_fn: LossFn, name: str, hp: dict[str, Any]) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self._loss_fn = loss_fn
        self.name = name
        self.hp = hp

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss_fn(x, y, mask)


class _TwoStageDistillation(DefenseTrainer):
    """Teacher (stage 1) then student on the teacher's soft labels (stage 2), each optionally adversarial.

    Subclasses with an adversary override :meth:`_adversarial` and set ``adversarial_teacher`` /
    ``adversarial_student``.
    """

    adversarial_teacher = False
    adversarial_student = False
    resumable = False  # the teacher is trained inside fit: an interrupted run restarts (--overwrite)

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
        teacher_init: str,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.temperature = check_float(temperature, "temperature", minimum=0.0, strict=True)
        self.soft_labels_train_mode = bool(soft_labels_train_mode)
        self.teacher_init = check_choice(teacher_init, "teacher_init", TEACHER_INITS)
        if teacher is not None and self.teacher_init != "fresh":
            raise ConfigError(f"teacher_init={teacher_init!r} sets how stage 1 starts; a given teacher= skips "
                              "stage 1: pass one of the two.")
        self.teacher_source: str
        self.teacher: nn.Module | None
        if teacher is None:
            self.teacher, self.teacher_source = None, TEACHER_INITS[self.teacher_init]
        elif isinstance(teacher, nn.Module):
            self.teacher, self.teacher_source = teacher, "given (in-memory model)"
        elif isinstance(teacher, (str, Path)):
            from medrobust.models.checkpoint import load_checkpoint

            self.teacher, self.teacher_source = load_checkpoint(teacher), f"checkpoint {teacher}"
        else:
            raise ConfigError(f"teacher must be None, a model or a checkpoint path, got {type(teacher).__name__}.")
        self.teacher_result: dict[str, Any] | None = None
        self._val: ECGDataset | None = None

    # ---------------------------------------------------------------------------------------
    def _record_hp(self) -> None:
        self.hp = {"temperature": self.temperature, "teacher": self.teacher_source, "teacher_init": self.teacher_init,
                   "soft_labels_mode": "train" if self.soft_labels_train_mode else "eval",
                   "adversarial_teacher": self.adversarial_teacher, "adversarial_student": self.adversarial_student}
        if self.teacher_result is not None:
            self.hp["teacher_training"] = self.teacher_result

    def _adversarial(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no training adversary.")

    def _loss(self, model: nn.Module, x: torch.Tensor, q: torch.Tensor, adversarial: bool,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(model, x, mask)
        loss = soft_cross_entropy(logits, q, temperature=self.temperature)
        if adversarial:
            x_adv = self._adversarial(model, x, q, mask)
            adv = soft_cross_entropy(forward(model, x_adv, mask), q, temperature=self.temperature)
            loss = 0.5 * (adv + loss)
        return loss, logits

    def soft_labels(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``softmax(teacher(x)/T)`` (teacher in eval mode unless ``soft_labels_train_mode``)."""
        if self.teacher is None:
            raise ConfigError("no teacher yet: call fit() (which trains one) or pass teacher=.")
        self.teacher.train(self.soft_labels_train_mode)
        with torch.no_grad():
            return F.softmax(forward(self.teacher, x, mask) / self.temperature, dim=1)

    # ---------------------------------------------------------------------------------------
    def train_teacher(self, train: ECGDataset, val: ECGDataset) -> nn.Module:
        """Stage 1: train a teacher with ``H(y, f(x)/T)``: a fresh initialisation of the student's architecture,
        or (``teacher_init="student"``) a copy of the student's starting weights."""
        if self.teacher_init == "student":
            teacher, reset = copy.deepcopy(self.model), True
        else:
            teacher, reset = fresh_initialisation(self.model, self.config.seed + 1)
        if not reset:
            self.teacher_source = "trained in stage 1 from the student's initial weights (no resettable layers)"
        k = train.num_classes

        def loss_fn(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return self._loss(teacher, x, F.one_hot(y, k).to(x.dtype), self.adversarial_teacher, mask)

        out = None if self.out_dir is None else self.out_dir / "teacher"
        stage = _StageTrainer(teacher, copy.deepcopy(self.config), out_dir=out, generator=self.generator,
                              loss_fn=loss_fn, name=f"{self.name}-teacher",
                              hp={"temperature": self.temperature, "adversarial": self.adversarial_teacher})
        result: TrainResult = stage.fit(train, val)
        self.teacher_result = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                               "seconds": result.seconds,
                               "val_accuracy": result.best_metrics.get("accuracy"),
                               "degenerate": result.degenerate,
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
        if self.teacher is None:
            if self._val is None:
                raise ConfigError("the teacher is trained inside fit(train, val); call fit or pass teacher=.")
            self.teacher = self.train_teacher(train, self._val)
        self.teacher = self.teacher.to(self.config.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._record_hp()

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._loss(self.model, x, self.soft_labels(x, mask), self.adversarial_student, mask)


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
    teacher_init
        How stage 1 starts: ``"fresh"`` (both papers) or ``"student"`` (a copy of the student's starting
        weights, for fine-tuning from a trained model; see :data:`TEACHER_INITS`).
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
        teacher_init: str = "fresh",
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator, temperature=temperature,
                         teacher=teacher, soft_labels_train_mode=soft_labels_train_mode, teacher_init=teacher_init)
        self._record_hp()
