"""Smoothed boundary attack: decision-based (labels only), targeted or untargeted, with query accounting.

Brendel, W., Rauber, J. & Bethge, M. "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018 (arXiv 1712.04248), with the smoothed proposals of the
CardioDefense evaluation (methods-ecg.md §5.5): the random direction is a Gaussian vector smoothed
along time by a Hann window (41 samples), so the perturbation stays ECG-like.

The attack starts from an input that is already adversarial — for a targeted attack an input the
model assigns to the target class (a "target record"), for an untargeted one any input not
classified as ``y`` — and walks along the decision boundary towards the clean input ``x``:

1. a *spherical* step: a smoothed Gaussian direction, made orthogonal to ``x − x_adv`` and scaled to
   ``spherical_step · d`` (``d = ‖x − x_adv‖₂``), projected back onto the sphere of radius ``d``
   around ``x``;
2. a *source* step of ``source_step · d`` towards ``x``.

Each iteration draws ``candidates`` proposals per sample and evaluates both the spherical and the
final candidates (``2 · candidates`` queries); the first final candidate that is still adversarial
is accepted. Both step sizes are multiplied (divided) by ``step_adaptation`` when the success rate
of the last ``spherical_window`` spherical trials is above 0.5 (below 0.2); the source step alone
when that of the last ``source_window`` source trials leaves [0.2, 0.5] (Brendel et al. §3.1;
methods-ecg.md §5.5: 25 candidates, windows 100 / 30, factor 1.5, 8,000 iterations).

Threat model: the walk minimises the L2 distance; a sample counts as a success as soon as it is
adversarial within the threat model's radius ``ε`` (in its norm) and then stops. Samples that never
get inside the ball return the projection of their closest adversarial point onto the ball (usually
no longer adversarial). Use a large ``eps`` for a pure minimum-norm run.

Starting points: ``starting_points=`` (a pool of inputs, same shape per sample) or, by default, the
batch itself; every sample starts from the pool input that satisfies its criterion and is closest
to it (the pool's predictions cost ``len(pool)`` queries, spread over the samples, unless the pool
is the batch, whose clean predictions are already known). Untargeted samples without a start get
random noise starts (uniform in the bounds, or Gaussian around ``x``). A short bisection on the
segment ``[x, start]`` then moves the start to the boundary.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.base import (
    Active, Attack, AttackContext, check_int, check_positive, rand_normal, rand_uniform,
)
from medrobust.attacks.losses import is_success
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import ThreatModel, bview, lp_norm
from medrobust.errors import ConfigError, DataError


def hann_smooth(v: torch.Tensor, window: int) -> torch.Tensor:
    """Smooth ``v`` ``(M, ...)`` along its last axis (and the one before for ``(M, C, H, W)``).

    The kernel is a symmetric Hann window of ``window`` taps normalised to sum one, applied as a
    zero-padded 'same' convolution.
    """
    if window <= 1:
        return v
    k = torch.hann_window(window + 2, periodic=False, dtype=v.dtype, device=v.device)[1:-1]
    k = (k / k.sum()).view(1, 1, -1)
    axes = [-1, -2] if v.ndim == 4 else [-1]
    out = v
    for ax in axes:
        moved = out.movedim(ax, -1)
        shp = moved.shape
        flat = moved.reshape(-1, 1, shp[-1])
        sm = F.conv1d(flat, k, padding="same")
        out = sm.view(shp).movedim(-1, ax)
    return out


@register_attack("boundary")
class Boundary(Attack):
    """Smoothed boundary attack (Brendel et al., ICLR 2018, arXiv 1712.04248; methods-ecg.md §5.5).

    Parameters
    ----------
    model
        Classifier; only its predicted labels are used.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model; ``eps`` is the radius within which a sample counts as a success (``norm``
        defaults to ``"linf"`` like every attack; ``"l2"`` matches the L2 walk).
    steps
        Iterations (CardioDefense: 8,000).
    candidates
        Proposals per iteration and sample (CardioDefense: 25); each costs 2 queries.
    spherical_step, source_step
        Initial relative step sizes (0.01 and 0.01).
    step_adaptation
        Factor of the step-size adaptation (1.5).
    spherical_window, source_window
        Trials per success-rate window (100 and 30).
    smooth_window
        Hann window length in samples for the proposal directions (41; ``1`` disables smoothing).
    starting_points
        Optional pool of inputs ``(P, ...)`` to start from (default: the batch itself).
    init_trials
        Random-noise starts tried for untargeted samples without a start in the pool.
    bisection_steps
        Bisection steps on ``[x, start]`` before the walk.
    max_batch_size
        Largest number of inputs per forward (``None``: all candidates of all active samples).
    generator
        Source of all randomness.

    Examples
    --------
    >>> atk = Boundary(model, eps=0.5, norm="l2", steps=1000, starting_points=x_pool)   # doctest: +SKIP
    >>> res = atk(x, y, target=t)                                                      # doctest: +SKIP
    """

    name = "boundary"
    black_box: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        norm: str = "linf",
        steps: int = 8000,
        candidates: int = 25,
        spherical_step: float = 0.01,
        source_step: float = 0.01,
        step_adaptation: float = 1.5,
        spherical_window: int = 100,
        source_window: int = 30,
        smooth_window: int = 41,
        starting_points: torch.Tensor | None = None,
        init_trials: int = 50,
        bisection_steps: int = 10,
        max_batch_size: int | None = None,
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask, threat=threat,
                         loss="margin", generator=generator)
        self.steps = check_int(steps, "steps", minimum=1)
        self.candidates = check_int(candidates, "candidates", minimum=1)
        self.spherical_step = float(check_positive(spherical_step, "spherical_step", allow_none=False))
        self.source_step = float(check_positive(source_step, "source_step", allow_none=False))
        if self.source_step >= 1:
            raise ConfigError(f"source_step must be < 1 (a fraction of the distance), got {source_step}.")
        self.step_adaptation = float(check_positive(step_adaptation, "step_adaptation", allow_none=False))
        if self.step_adaptation <= 1:
            raise ConfigError(f"step_adaptation must be > 1, got {step_adaptation}.")
        self.spherical_window = check_int(spherical_window, "spherical_window", minimum=1)
        self.source_window = check_int(source_window, "source_window", minimum=1)
        self.smooth_window = check_int(smooth_window, "smooth_window", minimum=1)
        if starting_points is not None and (not isinstance(starting_points, torch.Tensor)
                                            or not starting_points.is_floating_point()):
            raise ConfigError("starting_points must be a floating-point tensor (P, ...) of inputs, or None.")
        self.starting_points = starting_points
        self.init_trials = check_int(init_trials, "init_trials", minimum=0)
        self.bisection_steps = check_int(bisection_steps, "bisection_steps", minimum=0)
        self.max_batch_size = None if max_batch_size is None else check_int(max_batch_size, "max_batch_size",
                                                                              minimum=1)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "candidates": self.candidates, "spherical_step": self.spherical_step,
            "source_step": self.source_step, "step_adaptation": self.step_adaptation,
            "spherical_window": self.spherical_window, "source_window": self.source_window,
            "smooth_window": self.smooth_window, "init_trials": self.init_trials,
            "bisection_steps": self.bisection_steps,
            "starting_points": None if self.starting_points is None else f"tensor{tuple(self.starting_points.shape)}",
        }

    # ------------------------------------------------------------------------------------
    def _adv(self, logits: torch.Tensor, act: Active) -> torch.Tensor:
        return is_success(logits, act.y, act.target)

    def _mask(self, act: Active, x: torch.Tensor) -> torch.Tensor:
        """``act.x`` + the masked difference ``x − act.x`` (frozen coordinates equal the clean input)."""
        if act.mask is None:
            return x
        return act.x + (x - act.x) * act.mask

    def _starts(self, ctx: AttackContext, act: Active) -> tuple[torch.Tensor, torch.Tensor]:
        """A starting point per active sample and whether one was found ``(n,)``."""
        n = len(act)
        x = act.x
        start = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        if self.starting_points is None:
            pool, pool_pred = ctx.x, ctx.clean_logits.argmax(1)
        else:
            pool = self.starting_points.to(device=x.device, dtype=x.dtype)
            if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
                raise DataError(f"starting_points have per-sample shape {tuple(pool.shape[1:])} but the batch has "
                                f"{tuple(x.shape[1:])}; pass inputs of the same shape.")
            if not bool(torch.isfinite(pool).all()):
                raise DataError("starting_points contain NaN or inf.")
            owners = act.idx[torch.arange(len(pool), device=x.device) % n]
            pool_pred = query(ctx, owners, ctx.clip(pool), max_batch=self.max_batch_size).argmax(1)
            pool = ctx.clip(pool)
        if act.target is not None:
            ok = pool_pred.view(1, -1) == act.target.view(-1, 1)
        else:
            ok = pool_pred.view(1, -1) != act.y.view(-1, 1)
        if bool(ok.any()):
            dist = torch.cdist(x.flatten(1).double(), pool.flatten(1).double())
            dist = torch.where(ok, dist, torch.full_like(dist, float("inf")))
            j = dist.argmin(1)
            has = ok.any(1)
            start[has] = pool[j[has]]
            found |= has
        if act.mask is not None and bool(found.any()):  # frozen coordinates must equal x
            cand = self._mask(act, start)
            z = query(ctx, act.idx[found], cand[found], max_batch=self.max_batch_size)
            good = self._adv(z, act.select(found.nonzero().squeeze(1)))
            fi = found.nonzero().squeeze(1)
            found[fi[~good]] = False
            start = cand
        if act.target is None and self.init_trials > 0:
            scale = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp_min(1e-6)
            for trial in range(self.init_trials):
                need = (~found).nonzero().squeeze(1)
                if len(need) == 0:
                    break
                sub = act.select(need)
                if ctx.bounds is not None:
                    lo, hi = ctx.bounds
                    r = lo + (hi - lo) * rand_uniform(tuple(sub.x.shape), sub.x, ctx.generator)
                else:
                    r = sub.x + rand_normal(tuple(sub.x.shape), sub.x, ctx.generator) * bview(
                        scale[need] * (2.0 ** (trial / 5.0)), sub.x)
                r = self._mask(sub, r)
                z = query(ctx, sub.idx, r, max_batch=self.max_batch_size)
                good = self._adv(z, sub)
                start[need[good]] = r[good]
                found[need[good]] = True
        return start, found

    def _bisect(self, ctx: AttackContext, act: Active, start: torch.Tensor) -> torch.Tensor:
        """Move each start towards ``x`` along the segment while it stays adversarial."""
        lo = torch.zeros(len(act), dtype=torch.float64, device=start.device)  # fraction towards start: not adv
        hi = torch.ones_like(lo)  # adversarial
        diff = start - act.x
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            cand = act.x + diff * bview(mid.to(diff.dtype), diff)
            z = query(ctx, act.idx, cand, max_batch=self.max_batch_size)
            adv = self._adv(z, act)
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)
        return act.x + diff * bview(hi.to(diff.dtype), diff)

    def _try_record(self, ctx: AttackContext, act: Active, cur: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Record the samples whose adversarial ``cur`` lies inside the ball; return them ``(n,)``."""
        inside = lp_norm(cur - act.x, ctx.norm, exact=True) <= act.eps
        inside &= self._adv(logits, act)
        if bool(inside.any()):
            sel = inside.nonzero().squeeze(1)
            ctx.record(act.select(sel), cur[sel], logits[sel])
        return inside

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active()
        if len(act) == 0:
            return
        start, found = self._starts(ctx, act)
        if not bool(found.all()):
            if act.target is not None:
                warnings.warn(
                    f"boundary attack: {int((~found).sum())} sample(s) have no starting point classified as their "
                    "target; pass starting_points= with inputs of the target classes. They are reported as failures.",
                    RuntimeWarning, stacklevel=3,
                )
            lost = (~found).nonzero().squeeze(1)
            la = act.select(lost)
            # no adversarial start: return a random point of the ball (a failed random-noise trial)
            fb = ctx.random_start(la)
            ctx.record_final(la, fb, query(ctx, la.idx, fb, max_batch=self.max_batch_size))
            keep = found.nonzero().squeeze(1)
            act, start = act.select(keep), start[keep]
            if len(act) == 0:
                return
        cur = self._bisect(ctx, act, start)
        cur_logits = query(ctx, act.idx, cur, max_batch=self.max_batch_size)
        n = len(act)
        dt = act.x.dtype
        sph = torch.full((n,), self.spherical_step, dtype=torch.float64, device=cur.device)
        src = torch.full((n,), self.source_step, dtype=torch.float64, device=cur.device)
        sph_t = torch.zeros(n, dtype=torch.long, device=cur.device)
        sph_s = torch.zeros_like(sph_t)
        src_t = torch.zeros_like(sph_t)
        src_s = torch.zeros_like(sph_t)
        k = self.candidates
        a = self.step_adaptation
        for it in range(self.steps + 1):
            inside = self._try_record(ctx, act, cur, cur_logits)
            if bool(inside.any()):
                keep = (~inside).nonzero().squeeze(1)
                act, cur, cur_logits = act.select(keep), cur[keep], cur_logits[keep]
                sph, src, sph_t, sph_s, src_t, src_s = (t[keep] for t in (sph, src, sph_t, sph_s, src_t, src_s))
            n = len(act)
            if n == 0 or it == self.steps:
                break
            feat = tuple(cur.shape[1:])
            diff = (act.x - cur).double()  # towards the source
            dist = lp_norm(diff, "l2").clamp_min(1e-30)
            unit = diff / bview(dist, diff)
            eta = rand_normal((n * k, *feat), cur, ctx.generator)
            eta = hann_smooth(eta, self.smooth_window).double().view(n, k, *feat)
            if act.mask is not None:
                m = act.mask.double()
                eta = eta * (m.unsqueeze(1) if act.mask_per_sample else m.unsqueeze(0))
            u = unit.unsqueeze(1)
            dims = tuple(range(2, eta.ndim))
            eta = eta - (eta * u).sum(dims, keepdim=True) * u
            eta_n = eta.flatten(2).norm(dim=2).clamp_min(1e-30)
            eta = eta * (sph * dist).view(n, 1, *[1] * len(feat)) / eta_n.view(n, k, *[1] * len(feat))
            xs = act.x.double().unsqueeze(1)
            v = cur.double().unsqueeze(1) + eta - xs
            v_n = v.flatten(2).norm(dim=2).clamp_min(1e-30)
            c1 = xs + v * (dist.view(n, 1) / v_n).view(n, k, *[1] * len(feat))
            c2 = c1 + (xs - c1) * src.view(n, 1, *[1] * len(feat))
            both = torch.cat([c1, c2], 1).to(dt).flatten(0, 1)  # (n·2k, ...)
            both = ctx.clip(both)
            owners = act.idx.repeat_interleave(2 * k)
            z = query(ctx, owners, both, max_batch=self.max_batch_size)
            yy = act.y.repeat_interleave(2 * k)
            tt = None if act.target is None else act.target.repeat_interleave(2 * k)
            adv = is_success(z, yy, tt).view(n, 2 * k)
            a1, a2 = adv[:, :k], adv[:, k:]
            both = both.view(n, 2 * k, *feat)
            z = z.view(n, 2 * k, -1)
            # accept the first adversarial final candidate
            anyf = a2.any(1)
            first = torch.where(a2, torch.arange(k, device=cur.device).view(1, k), torch.full_like(a2, k,
                                dtype=torch.long)).amin(1).clamp_max(k - 1)
            rows = torch.arange(n, device=cur.device)
            cur = torch.where(bview(anyf, cur), both[rows, k + first], cur)
            cur_logits = torch.where(anyf.view(-1, 1), z[rows, k + first], cur_logits)
            # step-size adaptation on the recent success rates
            sph_t += k
            sph_s += a1.sum(1)
            src_t += k
            src_s += a2.sum(1)
            full = sph_t >= self.spherical_window
            if bool(full.any()):
                rate = sph_s.double() / sph_t.double().clamp_min(1)
                up, down = full & (rate > 0.5), full & (rate < 0.2)
                sph = torch.where(up, sph * a, torch.where(down, sph / a, sph))
                src = torch.where(up, src * a, torch.where(down, src / a, src))
                sph_t = torch.where(full, 0, sph_t)
                sph_s = torch.where(full, 0, sph_s)
            full = src_t >= self.source_window
            if bool(full.any()):
                rate = src_s.double() / src_t.double().clamp_min(1)
                up, down = full & (rate > 0.5), full & (rate < 0.2)
                src = torch.where(up, src * a, torch.where(down, src / a, src))
                src_t = torch.where(full, 0, src_t)
                src_s = torch.where(full, 0, src_s)
            src = src.clamp(1e-6, 0.5)
            sph = sph.clamp(1e-6, 1.0)
        if len(act) == 0:
            return
        # never inside the ball: return the projection of the closest adversarial point
        fin = ctx.constrain(act, cur - act.x)
        z = query(ctx, act.idx, fin, max_batch=self.max_batch_size)
        ctx.record(act, fin, z)
        ctx.record_final(act, fin, z)
