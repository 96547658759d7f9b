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
        n_iter, ckpts, early, alpha = self.steps, checkpoints(self.steps), self.early_stop, self.momentum
        x_cur = ctx.random_start(act) if self.random_start else act.x.clone()
        x_in, logits, loss, grad = ctx.evaluate(act, x_cur, need_grad=True)
        assert grad is not None
        succ = ctx.record(act, x_in, logits) if early else None
        st = _State(act, x_cur, grad, loss, logits, act.eps * self.initial_step)
        if succ is not None and bool(succ.any()):
            st.select((~succ).nonzero().squeeze(1))
        last_ckpt = 0
        for k in range(n_iter):
            if len(st.act) == 0:
                return
            act = st.act
            with torch.no_grad():
                g = st.grad * act.mask if act.mask is not None else st.grad
                z = ctx.constrain(act, (st.x_cur - act.x) + steepest_direction(g, ctx.norm) * bview(st.eta, g))
                if k == 0:
                    x_new = z
                else:
                    step = alpha * (z - st.x_cur) + (1.0 - alpha) * (st.x_cur - st.x_old)
                    x_new = ctx.constrain(act, (st.x_cur - act.x) + step)
            st.x_old, st.x_cur = st.x_cur, x_new
            x_in, logits, loss, g = ctx.evaluate(act, st.x_cur, need_grad=k < n_iter - 1)
            if g is not None:
                st.grad = g
            succ = ctx.record(act, x_in, logits) if early else None
            with torch.no_grad():
                st.observe(loss, logits)
                if k + 1 in ckpts:
                    st.checkpoint(self.rho * (k + 1 - last_ckpt))
                    last_ckpt = k + 1
            if succ is not None and bool(succ.any()):
                st.select((~succ).nonzero().squeeze(1))
        if len(st.act):
            ctx.record_final(st.act, st.x_best, st.logits_best, overwrite=not early)


class _State:
    """APGD's per-sample state of the active samples (Croce & Hein 2020, Algorithm 1)."""

    def __init__(self, act: Active, x: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor,
                 eta: torch.Tensor) -> None:
        self.act, self.x_cur, self.x_old, self.grad, self.eta = act, x, x, grad, eta
        self.x_best, self.grad_best, self.loss_best, self.logits_best = x, grad, loss, logits
        self.loss_prev = loss
        self.n_incr = torch.zeros_like(loss)
        self.reduced_last = torch.zeros_like(loss, dtype=torch.bool)
        self.loss_best_last = loss.clone()

    def select(self, keep: torch.Tensor) -> None:
        """Keep the rows ``keep`` (the samples still active)."""
        self.act = self.act.select(keep)
        for name in ("x_cur", "x_old", "grad", "eta", "x_best", "grad_best", "loss_best", "logits_best", "loss_prev",
                     "n_incr", "reduced_last", "loss_best_last"):
            setattr(self, name, getattr(self, name)[keep])

    def observe(self, loss: torch.Tensor, logits: torch.Tensor) -> None:
        """Count loss increases and keep the best-loss point (``x_max``) of every sample."""
        self.n_incr += (loss > self.loss_prev).to(self.n_incr.dtype)
        self.loss_prev = loss
        better = loss > self.loss_best
        if bool(better.any()):
            bv = bview(better, self.x_cur)
            self.x_best = torch.where(bv, self.x_cur, self.x_best)
            self.grad_best = torch.where(bv, self.grad, self.grad_best)
            self.logits_best = torch.where(better.view(-1, 1), logits, self.logits_best)
            self.loss_best = torch.where(better, loss, self.loss_best)

    def checkpoint(self, min_increases: float) -> None:
        """Halve the step and restart from ``x_max`` where condition 1 or 2 of §3.2 holds."""
        cond1 = self.n_incr <= min_increases
        cond2 = (~self.reduced_last) & (self.loss_best <= self.loss_best_last)
        reduce = cond1 | cond2
        if bool(reduce.any()):
            rv = bview(reduce, self.x_cur)
            self.eta = torch.where(reduce, self.eta / 2.0, self.eta)
            self.x_cur = torch.where(rv, self.x_best, self.x_cur)
            self.grad = torch.where(rv, self.grad_best, self.grad)
        self.reduced_last = reduce
        self.loss_best_last = self.loss_best.clone()
        self.n_incr = torch.zeros_like(self.n_incr)
