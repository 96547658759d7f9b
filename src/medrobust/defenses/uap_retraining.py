"""Adversarial retraining against universal adversarial perturbations (UAPs), repeated in rounds.

Procedure of Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR
2017 (arXiv 1610.08401), §4 (also used by Hirano, Minagi &
Takemoto, BMC Med. Imaging 21:9, 2021, for medical images)::

    repeat for every round (every ``epochs_per_round`` epochs):
        build a pool of ``pool_size`` UAPs against the current model
        fine-tune: every training input carries a random pool UAP with probability ``probability``

Start from a trained model (``medrobust train --init-from CHECKPOINT --defense uap_retraining``) to
fine-tune as in the paper; from a random initialisation it becomes UAP-augmented training.

The UAPs are the toolkit's :class:`medrobust.attacks.UniversalPerturbation` (model in eval mode with frozen
parameters, padding masks and ``bounds="auto"`` from the data's units): each of the ``P`` pool members is
fitted on its own random draw of ``generation_size`` training inputs. ``uap_method="batched"`` (default) is
its fast mini-batch projected-gradient solver on the clamped logit margin against the clean predictions;
``"fgsm"`` is the iterative FGSM-acceptance loop that Hirano et al.'s code ran for the attack and
``"deepfool"`` Moosavi-Dezfooli et al.'s Algorithm 1 (the retraining recipe does not name the solver;
the batched one is the cheapest per pool member). The round's record keeps each member's fooling rate
on its fitting set (``pred(x + v) ≠ pred(x)``).

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

from medrobust.attacks import UniversalPerturbation
from medrobust.attacks.universal import METHODS
from medrobust.data.base import ECGDataset
from medrobust.checks import BoundsArg, check_bounds, check_choice, check_float, check_int
from medrobust.defenses.base import DefenseTrainer, clip, masked
from medrobust.defenses.registry import register_defense
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig


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
    uap_method
        :class:`~medrobust.attacks.UniversalPerturbation` method: ``"batched"`` (default), ``"fgsm"`` or
        ``"deepfool"``.
    uap_max_iter, uap_step_size, uap_batch_size
        Its ``max_iter`` (passes over the fitting inputs; ``None``: the method's default), ``step_size``
        (``None``: the method's default) and ``batch_size``.
    generation_size
        Training inputs drawn (per pool member and round) to fit each UAP.
    bounds
        ``(lo, hi)``, ``None`` or ``"auto"``.
    """

    resumable = False  # the perturbation pool is rebuilt inside fit and not saved: an interrupted run restarts

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
        uap_method: str = "batched",
        uap_max_iter: int | None = None,
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
        self.uap_method = check_choice(uap_method, "uap_method", METHODS)
        self.uap_max_iter = None if uap_max_iter is None else check_int(uap_max_iter, "uap_max_iter", minimum=1)
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
                   "epochs_per_round": self.epochs_per_round, "uap_method": self.uap_method,
                   "uap_max_iter": self.uap_max_iter, "uap_step_size": self.uap_step_size,
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
        """Rebuild the UAP pool against the current model, each member fitted on a random draw of the training set."""
        if self._train is None or self.radius is None:
            raise ConfigError("build_pool needs the training set: call fit().")
        n = len(self._train)
        m = min(self.generation_size, n)
        uap = UniversalPerturbation(
            self.model, norm=self.norm, eps=self.radius, method=self.uap_method, max_iter=self.uap_max_iter,
            step_size=self.uap_step_size, batch_size=self.uap_batch_size, bounds=self.bounds_arg,
            units=self.data_units, generator=self.generator)
        pool, fooling = [], []
        for _ in range(self.pool_size):
            idx = torch.randperm(n, generator=self.generator)[:m]
            mask = self._train.mask
            if mask is not None:
                mask = (mask if mask.shape[0] == 1 else mask[idx]).to(self.config.device)
            res = uap.fit(self._train.x[idx].to(self.config.device), mask=mask)
            pool.append(res.delta)
            fooling.append(res.fit_rate)
        self.pool = torch.stack(pool)
        self.rounds.append({"epoch": self.epoch + 1, "fooling_rate_mean": sum(fooling) / len(fooling),
                            "fooling_rate_max": max(fooling)})
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
