"""MIT-BIH Arrhythmia Database reader (PhysioNet ``mitdb`` 1.0.0, WFDB format).

Moody, G. B. & Mark, R. G. "The impact of the MIT-BIH Arrhythmia Database", IEEE EMB Mag. 20(3),
2001; Goldberger, A. L. et al. "PhysioBank, PhysioToolkit, and PhysioNet", Circulation 101(23),
2000. Licence: ODC-By 1.0.

Records are read with the ``wfdb`` package (header ``NNN.hea``, signal ``NNN.dat`` in format 212,
reference beat annotations ``NNN.atr``). Every beat annotation is mapped to an AAMI class
(N, S, V, F, Q) and cut into a window around its R peak (:mod:`medrobust.data.beats`). The built
arrays of all records are cached as npz keyed by every parameter and by the files' sizes and
modification times; splits are then selected from the cache in milliseconds.

Splits
------
``scheme="intra"`` (intra-patient, like the Kaggle CSV): stratified, seeded; ``test_fraction`` of all
beats is test, ``val_fraction`` of the rest is validation.
``scheme="inter"`` (de Chazal et al. 2004, IEEE TBME 51(7)): DS1 records train (a stratified
``val_fraction`` of DS1 beats is validation), DS2 records test; paced records are in neither.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medrobust.data.balance import oversample_indices
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import (
    AAMI_CLASSES,
    AAMI_MAP,
    KACHUEE_FS,
    KACHUEE_WINDOW_S,
    NON_BEAT_SYMBOLS,
    kachuee_windows,
    native_windows,
    rescale_positions,
    resample,
)
from medrobust.data.cache import cache_path, file_fingerprint, file_stats, load_cached, save_cached
from medrobust.data.registry import register_dataset
from medrobust.data.splits import stratified_split, train_val_test
from medrobust.errors import ConfigError, DataError
from medrobust.paths import default_data_root, resolve_dataset_dir

MITDB_FS = 360.0

ALL_RECORDS: tuple[str, ...] = tuple(
    str(r)
    for r in [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 111, 112, 113, 114, 115, 116, 117, 118, 119,
              121, 122, 123, 124, 200, 201, 202, 203, 205, 207, 208, 209, 210, 212, 213, 214, 215, 217, 219,
              220, 221, 222, 223, 228, 230, 231, 232, 233, 234]
)
PACED_RECORDS: tuple[str, ...] = ("102", "104", "107", "217")
DS1: tuple[str, ...] = tuple(str(r) for r in [101, 106, 108, 109, 112, 114, 115, 116, 118, 119, 122, 124, 201, 203,
                                              205, 207, 208, 209, 215, 220, 223, 230])
DS2: tuple[str, ...] = tuple(str(r) for r in [100, 103, 105, 111, 113, 117, 121, 123, 200, 202, 210, 212, 213, 214,
                                              219, 221, 222, 228, 231, 232, 233, 234])


class UnknownSymbolsWarning(UserWarning):
    """Annotations with unknown symbols were skipped (``unknown_symbols="skip"``)."""


def _wfdb() -> Any:
    import wfdb  # imported lazily: it pulls pandas and matplotlib

    return wfdb


def find_mitdb(root: str | os.PathLike[str] | None) -> Path:
    """Locate the folder holding ``100.hea`` etc. (see :func:`medrobust.paths.resolve_dataset_dir`)."""
    return resolve_dataset_dir(root, "mitdb", "*.hea")


def download_mitdb(root: str | os.PathLike[str] | None = None) -> Path:
    """Download the 48 records from PhysioNet with ``wfdb.dl_database`` (needs internet)."""
    target = Path(root) if root is not None else default_data_root() / "mitdb"
    target.mkdir(parents=True, exist_ok=True)
    try:
        _wfdb().dl_database("mitdb", str(target))
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"could not download mitdb into {target}: {exc}. Download it by hand from PhysioNet "
            "(https://physionet.org/content/mitdb/1.0.0/) and pass its folder as root / --data-dir."
        ) from exc
    return target


def record_files(folder: Path, record: str) -> list[Path]:
    """The three files of a record; raises a clear error naming the first one missing."""
    paths = [folder / f"{record}.{ext}" for ext in ("hea", "dat", "atr")]
    for p in paths:
        if not p.is_file():
            raise DataError(
                f"MIT-BIH record {record}: missing file {p}. Each record needs .hea, .dat and .atr; "
                "re-download it (wfdb.dl_database('mitdb', DIR)) or drop it with records=[...]."
            )
    return paths


def read_record(
    folder: Path, record: str, *, lead: str = "MLII", missing_lead: str = "first", source_fs: float | None = MITDB_FS
) -> tuple[np.ndarray, float, str]:
    """Read one lead of a record in mV.

    Returns
    -------
    signal, fs, lead_used
    """
    wfdb = _wfdb()
    hea = folder / f"{record}.hea"
    try:
        header = wfdb.rdheader(str(folder / record))
    except Exception as exc:
        raise DataError(f"corrupt WFDB header {hea}: {exc}. Re-download the record.") from exc
    if source_fs is not None and float(header.fs) != float(source_fs):
        raise DataError(
            f"sampling-rate mismatch in {hea}: header says {header.fs} Hz, expected {source_fs} Hz. "
            "Check the file, or pass source_fs=None to accept the header's rate."
        )
    names = list(header.sig_name or [])
    if lead in names:
        channel, lead_used = names.index(lead), lead
    elif missing_lead == "first" and names:
        channel, lead_used = 0, names[0]
    else:
        raise DataError(f"record {record} ({hea}) has no lead {lead!r} (leads: {names}); "
                        "pass missing_lead='first' or choose another lead.")
    try:
        rec = wfdb.rdrecord(str(folder / record), channels=[channel], physical=True)
    except Exception as exc:
        raise DataError(
            f"cannot read signal file {folder / (record + '.dat')}: {exc}. The file is truncated or "
            "corrupt; re-download the record."
        ) from exc
    sig = rec.p_signal[:, 0]
    if len(sig) != header.sig_len:
        raise DataError(
            f"{folder / (record + '.dat')} is truncated: {len(sig)} samples, header says {header.sig_len}. "
            "Re-download the record."
        )
    bad = ~np.isfinite(sig)
    if bad.any():
        first = int(np.nonzero(bad)[0][0])
        raise DataError(
            f"record {record}: {int(bad.sum())} NaN/inf samples in lead {lead_used} (first at sample {first}, "
            f"{folder / (record + '.dat')}); repair the record or exclude it with records=[...]."
        )
    return sig.astype(np.float64), float(header.fs), lead_used


def _check_annotations(ann: Any, atr: Path, sig_len: int | None) -> None:
    """Refuse an annotation file whose content cannot be real: symbols that decode to nothing, times
    running backwards or outside the signal (a damaged or foreign ``.atr`` decodes to exactly this)."""
    sample = np.asarray(ann.sample, dtype=np.int64)
    symbols = list(ann.symbol or [])
    problem = None
    if len(symbols) != len(sample):
        problem = f"{len(sample)} annotation times but {len(symbols)} symbols"
    elif any(not isinstance(sym, str) or not sym for sym in symbols):
        k = next(i for i, sym in enumerate(symbols) if not isinstance(sym, str) or not sym)
        problem = f"annotation {k} (sample {int(sample[k])}) has no valid symbol code"
    elif len(sample) and (np.diff(sample) < 0).any():
        k = int(np.nonzero(np.diff(sample) < 0)[0][0]) + 1
        problem = f"annotation times run backwards at annotation {k} ({int(sample[k - 1])} -> {int(sample[k])})"
    elif len(sample) and (sample.min() < 0 or (sig_len is not None and sample.max() >= sig_len)):
        problem = f"annotation times {int(sample.min())}..{int(sample.max())} fall outside the signal (0..{sig_len})"
    if problem:
        raise DataError(f"corrupt annotation file {atr}: {problem}. Re-download the record.")


def read_beats(folder: Path, record: str, *, unknown_symbols: str = "error",
               sig_len: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Beat R-peak positions and AAMI labels from ``record.atr``; non-beat annotations are skipped.

    Returns
    -------
    samples, labels, skipped
        ``skipped`` counts the annotations with a symbol that is neither a beat nor a known non-beat
        symbol, per symbol (only with ``unknown_symbols="skip"``; ``"error"`` raises on the first).

    Raises
    ------
    DataError
        An unreadable or corrupt annotation file (symbols that decode to nothing, times running backwards
        or, given ``sig_len``, outside the signal), or an unknown symbol with ``unknown_symbols="error"``.
    """
    atr = folder / f"{record}.atr"
    try:
        ann = _wfdb().rdann(str(folder / record), "atr")
    except Exception as exc:
        raise DataError(f"corrupt annotation file {atr}: it cannot be read ({type(exc).__name__}: {exc}). "
                        "Re-download the record.") from exc
    _check_annotations(ann, atr, sig_len)
    samples, labels, skipped = [], [], {}
    for s, sym in zip(ann.sample, ann.symbol):
        if sym in AAMI_MAP:
            samples.append(int(s))
            labels.append(AAMI_CLASSES.index(AAMI_MAP[sym]))
        elif sym not in NON_BEAT_SYMBOLS:
            if unknown_symbols == "error":
                raise DataError(
                    f"unknown annotation symbol {sym!r} at sample {s} in {atr}; "
                    "pass unknown_symbols='skip' to ignore such annotations."
                )
            skipped[sym] = skipped.get(sym, 0) + 1
    return np.asarray(samples, dtype=np.int64), np.asarray(labels, dtype=np.int64), skipped


BUILD_VERSION = 2
"""Version of the built arrays (part of the cache key): 2 added ``uv_scale``/``uv_offset`` of Kachuee beats."""


def kachuee_scales(signal: np.ndarray, r_peaks: np.ndarray, fs: float = KACHUEE_FS, *,
                   window_s: float = KACHUEE_WINDOW_S) -> tuple[np.ndarray, np.ndarray]:
    """Each Kachuee beat's min-max scaling, ``(scale, offset)`` in the signal's units.

    :func:`medrobust.data.beats.kachuee_windows` scales every ``window_s`` segment of the record to [0, 1]
    (Kachuee et al., IEEE ICHI 2018, step 2: ``(x − min) / (max − min)`` over the 10-s window); a beat's value
    ``v`` was therefore ``v · (max − min) + min`` of its window. ``scale`` is that ``max − min`` and ``offset``
    the ``min``; a flat window (``max == min``, the beat is all zeros) gives ``nan`` for both.
    """
    signal = np.asarray(signal, dtype=np.float64)
    r_peaks = np.asarray(r_peaks, dtype=np.int64)
    win = int(round(window_s * fs))
    scale = np.full(len(r_peaks), np.nan)
    offset = np.full(len(r_peaks), np.nan)
    for w in np.unique(r_peaks // win):
        sel = r_peaks // win == w
        seg = signal[int(w) * win: min(int(w + 1) * win, len(signal))]
        lo, hi = float(seg.min()), float(seg.max())
        if hi > lo:
            scale[sel], offset[sel] = hi - lo, lo
    return scale, offset


def _build(folder: Path, records: Sequence[str], opts: dict[str, Any]) -> dict[str, np.ndarray]:
    xs, ys, ids, pos, leads, skipped, scales, offsets = [], [], [], [], [], [], [], []
    for rec in records:
        signal, fs, lead_used = read_record(
            folder, rec, lead=opts["lead"], missing_lead=opts["missing_lead"], source_fs=opts["source_fs"]
        )
        peaks, labels, skip = read_beats(folder, rec, unknown_symbols=opts["unknown_symbols"], sig_len=len(signal))
        skipped.append(sum(skip.values()))
        if opts["format"] == "kachuee":
            sig = resample(signal, fs, KACHUEE_FS)
            p = rescale_positions(peaks, fs, KACHUEE_FS)
            keep = (p >= 0) & (p < len(sig))
            beats = kachuee_windows(sig, p[keep], KACHUEE_FS)[:, None, :]
            scale, offset = kachuee_scales(sig, p[keep], KACHUEE_FS)
            scales.append(scale * 1e3)   # the records are in mV: µV = 1000 · mV
            offsets.append(offset * 1e3)
        else:
            out_fs = float(opts["fs"] or fs)
            sig = resample(signal, fs, out_fs)
            p = rescale_positions(peaks, fs, out_fs)
            beats, kept = native_windows(sig[None], p, out_fs, before_s=opts["before_s"], after_s=opts["after_s"])
            keep = np.zeros(len(p), dtype=bool)
            keep[kept] = True
        xs.append(beats)
        ys.append(labels[keep])
        ids.append(np.full(int(keep.sum()), rec))
        pos.append(peaks[keep])
        leads.append(lead_used)
    out = {
        "x": np.concatenate(xs).astype(np.float32),
        "y": np.concatenate(ys),
        "ids": np.concatenate(ids).astype("U8"),
        "positions": np.concatenate(pos),
        "records": np.asarray(records, dtype="U8"),
        "leads_used": np.asarray(leads, dtype="U8"),
        "skipped": np.asarray(skipped, dtype=np.int64),
    }
    if opts["format"] == "kachuee":
        out["uv_scale"] = np.concatenate(scales)
        out["uv_offset"] = np.concatenate(offsets)
    return out


def build_mitdb(
    root: str | os.PathLike[str] | None = None,
    *,
    records: Sequence[str] | None = None,
    format: str = "kachuee",
    lead: str = "MLII",
    missing_lead: str = "first",
    fs: float | None = None,
    before_s: float = 0.25,
    after_s: float = 0.45,
    source_fs: float | None = MITDB_FS,
    unknown_symbols: str = "error",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    download: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Build (or read from cache) the beats of ``records``; returns arrays and the options used."""
    if format not in ("kachuee", "native"):
        raise ConfigError(f"format must be 'kachuee' or 'native', got {format!r}.")
    if missing_lead not in ("first", "error"):
        raise ConfigError(f"missing_lead must be 'first' or 'error', got {missing_lead!r}.")
    if unknown_symbols not in ("error", "skip"):
        raise ConfigError(f"unknown_symbols must be 'error' or 'skip', got {unknown_symbols!r}.")
    if format == "native" and (before_s < 0 or after_s <= 0):
        raise ConfigError(f"native window needs before_s >= 0 and after_s > 0, got {before_s}, {after_s}.")
    try:
        folder = find_mitdb(root)
    except DataError:
        if not download:
            raise
        folder = download_mitdb(root)
    recs = tuple(str(r) for r in (records if records is not None else ALL_RECORDS))
    paths = [p for r in recs for p in record_files(folder, r)]
    opts = {"format": format, "lead": lead, "missing_lead": missing_lead,
            "fs": KACHUEE_FS if format == "kachuee" else fs, "before_s": before_s, "after_s": after_s,
            "source_fs": source_fs, "unknown_symbols": unknown_symbols}
    key = {"dataset": "mitdb", "build_version": BUILD_VERSION, "records": recs, "files": file_stats(paths), **opts}
    path = cache_path("mitdb", key, cache_dir)
    required = ("fingerprint", "uv_scale", "uv_offset") if format == "kachuee" else ("fingerprint",)
    arrays = load_cached(path, required=required) if use_cache else None
    if arrays is None:
        arrays = _build(folder, recs, opts)
        arrays["fingerprint"] = np.asarray(file_fingerprint(paths))
        if use_cache:
            save_cached(path, arrays)
    _warn_skipped(arrays, recs, folder)
    return arrays, {**opts, "records": list(recs), "root": str(folder)}


def _warn_skipped(arrays: dict[str, np.ndarray], records: Sequence[str], folder: Path) -> None:
    counts = {r: int(n) for r, n in zip(records, arrays.get("skipped", ())) if n}
    if counts:
        warnings.warn(f"mitdb: skipped {sum(counts.values())} annotation(s) with unknown symbols "
                      f"(unknown_symbols='skip') in {folder}, per record {counts}; "
                      f"{len(arrays['y'])} beats kept.", UnknownSymbolsWarning, stacklevel=3)


def _empty_split_message(split: str, arrays: dict[str, np.ndarray], opts: dict[str, Any], scheme: str) -> str:
    skipped = int(arrays["skipped"].sum()) if "skipped" in arrays else 0
    why = (f"; unknown_symbols='skip' dropped {skipped} annotation(s) with unknown symbols, so the annotation "
           "files may be damaged: check them" if skipped else "")
    return (f"mitdb: the {split!r} split would be empty ({len(arrays['y'])} beats in total from records "
            f"{opts['records']}, scheme={scheme!r}){why}; use more records (records=[...]) or another split.")


@register_dataset("mitdb", options_from=(build_mitdb,))
def load_mitdb(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    scheme: str = "intra",
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
    balance: str = "none",
    records: Sequence[str] | None = None,
    **build_options: Any,
) -> ECGDataset:
    """MIT-BIH beats for one split.

    Parameters
    ----------
    root
        Folder with the WFDB records (or its parent holding ``mitdb/``); default ``MEDROBUST_DATA``.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    scheme
        ``"intra"`` (stratified beat-level split over ``records``) or ``"inter"`` (DS1 -> DS2).
    test_fraction, val_fraction
        Intra-patient test share of all beats; validation share of the non-test beats (both schemes).
    seed
        Split seed.
    balance
        ``"none"`` or ``"oversample"`` (Ma & Liang's tiled class balancing; sets ``class_resampled``).
    records
        Records to use (default: all 48 for ``intra``; DS1 + DS2 for ``inter``).
    **build_options
        ``format`` (``"kachuee"`` | ``"native"``), ``lead``, ``missing_lead``, ``fs`` (native rate),
        ``before_s``, ``after_s``, ``source_fs``, ``unknown_symbols``, ``cache_dir``, ``use_cache``,
        ``download``.
    """
    if scheme not in ("intra", "inter"):
        raise ConfigError(f"scheme must be 'intra' or 'inter', got {scheme!r}.")
    if not (0.0 < test_fraction < 1.0 and 0.0 <= val_fraction < 1.0):
        raise ConfigError(f"need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got {test_fraction}, {val_fraction}.")
    if balance not in ("none", "oversample"):
        raise ConfigError(f"balance must be 'none' or 'oversample', got {balance!r}.")
    if records is None and scheme == "inter":
        records = DS1 + DS2
    arrays, opts = build_mitdb(root, records=records, **build_options)
    y, ids = arrays["y"], arrays["ids"]
    if scheme == "intra":
        parts = train_val_test(y, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    else:
        in_ds1 = np.isin(ids, DS1)
        ds1 = np.nonzero(in_ds1)[0]
        tr, va = stratified_split(y[ds1], val_fraction, seed)
        parts = {"train": ds1[tr], "val": ds1[va], "test": np.nonzero(np.isin(ids, DS2))[0]}
    idx = np.arange(len(y)) if split == "all" else parts[split]
    if len(idx) == 0:
        raise DataError(_empty_split_message(split, arrays, opts, scheme))
    resampled = balance == "oversample"
    if resampled:
        idx = idx[oversample_indices(y[idx], seed=seed)]
    fs = float(opts["fs"] or MITDB_FS)
    leads_used = sorted(set(arrays["leads_used"].tolist()))
    meta = DatasetMeta(
        name="mitdb",
        fs=fs,
        classes=AAMI_CLASSES,
        units="normalized [0, 1]" if opts["format"] == "kachuee" else "mV",
        ids=ids[idx],
        leads=(opts["lead"],),
        split=split,
        fingerprint=str(arrays["fingerprint"]),
        options={**opts, "scheme": scheme, "test_fraction": test_fraction, "val_fraction": val_fraction,
                 "seed": seed, "balance": balance, "leads_used": leads_used},
        positions=arrays["positions"][idx],
        class_resampled=resampled,
        uv_scale=arrays["uv_scale"][idx] if "uv_scale" in arrays else None,
        uv_offset=arrays["uv_offset"][idx] if "uv_offset" in arrays else None,
    )
    return ECGDataset(torch.from_numpy(arrays["x"][idx]), torch.from_numpy(y[idx]), meta)
