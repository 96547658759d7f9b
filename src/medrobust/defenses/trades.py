"""TRADES: the trade-off between clean accuracy and robustness (Zhang et al. 2019).

Zhang, H., Yu, Y., Jiao, J., Xing, E. P., El Ghaoui, L. & Jordan, M. I. "Theoretically Principled
Trade-off between Robustness and Accuracy", ICML 2019 (arXiv 1901.08573). The loss of a batch is::

    L = CE(f(x), y) + β · (1/N) Σ_i KL( softmax(f(x_i)) ‖ softmax(f(x'_i)) ),
    x' = argmax_{‖x' − x‖∞ ≤ ε} KL( softmax(f(x)) ‖ softmax(f(x')) ),

where the inner maximisation is ``steps`` sign-gradient steps of size ``step_size`` from
``x + 0.001·N(0, I)`` with projection onto the ε-ball and the data range (Algorithm 1), run in eval mode
with frozen parameters (the authors' code switches to eval mode for the attack as well). It is
:class:`medrobust.attacks.PGD` with ``loss="kl"`` against the soft labels ``softmax(f(x))``, no early stop
(final iterate) and TRADES' Gaussian start (``random_start="gaussian"``; PGD's default start is uniform in
the ball, and PGD from ``x`` itself would never move, the KL gradient being zero there). Gradients of
the outer loss flow through both ``f(x)`` and ``f(x')``. β = 6 is the authors' main setting
(1/λ in the paper).

Written from the paper. Padded samples of variable-length records (``mask``) are never perturbed and
the model receives the mask (masked pooling). Zhang et al. train on class-balanced benchmarks, so the
default class balancing is none (``class_balance="auto"`` resolves to ``"none"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import PGD, frozen_eval
from medrobust.checks import BoundsArg, check_bounds, check_float, check_int
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import DefenseTrainer
from medrobust.models.inference import forward
from medrobust.defenses.registry import register_defense
from medrobust.train.trainer import TrainConfig


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Batch-mean ``KL(softmax(clean) ‖ softmax(adv))`` (nats), differentiable in both arguments.

    Parameters
    ----------
    clean_logits, adv_logits
        ``(N, K)`` logits on the clean and the perturbed inputs.

    Returns
    -------
    torch.Tensor
        Scalar ``(1/N) Σ_i Σ_k p_ik (log p_ik − log q_ik)`` with ``p = softmax(clean)``,
        ``q = softmax(adv)``.
    """
    log_p = F.log_softmax(clean_logits, dim=1)
    log_q = F.log_softmax(adv_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


@register_defense("trades")
class TRADES(DefenseTrainer):
    """TRADES training (Zhang et al., ICML 2019, arXiv 1901.08573): ``CE + β·KL(f(x) ‖ f(x'))``.

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`.
    beta
        Weight β of the robust KL term (authors: 6).
    eps
        L∞ radius of the inner maximisation, in input units (default 0.1, as Ma & Liang's MIT-BIH
        adversarial training).
    steps
        Inner sign-gradient steps (authors: 10).
    step_size
        Inner step (default ``eps/10``).
    bounds
        ``(lo, hi)``, ``None`` or ``"auto"`` (the data units' natural range).
    init_std
        Standard deviation of the Gaussian start.
    """

    name = "trades"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        beta: float = 6.0,
        eps: float = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        bounds: BoundsArg = "auto",
        init_std: float = 0.001,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.beta = check_float(beta, "beta", minimum=0.0)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = self.eps / 10.0 if step_size is None else check_float(step_size, "step_size", minimum=0.0,
                                                                              strict=True)
        self.bounds_arg = check_bounds(bounds)
        self.bounds: tuple[float, float] | None = None if self.bounds_arg == "auto" else self.bounds_arg  # type: ignore[assignment]
        self.init_std = check_float(init_std, "init_std", minimum=0.0)
        self._record_hp()

    def _record_hp(self) -> None:
        self.hp = {"beta": self.beta, "eps": self.eps, "steps": self.steps, "step_size": self.step_size,
                   "norm": "linf", "bounds": list(self.bounds) if self.bounds is not None else None,
                   "bounds_arg": self.bounds_arg, "init_std": self.init_std, "attack_mode": "eval, frozen parameters"}

    def prepare(self, train: ECGDataset) -> None:
        self.bounds = self.resolve_bounds(self.bounds_arg)
        self.check_scale(self.eps, "eps")
        self._record_hp()

    def attack(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """TRADES' adversarial inputs ``x'`` for the clean batch ``x`` (detached; padding untouched)."""
        with frozen_eval(self.model), torch.no_grad():
            p_clean = F.softmax(forward(self.model, x, mask), dim=1)
        atk = PGD(self.model, eps=self.eps, norm="linf", steps=self.steps, step_size=self.step_size,
                  random_start="gaussian", init_std=self.init_std, early_stop=False, loss="kl",
                  bounds=self.bounds, generator=self.generator)
        return atk(x, p_clean, mask=None if mask is None else mask.to(x.dtype)).x_adv.detach()

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.attack(x, mask)
        logits = self.forward(x, mask)
        adv_logits = self.forward(x_adv, mask)
        loss = F.cross_entropy(logits, y, weight=self.loss_weights) + self.beta * trades_kl(logits, adv_logits)
        return loss, logits
