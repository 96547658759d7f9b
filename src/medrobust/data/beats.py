"""Beat windows around R peaks, shared by the MIT-BIH reader and the synthetic generator.

Two formats:

``kachuee``
    Kachuee et al. 2018 ("ECG Heartbeat Classification: A Deep Transferable Representation",
    arXiv 1805.00794), the preprocessing behind the Kaggle MIT-BIH heartbeat CSV that the NSR papers
    train on (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134, after Kachuee et al., IEEE ICHI 2018): the record is resampled to 125 Hz and cut into 10-s windows;
    each window is min-max scaled to [0, 1]; the nominal period T is the median R-R interval in the
    window; each beat is the window's samples from its R peak to R + 1.2 T, zero-padded (or
    truncated) to 187 samples. We take R peaks from the reference annotations instead of a detector.
``native``
    A fixed window ``[R - before_s, R + after_s)`` at the record's (or a requested) sampling rate,
    in mV, beats whose window leaves the record are dropped.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

#: AAMI EC57 heartbeat classes in label order.
AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

#: MIT-BIH beat annotation symbol -> AAMI class (EC57; B, n, r and ? added per the standard).
AAMI_MAP: dict[str, str] = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "B": "N",
    "A": "S", "a": "S", "J": "S", "S": "S", "n": "S",
    "V": "V", "E": "V", "r": "V",
    "F": "F",
    "/": "Q", "f": "Q", "Q": "Q", "?": "Q",
}

#: WFDB annotation symbols that are not beats (rhythm, signal quality, comments ...).
NON_BEAT_SYMBOLS: frozenset[str] = frozenset(
    list("[!]x()ptu`'^|~+sT*D=\"@") + ["", "&", "{", "}"]
)

KACHUEE_FS = 125.0
KACHUEE_LENGTH = 187
KACHUEE_WINDOW_S = 10.0


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (exact rational ratio, e.g. 360 -> 125 = 25/72)."""
    if fs_in == fs_out:
        return np.asarray(signal, dtype=np.float64)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)


def rescale_positions(positions: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Map sample indices from ``fs_in`` to ``fs_out`` (rounded)."""
    return np.round(np.asarray(positions, dtype=np.float64) * (fs_out / fs_in)).astype(np.int64)


def kachuee_windows(
    signal: np.ndarray,
    r_peaks: np.ndarray,
    fs: float = KACHUEE_FS,
    *,
    length: int = KACHUEE_LENGTH,
    window_s: float = KACHUEE_WINDOW_S,
    fallback_rr: float | None = None,
) -> np.ndarray:
    """Cut Kachuee-style beats from a single-lead signal already at ``fs``.

    Parameters
    ----------
    signal
        1-D signal at ``fs`` Hz.
    r_peaks
        Sorted R-peak sample indices at ``fs``.
    fs
        Sampling rate of ``signal`` (125 Hz in the published preprocessing).
    length
        Output length (187).
    window_s
        Normalisation window length in seconds (10 s).
    fallback_rr
        R-R period in samples to use in windows with fewer than two beats (default: record median).

    Returns
    -------
    np.ndarray
        ``(len(r_peaks), length)`` float32 in [0, 1], zero-padded at the end.
    """
    signal = np.asarray(signal, dtype=np.float64)
    r_peaks = np.asarray(r_peaks, dtype=np.int64)
    out = np.zeros((len(r_peaks), length), dtype=np.float32)
    if len(r_peaks) == 0:
        return out
    if fallback_rr is None:
        fallback_rr = float(np.median(np.diff(r_peaks))) if len(r_peaks) > 1 else fs
    win = int(round(window_s * fs))
    window_index = r_peaks // win
    for w in np.unique(window_index):
        sel = np.nonzero(window_index == w)[0]
        start, stop = int(w) * win, min(int(w + 1) * win, len(signal))
        seg = signal[start:stop]
        lo, hi = seg.min(), seg.max()
        scaled = (seg - lo) / (hi - lo) if hi > lo else np.zeros_like(seg)
        peaks = r_peaks[sel]
        period = float(np.median(np.diff(peaks))) if len(peaks) > 1 else fallback_rr
        n = min(length, max(1, int(round(1.2 * period))))
        for row, p in zip(sel, peaks):
            part = scaled[p - start : min(p - start + n, len(seg))]
            out[row, : len(part)] = part
    return out


def native_windows(
    signal: np.ndarray, r_peaks: np.ndarray, fs: float, *, before_s: float, after_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut fixed windows ``[R - before_s, R + after_s)`` from a ``(leads, samples)`` signal.

    Returns
    -------
    beats, kept
        ``(n_kept, leads, before + after)`` float32 and the indices of ``r_peaks`` that fit.
    """
    signal = np.atleast_2d(np.asarray(signal, dtype=np.float64))
    before, after = int(round(before_s * fs)), int(round(after_s * fs))
    r_peaks = np.asarray(r_peaks, dtype=np.int64)
    kept = np.nonzero((r_peaks - before >= 0) & (r_peaks + after <= signal.shape[-1]))[0]
    offsets = np.arange(-before, after)
    idx = r_peaks[kept, None] + offsets[None, :]
    beats = signal[:, idx].transpose(1, 0, 2)
    return beats.astype(np.float32), kept
