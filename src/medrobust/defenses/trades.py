"""TRADES: the trade-off between clean accuracy and robustness (Zhang et al. 2019).

Zhang, H., Yu, Y., Jiao, J., Xing, E. P., El Ghaoui, L. & Jordan, M. I. "Theoretically Principled
Trade-off between Robustness and Accuracy", ICML 2019 (arXiv 1901.08573). The loss of a batch is::

    L = CE(f(x), y) + β · (1/N) Σ_i KL( softmax(f(x_i)) ‖ softmax(f(x'_i)) ),
    x' = argmax_{‖x' − x‖∞ ≤ ε} KL( softmax(f(x)) ‖ softmax(f(x')) ),

where the inner maximisation is ``steps`` sign-gradient steps of size ``step_size`` from
``x + 0.001·N(0, I)`` with projection onto the ε-ball and the data range, run in eval mode with
frozen parameters (the authors' code switches to eval mode for the attack as well). Gradients of
the outer loss flow through both ``f(x)`` and ``f(x')``. β = 6 is the authors' main setting
(1/λ in the paper).

Written from the paper. Padded samples of variable-length records (``mask``) are never perturbed and
the model receives the mask (masked pooling). Zhang et al. train on class-balanced benchmarks, so the
default class balancing is none (``class_balance="auto"`` resolves to ``"none"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import frozen_eval
from medrobust.checks import BoundsArg, check_bounds, check_float, check_int
from medrobust.data.base import ECGDataset
from medrobust.defenses.base import DefenseTrainer, clip, masked
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


def trades_attack(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    bounds: tuple[float, float] | None,
    generator: torch.Generator,
    init_std: float = 0.001,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRADES' inner maximisation of the KL divergence under an L∞ ball (eval mode, frozen parameters).

    Parameters
    ----------
    model
        Classifier returning logits.
    x
        Clean batch.
    eps, steps, step_size
        Radius, number of sign-gradient steps, step size.
    bounds
        Data range (``None``: unbounded).
    generator
        Source of the Gaussian start ``x + init_std·N(0, I)``.
    init_std
        Standard deviation of the start (the authors use 0.001 on [0, 1] images).
    mask
        Padding mask (1 on the signal): the perturbation is zero on padded samples and the model gets
        the mask.

    Returns
    -------
    torch.Tensor
        ``x'`` with ``‖x' − x‖∞ ≤ eps`` inside ``bounds`` (detached).
    """
    with frozen_eval(model):
        with torch.no_grad():
            p_log = F.log_softmax(forward(model, x, mask), dim=1)
        noise = torch.randn(tuple(x.shape), generator=generator, device=generator.device, dtype=torch.float32)
        x_adv = clip(x + masked(init_std * noise.to(device=x.device, dtype=x.dtype), mask), bounds)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                q_log = F.log_softmax(forward(model, x_adv, mask), dim=1)
                kl = (p_log.exp() * (p_log - q_log)).sum()
                (g,) = torch.autograd.grad(kl, x_adv)
            with torch.no_grad():
                x_adv = x_adv + step_size * masked(g.sign(), mask)
                x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
                x_adv = clip(x_adv, bounds) if mask is None else x + masked(clip(x_adv, bounds) - x, mask)
    return x_adv.detach()


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

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = trades_attack(self.model, x, eps=self.eps, steps=self.steps, step_size=self.step_size,
                              bounds=self.bounds, generator=self.generator, init_std=self.init_std, mask=mask)
        logits = self.forward(x, mask)
        adv_logits = self.forward(x_adv, mask)
        loss = F.cross_entropy(logits, y, weight=self.loss_weights) + self.beta * trades_kl(logits, adv_logits)
        return loss, logits
