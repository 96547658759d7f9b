"""Standard ECG paper for matplotlib axes: 25 mm/s, 10 mm/mV.

At the standard paper speed and gain, 1 mm is 0.04 s horizontally and 0.1 mV vertically; a bold
line every 5 mm marks 0.2 s and 0.5 mV (AHA recommendations for the standardisation of the ECG,
Kligfield et al., Circulation 115:1306, 2007). The axes are drawn in seconds and signal units with
an aspect ratio that keeps the squares square. For data that is not in mV (e.g. beats min-max
scaled to [0, 1]) the same grid is drawn in the data's units and the axis label says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


def amplitude_label(units: str) -> str:
    """Axis label for the amplitude: ``mV`` or the data's units with a note that the grid is not in mV."""
    u = (units or "").strip()
    if u.lower() == "mv":
        return "amplitude (mV)"
    return f"amplitude ({u or 'data units'}; grid 0.1 unit)"
