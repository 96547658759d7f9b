"""Perturbation metrics in signal units: L2/L∞ (µV when the data is in mV or scaled per sample), SNR, smoothness.

For a clean sample ``x`` and its adversarial version ``x_adv`` (any shape ``(N, ...)``, time on
the last axis for signals) with perturbation ``δ = x_adv − x``:

* ``l2`` = ``‖δ‖₂`` and ``linf`` = ``‖δ‖∞`` in the data's units; :func:`unit_scale` converts
  them to µV when the data is in mV (or V, µV, ADC counts) — ECG papers quote perturbations in µV (Han et al.,
  Nature Medicine 2020: ε = 10 ADC units ≈ 10 µV); for data min-max scaled per sample (Kachuee beats),
  :func:`summarize` converts each sample with its own scale (``uv_scale``);
* ``snr_db`` = ``10·log10(Σx² / Σδ²)``, the signal-to-noise ratio of the perturbed signal (the
  inverse of the noise-to-signal ratio of Ma & Liang, arXiv 2005.09134);
  ``+inf`` when ``δ = 0``;
* ``hf_fraction`` = the fraction of the perturbation's energy above a cut-off frequency (Hz),
  from the one-sided power spectrum ``|rfft(δ)|²`` along time at the sampling rate ``fs`` (summed
  over leads). Smooth perturbations (SAP, Han et al. 2020) put almost no energy above 40 Hz; sign
  perturbations (PGD) spread it over the whole band;
* ``tv`` = total variation ``Σ_leads Σ_t |δ[t+1] − δ[t]|`` along time (data units).

Every function returns per-sample float64 numpy arrays; :func:`summarize` aggregates them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from medrobust.errors import ConfigError, DataError
from medrobust.units import Units

DEFAULT_CUTOFF_HZ = 40.0
"""Default smoothness cut-off: the upper edge of the ECG monitoring band (AHA monitoring filter, 0.5–40 Hz)."""

METRICS: tuple[str, ...] = ("l2", "linf", "snr_db", "hf_fraction", "tv")


def _as_float64(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(a).detach().to("cpu", torch.float64)
    if t.ndim < 2:
        raise DataError(f"{name} must be a batch (N, ...) with ndim >= 2, got shape {tuple(t.shape)}.")
    return t


def unit_scale(units: str | None) -> float | None:
    """Factor that converts a value in ``units`` to µV, or ``None`` when the units are not physical
    (:attr:`medrobust.units.Units.uv_per_unit`).

    >>> unit_scale("mV"), unit_scale("normalized [0, 1]"), unit_scale("adc")
    (1000.0, None, 1.0)
    """
    return Units.parse(units).uv_per_unit


def _delta(x: Any, x_adv: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xt, xa = _as_float64(x, "x"), _as_float64(x_adv, "x_adv")
    if xt.shape != xa.shape:
        raise DataError(f"x has shape {tuple(xt.shape)} but x_adv has {tuple(xa.shape)}; they must match.")
    return xt, xa - xt


def lp_norms(x: Any, x_adv: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(‖δ‖₂, ‖δ‖∞)`` of ``δ = x_adv − x`` in data units."""
    _, d = _delta(x, x_adv)
    flat = d.flatten(1)
    return flat.norm(dim=1).numpy(), flat.abs().amax(dim=1).numpy()


def snr_db(x: Any, x_adv: Any) -> np.ndarray:
    """Per-sample ``10·log10(Σx² / Σδ²)`` in dB (``+inf`` for ``δ = 0``, ``-inf`` for ``x = 0``)."""
    xt, d = _delta(x, x_adv)
    ps = (xt.flatten(1) ** 2).sum(1).numpy()
    pn = (d.flatten(1) ** 2).sum(1).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(ps / pn)
    out[pn == 0] = math.inf
    return out


def high_frequency_fraction(delta: Any, *, fs: float, cutoff_hz: float = DEFAULT_CUTOFF_HZ) -> np.ndarray:
    """Per-sample fraction of ``δ``'s energy above ``cutoff_hz`` (``nan`` when ``δ = 0``).

    Parameters
    ----------
    delta
        Perturbations ``(N, leads, samples)`` (time on the last axis).
    fs
        Sampling rate in Hz.
    cutoff_hz
        Cut-off in Hz, ``0 < cutoff_hz < fs / 2``.

    Notes
    -----
    One-sided power spectrum ``P_k = |rfft(δ)_k|²`` with bin frequencies ``k·fs/n``; the interior
    bins are doubled (Parseval), so ``Σ_k P_k`` is proportional to ``Σ_t δ_t²``. A sinusoid above
    the cut-off gives 1, one below gives 0.
    """
    d = _as_float64(delta, "delta")
    if not (fs and fs > 0):
        raise ConfigError(f"fs must be a positive sampling rate in Hz, got {fs!r}.")
    if not (0 < cutoff_hz < fs / 2):
        raise ConfigError(f"cutoff_hz must lie in (0, fs/2 = {fs / 2:g}) Hz, got {cutoff_hz!r}.")
    n = d.shape[-1]
    spec = torch.fft.rfft(d, dim=-1).abs() ** 2
    weights = torch.full((spec.shape[-1],), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    spec = spec * weights
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs).to(torch.float64)
    total = spec.flatten(1).sum(1)
    high = (spec * (freqs > cutoff_hz)).flatten(1).sum(1)
    out = torch.full_like(total, math.nan)
    nz = total > 0
    out[nz] = high[nz] / total[nz]
    return out.numpy()


def total_variation(delta: Any) -> np.ndarray:
    """Per-sample total variation ``Σ |δ[..., t+1] − δ[..., t]|`` along the last axis."""
    d = _as_float64(delta, "delta")
    if d.shape[-1] < 2:
        return np.zeros(d.shape[0])
    return d.diff(dim=-1).abs().flatten(1).sum(1).numpy()


def perturbation_metrics(
    x: Any,
    x_adv: Any,
    *,
    fs: float | None,
    cutoff_hz: float = DEFAULT_CUTOFF_HZ,
) -> dict[str, np.ndarray]:
    """All per-sample perturbation metrics ``{"l2", "linf", "snr_db", "hf_fraction", "tv"}``.

    ``hf_fraction`` is ``nan`` everywhere when ``fs`` is ``None``/0 (images) or the cut-off is at or
    above the Nyquist frequency; ``tv`` is taken along the last axis.
    """
    xt, d = _delta(x, x_adv)
    flat = d.flatten(1)
    out = {
        "l2": flat.norm(dim=1).numpy(),
        "linf": flat.abs().amax(dim=1).numpy(),
        "snr_db": snr_db(xt, xt + d),
        "tv": total_variation(d),
    }
    if fs and 0 < cutoff_hz < fs / 2:
        out["hf_fraction"] = high_frequency_fraction(d, fs=fs, cutoff_hz=cutoff_hz)
    else:
        out["hf_fraction"] = np.full(d.shape[0], math.nan)
    return out


def _stat(v: np.ndarray) -> dict[str, float | None]:
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": None, "median": None, "max": None}
    fin = v[np.isfinite(v)]

    def f(a: float) -> float | None:
        return float(a) if math.isfinite(a) else None

    return {
        "mean": f(float(fin.mean())) if fin.size else None,
        "median": f(float(np.median(v))) if np.isfinite(np.median(v)) else None,
        "max": f(float(fin.max())) if fin.size else None,
    }


def summarize(per_sample: dict[str, np.ndarray], *, units: str | None, cutoff_hz: float = DEFAULT_CUTOFF_HZ,
              uv_scale: np.ndarray | None = None) -> dict[str, Any]:
    """Mean / median / max of each metric over the given samples, plus µV versions of the norms.

    ``per_sample`` holds arrays of equal length (e.g. the successful adversarial examples only);
    ``n`` in the result is that length. Infinite SNRs (``δ = 0``) enter the median but not the mean.

    ``l2_uv``/``linf_uv`` convert with the units' one factor (``None`` for non-physical units). For data
    without one (min-max scaled beats) ``uv_scale`` gives each sample's own µV per data unit (same length as
    the arrays; :attr:`medrobust.data.base.DatasetMeta.uv_scale`): then ``l2_uv_per_sample`` and
    ``linf_uv_per_sample`` hold the statistics of ``norm_i · uv_scale_i`` over the samples (``nan`` scales
    skipped). They are absent when ``uv_scale`` is ``None`` or the units are physical.
    """
    n = len(next(iter(per_sample.values()))) if per_sample else 0
    out: dict[str, Any] = {"n": int(n), "units": units, "hf_cutoff_hz": cutoff_hz}
    for key in METRICS:
        if key in per_sample:
            out[key] = _stat(np.asarray(per_sample[key], dtype=np.float64))
    scale = unit_scale(units)
    for key in ("l2", "linf"):
        if key in per_sample:
            out[f"{key}_uv"] = None if scale is None else {
                k: (None if v is None else v * scale) for k, v in out[key].items()}
    if uv_scale is not None and scale is None:
        per = np.asarray(uv_scale, dtype=np.float64)
        if per.shape != (n,):
            raise DataError(f"uv_scale must hold one µV scale per sample ({n}), got shape {per.shape}.")
        for key in ("l2", "linf"):
            if key in per_sample:
                out[f"{key}_uv_per_sample"] = _stat(np.asarray(per_sample[key], dtype=np.float64) * per)
    return out
