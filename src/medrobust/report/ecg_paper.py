"""Standard ECG paper for matplotlib axes: 25 mm/s, 10 mm/mV.

At the standard paper speed and gain, 1 mm is 0.04 s horizontally and 0.1 mV vertically; a bold
line every 5 mm marks 0.2 s and 0.5 mV (AHA recommendations for the standardisation of the ECG,
Kligfield et al., Circulation 115:1306, 2007). The axes are drawn in seconds and mV with an aspect
ratio that keeps the squares square. The paper is drawn only for signals in mV or convertible to mV
(:func:`ecg_view`: physical units, or a min-max scaled beat whose scale the loader recorded); other
data is drawn on plain axes in its own units. Padding (:func:`valid_samples`) is never drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medrobust.units import Units

MINOR_S, MAJOR_S = 0.04, 0.2
MINOR_AMP, MAJOR_AMP = 0.1, 0.5
PAPER_ASPECT = (10.0 / 1.0) / 25.0  # 1 amplitude unit = 10 mm, 1 s = 25 mm
MINOR_COLOR, MAJOR_COLOR = "#f7c8c8", "#e58e8e"


def draw_paper(ax: Any, *, t0: float, t1: float, y0: float, y1: float) -> None:
    """Draw the pink grid on ``ax`` over ``[t0, t1] × [y0, y1]`` and fix limits and aspect."""
    y0 = math.floor(y0 / MAJOR_AMP) * MAJOR_AMP
    y1 = math.ceil(y1 / MAJOR_AMP) * MAJOR_AMP
    t0 = math.floor(t0 / MAJOR_S) * MAJOR_S
    t1 = math.ceil(t1 / MAJOR_S) * MAJOR_S
    ax.set_xlim(t0, t1)
    ax.set_ylim(y0, y1)
    from matplotlib.collections import LineCollection

    minor, major = [], []
    for t in np.arange(t0, t1 + 1e-9, MINOR_S):
        seg = [(t, y0), (t, y1)]
        (major if abs(t / MAJOR_S - round(t / MAJOR_S)) < 1e-6 else minor).append(seg)
    for y in np.arange(y0, y1 + 1e-9, MINOR_AMP):
        seg = [(t0, y), (t1, y)]
        (major if abs(y / MAJOR_AMP - round(y / MAJOR_AMP)) < 1e-6 else minor).append(seg)
    ax.add_collection(LineCollection(minor, colors=MINOR_COLOR, linewidths=0.4, zorder=0))
    ax.add_collection(LineCollection(major, colors=MAJOR_COLOR, linewidths=0.8, zorder=0))
    ax.set_xticks(np.arange(t0, t1 + 1e-9, MAJOR_S * (5 if t1 - t0 > 3 else 1)))
    ax.set_yticks(np.arange(y0, y1 + 1e-9, MAJOR_AMP))
    ax.set_aspect(PAPER_ASPECT, adjustable="box")
    ax.set_facecolor("#fff7f7")
    ax.tick_params(labelsize=7)


def magnification(signal: np.ndarray, delta: np.ndarray, target: float = 0.5) -> float:
    """A round factor (1, 2, 5 × 10^k) that scales ``delta``'s peak-to-peak to about ``target`` of the signal's."""
    sp = float(np.ptp(signal)) or 1.0
    dp = float(np.ptp(delta))
    if dp <= 0:
        return 1.0
    raw = target * sp / dp
    if raw <= 1:
        return 1.0
    e = 10 ** math.floor(math.log10(raw))
    for m in (5, 2, 1):
        if m * e <= raw:
            return float(m * e)
    return float(e)


def window(n_samples: int, fs: float, x: np.ndarray, max_seconds: float = 5.0) -> tuple[int, int]:
    """Sample range to plot: the whole signal, or ``max_seconds`` from its first non-zero sample."""
    length = int(round(max_seconds * fs))
    if n_samples <= length:
        return 0, n_samples
    nz = np.nonzero(np.abs(x).reshape(-1, n_samples).max(0) > 0)[0]
    start = int(nz[0]) if len(nz) else 0
    start = min(start, n_samples - length)
    return start, start + length


@dataclass(frozen=True)
class EcgView:
    """How one record is drawn: plotted value = data value · ``scale`` + ``offset`` in ``unit``; ECG paper or not.

    ``note`` is the caption's sentence about the axes, true to what is drawn.
    """

    scale: float
    offset: float
    unit: str
    paper: bool
    note: str


def ecg_view(units: str, fs: float | None, *, uv_scale: float | None = None, uv_offset: float | None = None
             ) -> EcgView:
    """The view of a record in ``units``: on ECG paper in mV when the units are physical (mV, V, µV, ADC counts
    with their gain) or when the record's own µV scale is known (min-max scaled beats: ``value · uv_scale +
    uv_offset`` µV, :attr:`medrobust.data.base.DatasetMeta.uv_scale`); otherwise plain axes in the data's units."""
    u = Units.parse(units, fs=fs)
    paper = "standard ECG paper (25 mm/s, 10 mm/mV: 1 mm = 0.04 s and 0.1 mV)"
    if u.uv_per_unit is not None:
        conv = "" if u.uv_per_unit == 1e3 else f", converted from {u.name} to mV"
        return EcgView(u.uv_per_unit / 1e3, 0.0, "mV", True, f"{paper}{conv}")
    if uv_scale is not None and math.isfinite(uv_scale) and uv_scale > 0:
        off = uv_offset if uv_offset is not None and math.isfinite(uv_offset) else None
        how = (f"the {u.name or 'scaled'} beat converted back to mV with its recorded scale "
               f"(value × {uv_scale:.0f} µV" + (f" {'+' if off >= 0 else '−'} {abs(off):.0f} µV)" if off is not None
                                                  else "; baseline: the scaled window's minimum)"))
        return EcgView(uv_scale / 1e3, (off or 0.0) / 1e3, "mV", True, f"{paper}; {how}")
    name = u.name or "data units"
    return EcgView(1.0, 0.0, name, False, f"plain axes in the data's units ({name}), not mV, so no ECG paper")


def valid_samples(x: np.ndarray, units: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``(samples,)``: the samples of record ``x`` ``(leads, samples)`` that are signal, not padding.

    With a dataset ``mask`` (1 on signal, 0 on padding, e.g. the left padding of CPSC 2018 records) a sample
    is signal when any lead's mask is non-zero. Without one, min-max scaled beats (units ``"normalized …"``,
    Kachuee et al., IEEE ICHI 2018) are zero-padded after the beat: the trailing zeros are padding. Anything
    else is all signal.
    """
    n = x.shape[-1]
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        m = np.broadcast_to(m, (*m.shape[:-1], n)) if m.shape[-1] != n else m
        return m.reshape(-1, n).max(0) > 0
    if Units.parse(units).kind == "ecg-normalized":
        nz = np.nonzero(np.abs(np.asarray(x)).reshape(-1, n).max(0) > 0)[0]
        out = np.zeros(n, dtype=bool)
        out[: (int(nz[-1]) + 1 if len(nz) else n)] = True
        return out
    return np.ones(n, dtype=bool)
