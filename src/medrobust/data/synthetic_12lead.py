"""Synthetic 12-lead records in the CPSC 2018 layout: a pipeline check at any size, offline.

The CPSC 2018 challenge set (Liu et al., J. Med. Imaging Health Inform. 8(7), 2018) has 6,877 records; a checkout
may hold only a few of them. :func:`write_synthetic_cpsc2018` writes records that the CPSC 2018 reader
(:mod:`medrobust.data.cpsc2018`) reads exactly as the real ones — ``A0001.mat`` ... with a MATLAB struct ``ECG``
(``sex``, ``age``, ``data`` 12 × n in mV at 500 Hz) and ``REFERENCE.csv`` — so ``medrobust reproduce ma2022`` (or
any CPSC 2018 run) can be exercised end to end at a realistic number of records. The signals are a sum of Gaussian
waves per beat (the PQRST model of :mod:`medrobust.data.synthetic`, after McSharry et al., IEEE TBME 50(3), 2003)
with one simple, learnable trait per class; they are **not** a substitute for real data and no result on them says
anything about a real classifier.

Classes (CPSC 2018 label order): Normal (regular, upright P); AF (irregular R-R, no P); I-AVB (P 0.32 s before R);
LBBB (wide QRS); RBBB (a second R 60 ms after the first); PAC (one early beat with an inverted P); PVC (one early,
wide, tall beat without P); STD / STE (an ST segment 0.15 mV below / above the baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrobust.data.synthetic import _NORMAL, _TEMPLATES, _add_beat
from medrobust.errors import ConfigError

FS = 500.0
N_CLASSES = 9
# per-lead gains (I, II, III, aVR, aVL, aVF, V1-V6): a plausible spread of signs and sizes
_LEAD_GAIN = np.array([0.7, 1.0, 0.4, -0.8, 0.3, 0.7, -0.5, 0.3, 0.8, 1.2, 1.1, 0.9])


def _beat(label: int) -> dict[str, tuple[float, float, float]]:
    """The waves (amplitude mV, centre s from R, width s) of a regular beat of class ``label``."""
    waves = dict(_NORMAL)
    if label == 1:                                    # AF: no P wave (the rhythm is irregular, see _r_times)
        waves.pop("P")
    elif label == 2:                                  # first-degree AV block: long PR interval
        waves["P"] = (0.15, -0.32, 0.025)
    elif label == 3:                                  # LBBB: wide QRS
        waves.update(R=(1.0, 0.0, 0.035), S=(-0.25, 0.07, 0.025))
    elif label == 4:                                  # RBBB: R' 60 ms after R
        waves["R2"] = (0.6, 0.06, 0.012)
    elif label in (7, 8):                             # ST depression / elevation
        waves["ST"] = (0.15 if label == 8 else -0.15, 0.14, 0.05)
    return waves


def _r_times(label: int, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
    """R-peak times (s) and the index of the one premature beat (PAC / PVC), if any."""
    period = 60.0 / rng.uniform(55.0, 95.0)
    times, t = [], 0.4 + rng.uniform(0.0, 0.3)
    while t < seconds - 0.5:
        times.append(t)
        t += period * (rng.uniform(0.55, 1.35) if label == 1 else rng.uniform(0.97, 1.03))
    early = None
    if label in (5, 6) and len(times) >= 4:
        early = int(rng.integers(1, len(times) - 2))
        times[early] = times[early - 1] + 0.65 * (times[early] - times[early - 1])
    return np.asarray(times), early


def synth_record(label: int, rng: np.random.Generator, *, seconds: float = 10.0) -> np.ndarray:
    """One 12-lead record (12 × n, mV at 500 Hz) of CPSC 2018 class index ``label`` (0..8)."""
    t = np.arange(int(seconds * FS)) / FS
    strip = np.zeros_like(t)
    r_times, early = _r_times(label, seconds, rng)
    for i, r in enumerate(r_times):
        if i == early:
            _add_beat(strip, t, r, _TEMPLATES["V"] if label == 6 else _TEMPLATES["S"], rng)
        else:
            _add_beat(strip, t, r, _beat(label), rng)
    gains = _LEAD_GAIN * rng.uniform(0.8, 1.2, size=12)
    wander = 0.05 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 2 * np.pi))
    return gains[:, None] * strip[None, :] + wander[None, :] + rng.normal(0.0, 0.02, size=(12, len(t)))


def write_synthetic_cpsc2018(root: str | Path, *, records_per_class: int = 20, seconds: float = 10.0,
                             seed: int = 0) -> Path:
    """Write ``9 · records_per_class`` synthetic records and ``REFERENCE.csv`` into ``root`` (created; it must not
    hold a ``REFERENCE.csv`` already, so real data is never overwritten). Returns ``root``; read it with
    ``load_dataset("cpsc2018", root=root)``. Deterministic under ``seed``."""
    from scipy.io import savemat

    if records_per_class < 1:
        raise ConfigError(f"records_per_class must be >= 1, got {records_per_class}.")
    if seconds < 3.0:
        raise ConfigError(f"seconds must be >= 3 (room for a few beats), got {seconds}.")
    folder = Path(root)
    if (folder / "REFERENCE.csv").exists():
        raise ConfigError(f"{folder} already holds a REFERENCE.csv; write synthetic records into an empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), records_per_class)
    rng.shuffle(labels)
    rows = ["Recording,First_label,Second_label,Third_label"]
    for i, label in enumerate(labels, 1):
        name = f"A{i:04d}"
        ecg = {"sex": "Male" if rng.random() < 0.5 else "Female", "age": float(rng.integers(20, 90)),
               "data": synth_record(int(label), rng, seconds=seconds)}
        savemat(folder / f"{name}.mat", {"ECG": ecg})
        rows.append(f"{name},{int(label) + 1},,")
    (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
