"""Square attack: score-based random search with localised updates, L∞ and L2, on signals and images.

Andriushchenko, M., Croce, F., Flammarion, N. & Hein, M. "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020 (arXiv 1912.00049).

Random search on the perturbation: every iteration proposes a change of the current best
perturbation inside a random window and keeps it when the per-sample loss (default: the logit
margin ``max_{j≠y} z_j − z_y``, to increase) improves; a sample stops as soon as it is adversarial.

* Windows: on images ``(N, C, H, W)`` a square of side ``s = round(sqrt(p·H·W))`` (the paper); on
  signals ``(N, leads, samples)`` (and ``(N, samples)``) an interval of ``s = round(p·samples)`` time
  steps. The window's location is drawn per sample and **shared by all leads / channels** (the
  paper's squares span all colour channels); the values inside are drawn per lead.
* ``p`` follows the paper's schedule: ``p_init`` halved after 10, 50, 200, 500, 1000, 2000, 4000,
  6000 and 8000 iterations, the thresholds rescaled from 10,000 iterations to ``steps``.
* L∞ (Algorithm 2): initialisation with vertical stripes of ``±ε`` (on signals, where there is no
  vertical axis, ``±ε`` per coordinate); proposal: the window is set to ``±ε`` with one random sign
  per channel.
* L2 (Algorithm 3): initialisation with a grid of pseudo-Gaussian bumps with random signs, scaled
  to ``‖δ‖₂ = ε``; proposal: the mass of a second random window is moved into the first one, whose
  new content is the normalised old content plus a signed two-lobe pseudo-Gaussian bump, scaled
  to hold the window's old mass plus the unused budget; the result is rescaled to ``‖δ‖₂ = ε``.

Every proposal is masked, projected and clipped to the bounds by the threat model. One query per
active sample and iteration, plus one for the initialisation (and the clean forward).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import bview, lp_norm
from medrobust.checks import check_bool, check_float, check_int
from medrobust.errors import DataError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs

_SCHEDULE: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, steps: int) -> float:
    """Fraction ``p`` of the input changed at iteration ``it`` (the paper's piecewise-constant halving)."""
    i = int(it / steps * 10000)
    halvings = sum(1 for t in _SCHEDULE if i > t)
    return p_init / (2**halvings)


def _bump_1d(s: int, dtype: torch.dtype) -> torch.Tensor:
    """Centred pseudo-Gaussian profile of length ``s``: ``Σ_{r >= |k − c|} 1/(r+1)²``, unit L2 norm."""
    c = (s - 1) / 2.0
    d = (torch.arange(s, dtype=torch.float64) - c).abs().floor()
    rmax = int(math.ceil(s / 2.0)) + 1
    r = torch.arange(rmax + 1, dtype=torch.float64)
    w = 1.0 / (r + 1.0) ** 2
    tail = torch.flip(torch.cumsum(torch.flip(w, [0]), 0), [0])  # tail[k] = Σ_{r >= k} w[r]
    prof = tail[d.long()]
    return (prof / prof.norm()).to(dtype)


def _bump_2d(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Pseudo-Gaussian on an ``h × w`` rectangle (Chebyshev rings), unit L2 norm."""
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    di = (torch.arange(h, dtype=torch.float64) - ci).abs().floor().view(-1, 1)
    dj = (torch.arange(w, dtype=torch.float64) - cj).abs().floor().view(1, -1)
    d = torch.maximum(di, dj)
    rmax = int(max(h, w)) + 1
    r = torch.arange(rmax + 1, dtype=torch.float64)
    wt = 1.0 / (r + 1.0) ** 2
    tail = torch.flip(torch.cumsum(torch.flip(wt, [0]), 0), [0])
    prof = tail[d.long()]
    return (prof / prof.norm()).to(dtype)


def two_lobe_bump(s: int, spatial: int, *, transpose: bool, dtype: torch.dtype) -> torch.Tensor:
    """The L2 proposal's profile: two pseudo-Gaussian halves of opposite signs, unit L2 norm.

    ``spatial`` is 1 (an interval of length ``s``) or 2 (an ``s × s`` square, split left/right, or
    top/bottom when ``transpose``).
    """
    if s == 1:
        return torch.ones((1,) * spatial, dtype=dtype)
    a = s // 2
    if spatial == 1:
        prof = torch.cat([_bump_1d(a, torch.float64), -_bump_1d(s - a, torch.float64)])
    else:
        prof = torch.cat([_bump_2d(s, a, torch.float64), -_bump_2d(s, s - a, torch.float64)], dim=1)
        if transpose:
            prof = prof.t()
    return (prof / prof.norm()).to(dtype)


class _Layout:
    """The canonical view ``(n, channels, *spatial)`` of a batch (signals: 1 spatial axis; images: 2)."""

    def __init__(self, x: torch.Tensor) -> None:
        if x.ndim == 2:
            self.c, self.sp = 1, (x.shape[1],)
        elif x.ndim == 3:
            self.c, self.sp = x.shape[1], (x.shape[2],)
        elif x.ndim == 4:
            self.c, self.sp = x.shape[1], (x.shape[2], x.shape[3])
        else:
            raise DataError(
                f"Square works on (N, samples), (N, leads, samples) or (N, C, H, W) inputs, got {tuple(x.shape)}; "
                "reshape the batch to one of these layouts."
            )
        self.feat = tuple(x.shape[1:])
        self.dims = tuple(range(2, 2 + len(self.sp)))
        self.ones = [1] * len(self.sp)

    def canon(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], self.c, *self.sp)

    def orig(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], *self.feat)


def window(offs: list[torch.Tensor], s: int, sp: tuple[int, ...]) -> torch.Tensor:
    """Boolean window ``(n, 1, *sp)`` of side ``s`` starting at the per-sample offsets (one per spatial axis)."""
    masks = []
    for o, size in zip(offs, sp):
        ar = torch.arange(size, device=o.device).view(1, -1)
        masks.append((ar >= o.view(-1, 1)) & (ar < (o + s).view(-1, 1)))
    n = offs[0].shape[0]
    if len(sp) == 1:
        return masks[0].view(n, 1, sp[0])
    return (masks[0].view(n, sp[0], 1) & masks[1].view(n, 1, sp[1])).view(n, 1, *sp)


@register_attack("square")
class Square(Attack):
    """Square attack (Andriushchenko et al., ECCV 2020, arXiv 1912.00049), L∞ or L2; windows on signals.

    Parameters
    ----------
    model
        Classifier returning logits; only queried.
    steps
        Iterations = queries per sample after the initialisation (paper: 10,000).
    p_init
        Initial fraction of the input changed per iteration (default: 0.05 for L∞, 0.1 for L2, the
        paper's ImageNet settings).
    early_stop
        Stop a sample as soon as it is adversarial and return that input (``True``); ``False`` runs every
        iteration for every sample and returns its final (best-loss) perturbation.
    max_redraws
        L∞: a proposal that would not change the current input (its window lies on frozen or clipped
        coordinates, or already holds the drawn signs) is redrawn, window and signs, up to this many times
        before it is queried, as the paper's reference code does (default 100; no extra queries).
    **threat_kwargs
        ``eps, norm, eps_mode, bounds, mask, threat, loss, generator, units`` (see
        :class:`~medrobust.attacks.base.Attack`); ``loss`` defaults to ``"margin"`` (the paper's untargeted
        loss; ``"ce"`` is its targeted loss).

    Notes
    -----
    Inputs must be ``(N, samples)``, ``(N, leads, samples)`` or ``(N, C, H, W)``. Windows are shared by
    all leads (one location per sample), values are drawn per lead. Every random draw (windows, signs,
    initialisation) comes from the sample's own stream, so a sample's result does not depend on its batch.

    Examples
    --------
    >>> atk = Square(model, eps=0.05, norm="linf", steps=1000, bounds=(0, 1),
    ...              generator=torch.Generator().manual_seed(0))              # doctest: +SKIP
    >>> res = atk(x, y); res.queries_per_sample                               # doctest: +SKIP
    """

    name = "square"
    black_box: ClassVar[bool] = True
    default_loss: ClassVar[str] = "margin"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 5000,
        p_init: float | None = None,
        early_stop: bool = True,
        max_redraws: int = 100,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.steps = check_int(steps, "steps", minimum=1)
        self.p_init = None if p_init is None else check_float(p_init, "p_init", minimum=0.0, maximum=1.0, strict=True)
        self.early_stop = check_bool(early_stop, "early_stop")
        self.max_redraws = check_int(max_redraws, "max_redraws", minimum=0)
        super().__init__(model, **threat_kwargs)
        if self.p_init is None:
            self.p_init = 0.05 if self.threat.norm == "linf" else 0.1

    # ------------------------------------------------------------------------------------ random parts
    @staticmethod
    def _side(p: float, sp: tuple[int, ...]) -> int:
        if len(sp) == 1:
            return int(min(sp[0], max(1, round(p * sp[0]))))
        return int(min(min(sp), max(1, round(math.sqrt(p * sp[0] * sp[1])))))

    @staticmethod
    def _offsets(ctx: AttackContext, act: Active, s: int, sp: tuple[int, ...]) -> list[torch.Tensor]:
        """Per-sample window offsets, one ``(n,)`` tensor per spatial axis."""
        return [ctx.randint(act, size - s + 1).view(-1).to(act.x.device) for size in sp]

    @staticmethod
    def _window_and_signs(ctx: AttackContext, act: Active, s: int, lay: _Layout
                          ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Offsets of a window of side ``s`` and one sign per channel ``(n, c, 1[, 1])``, from one draw per sample."""
        k = len(lay.sp)
        u = ctx.rand(act, k + lay.c).double()
        offs = [(u[:, i] * (size - s + 1)).floor().long().clamp_max(size - s).to(act.x.device)
                for i, size in enumerate(lay.sp)]
        signs = torch.where(u[:, k:] < 0.5, -1.0, 1.0).to(act.x.dtype).view(len(act), lay.c, *lay.ones)
        return offs, signs

    @staticmethod
    def _signs(ctx: AttackContext, act: Active, *shape: int) -> torch.Tensor:
        return torch.where(ctx.rand(act, *shape) < 0.5, -1.0, 1.0).to(act.x.dtype)

    @staticmethod
    def _place(prof: torch.Tensor, offs: list[torch.Tensor], sp: tuple[int, ...], win: torch.Tensor) -> torch.Tensor:
        """``prof`` ``(n, s[, s])`` laid at each sample's window offset: ``(n, 1, *sp)`` (zero outside)."""
        s = prof.shape[1]
        idx = [(torch.arange(size, device=win.device).view(1, -1) - o.view(-1, 1)).clamp(0, s - 1)
               for o, size in zip(offs, sp)]
        rows = torch.arange(prof.shape[0], device=win.device)
        if len(sp) == 1:
            vals = prof[rows.view(-1, 1), idx[0]]  # (n, L)
        else:
            vals = prof[rows.view(-1, 1, 1), idx[0].unsqueeze(2), idx[1].unsqueeze(1)]  # (n, H, W)
        return vals.unsqueeze(1) * win

    # ------------------------------------------------------------------------------------ initialisation
    def _init_delta(self, ctx: AttackContext, act: Active, lay: _Layout) -> torch.Tensor:
        """The initial perturbation.

        L∞: vertical stripes of ``±ε`` (signals: ``±ε`` per coordinate); L2: a grid of signed bumps
        scaled to ``‖δ‖₂ = ε``.
        """
        n, c, sp = len(act), lay.c, lay.sp
        like = lay.canon(act.x)
        if ctx.norm == "linf":
            if len(sp) == 2:
                return self._signs(ctx, act, c, 1, sp[1]).expand(n, c, *sp) * bview(act.eps, like)
            return self._signs(ctx, act, c, sp[0]) * bview(act.eps, like)
        b = max(1, min(sp) // 5)
        prof = _bump_1d(b, like.dtype) if len(sp) == 1 else _bump_2d(b, b, like.dtype)
        reps = [math.ceil(size / b) for size in sp]
        tile = prof.repeat(*reps)[tuple(slice(0, size) for size in sp)].to(like.device)
        blocks = [torch.arange(size, device=like.device) // b for size in sp]
        bs = self._signs(ctx, act, c, *reps)
        sg = bs[:, :, blocks[0]] if len(sp) == 1 else bs[:, :, blocks[0]][:, :, :, blocks[1]]
        delta0 = tile * sg
        return delta0 / bview(lp_norm(delta0, "l2").clamp_min(1e-30), delta0) * bview(act.eps, delta0)

    # ------------------------------------------------------------------------------------ proposals
    def _linf_proposal(self, ctx: AttackContext, act: Active, lay: _Layout, x_best: torch.Tensor,
                       s: int) -> torch.Tensor:
        """Algorithm 2's proposal: one window set to ``±ε`` (one sign per channel).

        A proposal that would not change the current input is redrawn (window and signs) before it is queried.
        """
        x_new = x_best.clone()
        todo = torch.arange(len(act), device=x_best.device)
        for _ in range(self.max_redraws + 1):
            sub = act.select(todo)
            delta = lay.canon(x_best[todo]) - lay.canon(sub.x)
            offs, signs = self._window_and_signs(ctx, sub, s, lay)
            win = window(offs, s, lay.sp)
            vals = signs * bview(sub.eps, delta)
            cand = ctx.constrain(sub, lay.orig(torch.where(win, vals.expand_as(delta), delta)))
            x_new[todo] = cand
            same = (cand == x_best[todo]).flatten(1).all(1)
            todo = todo[same]
            if len(todo) == 0:
                break
        return x_new

    def _l2_proposal(self, ctx: AttackContext, act: Active, lay: _Layout, x_best: torch.Tensor,
                     s: int) -> torch.Tensor:
        """Algorithm 3's proposal: move the mass of a second window into a signed two-lobe bump in the first."""
        n, c, sp, dims = len(act), lay.c, lay.sp, lay.dims
        xc = lay.canon(act.x)
        delta = lay.canon(x_best) - xc
        offs = self._offsets(ctx, act, s, sp)
        win = window(offs, s, sp)
        win2 = window(self._offsets(ctx, act, s, sp), s, sp)
        transpose = ctx.rand(act).view(-1) < 0.5
        profs = [two_lobe_bump(s, len(sp), transpose=t, dtype=xc.dtype).to(xc.device) for t in (False, True)]
        prof = torch.where(bview(transpose, profs[0].unsqueeze(0)), profs[1], profs[0])
        bump = self._place(prof, offs, sp, win) * self._signs(ctx, act, c, *lay.ones)
        unused = (act.eps**2 - delta.pow(2).flatten(1).sum(1)).clamp_min(0)
        nu2 = (delta * (win | win2)).pow(2).sum(dims, keepdim=True)  # per channel
        old = delta * win
        u = bump + old / (old.pow(2).sum(dims, keepdim=True).sqrt() + 1e-10)
        u_n = u.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-30)
        u = u / u_n * (bview(unused, xc) / c + nu2).clamp_min(0).sqrt()
        new = torch.where(win, u, torch.where(win2, torch.zeros_like(delta), delta))
        new = new / bview(lp_norm(new, "l2").clamp_min(1e-30), new) * bview(act.eps, new)
        return ctx.constrain(act, lay.orig(new))

    # ------------------------------------------------------------------------------------ the search
    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=self.early_stop)
        if len(act) == 0:
            return
        lay = _Layout(act.x)
        propose = self._linf_proposal if ctx.norm == "linf" else self._l2_proposal
        assert self.p_init is not None
        x_best = ctx.constrain(act, lay.orig(self._init_delta(ctx, act, lay)))
        logits_best = query(ctx, act.idx, x_best)
        loss_best = ctx.loss_fn(logits_best, act.y, act.target)
        succ = ctx.record(act, x_best, logits_best) if self.early_stop else None
        for it in range(self.steps):
            if succ is not None and bool(succ.any()):
                keep = (~succ).nonzero().squeeze(1)
                act, x_best, loss_best, logits_best = act.select(keep), x_best[keep], loss_best[keep], \
                    logits_best[keep]
                if len(act) == 0:
                    return
            x_new = propose(ctx, act, lay, x_best, self._side(p_schedule(self.p_init, it, self.steps), lay.sp))
            logits = query(ctx, act.idx, x_new)
            loss_new = ctx.loss_fn(logits, act.y, act.target)
            better = loss_new > loss_best
            x_best = torch.where(bview(better, x_best), x_new, x_best)
            loss_best = torch.where(better, loss_new, loss_best)
            logits_best = torch.where(bview(better, logits_best), logits, logits_best)
            if succ is not None:
                succ = ctx.record(act, x_new, logits)
        if len(act):
            ctx.record_final(act, x_best, logits_best, overwrite=not self.early_stop)
