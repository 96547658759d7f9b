"""ECG strips for the study: both strips of a pair drawn by one function onto identical paper.

Standard ECG paper (Kligfield et al., "Recommendations for the standardization and interpretation of the
electrocardiogram", Circulation 115:1306, 2007): 25 mm/s and 10 mm/mV, a 1 mm minor grid (0.04 s, 0.1 mV) and a
5 mm major grid (0.2 s, 0.5 mV), drawn by :func:`medrobust.report.ecg_paper.draw_paper`. A record is drawn at its
real length in rows of at most :data:`ROW_SECONDS` seconds, at :data:`PX_PER_MM` pixels per millimetre.

Blinding (Han et al., Nature Medicine 26:360, 2020, showed clinicians such pairs): the clean and the adversarial
strip of a pair are saved from one figure (:func:`draw_strips`): they share the figure size, the time window, the
amplitude range (the union of both signals), the caption and the PNG encoder settings; :func:`pad_pair` then pads
both files to the same byte length with a private ancillary PNG chunk, so that not even the file size tells them
apart (a noisier PGD strip compresses worse). Data without a physical scale (min-max normalised beats) is drawn
scaled to the strip on the same time grid, and the caption says so instead of inventing millivolts.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from medrobust.errors import DataError
from medrobust.report.ecg_paper import draw_paper, ecg_view, valid_samples

ROW_SECONDS = 10.0
PX_PER_MM = 4.0
MM_PER_S, MM_PER_MV = 25.0, 10.0
MARGIN_MM = (12.0, 4.0, 4.0, 6.0)  # left, right, top, bottom
PAD_CHUNK = b"mrPd"  # ancillary, private, safe-to-copy: ignored by every PNG decoder
PAD_BLOCK = 4096
UNSCALED_SPAN_MV = 2.0  # data without a mV scale: its peak-to-peak drawn as 2 "mV" (20 mm)


@dataclass(frozen=True)
class Strips:
    """A rendered pair: ``clean`` and ``adversarial`` PNG bytes of the same size, and what the page says."""

    clean: bytes
    adversarial: bytes
    seconds: float
    axis_note: str
    width: int
    height: int


def _rows(n: int, fs: float) -> int:
    return max(1, math.ceil(n / fs / ROW_SECONDS - 1e-9))


def _limits(signals: list[np.ndarray]) -> tuple[float, float]:
    lo = min(float(s.min()) for s in signals)
    hi = max(float(s.max()) for s in signals)
    pad = 0.1 * max(hi - lo, 0.5)
    return math.floor((lo - pad) / 0.5) * 0.5, math.ceil((hi + pad) / 0.5) * 0.5


def draw_strips(signals: list[np.ndarray], *, fs: float, y_range: tuple[float, float], lead: str, seconds: float,
                amplitude_labels: bool) -> tuple[list[bytes], int, int]:
    """PNG bytes of each of ``signals`` (1-D, same length, in drawing mV) on ECG paper over ``y_range``.

    One figure is drawn (paper, axes, caption) and each signal is saved from it in turn, only the trace's data
    changing: the strips of a pair cannot differ in anything but the trace. Returns the PNGs, width and height.
    """
    from matplotlib.figure import Figure

    y0, y1 = y_range
    n_rows = _rows(len(signals[0]), fs)
    row_w, row_h = ROW_SECONDS * MM_PER_S, (y1 - y0) * MM_PER_MV
    left, right, top, bottom = MARGIN_MM
    gap = 6.0
    w_mm = left + row_w + right
    h_mm = top + n_rows * row_h + (n_rows - 1) * gap + bottom + 4.0
    dpi = 100.0
    fig = Figure(figsize=(w_mm * PX_PER_MM / dpi, h_mm * PX_PER_MM / dpi), dpi=dpi)
    t = np.arange(len(signals[0])) / fs
    per_row = int(round(ROW_SECONDS * fs))
    lines = []
    for r in range(n_rows):
        bottom_mm = bottom + (n_rows - 1 - r) * (row_h + gap)
        ax = fig.add_axes((left / w_mm, bottom_mm / h_mm, row_w / w_mm, row_h / h_mm))
        t0 = r * ROW_SECONDS
        draw_paper(ax, t0=t0, t1=t0 + ROW_SECONDS, y0=y0, y1=y1)
        ax.set_xlim(t0, t0 + ROW_SECONDS)
        ax.set_ylim(y0, y1)
        ax.set_xticks(np.arange(t0, t0 + ROW_SECONDS + 1e-9, 1.0))
        ax.set_aspect("auto")
        if not amplitude_labels:
            ax.set_yticklabels([])
        for side in ax.spines.values():
            side.set_color("#e58e8e")
        lines.append(ax.plot([], [], color="black", linewidth=0.8, zorder=2)[0])
    fig.text(left / w_mm, 1 - 1.0 / h_mm, f"lead {lead} · {seconds:.2f} s · 25 mm/s"
             + (" · 10 mm/mV" if amplitude_labels else " · amplitude scaled to the strip (no mV scale)"),
             fontsize=8, va="top")
    out = []
    for signal in signals:
        for r, line in enumerate(lines):
            sl = slice(r * per_row, (r + 1) * per_row)
            line.set_data(t[sl], signal[sl])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        out.append(buf.getvalue())
    return out, int(round(w_mm * PX_PER_MM)), int(round(h_mm * PX_PER_MM))


def render_pair(clean: np.ndarray, adversarial: np.ndarray, *, fs: float, units: str, lead: str,
                uv_scale: float | None = None, uv_offset: float | None = None) -> Strips:
    """Both strips of one record (``(samples,)`` each, in ``units``), drawn identically (module docstring).

    ``uv_scale`` / ``uv_offset``: the record's µV per data unit and offset when the loader recorded them (min-max
    scaled beats); then the strips are drawn in mV on ECG paper (:func:`medrobust.report.ecg_paper.ecg_view`).
    """
    x, xa = np.asarray(clean, dtype=np.float64).reshape(-1), np.asarray(adversarial, dtype=np.float64).reshape(-1)
    if x.shape != xa.shape or x.size < 2:
        raise DataError(f"a pair needs two signals of the same length >= 2, got {x.shape} and {xa.shape}.")
    if not (math.isfinite(fs) and fs > 0):
        raise DataError(f"the pair's sampling rate must be a positive number of Hz, got {fs!r}.")
    if not (np.isfinite(x).all() and np.isfinite(xa).all()):
        raise DataError("a pair holds NaN or infinite samples; it cannot be drawn.")
    keep = valid_samples(x[None], units)
    x, xa = x[keep], xa[keep]
    view = ecg_view(units, fs, uv_scale=uv_scale, uv_offset=uv_offset)
    if view.paper:
        a, b = x * view.scale + view.offset, xa * view.scale + view.offset
        note = view.note
    else:
        span = max(float(np.ptp(x)), float(np.ptp(xa)), 1e-12)
        mid = float(x.min())
        a, b = (x - mid) / span * UNSCALED_SPAN_MV, (xa - mid) / span * UNSCALED_SPAN_MV
        note = (f"25 mm/s time grid; the data ({units or 'no units'}) has no mV scale, so the amplitude is "
                "scaled to the strip (no mV scale; both strips of a pair by the same factor)")
    y_range = _limits([a, b])
    seconds = len(x) / fs
    (png_a, png_b), w, h = draw_strips([a, b], fs=fs, y_range=y_range, lead=lead, seconds=seconds,
                                       amplitude_labels=view.paper)
    png_a, png_b = pad_pair(png_a, png_b)
    return Strips(png_a, png_b, seconds, note, w, h)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pad_png(png: bytes, size: int) -> bytes:
    """``png`` padded to exactly ``size`` bytes by a :data:`PAD_CHUNK` chunk of zeros inserted before ``IEND``."""
    iend = png.rfind(b"IEND")
    if not png.startswith(b"\x89PNG\r\n\x1a\n") or iend < 4:
        raise DataError("pad_png: not a PNG file.")
    need = size - len(png) - 12
    if need < 0:
        raise DataError(f"pad_png: a {len(png)}-byte PNG cannot be padded to {size} bytes (12 bytes of chunk "
                        "overhead).")
    start = iend - 4
    return png[:start] + _chunk(PAD_CHUNK, bytes(need)) + png[start:]


def pad_pair(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """Both PNGs padded to the same length, a multiple of :data:`PAD_BLOCK` bytes."""
    size = math.ceil((max(len(a), len(b)) + 12) / PAD_BLOCK) * PAD_BLOCK
    return pad_png(a, size), pad_png(b, size)
