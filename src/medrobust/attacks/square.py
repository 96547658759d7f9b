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
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackContext, check_int, check_positive
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import ThreatModel, bview, lp_norm
from medrobust.errors import ConfigError, DataError

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


@register_attack("square")
class Square(Attack):
    """Square attack (Andriushchenko et al., ECCV 2020, arXiv 1912.00049), L∞ or L2; windows on signals.

    Parameters
    ----------
    model
        Classifier returning logits; only queried.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`).
    steps
        Iterations = queries per sample after the initialisation (paper: 10,000).
    p_init
        Initial fraction of the input changed per iteration (default: 0.05 for L∞, 0.1 for L2, the
        paper's ImageNet settings).
    loss
        ``"margin"`` (default, the paper's untargeted loss) or ``"ce"`` (the paper's targeted loss).
    generator
        Source of all randomness.

    Notes
    -----
    Inputs must be ``(N, samples)``, ``(N, leads, samples)`` or ``(N, C, H, W)``. Windows are shared by
    all leads (one location per sample), values are drawn per lead. With a mask, windows may fall on
    frozen coordinates; such proposals change nothing and cost a query, as in the paper.

    Examples
    --------
    >>> atk = Square(model, eps=0.05, norm="linf", steps=1000, bounds=(0, 1),
    ...              generator=torch.Generator().manual_seed(0))              # doctest: +SKIP
    >>> res = atk(x, y); res.queries_per_sample                               # doctest: +SKIP
    """

    name = "square"
    black_box: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        norm: str = "linf",
        steps: int = 5000,
        p_init: float | None = None,
        loss: str = "margin",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask, threat=threat,
                         loss=loss, generator=generator)
        self.steps = check_int(steps, "steps", minimum=1)
        p = check_positive(p_init, "p_init")
        if isinstance(p, torch.Tensor) or (p is not None and p > 1):
            raise ConfigError(f"p_init must be a float in (0, 1], got {p_init!r}.")
        self.p_init = p if p is not None else (0.05 if self.threat.norm == "linf" else 0.1)

    def hyperparameters(self) -> dict[str, Any]:
        return {"steps": self.steps, "p_init": self.p_init, "loss": self.loss}

    # ------------------------------------------------------------------------------------
    @staticmethod
    def _layout(x: torch.Tensor) -> tuple[int, tuple[int, ...]]:
        if x.ndim == 2:
            return 1, (x.shape[1],)
        if x.ndim == 3:
            return x.shape[1], (x.shape[2],)
        if x.ndim == 4:
            return x.shape[1], (x.shape[2], x.shape[3])
        raise DataError(
            f"Square works on (N, samples), (N, leads, samples) or (N, C, H, W) inputs, got {tuple(x.shape)}; "
            "reshape the batch to one of these layouts."
        )

    def _side(self, p: float, sp: tuple[int, ...]) -> int:
        if len(sp) == 1:
            return int(min(sp[0], max(1, round(p * sp[0]))))
        return int(min(min(sp), max(1, round(math.sqrt(p * sp[0] * sp[1])))))

    def _window(
        self, n: int, s: int, sp: tuple[int, ...], like: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Boolean window ``(n, 1, *sp)`` of side ``s`` at a random position per sample, and the offsets."""
        offs = []
        masks = []
        for size in sp:
            o = torch.randint(0, size - s + 1, (n,), generator=g, device=g.device).to(like.device)
            ar = torch.arange(size, device=like.device)
            masks.append((ar.view(1, -1) >= o.view(-1, 1)) & (ar.view(1, -1) < (o + s).view(-1, 1)))
            offs.append(o)
        if len(sp) == 1:
            w = masks[0].view(n, 1, sp[0])
        else:
            w = (masks[0].view(n, sp[0], 1) & masks[1].view(n, 1, sp[1])).view(n, 1, *sp)
        return w, offs

    def _signs(self, shape: tuple[int, ...], like: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        r = torch.randint(0, 2, shape, generator=g, device=g.device).to(device=like.device, dtype=like.dtype)
        return 2.0 * r - 1.0

    def _place(self, prof: torch.Tensor, offs: list[torch.Tensor], sp: tuple[int, ...], win: torch.Tensor,
               like: torch.Tensor) -> torch.Tensor:
        """The profile laid at each sample's window offset: ``(n, 1, *sp)`` (zero outside)."""
        s = prof.shape[0]
        idx = []
        for o, size in zip(offs, sp):
            ar = torch.arange(size, device=like.device).view(1, -1)
            idx.append((ar - o.view(-1, 1)).clamp(0, s - 1))
        prof = prof.to(device=like.device, dtype=like.dtype)
        if len(sp) == 1:
            vals = prof[idx[0]]  # (n, L)
        else:
            vals = prof[idx[0].unsqueeze(2), idx[1].unsqueeze(1)]  # (n, H, W)
        return vals.unsqueeze(1) * win

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active()
        if len(act) == 0:
            return
        shape0 = tuple(act.x.shape)
        c, sp = self._layout(act.x)
        dims = tuple(range(2, 2 + len(sp)))
        g = ctx.generator
        linf = ctx.norm == "linf"

        def canon(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], c, *sp)

        def orig(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], *shape0[1:])

        n = len(act)
        xc = canon(act.x)
        eps = act.eps
        if linf:
            if len(sp) == 2:
                sgn = self._signs((n, c, 1, sp[1]), xc, g).expand(n, c, *sp)
            else:
                sgn = self._signs((n, c, sp[0]), xc, g)
            delta0 = sgn * bview(eps, xc)
        else:
            b = max(1, min(sp) // 5)
            prof = _bump_1d(b, xc.dtype) if len(sp) == 1 else _bump_2d(b, b, xc.dtype)
            reps = [math.ceil(size / b) for size in sp]
            tile = prof.repeat(*reps)[tuple(slice(0, size) for size in sp)].to(xc.device)
            blocks = [torch.arange(size, device=xc.device) // b for size in sp]
            nb = [math.ceil(size / b) for size in sp]
            bs = self._signs((n, c, *nb), xc, g)
            if len(sp) == 1:
                sg = bs[:, :, blocks[0]]
            else:
                sg = bs[:, :, blocks[0]][:, :, :, blocks[1]]
            delta0 = tile * sg
            delta0 = delta0 / bview(lp_norm(delta0, "l2").clamp_min(1e-30), delta0) * bview(eps, delta0)
        x_best = ctx.constrain(act, orig(delta0))
        logits = query(ctx, act.idx, x_best)
        loss_best = ctx.loss_fn(logits, act.y, act.target)
        logits_best = logits
        succ = ctx.record(act, x_best, logits)
        for it in range(self.steps):
            if bool(succ.any()):
                keep = (~succ).nonzero().squeeze(1)
                act, x_best, loss_best = act.select(keep), x_best[keep], loss_best[keep]
                logits_best = logits_best[keep]
            n = len(act)
            if n == 0:
                return
            s = self._side(p_schedule(self.p_init, it, self.steps), sp)
            xc = canon(act.x)
            delta = canon(x_best) - xc
            win, offs = self._window(n, s, sp, xc, g)
            if linf:
                vals = self._signs((n, c, *[1] * len(sp)), xc, g) * bview(act.eps, xc)
                new = torch.where(win, vals.expand_as(delta), delta)
            else:
                win2, _ = self._window(n, s, sp, xc, g)
                transpose = bool(torch.randint(0, 2, (1,), generator=g, device=g.device).item())
                prof = two_lobe_bump(s, len(sp), transpose=transpose, dtype=xc.dtype)
                bump = self._place(prof, offs, sp, win, xc) * self._signs((n, c, *[1] * len(sp)), xc, g)
                total2 = delta.pow(2).flatten(1).sum(1)
                unused = (act.eps**2 - total2).clamp_min(0)
                union = win | win2
                nu2 = (delta * union).pow(2).sum(dims, keepdim=True)  # per channel
                old = delta * win
                old_n = old.pow(2).sum(dims, keepdim=True).sqrt()
                u = bump + old / (old_n + 1e-10)
                u_n = u.pow(2).sum(dims, keepdim=True).sqrt().clamp_min(1e-30)
                target_n = (bview(unused, xc) / c + nu2).clamp_min(0).sqrt()
                u = u / u_n * target_n
                new = torch.where(win2, torch.zeros_like(delta), delta)
                new = torch.where(win, u, new)
                nn_ = lp_norm(new, "l2").clamp_min(1e-30)
                new = new / bview(nn_, new) * bview(act.eps, new)
            x_new = ctx.constrain(act, orig(new))
            logits = query(ctx, act.idx, x_new)
            loss_new = ctx.loss_fn(logits, act.y, act.target)
            better = loss_new > loss_best
            x_best = torch.where(bview(better, x_best), x_new, x_best)
            loss_best = torch.where(better, loss_new, loss_best)
            logits_best = torch.where(bview(better, logits_best), logits, logits_best)
            succ = ctx.record(act, x_new, logits)
        if len(act):
            ctx.record_final(act, x_best, logits_best)
