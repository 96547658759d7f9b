"""Synthetic ECG beats of the five AAMI classes: the offline default dataset.

Each beat is drawn inside a short rhythm strip built from a sum-of-Gaussians PQRST model
(in the spirit of McSharry et al. 2003, "A dynamical model for generating synthetic
electrocardiogram signals", IEEE TBME 50(3)): a preceding normal beat, the target beat and a
following beat. Class-specific morphology and timing:

* ``N`` normal: upright P, narrow QRS, upright T, regular R-R.
* ``S`` premature atrial beat: early (60-80 % of R-R), abnormal (inverted, early) P, normal QRS.
* ``V`` premature ventricular beat: early, no P, wide tall QRS, discordant T, compensatory pause.
* ``F`` fusion of normal and ventricular: slightly early, small P, intermediate QRS width, flat T.
* ``Q`` paced: pacing spike before a wide QRS, no P, discordant T, regular rate (context beats paced).

Heart rate (50-110 bpm), amplitudes, widths, baseline wander, gain and white noise vary per beat.
The strip is then windowed exactly like real records (:mod:`medrobust.data.beats`), so the layout
is the same as MIT-BIH beats (``kachuee``: 125 Hz, 187 samples in [0, 1]; ``native``: mV).
Deterministic under ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.data.base import DatasetMeta, ECGDataset, fingerprint_arrays
from medrobust.data.beats import (
    AAMI_CLASSES,
    KACHUEE_FS,
    kachuee_windows,
    native_windows,
    rescale_positions,
    resample,
)
from medrobust.errors import ConfigError

# Waves: (amplitude mV, centre s relative to R, width s).
_NORMAL = {"P": (0.15, -0.20, 0.025), "Q": (-0.10, -0.035, 0.010), "R": (1.00, 0.0, 0.012),
           "S": (-0.25, 0.035, 0.010), "T": (0.30, 0.26, 0.045)}
_TEMPLATES: dict[str, dict[str, tuple[float, float, float]]] = {
    "N": _NORMAL,
    "S": {**_NORMAL, "P": (-0.12, -0.14, 0.018)},
    "V": {"R": (1.35, 0.0, 0.038), "S": (-0.55, 0.075, 0.030), "T": (-0.45, 0.34, 0.065)},
    "F": {"P": (0.08, -0.18, 0.025), "Q": (-0.05, -0.04, 0.012), "R": (1.15, 0.0, 0.024),
          "S": (-0.40, 0.055, 0.020), "T": (0.04, 0.30, 0.050)},
    "Q": {"spike": (1.6, -0.045, 0.0025), "R": (0.90, 0.02, 0.032), "S": (-0.40, 0.085, 0.030),
          "T": (-0.30, 0.33, 0.065)},
}
# (preceding R-R factor range, following R-R factor range) relative to the nominal period.
_TIMING: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "N": ((0.95, 1.05), (0.95, 1.05)),
    "S": ((0.60, 0.80), (0.95, 1.10)),
    "V": ((0.60, 0.78), (1.25, 1.45)),
    "F": ((0.85, 0.95), (1.00, 1.15)),
    "Q": ((0.97, 1.03), (0.97, 1.03)),
}

GENERATOR_FS = 360.0


def _add_beat(strip: np.ndarray, t: np.ndarray, r_time: float, waves: dict, rng: np.random.Generator) -> None:
    amp_jit = rng.uniform(0.85, 1.15)
    wid_jit = rng.uniform(0.85, 1.15)
    for a, c, w in waves.values():
        a_j = a * amp_jit * rng.uniform(0.93, 1.07)
        c_j = c * rng.uniform(0.92, 1.08)
        w_j = w * wid_jit
        lo, hi = np.searchsorted(t, [r_time + c_j - 5 * w_j, r_time + c_j + 5 * w_j])
        tt = t[lo:hi]
        strip[lo:hi] += a_j * np.exp(-0.5 * ((tt - r_time - c_j) / w_j) ** 2)


def synth_strip(label: str, rng: np.random.Generator, fs: float = GENERATOR_FS) -> tuple[np.ndarray, np.ndarray]:
    """One rhythm strip (in mV at ``fs``) whose second beat is of class ``label``.

    Returns the strip and the three R-peak sample indices (target beat second).
    """
    period = 60.0 / rng.uniform(50.0, 110.0)
    pre = period * rng.uniform(*_TIMING[label][0])
    post = period * rng.uniform(*_TIMING[label][1])
    r0 = 0.45 * period + rng.uniform(0.05, 0.25)
    r_times = np.array([r0, r0 + pre, r0 + pre + post])
    duration = r_times[-1] + max(1.2 * period, 0.6) + 0.1
    t = np.arange(int(duration * fs)) / fs
    strip = np.zeros_like(t)
    context = _TEMPLATES["Q"] if label == "Q" else _NORMAL
    _add_beat(strip, t, r_times[0], context, rng)
    _add_beat(strip, t, r_times[1], _TEMPLATES[label], rng)
    _add_beat(strip, t, r_times[2], context, rng)
    wander = rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 2 * np.pi))
    strip = rng.uniform(0.7, 1.3) * strip + wander + rng.normal(0.0, rng.uniform(0.005, 0.03), size=t.shape)
    return strip, np.round(r_times * fs).astype(np.int64)


def make_synthetic(
    *,
    n_per_class: int = 400,
    seed: int = 0,
    format: str = "kachuee",
    fs: float | None = None,
    before_s: float = 0.25,
    after_s: float = 0.45,
    split: str = "all",
) -> ECGDataset:
    """Generate a balanced synthetic beat dataset.

    Parameters
    ----------
    n_per_class
        Beats per AAMI class.
    seed
        Seed of the generator; equal seeds give identical datasets.
    format
        ``"kachuee"`` (125 Hz, 187 samples, [0, 1]) or ``"native"`` (mV window around R).
    fs
        Output sampling rate for ``native`` (default 360 Hz, MIT-BIH's rate). Ignored for ``kachuee``.
    before_s, after_s
        Native window around the R peak, seconds.
    split
        Split name recorded in the metadata.
    """
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}.")
    if format not in ("kachuee", "native"):
        raise ConfigError(f"format must be 'kachuee' or 'native', got {format!r}.")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(AAMI_CLASSES)), n_per_class)
    rng.shuffle(labels)
    out_fs = KACHUEE_FS if format == "kachuee" else float(fs or GENERATOR_FS)
    beats = []
    for lab in labels:
        strip, peaks = synth_strip(AAMI_CLASSES[lab], rng)
        strip = resample(strip, GENERATOR_FS, out_fs)
        peaks = rescale_positions(peaks, GENERATOR_FS, out_fs)
        if format == "kachuee":
            beats.append(kachuee_windows(strip, peaks, out_fs, window_s=len(strip) / out_fs + 1)[1])
        else:
            pad = int(round(max(before_s, after_s) * out_fs))
            padded = np.pad(strip, pad, mode="edge")
            b, _ = native_windows(padded[None], peaks[1:2] + pad, out_fs, before_s=before_s, after_s=after_s)
            beats.append(b[0, 0])
    x = np.stack(beats)[:, None, :].astype(np.float32)
    options = {"n_per_class": n_per_class, "seed": seed, "format": format, "fs": out_fs,
               "before_s": before_s, "after_s": after_s}
    meta = DatasetMeta(
        name="synthetic",
        fs=out_fs,
        classes=AAMI_CLASSES,
        units="normalized [0, 1]" if format == "kachuee" else "mV",
        ids=np.array([f"synthetic-{seed}-{i}" for i in range(len(labels))]),
        leads=("synthetic",),
        split=split,
        fingerprint=fingerprint_arrays(x, labels, extra=repr(sorted(options.items()))),
        options=options,
    )
    return ECGDataset(torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64)), meta)


_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2, "all": 3}


def load_synthetic(
    *, split: str = "train", n_per_class: int | None = None, seed: int = 0, **options: object
) -> ECGDataset:
    """Synthetic split: train, val and test come from independent seeds, so they never overlap.

    Default sizes: 400 beats per class for train, 100 for val and test.
    """
    if split not in _SPLIT_OFFSET:
        raise ConfigError(f"split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}.")
    if n_per_class is None:
        n_per_class = 400 if split in ("train", "all") else 100
    return make_synthetic(n_per_class=n_per_class, seed=seed * 4 + _SPLIT_OFFSET[split] + 1000,
                          split=split, **options)  # type: ignore[arg-type]
