"""Export adversarial examples: a NumPy ``.npz`` archive and WFDB records (PhysioNet format).

WFDB (Moody & Mark's format of the PhysioNet databases; Goldberger et al., Circulation 2000) is
what ECG viewers (PhysioNet LightWAVE, WAVE, ``wfdb.plot_wfdb``) open. Every exported sample
becomes one record ``<prefix>_<n>`` with, per lead, the adversarial signal (``<lead>_adv``) and the
clean one (``<lead>_clean``), 16-bit samples with a per-channel gain chosen by ``wfdb.wrsamp``; the
header comments name the attack, ε, the label and both predictions. A ``RECORDS`` file lists the
records, as in a PhysioNet database folder. Quantisation error is at most half an ADC step
(``0.5 / adc_gain`` in signal units).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.card import atomic_write_bytes, npz_bytes

_WFDB_UNITS = {"mv": "mV", "uv": "uV", "µv": "uV", "μv": "uV", "v": "V", "adc": "adu"}


def wfdb_units(units: str) -> str:
    """A WFDB units string (no spaces) for a dataset's units; normalised data become ``"NU"``."""
    key = (units or "").strip().lower()
    return _WFDB_UNITS.get(key, "NU")


def save_npz(
    path: str | Path,
    *,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    adv_pred: np.ndarray,
    success: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write clean and adversarial arrays (and anything in ``extra``) to ``path`` atomically.

    Keys: ``x``, ``x_adv``, ``delta`` (= ``x_adv − x``), ``y``, ``clean_pred``, ``adv_pred``,
    ``success`` plus ``extra``. No pickled objects (read with ``np.load(path)``).
    """
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    if x.shape != x_adv.shape:
        raise DataError(f"x has shape {x.shape} but x_adv has {x_adv.shape}.")
    arrays = {"x": x, "x_adv": x_adv, "delta": x_adv - x, "y": np.asarray(y), "clean_pred": np.asarray(clean_pred),
              "adv_pred": np.asarray(adv_pred), "success": np.asarray(success, dtype=bool)}
    for k, v in (extra or {}).items():
        arrays[k] = np.asarray(v)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, npz_bytes(arrays))
    return p


def _safe(text: str) -> str:
    return re.sub(r"[^-\w]", "_", str(text)) or "x"


def save_wfdb(
    directory: str | Path,
    *,
    x: np.ndarray,
    x_adv: np.ndarray,
    fs: float,
    units: str,
    leads: Sequence[str],
    prefix: str = "adv",
    comments: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Write one WFDB record per sample (adversarial and clean channels) into ``directory``.

    Parameters
    ----------
    directory
        Output folder (created); a ``RECORDS`` file lists the record names.
    x, x_adv
        Clean and adversarial signals ``(N, leads, samples)``.
    fs
        Sampling rate in Hz.
    units
        The data's units (``"mV"`` stays ``mV``; normalised data are written as ``NU``).
    leads
        Lead names (one per lead).
    prefix
        Record names are ``<prefix>_<i>`` (letters, digits, ``-`` and ``_`` only).
    comments
        Optional header comments per sample.

    Returns
    -------
    list of str
        The record names written.
    """
    import wfdb

    x, x_adv = np.asarray(x, dtype=np.float64), np.asarray(x_adv, dtype=np.float64)
    if x.ndim != 3 or x.shape != x_adv.shape:
        raise ConfigError(f"WFDB export needs signals (N, leads, samples) of equal shape, got {x.shape} and "
                          f"{x_adv.shape}; images are exported as npz only.")
    if not (fs and fs > 0):
        raise ConfigError(f"WFDB export needs the sampling rate fs > 0, got {fs!r}.")
    if len(leads) != x.shape[1]:
        raise ConfigError(f"got {len(leads)} lead names for {x.shape[1]} leads.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    u = wfdb_units(units)
    names = [f"{_safe(lead)}_adv" for lead in leads] + [f"{_safe(lead)}_clean" for lead in leads]
    width = max(3, len(str(len(x) - 1)))
    prefix = _safe(prefix)
    written: list[str] = []
    for i in range(len(x)):
        record = f"{prefix}_{i:0{width}d}"
        sig = np.concatenate([x_adv[i], x[i]], axis=0).T  # (samples, channels)
        # A constant channel would give an undefined gain; widen its range by a tiny amount.
        lo, hi = sig.min(0), sig.max(0)
        flat = hi - lo <= 0
        if flat.any():
            sig = sig.copy()
            sig[0, flat] += 1e-6
        gain, baseline = _adc_params(sig)
        try:
            wfdb.wrsamp(record, fs=float(fs), units=[u] * sig.shape[1], sig_name=names, p_signal=sig,
                        fmt=["16"] * sig.shape[1], adc_gain=gain, baseline=baseline,
                        comments=list(comments[i]) if comments is not None else None, write_dir=str(out))
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot write WFDB record {out / record}: {exc}") from exc
        written.append(record)
    (out / "RECORDS").write_text("".join(f"{r}\n" for r in written))
    return written


def _adc_params(sig: np.ndarray) -> tuple[list[float], list[int]]:
    """Per-channel gain and baseline mapping each channel's range onto the 16-bit range (±32767)."""
    lo, hi = sig.min(0), sig.max(0)
    dmin, dmax = -32766, 32766  # -32768 is the WFDB "missing sample" code
    gain = (dmax - dmin) / (hi - lo)
    baseline = np.round(dmin - lo * gain).astype(np.int64)
    # keep every digital value inside [dmin, dmax] after rounding the baseline
    baseline = np.clip(baseline, -2**31, 2**31 - 1)
    return [float(g) for g in gain], [int(b) for b in baseline]
