"""Adversarial retraining against universal adversarial perturbations (UAPs), repeated in rounds.

Procedure of Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR
2017 (arXiv 1610.08401), §4 (also used by Hirano, Minagi &
Takemoto, BMC Med. Imaging 21:9, 2021, for medical images)::

    repeat for every round (every ``epochs_per_round`` epochs):
        build a pool of ``pool_size`` UAPs against the current model
        fine-tune: every training input carries a random pool UAP with probability ``probability``

Start from a trained model (``medrobust train --init-from CHECKPOINT --defense uap_retraining``) to
fine-tune as in the paper; from a random initialisation it becomes UAP-augmented training.

The UAP generator here is a small **batched projected-gradient solver** written for this defence (the
toolkit's full UAP attack is a separate module): each of the ``P`` perturbations ``v_p`` ascends the mean
cross-entropy of a fresh random minibatch of the generation set w.r.t. the model's clean predictions
(the fooling objective), ``v_p ← Π_ξ(v_p + α·dir(∇ mean_b CE(f(x_b + v_p), ĉ_b)))`` with ``dir`` = sign (L∞)
or ``g/‖g‖₂`` (L2), from random starts; all ``P`` run in one batched forward pass per step. It is not
the DeepFool/FGSM-acceptance algorithm of Moosavi-Dezfooli et al. or of MedicalAI-UAP (Hirano et al. 2021).

Budget: ``eps_mode="relative"`` gives ``ξ = ζ · mean_i ‖x_i‖_p`` over the training inputs (the
MedicalAI-UAP convention of Hirano et al. 2021, ζ = 0.04 with p = 2 by default); ``"abs"`` takes ``eps`` in
input units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import frozen_eval
from medrobust.data.base import ECGDataset
from medrobust.checks import BoundsArg, check_bounds, check_choice, check_float, check_int
from medrobust.defenses.base import DefenseTrainer, clip, masked
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig


def _project(v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return v.clamp(-eps, eps)
    n = v.flatten(1).norm(dim=1).clamp_min(1e-30)
    factor = torch.clamp(eps / n, max=1.0)
    return v * factor.view(-1, *[1] * (v.ndim - 1))


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (g.ndim - 1))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model(c).argmax(1) for c in x.split(batch_size)])


def universal_perturbations(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    pool_size: int = 10,
    steps: int = 40,
    step_size: float | None = None,
    batch_size: int = 64,
    labels: torch.Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool of universal perturbations by batched projected gradient ascent (model in eval mode, frozen).

    Parameters
    ----------
    model
        Classifier returning logits.
    x
        Generation set ``(M, *shape)``.
    eps
        Radius ξ in input units.
    norm
        ``"linf"`` or ``"l2"``.
    pool_size
        Number ``P`` of perturbations (independent random starts and minibatch sequences).
    steps
        Ascent steps per perturbation.
    step_size
        Step α (default ``ξ/10``).
    batch_size
        Minibatch size per perturbation and step.
    labels
        Reference labels; ``None`` uses the model's clean predictions (fooling objective).
    bounds
        Data range of ``x + v`` (``None``: unbounded).
    generator
        Source of the random starts and minibatches.

    Returns
    -------
    pool, fooling_rate
        ``(P, *shape)`` perturbations with ``‖v_p‖ ≤ ξ`` and, per perturbation, the fraction of the
        generation set whose prediction changes (``pred(x + v) ≠ pred(x)``).
    """
    check_choice(norm, "norm", ("linf", "l2"))
    eps = check_float(eps, "eps", minimum=0.0, strict=True)
    pool_size = check_int(pool_size, "pool_size", minimum=1)
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if x.shape[0] == 0:
        raise ConfigError("universal_perturbations needs a non-empty generation set.")
    alpha = eps / 10.0 if step_size is None else check_float(step_size, "step_size", minimum=0.0, strict=True)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shape = tuple(x.shape[1:])
    with frozen_eval(model):
        ref = _predict(model, x) if labels is None else labels.to(x.device)
        start = torch.rand((pool_size, *shape), generator=gen, device=gen.device).to(x) * 2 - 1
        if norm == "l2":
            start = start / start.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * len(shape)) * (0.5 * eps)
        else:
            start = start * (0.5 * eps)
        v = start
        b = min(batch_size, x.shape[0])
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (pool_size, b), generator=gen, device=gen.device).to(x.device)
            v = v.detach().requires_grad_(True)
            with torch.enable_grad():
                inp = clip(x[idx] + v.unsqueeze(1), bounds).reshape(pool_size * b, *shape)
                loss = F.cross_entropy(model(inp), ref[idx].reshape(-1), reduction="sum") / b
                (g,) = torch.autograd.grad(loss, v)
            with torch.no_grad():
                v = _project(v + alpha * _direction(g, norm), eps, norm)
        v = v.detach()
        clean = _predict(model, x)
        fooling = torch.stack([(_predict(model, clip(x + v[p], bounds)) != clean).double().mean() for p in range(pool_size)])
    return v, fooling


@register_defense("uap_retraining")
class UAPRetraining(DefenseTrainer):
    """Fine-tuning on inputs that carry universal perturbations, with the pool rebuilt every round.

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`. ``config.epochs`` = rounds × ``epochs_per_round``.
    eps
        ζ (``eps_mode="relative"``) or ξ in input units (``"abs"``).
    eps_mode
        ``"relative"`` (ξ = ζ · mean ‖x‖_p of the training inputs) or ``"abs"``.
    norm
        ``"l2"`` (MedicalAI-UAP default) or ``"linf"``.
    pool_size
        UAPs per round (Moosavi-Dezfooli et al.: 10).
    probability
        Chance that a training input carries a pool UAP (0.5).
    epochs_per_round
        Fine-tuning epochs between pool rebuilds (5).
    uap_steps, uap_step_size, uap_batch_size
        Settings of the UAP solver (:func:`universal_perturbations`).
    generation_size
        Training inputs drawn (per round) to build the pool.
    bounds
        ``(lo, hi)``, ``None`` or ``"auto"``.
    """

    name = "uap_retraining"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        eps: float = 0.04,
        eps_mode: str = "relative",
        norm: str = "l2",
        pool_size: int = 10,
        probability: float = 0.5,
        epochs_per_round: int = 5,
        uap_steps: int = 40,
        uap_step_size: float | None = None,
        uap_batch_size: int = 64,
        generation_size: int = 2000,
        bounds: BoundsArg = "auto",
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.eps_mode = check_choice(eps_mode, "eps_mode", ("relative", "abs"))
        self.norm = check_choice(norm, "norm", ("linf", "l2"))
        self.pool_size = check_int(pool_size, "pool_size", minimum=1)
        self.probability = check_float(probability, "probability", minimum=0.0, maximum=1.0)
        self.epochs_per_round = check_int(epochs_per_round, "epochs_per_round", minimum=1)
        self.uap_steps = check_int(uap_steps, "uap_steps", minimum=1)
        self.uap_step_size = None if uap_step_size is None else check_float(uap_step_size, "uap_step_size",
                                                                             minimum=0.0, strict=True)
        self.uap_batch_size = check_int(uap_batch_size, "uap_batch_size", minimum=1)
        self.generation_size = check_int(generation_size, "generation_size", minimum=1)
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.radius: float | None = self.eps if self.eps_mode == "abs" else None
        self.pool: torch.Tensor | None = None
        self.rounds: list[dict[str, Any]] = []
        self._train: ECGDataset | None = None
        self._record_hp()

    def _record_hp(self) -> None:
        self.hp = {"eps": self.eps, "eps_mode": self.eps_mode, "radius": self.radius, "norm": self.norm,
                   "pool_size": self.pool_size, "probability": self.probability,
                   "epochs_per_round": self.epochs_per_round, "uap_solver": "batched projected gradient (this module)",
                   "uap_steps": self.uap_steps, "uap_step_size": self.uap_step_size,
                   "uap_batch_size": self.uap_batch_size, "generation_size": self.generation_size,
                   "bounds": list(self.bounds) if self.bounds is not None else None, "bounds_arg": self.bounds_arg,
                   "rounds": self.rounds}

    def prepare(self, train: ECGDataset) -> None:
        self.bounds = self.resolve_bounds(self.bounds_arg)
        if self.eps_mode == "relative":
            flat = train.x.flatten(1)
            mean_norm = float(flat.abs().amax(1).mean() if self.norm == "linf" else flat.norm(dim=1).mean())
            self.radius = self.eps * mean_norm
        assert self.radius is not None
        if self.norm == "linf":
            self.check_scale(self.radius, "eps")
        self._train = train
        self._record_hp()

    def build_pool(self) -> None:
        """Rebuild the UAP pool against the current model from a random draw of the training set."""
        if self._train is None or self.radius is None:
            raise ConfigError("build_pool needs the training set: call fit().")
        n = len(self._train)
        m = min(self.generation_size, n)
        idx = torch.randperm(n, generator=self.generator)[:m]
        x = self._train.x[idx].to(self.config.device)
        self.pool, fooling = universal_perturbations(
            self.model, x, eps=self.radius, norm=self.norm, pool_size=self.pool_size, steps=self.uap_steps,
            step_size=self.uap_step_size, batch_size=self.uap_batch_size, bounds=self.bounds,
            generator=self.generator)
        self.rounds.append({"epoch": self.epoch + 1, "fooling_rate_mean": float(fooling.mean()),
                            "fooling_rate_max": float(fooling.max())})
        self._record_hp()

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if epoch % self.epochs_per_round == 0:
            self.build_pool()

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is not None and self.probability > 0:
            n = x.shape[0]
            carry = torch.rand(n, generator=self.generator).to(x.device) < self.probability
            pick = torch.randint(0, self.pool.shape[0], (n,), generator=self.generator).to(x.device)
            perturbed = x + masked(clip(x + self.pool[pick], self.bounds) - x, mask)
            x = torch.where(carry.view(-1, *[1] * (x.ndim - 1)), perturbed, x)
        logits = self.forward(x, mask)
        return F.cross_entropy(logits, y, weight=self.loss_weights), logits
