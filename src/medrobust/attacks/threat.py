"""Threat model: which perturbations an attack may use.

A :class:`ThreatModel` fixes the norm (L∞ or L2), the radius ε (absolute in input units, relative to
each sample's peak-to-peak amplitude, or given as a target signal-to-noise ratio in dB), optional
bounds of the valid input range and an optional mask of the coordinates that may be changed (leads,
time segments, the real part of a zero-padded record). Every attack of :mod:`medrobust.attacks`
enforces the same object, so ``‖δ‖ ≤ ε`` per sample, bounds and mask hold for all of them.

All operations are shape-generic: a sample is flattened with ``x.flatten(1)`` and per-sample
quantities are broadcast with ``t.view(-1, *[1] * (x.ndim - 1))``; nothing assumes images or 4-D.

References
----------
Madry, A. et al. "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
(arXiv 1706.06083) — the ε-ball threat model and projection.
Ma, L. & Liang, L. Comput. Biol. Med. 2022 (arXiv 2110.09759) — ε relative to the signal amplitude
and masks on variable-length 12-lead records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from medrobust.errors import ConfigError, DataError

Norm = Literal["linf", "l2"]
EpsMode = Literal["abs", "ptp", "snr_db"]
EPS_MODES: tuple[str, ...] = ("abs", "ptp", "snr_db")

_NORM_ALIASES: dict[Any, str] = {
    "linf": "linf", "l_inf": "linf", "inf": "linf", "infinity": "linf", math.inf: "linf",
    "l2": "l2", "2": "l2", 2: "l2", 2.0: "l2",
}


def canonical_norm(norm: Any) -> str:
    """Return ``"linf"`` or ``"l2"`` for the accepted spellings (``"Linf"``, ``inf``, ``"L2"``, ``2``)."""
    key = norm.lower() if isinstance(norm, str) else norm
    try:
        return _NORM_ALIASES[key]
    except (KeyError, TypeError):
        raise ConfigError(f"norm must be 'linf' or 'l2' (or inf / 2), got {norm!r}.") from None


def bview(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a per-sample tensor ``(N,)`` so that it broadcasts against ``x`` of any rank."""
    return t.view(-1, *[1] * (x.ndim - 1))


def lp_norm(delta: torch.Tensor, norm: str, *, exact: bool = False) -> torch.Tensor:
    """Per-sample norm of ``delta`` (``(N,)``) in ``"linf"`` or ``"l2"``.

    ``exact=True`` accumulates the L2 norm in float64 (for reporting); the result has ``delta``'s dtype.
    """
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] > 0 else flat.new_zeros(flat.shape[0])
    if exact:
        return flat.double().norm(p=2, dim=1).to(delta.dtype)
    return flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Projection of ``delta`` onto the per-sample ball ``‖δ‖ ≤ eps`` (``eps``: ``(N,)``).

    L∞ clamps each coordinate (exact in floating point). L2 rescales samples outside the ball; the norm
    is computed in float64 and the radius shrunk by a few units of rounding so that the rounded result
    never exceeds ``eps``.
    """
    if norm == "linf":
        e = bview(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    n = delta.detach().flatten(1).double().norm(p=2, dim=1)
    margin = 1.0 - 8.0 * torch.finfo(delta.dtype).eps
    r = eps.double() * margin
    factor = torch.where(n > r, r / n.clamp_min(1e-300), torch.ones_like(n)).to(delta.dtype)
    return delta * bview(factor, delta)


def add_toward(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``x + delta`` rounded towards ``x`` where needed, so that ``|result − x| <= |delta|`` elementwise.

    Floating-point addition can round ``x + δ`` one half-ulp away from ``x``; on the boundary of an
    L∞ ball that would leave the ball. Where it happens the result is moved one ulp towards ``x``.
    """
    out = x + delta
    over = (out - x).abs() > delta.abs()
    return torch.where(over, torch.nextafter(out, x), out)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm ascent direction for the dual norm: ``sign(g)`` (L∞) or ``g / ‖g‖₂`` (L2).

    Samples whose gradient is exactly zero get a zero direction.
    """
    if norm == "linf":
        return grad.sign()
    n = lp_norm(grad, "l2")
    return grad / bview(n.clamp_min(1e-30), grad)


def _as_float_tensor(value: Any, name: str) -> torch.Tensor | float:
    """A float, or a detached float64 tensor; raises :class:`ConfigError` for anything else."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise ConfigError(f"{name} must be a real number tensor, got dtype {value.dtype}.")
        return value.detach().to(torch.float64)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a float or a tensor, got {type(value).__name__}.")
    return float(value)


@dataclass(frozen=True, eq=False)
class ThreatModel:
    """An ε-ball threat model with optional bounds and mask.

    Parameters
    ----------
    eps
        Radius: a positive float, or a tensor of per-sample radii ``(N,)`` (or a 1-element tensor).
        Its meaning depends on ``eps_mode``.
    norm
        ``"linf"`` (``‖δ‖∞ = max_i |δ_i|``) or ``"l2"`` (``‖δ‖₂``).
    eps_mode
        ``"abs"``: ε in input units (mV, ADC counts, [0, 1] intensity...).
        ``"ptp"``: ε is a fraction of each sample's peak-to-peak amplitude ``max(x) − min(x)``
        (over the masked region when a mask is set); for L2 the radius is additionally scaled by
        ``sqrt(n)`` (``n`` = number of perturbable coordinates) so that ε is the root-mean-square of δ
        relative to the peak-to-peak amplitude.
        ``"snr_db"``: ε is a target signal-to-noise ratio in dB; the radius is chosen so that every
        allowed δ has ``10·log10(P_signal / P_noise) ≥ ε`` with powers as mean squares over the
        perturbable coordinates: L∞ radius ``rms(x)·10^(−ε/20)``, L2 radius ``‖x‖₂·10^(−ε/20)``.
        A higher SNR means a smaller perturbation; the SNR may be ``≤ 0``.
    bounds
        ``None`` (unbounded, e.g. signals in mV), a pair of scalars ``(lo, hi)``, or a pair of tensors
        broadcastable to one sample (a 1-D tensor with one value per channel/lead is accepted and
        laid along dim 1). The clean input must lie inside the bounds.
    mask
        ``None`` or a tensor broadcastable to the batch, ``1``/``True`` where the input may change
        (e.g. ``(1, C, 1)`` for a lead subset, ``(N, 1, L)`` for the real part of padded records).
        Perturbations are multiplied by the mask, and gradients are masked before normalisation.

    Examples
    --------
    >>> tm = ThreatModel(eps=0.05, norm="linf", eps_mode="ptp", bounds=None)
    >>> eps = tm.resolve_eps(torch.tensor([[[0.0, 2.0]]]))   # 5 % of a 2 mV peak-to-peak
    >>> float(eps[0])
    0.1
    """

    eps: float | torch.Tensor
    norm: str = "linf"
    eps_mode: str = "abs"
    bounds: tuple[Any, Any] | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm))
        if self.eps_mode not in EPS_MODES:
            raise ConfigError(f"eps_mode must be one of {EPS_MODES}, got {self.eps_mode!r}.")
        if self.eps is None:
            raise ConfigError("eps is required: pass eps=<radius> (or threat=ThreatModel(eps=...)).")
        eps = _as_float_tensor(self.eps, "eps")
        if isinstance(eps, torch.Tensor):
            if eps.ndim > 1:
                raise ConfigError(f"a tensor eps must be per-sample with shape (N,), got {tuple(eps.shape)}.")
            if not torch.isfinite(eps).all():
                raise ConfigError("eps contains NaN or inf; pass finite radii.")
            if self.eps_mode != "snr_db" and not (eps > 0).all():
                raise ConfigError(f"eps must be > 0 for every sample, got min {float(eps.min())}.")
        else:
            if not math.isfinite(eps):
                raise ConfigError(f"eps must be finite, got {eps}.")
            if self.eps_mode != "snr_db" and eps <= 0:
                raise ConfigError(f"eps must be > 0, got {eps}. Pass a positive radius in input units.")
        object.__setattr__(self, "eps", eps)
        if self.bounds is not None:
            if not isinstance(self.bounds, (tuple, list)) or len(self.bounds) != 2:
                raise ConfigError(f"bounds must be None or a pair (lo, hi), got {self.bounds!r}.")
            lo = _as_float_tensor(self.bounds[0], "bounds[0]")
            hi = _as_float_tensor(self.bounds[1], "bounds[1]")
            lo_t = torch.as_tensor(lo, dtype=torch.float64)
            hi_t = torch.as_tensor(hi, dtype=torch.float64)
            try:
                ok = bool((lo_t < hi_t).all())
            except RuntimeError:
                raise ConfigError("bounds lo and hi have shapes that do not broadcast.") from None
            if not ok:
                raise ConfigError(f"bounds need lo < hi everywhere, got {self.bounds!r}.")
            object.__setattr__(self, "bounds", (lo, hi))
        if self.mask is not None:
            if not isinstance(self.mask, torch.Tensor):
                raise ConfigError(f"mask must be a tensor (bool or 0/1), got {type(self.mask).__name__}.")
            object.__setattr__(self, "mask", self.mask.detach())

    # ----------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary (for logs and result files)."""

        def _val(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.tolist() if v.numel() <= 16 else f"tensor{tuple(v.shape)}"
            return v

        return {
            "norm": self.norm,
            "eps": _val(self.eps),
            "eps_mode": self.eps_mode,
            "bounds": None if self.bounds is None else [_val(self.bounds[0]), _val(self.bounds[1])],
            "mask": None if self.mask is None else f"tensor{tuple(self.mask.shape)}",
        }

    # ----------------------------------------------------------------------------------------
    def combined_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The mask to apply to ``x``: the threat model's mask times a per-call ``mask`` (or ``None``).

        Returned as a tensor of ``x``'s dtype and device that broadcasts against ``x`` and whose
        first dimension is ``1`` or ``N``.
        """
        out: torch.Tensor | None = None
        for name, m in (("ThreatModel.mask", self.mask), ("mask", mask)):
            if m is None:
                continue
            if not isinstance(m, torch.Tensor):
                raise ConfigError(f"{name} must be a tensor (bool or 0/1), got {type(m).__name__}.")
            m = m.to(device=x.device, dtype=x.dtype)
            if m.ndim > x.ndim:
                raise DataError(f"{name} has {m.ndim} dims but the batch has {x.ndim}; it must broadcast to {tuple(x.shape)}.")
            m = m.view(*([1] * (x.ndim - m.ndim)), *m.shape)
            try:
                torch.broadcast_shapes(m.shape, x.shape)
            except RuntimeError:
                raise DataError(
                    f"{name} of shape {tuple(m.shape)} does not broadcast to the batch {tuple(x.shape)}; "
                    "use e.g. (1, leads, 1) for leads or (N, 1, samples) for padded records."
                ) from None
            if m.shape[0] not in (1, x.shape[0]):
                raise DataError(f"{name} has first dimension {m.shape[0]}; it must be 1 or the batch size {x.shape[0]}.")
            if not torch.isfinite(m).all() or ((m != 0) & (m != 1)).any():
                raise DataError(f"{name} must contain only 0/1 (or bool) values.")
            out = m if out is None else out * m
        return out

    def bounds_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Bounds as tensors broadcastable to ``x`` (leading dim 1), or ``None`` if unbounded."""
        if self.bounds is None:
            return None
        out = []
        for name, b in zip(("lo", "hi"), self.bounds):
            t = torch.as_tensor(b, dtype=x.dtype, device=x.device)
            if t.ndim == 1 and x.ndim >= 2 and t.numel() == x.shape[1]:
                t = t.view(1, -1, *[1] * (x.ndim - 2))  # one value per channel / lead (or feature)
            elif t.ndim > 0:
                t = t.view(*[1] * (x.ndim - t.ndim), *t.shape) if t.ndim < x.ndim else t
            ok = t.ndim <= x.ndim and (t.ndim == 0 or t.shape[0] == 1)
            if ok:
                try:
                    ok = torch.broadcast_shapes(t.shape, x.shape) == tuple(x.shape)
                except RuntimeError:
                    ok = False
            if not ok:
                raise ConfigError(
                    f"bounds {name} of shape {tuple(torch.as_tensor(b).shape)} does not broadcast to one sample "
                    f"of shape {tuple(x.shape[1:])}; use scalars or one value per channel ({x.shape[1]})."
                )
            out.append(t)
        return out[0], out[1]

    def check_inside(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if the clean batch lies outside the bounds."""
        b = self.bounds_for(x)
        if b is None:
            return
        lo, hi = b
        if (x < lo).any() or (x > hi).any():
            raise DataError(
                f"the input batch leaves the bounds (min {float(x.min()):.6g}, max {float(x.max()):.6g}); "
                "pass bounds=None for unbounded signals or bounds that contain the data."
            )

    def resolve_eps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample absolute radius ``(N,)`` (dtype and device of ``x``).

        Parameters
        ----------
        x
            Clean batch.
        mask
            The combined mask (see :meth:`combined_mask`); relative radii are computed over it.
        """
        n = x.shape[0]
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            if eps.numel() == 1:
                e = eps.reshape(1).expand(n)
            elif eps.numel() == n:
                e = eps.reshape(n)
            else:
                raise DataError(f"eps has {eps.numel()} per-sample values but the batch has {n} samples.")
            e = e.to(device=x.device, dtype=torch.float64)
        else:
            e = torch.full((n,), float(eps), dtype=torch.float64, device=x.device)
        if self.eps_mode == "abs":
            return e.to(x.dtype)
        xd = x.detach().to(torch.float64)
        if mask is None:
            m = torch.ones_like(xd)
        else:
            m = mask.to(torch.float64).expand_as(xd)
        count = m.flatten(1).sum(1)
        if (count == 0).any():
            raise DataError("the mask leaves no coordinate to perturb for some samples; check the mask.")
        if self.eps_mode == "ptp":
            big = torch.finfo(torch.float64).max
            hi = torch.where(m > 0, xd, torch.full_like(xd, -big)).flatten(1).amax(1)
            lo = torch.where(m > 0, xd, torch.full_like(xd, big)).flatten(1).amin(1)
            ptp = hi - lo
            if (ptp <= 0).any():
                raise DataError("eps_mode='ptp' needs non-constant samples (peak-to-peak amplitude 0 found).")
            r = e * ptp
            if self.norm == "l2":
                r = r * count.sqrt()
        else:  # snr_db
            power = ((xd * m) ** 2).flatten(1).sum(1) / count
            if (power <= 0).any():
                raise DataError("eps_mode='snr_db' needs samples with non-zero power (an all-zero sample was found).")
            scale = 10.0 ** (-e / 20.0)
            r = power.sqrt() * scale
            if self.norm == "l2":
                r = r * count.sqrt()
        return r.to(x.dtype)

    # ----------------------------------------------------------------------------------------
    def constrain(
        self,
        x: torch.Tensor,
        delta: torch.Tensor,
        eps: torch.Tensor,
        mask: torch.Tensor | None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Map a raw perturbation to the admissible ``x_adv``: mask, project onto the ball, clip to bounds.

        Masking and clipping only shrink coordinates towards ``x`` (which lies inside the bounds), so
        the result stays inside the ball.
        """
        if mask is not None:
            delta = delta * mask
        delta = project(delta, eps, self.norm)
        x_adv = add_toward(x, delta)
        if bounds is not None:
            x_adv = torch.maximum(torch.minimum(x_adv, bounds[1]), bounds[0])
        return x_adv
