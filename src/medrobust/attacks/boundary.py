"""Smoothed boundary attack: decision-based (labels only), targeted or untargeted, with query accounting.

Brendel, W., Rauber, J. & Bethge, M. "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018 (arXiv 1712.04248), with the smoothed proposals of the
CardioDefense evaluation (Shao et al., arXiv 2203.09487, 2022): the random direction is a Gaussian
vector smoothed along time by a Hann window (41 samples), so the perturbation stays ECG-like.

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
Shao et al.: 25 candidates, windows 100 / 30, factor 1.5, 8,000 iterations).

Threat model: the walk minimises the L2 distance; a sample counts as a success as soon as it is
adversarial within the threat model's radius ``ε`` (in its norm) and then stops. Samples that never
get inside the ball return the projection of their closest adversarial point onto the ball (usually
no longer adversarial). Use a large ``eps`` for a pure minimum-norm run.

Starting points: ``starting_points=`` (a pool of inputs, same shape per sample) or, by default, the
batch itself (the pool's predictions cost ``len(pool)`` queries, spread over the samples, unless the
pool is the batch, whose clean predictions are already known). With ``init="random"`` (default, as
in the papers: Brendel et al. start a targeted attack from a sample of the target class, Shao et al.
from a random record of the target class) every sample starts from a pool input drawn at random,
from its own random stream, among those classified as its target (targeted) or as any class but
``y`` (untargeted); ``init="closest"`` takes the closest such input instead (a shorter walk).
Untargeted samples without a start get random noise starts (uniform in the bounds, or Gaussian
around ``x``). A short bisection on the segment ``[x, start]`` then moves the start to the boundary.
All random draws (start choice, noise starts, proposals) come from each sample's own stream.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext
from medrobust.attacks.losses import is_success
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import bview, lp_norm
from medrobust.checks import check_choice, check_float, check_int
from medrobust.errors import ConfigError, DataError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs


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


INITS: tuple[str, ...] = ("random", "closest")


@dataclass
class _Steps:
    """Per-sample step sizes and success counters of the walk (Brendel et al. §3.1)."""

    sph: torch.Tensor
    src: torch.Tensor
    sph_t: torch.Tensor
    sph_s: torch.Tensor
    src_t: torch.Tensor
    src_s: torch.Tensor

    @classmethod
    def start(cls, n: int, spherical: float, source: float, device: Any) -> "_Steps":
        z = torch.zeros(n, dtype=torch.long, device=device)
        return cls(torch.full((n,), spherical, dtype=torch.float64, device=device),
                   torch.full((n,), source, dtype=torch.float64, device=device), z, z.clone(), z.clone(), z.clone())

    def select(self, keep: torch.Tensor) -> "_Steps":
        return _Steps(*(getattr(self, f.name)[keep] for f in fields(self)))


@register_attack("boundary")
class Boundary(Attack):
    """Smoothed boundary attack (Brendel et al., ICLR 2018, arXiv 1712.04248; Shao et al., arXiv 2203.09487).

    Parameters
    ----------
    model
        Classifier; only its predicted labels are used.
    steps
        Iterations (Shao et al.: 8,000).
    candidates
        Proposals per iteration and sample (Shao et al.: 25); each costs 2 queries.
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
    init
        ``"random"`` (default, Brendel et al. and Shao et al.): each sample starts from a pool input drawn
        at random among those of its target class (targeted) or of any class but ``y`` (untargeted);
        ``"closest"``: from the closest such input (L2), a shorter walk but a start that depends on
        the whole pool geometry.
    init_trials
        Random-noise starts tried for untargeted samples without a start in the pool.
    bisection_steps
        Bisection steps on ``[x, start]`` before the walk.
    max_batch_size
        Largest number of inputs per forward (``None``: all candidates of all active samples).
    **threat_kwargs
        ``eps, norm, eps_mode, bounds, mask, threat, generator, units`` (see
        :class:`~medrobust.attacks.base.Attack`); ``eps`` is the radius within which a sample counts
        as a success (``norm`` defaults to ``"linf"`` like every attack; ``"l2"`` matches the L2 walk).

    Examples
    --------
    >>> atk = Boundary(model, eps=0.5, norm="l2", steps=1000, starting_points=x_pool)   # doctest: +SKIP
    >>> res = atk(x, y, target=t)                                                      # doctest: +SKIP
    """

    name = "boundary"
    black_box: ClassVar[bool] = True
    default_loss: ClassVar[str] = "margin"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 8000,
        candidates: int = 25,
        spherical_step: float = 0.01,
        source_step: float = 0.01,
        step_adaptation: float = 1.5,
        spherical_window: int = 100,
        source_window: int = 30,
        smooth_window: int = 41,
        starting_points: torch.Tensor | None = None,
        init: str = "random",
        init_trials: int = 50,
        bisection_steps: int = 10,
        max_batch_size: int | None = None,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.steps = check_int(steps, "steps", minimum=1)
        self.candidates = check_int(candidates, "candidates", minimum=1)
        self.spherical_step = check_float(spherical_step, "spherical_step", minimum=0.0, strict=True)
        self.source_step = check_float(source_step, "source_step (a fraction of the distance)", minimum=0.0,
                                       maximum=1.0 - 1e-12, strict=True)
        self.step_adaptation = check_float(step_adaptation, "step_adaptation", minimum=1.0, strict=True)
        self.spherical_window = check_int(spherical_window, "spherical_window", minimum=1)
        self.source_window = check_int(source_window, "source_window", minimum=1)
        self.smooth_window = check_int(smooth_window, "smooth_window", minimum=1)
        if starting_points is not None and (not isinstance(starting_points, torch.Tensor)
                                            or not starting_points.is_floating_point()):
            raise ConfigError("starting_points must be a floating-point tensor (P, ...) of inputs, or None.")
        self.starting_points = starting_points
        self.init = check_choice(init, "init", INITS)
        self.init_trials = check_int(init_trials, "init_trials", minimum=0)
        self.bisection_steps = check_int(bisection_steps, "bisection_steps", minimum=0)
        self.max_batch_size = None if max_batch_size is None else check_int(max_batch_size, "max_batch_size",
                                                                              minimum=1)
        super().__init__(model, **threat_kwargs)

    def hyperparameters(self) -> dict[str, Any]:
        out = super().hyperparameters()
        sp = self.starting_points
        out["starting_points"] = None if sp is None else f"tensor{tuple(sp.shape)}"
        return out

    # ------------------------------------------------------------------------------------ starting points
    def _adv(self, logits: torch.Tensor, act: Active) -> torch.Tensor:
        return is_success(logits, act.label, act.target)

    def _mask(self, act: Active, x: torch.Tensor) -> torch.Tensor:
        """``act.x`` + the masked difference ``x − act.x`` (frozen coordinates equal the clean input)."""
        if act.mask is None:
            return x
        return act.x + (x - act.x) * act.mask

    def _pool(self, ctx: AttackContext, act: Active) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool of candidate starts and its predicted classes (queried unless the pool is the batch)."""
        x = act.x
        if self.starting_points is None:
            return ctx.x, ctx.clean_logits.argmax(1)
        pool = self.starting_points.to(device=x.device, dtype=x.dtype)
        if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
            raise DataError(f"starting_points have per-sample shape {tuple(pool.shape[1:])} but the batch has "
                            f"{tuple(x.shape[1:])}; pass inputs of the same shape.")
        if not bool(torch.isfinite(pool).all()):
            raise DataError("starting_points contain NaN or inf.")
        pool = ctx.clip(pool)
        owners = act.idx[torch.arange(len(pool), device=x.device) % len(act)]
        return pool, query(ctx, owners, pool, max_batch=self.max_batch_size).argmax(1)

    def _pick(self, ctx: AttackContext, act: Active, pool: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Index into the pool per sample: a random admissible input (``init="random"``) or the closest."""
        if self.init == "closest":
            dist = torch.cdist(act.x.flatten(1).double(), pool.flatten(1).double())
            return torch.where(ok, dist, torch.full_like(dist, float("inf"))).argmin(1)
        count = ok.sum(1)
        r = (ctx.rand(act).view(-1).double() * count).floor().long().clamp_max((count - 1).clamp_min(0))
        rank = ok.long().cumsum(1) - 1  # rank of each admissible pool input in its row
        return torch.where(ok & (rank == r.view(-1, 1)), 1, 0).argmax(1)

    def _noise_starts(self, ctx: AttackContext, act: Active, start: torch.Tensor, found: torch.Tensor) -> None:
        """Random-noise starts (uniform in the bounds, or Gaussian around ``x``) for untargeted samples."""
        x = act.x
        scale = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp_min(1e-6)
        feat = tuple(x.shape[1:])
        for trial in range(self.init_trials):
            need = (~found).nonzero().squeeze(1)
            if len(need) == 0:
                break
            sub = act.select(need)
            if ctx.bounds is not None:
                lo, hi = ctx.bounds
                r = lo + (hi - lo) * ctx.rand(sub, *feat)
            else:
                r = sub.x + ctx.randn(sub, *feat) * bview(scale[need] * (2.0 ** (trial / 5.0)), sub.x)
            r = self._mask(sub, r)
            good = self._adv(query(ctx, sub.idx, r, max_batch=self.max_batch_size), sub)
            start[need[good]] = r[good]
            found[need[good]] = True

    def _starts(self, ctx: AttackContext, act: Active) -> tuple[torch.Tensor, torch.Tensor]:
        """A starting point per active sample and whether one was found ``(n,)``."""
        x = act.x
        start = x.clone()
        pool, pool_pred = self._pool(ctx, act)
        if act.target is not None:
            ok = pool_pred.view(1, -1) == act.target.view(-1, 1)
        else:
            ok = pool_pred.view(1, -1) != act.label.view(-1, 1)
        found = ok.any(1)
        if bool(found.any()):
            j = self._pick(ctx, act, pool, ok)
            start[found] = pool[j[found]]
        if act.mask is not None and bool(found.any()):  # frozen coordinates must equal x
            start = self._mask(act, start)
            fi = found.nonzero().squeeze(1)
            z = query(ctx, act.idx[fi], start[fi], max_batch=self.max_batch_size)
            found[fi[~self._adv(z, act.select(fi))]] = False
        if act.target is None and self.init_trials > 0:
            self._noise_starts(ctx, act, start, found)
        return start, found

    def _bisect(self, ctx: AttackContext, act: Active, start: torch.Tensor) -> torch.Tensor:
        """Move each start towards ``x`` along the segment while it stays adversarial."""
        lo = torch.zeros(len(act), dtype=torch.float64, device=start.device)  # fraction towards start: not adv
        hi = torch.ones_like(lo)  # adversarial
        diff = start - act.x
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            cand = act.x + diff * bview(mid.to(diff.dtype), diff)
            adv = self._adv(query(ctx, act.idx, cand, max_batch=self.max_batch_size), act)
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)
        moved = act.x + diff * bview(hi.to(diff.dtype), diff)
        return torch.where(bview(hi == 1, diff), start, moved)  # exactly the start where bisection did not move

    def _try_record(self, ctx: AttackContext, act: Active, cur: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Record the samples whose adversarial ``cur`` lies inside the ball; return them ``(n,)``."""
        inside = lp_norm(cur - act.x, ctx.norm, exact=True) <= act.eps
        inside &= self._adv(logits, act)
        if bool(inside.any()):
            sel = inside.nonzero().squeeze(1)
            ctx.record(act.select(sel), cur[sel], logits[sel])
        return inside

    # ------------------------------------------------------------------------------------ the walk
    def _proposals(self, ctx: AttackContext, act: Active, cur: torch.Tensor, st: _Steps) -> torch.Tensor:
        """``(n, 2k, ...)``: ``k`` spherical candidates, then the same ``k`` after the source step."""
        n, k = len(act), self.candidates
        feat = tuple(cur.shape[1:])
        one = [1] * len(feat)
        diff = (act.x - cur).double()  # towards the source
        dist = lp_norm(diff, "l2").clamp_min(1e-30)
        u = (diff / bview(dist, diff)).unsqueeze(1)
        eta = ctx.randn(act, k, *feat).flatten(0, 1)
        eta = hann_smooth(eta, self.smooth_window).double().view(n, k, *feat)
        if act.mask is not None:
            eta = eta * act.mask.double().unsqueeze(1)
        dims = tuple(range(2, eta.ndim))
        eta = eta - (eta * u).sum(dims, keepdim=True) * u
        eta_n = eta.flatten(2).norm(dim=2).clamp_min(1e-30)
        eta = eta * (st.sph * dist).view(n, 1, *one) / eta_n.view(n, k, *one)
        xs = act.x.double().unsqueeze(1)
        v = cur.double().unsqueeze(1) + eta - xs
        v_n = v.flatten(2).norm(dim=2).clamp_min(1e-30)
        c1 = xs + v * (dist.view(n, 1) / v_n).view(n, k, *one)
        c2 = c1 + (xs - c1) * st.src.view(n, 1, *one)
        return ctx.clip(torch.cat([c1, c2], 1).to(act.x.dtype))

    def _adapt(self, st: _Steps, a1: torch.Tensor, a2: torch.Tensor) -> None:
        """Step-size adaptation on the success rates of the last spherical / source trials."""
        a = self.step_adaptation
        st.sph_t += a1.shape[1]
        st.sph_s += a1.sum(1)
        st.src_t += a2.shape[1]
        st.src_s += a2.sum(1)
        full = st.sph_t >= self.spherical_window
        if bool(full.any()):
            rate = st.sph_s.double() / st.sph_t.double().clamp_min(1)
            up, down = full & (rate > 0.5), full & (rate < 0.2)
            st.sph = torch.where(full, torch.where(up, st.sph * a, torch.where(down, st.sph / a, st.sph))
                                 .clamp(1e-6, 1.0), st.sph)
            st.src = torch.where(full, torch.where(up, st.src * a, torch.where(down, st.src / a, st.src))
                                 .clamp(1e-6, 0.5), st.src)
            st.sph_t = torch.where(full, 0, st.sph_t)
            st.sph_s = torch.where(full, 0, st.sph_s)
        full = st.src_t >= self.source_window
        if bool(full.any()):
            rate = st.src_s.double() / st.src_t.double().clamp_min(1)
            up, down = full & (rate > 0.5), full & (rate < 0.2)
            st.src = torch.where(full, torch.where(up, st.src * a, torch.where(down, st.src / a, st.src))
                                 .clamp(1e-6, 0.5), st.src)
            st.src_t = torch.where(full, 0, st.src_t)
            st.src_s = torch.where(full, 0, st.src_s)

    def _step(self, ctx: AttackContext, act: Active, cur: torch.Tensor, cur_logits: torch.Tensor,
              st: _Steps) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: propose, query, accept the first adversarial final candidate, adapt the steps."""
        n, k = len(act), self.candidates
        feat = tuple(cur.shape[1:])
        both = self._proposals(ctx, act, cur, st)
        z = query(ctx, act.idx.repeat_interleave(2 * k), both.flatten(0, 1), max_batch=self.max_batch_size)
        lab = act.label.repeat_interleave(2 * k)
        tt = None if act.target is None else act.target.repeat_interleave(2 * k)
        adv = is_success(z, lab, tt).view(n, 2 * k)
        a1, a2 = adv[:, :k], adv[:, k:]
        z = z.view(n, 2 * k, -1)
        anyf = a2.any(1)
        ar = torch.arange(k, device=cur.device).view(1, k)
        first = torch.where(a2, ar, torch.full_like(ar, k)).amin(1).clamp_max(k - 1)
        rows = torch.arange(n, device=cur.device)
        cur = torch.where(bview(anyf, cur), both[rows, k + first].view(n, *feat), cur)
        cur_logits = torch.where(anyf.view(-1, 1), z[rows, k + first], cur_logits)
        self._adapt(st, a1, a2)
        return cur, cur_logits

    def _drop_lost(self, ctx: AttackContext, act: Active, found: torch.Tensor) -> None:
        """Samples without an adversarial start: warn (targeted) and report a random point of the ball."""
        if act.target is not None:
            warnings.warn(
                f"boundary attack: {int((~found).sum())} sample(s) have no starting point classified as their "
                "target; pass starting_points= with inputs of the target classes. They are reported as failures.",
                RuntimeWarning, stacklevel=4,
            )
        la = act.select((~found).nonzero().squeeze(1))
        fb = ctx.random_start(la)
        ctx.record_final(la, fb, query(ctx, la.idx, fb, max_batch=self.max_batch_size))

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active()
        if len(act) == 0:
            return
        start, found = self._starts(ctx, act)
        if not bool(found.all()):
            self._drop_lost(ctx, act, found)
            keep = found.nonzero().squeeze(1)
            act, start = act.select(keep), start[keep]
            if len(act) == 0:
                return
        cur = self._bisect(ctx, act, start)
        cur_logits = query(ctx, act.idx, cur, max_batch=self.max_batch_size)
        st = _Steps.start(len(act), self.spherical_step, self.source_step, cur.device)
        for it in range(self.steps + 1):
            inside = self._try_record(ctx, act, cur, cur_logits)
            if bool(inside.any()):
                keep = (~inside).nonzero().squeeze(1)
                act, cur, cur_logits, st = act.select(keep), cur[keep], cur_logits[keep], st.select(keep)
            if len(act) == 0 or it == self.steps:
                break
            cur, cur_logits = self._step(ctx, act, cur, cur_logits, st)
        if len(act) == 0:
            return
        # never inside the ball: return the projection of the closest adversarial point
        fin = ctx.constrain(act, cur - act.x)
        z = query(ctx, act.idx, fin, max_batch=self.max_batch_size)
        ctx.record(act, fin, z)
        ctx.record_final(act, fin, z)
