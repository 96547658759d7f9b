"""The collation / band technique: how wide is the region of adversarial signals around one example?

Han, X., Hu, Y., Foschini, L., Chinitz, L., Jankelson, L. & Ranganath, R. "Deep learning models for
electrocardiograms are susceptible to adversarial attack", Nature Medicine 26, 360–363 (2020);
arXiv 1905.05163 (scripts ``adv_measure_norm_all.py``, ``check_uniform.py``, ``check_concat.py``).
Given a clean signal ``x`` and a known adversarial signal ``x_adv`` (e.g. from :class:`~medrobust.attacks.SAP`):

1. :func:`adversarial_band` — **perturb and re-smooth**: ``trials`` times, add Gaussian noise
   (std ``noise_std``) to ``x_adv``, smooth the offset from ``x`` with the SAP filter ``S``, clamp it to
   ``[−ε, ε]``, re-apply the mask (padding) and bounds, classify, and keep the signal if the model still
   predicts the adversarial class. The per-time minimum and maximum over the kept signals (and
   ``x_adv`` itself) give the **band** ``lower[t] ≤ upper[t]``.
2. :func:`uniform_band_check` — draw ``s[t] ~ U(lower[t], upper[t])`` independently, smooth the offset
   ``x + S(s − x)``, project element-wise back into ``[lower, upper]``, classify; report the fraction
   misclassified (w.r.t. the true label) and the fraction in the adversarial class.
3. :func:`concatenation_check` — for pairs of kept signals ``(j, k)``, split at times where they
   (nearly) coincide, ``|j[t] − k[t]| < tol`` on every lead, so that ``j[:t] ‖ k[t:]`` and
   ``k[:t] ‖ j[t:]`` are continuous, classify, report the fraction still adversarial.

Defects of the reference scripts that are *not* reproduced: nothing is
hard-coded (example positions, true labels, lengths 9000 all come from the arguments); the split
points use the declared tolerance instead of exact equality; the split is made at the found index,
not at the loop counter; the summary never refers to undefined names. Choices where the paper is
silent, all arguments: ``x_adv`` itself belongs to the set whose envelope is the band (so the band is
never empty and contains the known adversarial example); the kernel can be defined in seconds
(``fs`` + ``reference_fs``); the noise std defaults to ``ε/2`` (Han: 5 with ε = 10); ``tol`` defaults
to ``ε/20``; the uniform check reports both "misclassified" and "still in the adversarial class".
Signals are ``(C, L)`` (leads × samples, one example); smoothing runs along the last axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import frozen_eval
from medrobust.attacks.sap_filter import sap_kernel, smooth
from medrobust.checks import check_bounds, check_int, check_positive
from medrobust.errors import ConfigError, DataError
from medrobust.models.inference import predict


@dataclass
class Band:
    """The adversarial band around one example.

    Attributes
    ----------
    x, x_adv
        Clean and adversarial signals ``(C, L)``.
    lower, upper
        Per-time envelope ``(C, L)`` of ``signals`` (``lower ≤ upper``).
    signals
        ``(n, C, L)``: ``x_adv`` followed by every kept perturb-and-resmooth trial.
    adv_class, true_label
        The model's class on ``x_adv``; the true label (``None`` if not given).
    trials, kept
        Trials run and trials kept (still in ``adv_class``).
    eps, noise_std
        Clamp radius of the smoothed offset and the trial noise std (input units).
    kernel
        The smoothing filter used.
    mask
        ``(C, L)`` or ``None``: 1 where the signal is real (the padding stays at ``x``).
    bounds
        ``(lo, hi)`` or ``None``.
    """

    x: torch.Tensor
    x_adv: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    signals: torch.Tensor
    adv_class: int
    true_label: int | None
    trials: int
    kept: int
    eps: float
    noise_std: float
    kernel: torch.Tensor
    mask: torch.Tensor | None = None
    bounds: tuple[float, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        """Fraction of trials that stayed in the adversarial class."""
        return self.kept / self.trials if self.trials else float("nan")

    @property
    def width(self) -> torch.Tensor:
        """``upper − lower`` ``(C, L)``."""
        return self.upper - self.lower

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        w = self.width
        return {"adv_class": self.adv_class, "true_label": self.true_label, "trials": self.trials,
                "kept": self.kept, "kept_fraction": self.kept_fraction, "eps": self.eps, "noise_std": self.noise_std,
                "mean_width": float(w.mean()), "max_width": float(w.max()), **self.config}


def _signal(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise DataError(f"{name} must be a floating-point tensor (C, L), got {type(t).__name__}.")
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[-1] < 2:
        raise DataError(f"{name} must be one signal (C, L) (or (1, C, L)), got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name} contains NaN or inf.")
    return t.detach()


def _classify(model: nn.Module, z: torch.Tensor, batch_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Classes of the signals ``z`` ``(n, C, L)``; ``mask`` ``(C, L)`` goes to models that take a padding mask."""
    return predict(model, z, batch_size=batch_size, mask=None if mask is None else mask.unsqueeze(0))


def _band_mask(mask: Any, x: torch.Tensor) -> torch.Tensor | None:
    """The mask as a ``(C, L)`` tensor like ``x`` (``(1, C, L)`` and ``(1, L)`` accepted), or ``None``."""
    if mask is None:
        return None
    m = torch.as_tensor(mask).to(device=x.device, dtype=x.dtype)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    try:
        return torch.broadcast_to(m, x.shape).clone()
    except RuntimeError:
        raise DataError(f"mask of shape {tuple(m.shape)} does not broadcast to the signal {tuple(x.shape)}.") from None


def _finish(z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None,
            bounds: tuple[float, float] | None) -> torch.Tensor:
    if mask is not None:
        z = x + (z - x) * mask
    if bounds is not None:
        z = z.clamp(bounds[0], bounds[1])
    return z


def adversarial_band(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    eps: float,
    y: int | None = None,
    trials: int = 1000,
    noise_std: float | None = None,
    fs: float | None = None,
    reference_fs: float | None = None,
    kernel: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    batch_size: int = 250,
    generator: torch.Generator | None = None,
) -> Band:
    """Perturb-and-resmooth trials around ``x_adv`` and their per-time envelope (Han et al. 2020).

    Parameters
    ----------
    model
        Classifier returning logits (eval mode, frozen while running).
    x, x_adv
        Clean and adversarial signals ``(C, L)`` (or ``(1, C, L)``).
    eps
        Clamp of the smoothed offset ``S(d)`` to ``[−ε, ε]`` (Han: ε = 10 ADC units), input units.
    y
        True label (reported only).
    trials
        Number of noisy trials (Han: 1000).
    noise_std
        Std of the Gaussian noise added to ``x_adv`` per sample point (default ``ε/2``; Han: 5).
    fs, reference_fs
        Define the SAP kernels in seconds (see :func:`~medrobust.attacks.sap_filter.sap_kernel`);
        both ``None``: Han's kernels in samples. Ignored when ``kernel`` is given.
    kernel
        An explicit symmetric odd-length smoothing filter.
    mask
        ``(C, L)`` / ``(1, L)`` 0/1 mask of the real signal (padding stays at ``x``), or ``None``.
    bounds
        ``(lo, hi)`` data range applied to every signal, or ``None``.
    batch_size
        Trials classified per forward.
    generator
        Source of the noise (``None``: seeded with 0).

    Returns
    -------
    Band
    """
    x = _signal(x, "x")
    x_adv = _signal(x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise DataError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} must have the same shape.")
    eps = float(check_positive(eps, "eps", allow_none=False))
    trials = check_int(trials, "trials", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    std = eps / 2 if noise_std is None else float(check_positive(noise_std, "noise_std", allow_none=False))
    bounds = _pair_bounds(bounds)
    k = _kernel(kernel) if kernel is not None else sap_kernel(fs=fs, reference_fs=reference_fs)
    k = k.to(dtype=x.dtype, device=x.device)
    m = _band_mask(mask, x)
    if m is not None:  # the padding of x_adv is x's too, so the band is zero-width there
        x_adv = x + (x_adv - x) * m
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with frozen_eval(model):
        adv_class = int(_classify(model, x_adv.unsqueeze(0), 1, m)[0])
        kept = [x_adv.unsqueeze(0)]
        for done in range(0, trials, batch_size):
            n = min(batch_size, trials - done)
            noise = torch.randn((n, *x.shape), generator=gen, device=gen.device, dtype=torch.float64)
            noise = noise.to(device=x.device, dtype=x.dtype) * std
            d = smooth(x_adv.unsqueeze(0) + noise - x.unsqueeze(0), k).clamp(-eps, eps)
            z = _finish(x.unsqueeze(0) + d, x.unsqueeze(0), m, bounds)
            kept.append(z[_classify(model, z, batch_size, m) == adv_class])
    sig = torch.cat(kept)
    return Band(x=x, x_adv=x_adv, lower=sig.amin(0), upper=sig.amax(0), signals=sig, adv_class=adv_class,
                true_label=None if y is None else int(y), trials=trials, kept=len(sig) - 1, eps=eps, noise_std=std,
                kernel=k, mask=m, bounds=bounds,
                config={"fs": fs, "reference_fs": reference_fs, "kernel_taps": int(k.numel())})


def _pair_bounds(bounds: Any) -> tuple[float, float] | None:
    """``None`` or a checked ``(lo, hi)`` pair; ``"auto"`` is refused (a band has no units to resolve it)."""
    if isinstance(bounds, str):
        raise ConfigError(f"bounds must be None or a pair (lo, hi) here, got {bounds!r} (the band knows no data units); "
                          "pass e.g. bounds=(0.0, 1.0).")
    return check_bounds(bounds)  # type: ignore[return-value]


def _kernel(kernel: Any) -> torch.Tensor:
    """An explicit smoothing filter: a 1-D tensor with an odd number of taps."""
    if not isinstance(kernel, torch.Tensor) or kernel.ndim != 1 or kernel.numel() % 2 == 0:
        shape = tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else type(kernel).__name__
        raise ConfigError(f"kernel must be a 1-D tensor with an odd number of taps, got {shape}; "
                          "e.g. medrobust.attacks.sap_filter.sap_kernel(fs=...).")
    return kernel


def uniform_band_check(
    model: nn.Module,
    band: Band,
    *,
    samples: int = 100,
    y: int | None = None,
    batch_size: int = 250,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Do signals drawn inside the band stay adversarial? (Han et al. 2020, ``check_uniform.py``.)

    Each sample: ``s[t] ~ U(lower[t], upper[t])`` independently, then ``x + S(s − x)`` projected
    element-wise back into ``[lower, upper]`` (so every classified signal lies inside the band), with
    the mask re-applied.

    Returns
    -------
    dict
        ``samples``; ``fraction_misclassified`` (prediction ≠ true label; needs ``y`` or the band's
        ``true_label``); ``fraction_adv_class`` (prediction = the band's adversarial class);
        ``predictions`` (class counts); ``inside_band`` (every classified signal inside the band).
    """
    samples = check_int(samples, "samples", minimum=1)
    label = band.true_label if y is None else int(y)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    lo, hi, x = band.lower, band.upper, band.x
    u = torch.rand((samples, *x.shape), generator=gen, device=gen.device, dtype=torch.float64).to(x)
    s = lo + u * (hi - lo)
    z = x.unsqueeze(0) + smooth(s - x.unsqueeze(0), band.kernel)
    z = torch.maximum(torch.minimum(z, hi), lo)
    if band.mask is not None:  # the padding has lower = upper = x already; keep it exact
        z = x + (z - x) * band.mask
    inside = bool(((z >= lo) & (z <= hi)).all())
    with frozen_eval(model):
        pred = _classify(model, z, batch_size, band.mask)
    out: dict[str, Any] = {"samples": samples, "fraction_adv_class": float((pred == band.adv_class).double().mean()),
                           "predictions": {int(c): int(n) for c, n in zip(*pred.unique(return_counts=True))},
                           "inside_band": inside}
    if label is not None:
        out["fraction_misclassified"] = float((pred != label).double().mean())
    return out


def concatenation_check(
    model: nn.Module,
    band: Band,
    *,
    n_signals: int = 10,
    tol: float | None = None,
    max_splits: int = 5,
    y: int | None = None,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Are continuous concatenations of two adversarial signals adversarial? (``check_concat.py``.)

    For every pair ``(j, k)`` of the first ``n_signals`` kept trials (``x_adv`` excluded), the split
    points are the times ``t`` (``0 < t < L``, inside the mask) where ``max_c |j[c, t] − k[c, t]| < tol``;
    up to ``max_splits`` of them, evenly spaced, give ``j[:t] ‖ k[t:]`` and ``k[:t] ‖ j[t:]``.

    Returns
    -------
    dict
        ``pairs``, ``pairs_without_split``, ``concatenations``, ``fraction_adv_class``,
        ``fraction_misclassified`` (with a label), ``max_jump`` (largest ``|j[t] − k[t]|`` at a split,
        ``< tol``), ``tol``.
    """
    n_signals = check_int(n_signals, "n_signals", minimum=1)
    max_splits = check_int(max_splits, "max_splits", minimum=1)
    tol = band.eps / 20 if tol is None else float(check_positive(tol, "tol", allow_none=False))
    label = band.true_label if y is None else int(y)
    sig = band.signals[1: 1 + n_signals]
    length = sig.shape[-1]
    valid = torch.ones(length, dtype=torch.bool, device=sig.device)
    if band.mask is not None:
        valid = band.mask.amax(0) > 0
    valid[0] = False  # t = 0 would just be k itself
    concat, pairs, empty, jump = [], 0, 0, 0.0
    for a in range(len(sig)):
        for b in range(a + 1, len(sig)):
            pairs += 1
            diff = (sig[a] - sig[b]).abs().amax(0)
            ts = ((diff < tol) & valid).nonzero().squeeze(1)
            if ts.numel() == 0:
                empty += 1
                continue
            if ts.numel() > max_splits:
                ts = ts[torch.linspace(0, ts.numel() - 1, max_splits).round().long()]
            for t in ts.tolist():
                jump = max(jump, float(diff[t]))
                concat.append(torch.cat([sig[a][:, :t], sig[b][:, t:]], dim=-1))
                concat.append(torch.cat([sig[b][:, :t], sig[a][:, t:]], dim=-1))
    out: dict[str, Any] = {"pairs": pairs, "pairs_without_split": empty, "concatenations": len(concat), "tol": tol,
                           "max_jump": jump}
    if not concat:
        out["fraction_adv_class"] = float("nan")
        if label is not None:
            out["fraction_misclassified"] = float("nan")
        return out
    z = torch.stack(concat)
    with frozen_eval(model):
        pred = _classify(model, z, batch_size, band.mask)
    out["fraction_adv_class"] = float((pred == band.adv_class).double().mean())
    if label is not None:
        out["fraction_misclassified"] = float((pred != label).double().mean())
    return out
