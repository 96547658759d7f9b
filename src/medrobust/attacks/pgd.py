"""Projected gradient descent (PGD) under L∞ or L2, with restarts, active-set early stop and Adamax.

Madry, A., Makelov, A., Schmidt, L., Tsipras, D. & Vladu, A. "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018 (arXiv 1706.06083). Iteration (maximising a per-sample
loss ``L``)::

    x_{k+1} = Π_{B(x, ε) ∩ bounds}( x_k + α · dir(∇_x L(f(x_k), y)) ),

with ``dir(g) = sign(g)`` for L∞ and ``g / ‖g‖₂`` for L2 (the gradient is masked before it is
normalised), ``x_0 = x`` or a uniformly random point of the ball. Options:

* ``restarts``: further runs from new random starts on the samples that are still robust, keeping
  every sample's successful example (Ma & Liang's ``repeated_pgd_attack``, methods-ecg.md §4.3).
* ``early_stop``: per-sample stop on an *active set*: a sample leaves the batch as soon as it is
  adversarial (and samples misclassified when clean are never attacked); only the remaining samples
  are forwarded (methods-ecg.md §3.6, landscape.md §4.1).
* ``update="adamax"``: the perturbation is driven by an Adamax optimiser (Kingma & Ba, ICLR 2015,
  arXiv 1412.6980, §7.1) fed with the ascent direction, learning rate ``α``, β = (0.9, 0.999), as in
  Ma & Liang's 100-PGD evaluation ("Improve robustness of DNN for ECG signal classification: a
  noise-to-signal ratio perspective", ICLR 2020 AI4AH, arXiv 2005.09134; methods-ecg.md §3.6).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext, as_step, check_int, check_positive
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import ThreatModel, bview, steepest_direction
from medrobust.errors import ConfigError

UPDATES: tuple[str, ...] = ("sign", "adamax")

Transform = Callable[[Active, torch.Tensor], torch.Tensor]
Project = Callable[[Active, torch.Tensor, torch.Tensor], torch.Tensor]


class AdamaxState:
    """Per-coordinate Adamax moments of the active samples (PyTorch's ``torch.optim.Adamax`` rule).

    ``m ← β1·m + (1−β1)·d``; ``u ← max(β2·u, |d| + 1e-8)``; increment ``= lr/(1−β1^t) · m/u``
    where ``d`` is the ascent direction (the optimiser minimises ``−d``).
    """

    def __init__(self, like: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.m = torch.zeros_like(like)
        self.u = torch.zeros_like(like)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0

    def select(self, keep: torch.Tensor) -> None:
        """Keep the rows of the samples still active."""
        self.m, self.u = self.m[keep], self.u[keep]

    def increment(self, d: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """The update for ascent direction ``d`` with per-sample learning rate ``lr`` ``(n,)``."""
        self.t += 1
        self.m.mul_(self.beta1).add_(d, alpha=1.0 - self.beta1)
        self.u = torch.maximum(self.u * self.beta2, d.abs() + self.eps)
        corr = 1.0 - self.beta1**self.t
        return self.m / self.u * bview(lr / corr, d)


def projected_ascent(
    ctx: AttackContext,
    act: Active,
    v: torch.Tensor,
    *,
    steps: int,
    project_v: Project,
    transform: Transform | None = None,
    update: str = "sign",
    record: bool = True,
    early_stop: bool = True,
    mask_grad: bool = True,
) -> tuple[Active, torch.Tensor]:
    """The PGD loop shared by :class:`PGD` and :class:`~medrobust.attacks.SAP`.

    Parameters
    ----------
    ctx, act
        Attack context and the active samples.
    v
        Optimisation variable: the adversarial input itself (PGD, ``transform=None``) or a
        parameter mapped to the input by ``transform`` (SAP's ``θ``).
    steps
        Gradient steps. With ``record=True`` one more forward evaluates the last iterate.
    project_v
        ``(act, v, increment) -> v``: applies the step and projects onto the feasible set.
    transform
        ``(act, v) -> model input`` (differentiable), ``None`` for the identity.
    update
        ``"sign"`` (plain steepest ascent of the norm) or ``"adamax"``.
    record
        Record successes (and the final iterate) as the attack's output; ``False`` for warm starts.
    early_stop
        Drop successful samples from the active set at once.
    mask_grad
        Multiply the gradient by the mask before normalising it.

    Returns
    -------
    act, v
        Final active set and variable (useful for warm starts).
    """
    state = AdamaxState(v) if update == "adamax" else None
    total = steps + 1 if record else steps
    for it in range(total):
        need_grad = it < steps
        tf = None if transform is None else (lambda leaf, a=act: transform(a, leaf))
        x_in, logits, _, g = ctx.evaluate(act, v, need_grad=need_grad, transform=tf)
        if record:
            succ = ctx.record(act, x_in, logits)
            if not need_grad:
                ctx.record_final(act, x_in, logits)
                break
            if early_stop and bool(succ.any()):
                keep = (~succ).nonzero().squeeze(1)
                act, v = act.select(keep), v[keep]
                g = g[keep] if g is not None else None
                if state is not None:
                    state.select(keep)
                if len(act) == 0:
                    break
        assert g is not None and act.step is not None
        if mask_grad and act.mask is not None:
            g = g * act.mask
        d = steepest_direction(g, ctx.norm)
        inc = state.increment(d, act.step) if state is not None else d * bview(act.step, d)
        v = project_v(act, v, inc)
    return act, v


def pgd_project(ctx: AttackContext) -> Project:
    """PGD's step on the adversarial input: ``x_adv ← Π(x_adv + inc)`` (ball, mask, bounds)."""

    def _p(act: Active, x_adv: torch.Tensor, inc: torch.Tensor) -> torch.Tensor:
        return ctx.constrain(act, (x_adv - act.x) + inc)

    return _p


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al., ICLR 2018, arXiv 1706.06083), L∞ or L2.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`).
    steps
        Gradient steps per run (Ma & Liang's evaluation: 100).
    step_size
        Absolute step α (scalar or per-sample tensor). Default: ``rel_step_size · ε``.
    rel_step_size
        Step as a fraction of each sample's ε when ``step_size`` is None (default ``2.5 / steps``,
        Madry et al.'s choice).
    random_start
        Start from a uniformly random point of the ε-ball (L∞ box / L2 ball) instead of ``x``.
    restarts
        Number of runs (``>= 1``); runs after the first start again from random points on the
        samples not yet adversarial. Needs ``random_start=True`` when ``> 1``.
    early_stop
        Per-sample early stop on an active set (default). ``False`` runs every step on every sample
        (and keeps each sample's latest successful iterate).
    update
        ``"sign"`` (steepest ascent) or ``"adamax"`` (Ma & Liang's Adamax-driven update).
    loss
        ``"ce"``, ``"margin"``, ``"soft_margin"`` or ``"dlr"``.
    generator
        Random generator for random starts.

    Examples
    --------
    >>> atk = PGD(model, eps=0.05, steps=100, step_size=0.01, norm="linf", random_start=True,
    ...           generator=torch.Generator().manual_seed(0))            # doctest: +SKIP
    >>> res = atk(x, y)                                                   # doctest: +SKIP
    >>> res.robust_accuracy, res.norms.max() <= 0.05                      # doctest: +SKIP
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        steps: int = 100,
        step_size: float | torch.Tensor | None = None,
        rel_step_size: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        early_stop: bool = True,
        update: str = "sign",
        loss: str = "ce",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask, threat=threat,
                         loss=loss, generator=generator)
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size = check_positive(step_size, "step_size")
        self.rel_step_size = check_positive(rel_step_size, "rel_step_size")
        if self.step_size is not None and self.rel_step_size is not None:
            raise ConfigError("pass step_size (absolute) or rel_step_size (fraction of eps), not both.")
        if self.step_size is None and self.rel_step_size is None:
            self.rel_step_size = 2.5 / self.steps
        self.random_start = bool(random_start)
        self.restarts = check_int(restarts, "restarts", minimum=1)
        if self.restarts > 1 and not self.random_start:
            raise ConfigError("restarts > 1 repeats the same deterministic run; set random_start=True.")
        self.early_stop = bool(early_stop)
        if update not in UPDATES:
            raise ConfigError(f"update must be one of {UPDATES}, got {update!r}.")
        self.update = update

    def hyperparameters(self) -> dict[str, Any]:
        step = self.step_size
        return {
            "steps": self.steps,
            "step_size": step.tolist() if isinstance(step, torch.Tensor) else step,
            "rel_step_size": self.rel_step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "early_stop": self.early_stop,
            "update": self.update,
            "loss": self.loss,
        }

    def _run(self, ctx: AttackContext) -> None:
        step = as_step(self.step_size, self.rel_step_size, ctx.eps)
        for r in range(self.restarts):
            act = ctx.active(step=step, only_unsuccessful=self.early_stop or r > 0)
            if len(act) == 0:
                return
            x0 = ctx.random_start(act) if self.random_start else act.x.clone()
            projected_ascent(
                ctx, act, x0, steps=self.steps, project_v=pgd_project(ctx), update=self.update,
                early_stop=self.early_stop,
            )
