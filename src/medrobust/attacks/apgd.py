"""Auto-PGD (APGD): step-size-free PGD with momentum and checkpoint-based step halving.

Croce, F. & Hein, M. "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv 2003.01690), Algorithm 1. Written from the paper:

* ``x^(1) = Π(x^(0) + η·dir(∇f(x^(0))))``; for ``k >= 1``:
  ``z = Π(x^(k) + η·dir(∇f(x^(k))))``, ``x^(k+1) = Π(x^(k) + α(z − x^(k)) + (1 − α)(x^(k) − x^(k−1)))``
  with ``α = 0.75`` and the initial step ``η = 2ε`` (per sample).
* Checkpoints ``w_j ≈ p_j N`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` (see :func:`checkpoints`). At a checkpoint the
  step is halved and the iterate reset to the best point so far if (1) the loss increased in at most
  ``ρ = 0.75`` of the steps since the previous checkpoint (the paper writes "fewer than"; "at most" is
  the authors' implementation, which halves the step more often), or (2) the step was not
  reduced at the previous checkpoint and the best loss has not improved since.
* The best loss point and the adversarial points are tracked per sample; restarts run on the samples
  that are still robust.

Losses: cross-entropy, the logit margin, and DLR (≥ 4 classes here; with fewer classes the
attack falls back to the margin loss with a warning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import bview, steepest_direction
from medrobust.checks import check_float, check_int, check_positive
from medrobust.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs


def checkpoints(n_iter: int) -> list[int]:
    """APGD's checkpoint iterations ``w_1 < w_2 < … <= n_iter`` (Croce & Hein 2020, §3.2).

    The paper's schedule ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``
    in its integer form (as in the authors' implementation): the first interval is ``⌊0.22 N⌋``
    iterations, each next one ``⌊0.03 N⌋`` shorter, down to ``⌊0.06 N⌋`` (every length at least 1).
    For ``N = 100`` this is ``22, 41, 57, 70, 80, 87, 93, 99``, the same as ``⌈p_j N⌉``.
    """
    length = max(int(0.22 * n_iter), 1)
    decrement = max(int(0.03 * n_iter), 1)
    shortest = max(int(0.06 * n_iter), 1)
    out: list[int] = []
    w = 0
    while w + length <= n_iter:
        w += length
        out.append(w)
        length = max(length - decrement, shortest)
    return out


@register_attack("apgd")
class APGD(Attack):
    """Auto-PGD (Croce & Hein, ICML 2020, arXiv 2003.01690), L∞ or L2.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`).
    steps
        Iterations ``N`` per run (AutoAttack: 100). Each costs one forward and one input-gradient
        backward; one more gradient is taken at the start point.
    restarts
        Runs from new random starts on the samples still robust (AutoAttack standard: 1).
    loss
        ``"ce"`` (default), ``"margin"``, ``"dlr"`` (≥ 4 classes; margin otherwise), ``"soft_margin"``,
        ``"kl"`` or a callable.
    rho
        Fraction of increasing steps required between checkpoints (0.75).
    momentum
        ``α`` of the momentum step (0.75).
    initial_step
        Initial step as a multiple of ε (2.0).
    random_start
        Start from a uniformly random point of the ball (default, as in the paper).
    early_stop
        Per-sample early stop on an active set (default). ``False`` runs every step on every sample
        and returns APGD's output ``x_max`` (the highest-loss point, Algorithm 1) of every sample.
    generator, units
        Shared arguments (:class:`~medrobust.attacks.base.ThreatArgs`); random starts come from
        per-sample streams.
    """

    name = "apgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        initial_step: float = 2.0,
        random_start: bool = True,
        early_stop: bool = True,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.steps = check_int(steps, "steps", minimum=1)
        self.restarts = check_int(restarts, "restarts", minimum=1)
        self.rho = check_float(rho, "rho", minimum=0.0, maximum=1.0, strict=True)
        self.momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0, strict=True)
        self.initial_step = float(check_positive(initial_step, "initial_step", allow_none=False))
        self.random_start = bool(random_start)
        if self.restarts > 1 and not self.random_start:
            raise ConfigError("restarts > 1 repeats the same deterministic run; set random_start=True.")
        self.early_stop = bool(early_stop)
        super().__init__(model, **threat_kwargs)

    def _run(self, ctx: AttackContext) -> None:
        for r in range(self.restarts):
            act = ctx.active(only_unsuccessful=self.early_stop or r > 0)
            if len(act) == 0:
                return
            self._single_run(ctx, act)

    def _single_run(self, ctx: AttackContext, act: Active) -> None:
        n_iter = self.steps
        ckpts = checkpoints(n_iter)
        early = self.early_stop
        alpha = self.momentum

        def direction(g: torch.Tensor, a: Active) -> torch.Tensor:
            if a.mask is not None:
                g = g * a.mask
            return steepest_direction(g, ctx.norm)

        x_cur = ctx.random_start(act) if self.random_start else act.x.clone()
        x_in, logits, loss, grad = ctx.evaluate(act, x_cur, need_grad=True)
        assert grad is not None
        succ = ctx.record(act, x_in, logits) if early else None

        # per-sample state of the active samples
        eta = act.eps * self.initial_step
        x_old = x_cur
        x_best, grad_best, loss_best, logits_best = x_cur, grad, loss, logits
        loss_prev = loss
        n_incr = torch.zeros_like(loss)
        reduced_last = torch.zeros_like(loss, dtype=torch.bool)
        loss_best_last = loss_best.clone()
        last_ckpt = 0
        ck_i = 0

        def keep_rows(keep: torch.Tensor) -> None:
            nonlocal act, x_cur, x_old, grad, x_best, grad_best, loss_best, logits_best, loss_prev, n_incr
            nonlocal reduced_last, loss_best_last, eta
            act = act.select(keep)
            x_cur, x_old, grad = x_cur[keep], x_old[keep], grad[keep]
            x_best, grad_best, loss_best, logits_best = x_best[keep], grad_best[keep], loss_best[keep], logits_best[keep]
            loss_prev, n_incr, reduced_last = loss_prev[keep], n_incr[keep], reduced_last[keep]
            loss_best_last, eta = loss_best_last[keep], eta[keep]

        if succ is not None and bool(succ.any()):
            keep_rows((~succ).nonzero().squeeze(1))

        for k in range(n_iter):
            if len(act) == 0:
                return
            need_grad = k < n_iter - 1
            with torch.no_grad():
                d = direction(grad, act) * bview(eta, x_cur)
                z = ctx.constrain(act, (x_cur - act.x) + d)
                if k == 0:
                    x_new = z
                else:
                    step = alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - x_old)
                    x_new = ctx.constrain(act, (x_cur - act.x) + step)
            x_old, x_cur = x_cur, x_new
            x_in, logits, loss, g = ctx.evaluate(act, x_cur, need_grad=need_grad)
            if g is not None:
                grad = g
            succ = ctx.record(act, x_in, logits) if early else None
            with torch.no_grad():
                n_incr += (loss > loss_prev).to(n_incr.dtype)
                loss_prev = loss
                better = loss > loss_best
                if bool(better.any()):
                    bv = bview(better, x_cur)
                    x_best = torch.where(bv, x_cur, x_best)
                    grad_best = torch.where(bv, grad, grad_best)
                    logits_best = torch.where(better.view(-1, 1), logits, logits_best)
                    loss_best = torch.where(better, loss, loss_best)
                if ck_i < len(ckpts) and k + 1 == ckpts[ck_i]:
                    w = ckpts[ck_i]
                    cond1 = n_incr <= self.rho * (w - last_ckpt)
                    cond2 = (~reduced_last) & (loss_best <= loss_best_last)
                    reduce = cond1 | cond2
                    if bool(reduce.any()):
                        rv = bview(reduce, x_cur)
                        eta = torch.where(reduce, eta / 2.0, eta)
                        x_cur = torch.where(rv, x_best, x_cur)
                        grad = torch.where(rv, grad_best, grad)
                    reduced_last = reduce
                    loss_best_last = loss_best.clone()
                    n_incr = torch.zeros_like(n_incr)
                    last_ckpt = w
                    ck_i += 1
            if succ is not None and bool(succ.any()):
                keep_rows((~succ).nonzero().squeeze(1))
        if len(act):
            ctx.record_final(act, x_best, logits_best, overwrite=not early)
