"""PhysioNet/CinC Challenge 2017 reader (AF classification from a short single-lead ECG).

Clifford, G. D. et al. "AF classification from a short single lead ECG recording: the
PhysioNet/Computing in Cardiology Challenge 2017", Computing in Cardiology 44, 2017. Licence: ODC-By 1.0.

Layout (the PhysioNet training set, 8,528 AliveCor records): ``REFERENCE.csv`` without header,
rows ``A00001,N`` (the v3 labels; ``REFERENCE-original.csv`` holds the labels first released),
``A00001.mat`` with variable ``val`` (``1 x n`` int16 ADC counts) and ``A00001.hea`` (WFDB header:
300 Hz, gain 1000/mV, the record length). Labels: ``N`` normal sinus rhythm, ``A`` atrial
fibrillation, ``O`` other rhythm, ``~`` too noisy to classify (class indices 0..3 in this order, as
in Han et al.).

Han et al. 2020 (Nat. Med. 26: 360-363) feed raw ADC counts (``units="adc"``)
cut to the first 60 s (``seconds=60``: 18,000 samples) or zero-padded symmetrically; Shao et al.
(Shao et al., arXiv 2203.09487, 2022) use 30 s. ``balance="han"`` repeats the training records as Han did:
5 extra copies of every noisy record, then 1 extra copy of every AF record.

Splits
------
Stratified and seeded over the records' labels (of the chosen label version): ``test_fraction``
(default 0.2, 1,706 records) of every class is the held-out test split, then ``val_fraction``
(default 0.1) of the rest is validation for model selection (682), the rest is train (6,140).
The seed papers attacked their validation set; here model selection (val) and evaluation (test)
never share a record.

Caching
-------
Reading the 8,528 records (and resampling them to 150 Hz) took 25 s here
(benchmarks/results/train_cinc2017.json); from the cache the three splits load in ~3 s. The
concatenated raw signals (int16 ADC counts at 300 Hz, or float32 ADC counts when ``fs``
resamples) are cached as npz keyed by the record list,
the rates, the expected gain and every file's size and modification time. Cropping, padding, unit
conversion and label joining are cheap and applied after the cache, so changing ``seconds``,
``pad``, ``units`` or ``labels`` never re-reads the files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medrobust.data.balance import oversample_indices
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import resample
from medrobust.data.cache import cache_path, file_fingerprint, file_stats, load_cached, save_cached
from medrobust.data.registry import register_dataset
from medrobust.data.signal_length import PAD_MODES, stack_fixed
from medrobust.data.splits import train_val_test
from medrobust.data.wfdb_header import Header, read_header
from medrobust.errors import ConfigError, DataError
from medrobust.paths import resolve_dataset_dir

CINC2017_FS = 300.0
CINC2017_GAIN = 1000.0
CLASSES: tuple[str, ...] = ("N", "A", "O", "~")
CLASS_DESCRIPTIONS: dict[str, str] = {
    "N": "normal sinus rhythm",
    "A": "atrial fibrillation",
    "O": "other rhythm",
    "~": "too noisy to classify",
}
LABEL_FILES: dict[str, str] = {"v3": "REFERENCE.csv", "original": "REFERENCE-original.csv"}
HAN_SECONDS = 60.0
BALANCE_MODES = ("none", "han", "oversample")


def find_cinc2017(root: str | os.PathLike[str] | None) -> Path:
    """Locate the folder holding ``REFERENCE.csv`` and the records (the root or ``root/cinc2017``)."""
    return resolve_dataset_dir(root, "cinc2017", "REFERENCE*.csv")


def read_reference(folder: Path, *, labels: str = "v3") -> dict[str, str]:
    """Record -> label letter from ``REFERENCE.csv`` (``labels="v3"``) or ``REFERENCE-original.csv``.

    Reads only the CSV, so label counts never need the 8,528 ``.mat`` files.

    Raises
    ------
    DataError
        Missing file, a row that is not ``record,label``, an unknown label or a duplicated record.
    """
    if labels not in LABEL_FILES:
        raise ConfigError(f"labels must be one of {tuple(LABEL_FILES)}, got {labels!r}.")
    path = folder / LABEL_FILES[labels]
    if not path.is_file():
        raise DataError(
            f"CinC 2017 label file missing: {path}. The PhysioNet training set ships REFERENCE.csv (v3) "
            "and REFERENCE-original.csv; re-download it or pass labels='v3'."
        )
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            raise DataError(f"{path}, line {lineno}: {line!r} is not 'record,label' (e.g. 'A00001,N'); fix the row.")
        rec, lab = parts
        if lab not in CLASSES:
            raise DataError(f"{path}, line {lineno}: unknown label {lab!r} for {rec}; labels are N, A, O and ~.")
        if rec in out:
            raise DataError(f"{path}, line {lineno}: record {rec} is listed twice; keep one row per record.")
        out[rec] = lab
    if not out:
        raise DataError(f"{path} has no label rows; expected lines like 'A00001,N'.")
    return out


def label_counts(root: str | os.PathLike[str] | None = None, *, labels: str = "v3") -> dict[str, int]:
    """Records per class from the label file alone (no signal file is opened)."""
    ref = read_reference(find_cinc2017(root), labels=labels)
    values = list(ref.values())
    return {c: values.count(c) for c in CLASSES}


def read_cinc2017_header(path: Path, *, source_fs: float | None = CINC2017_FS,
                         source_gain: float | None = CINC2017_GAIN) -> Header:
    """Parse and check a record header: one signal, the expected rate and gain, mV units, a length."""
    hdr = read_header(path)
    if hdr.n_signals != 1:
        raise DataError(f"{path}: CinC 2017 records have one signal, header declares {hdr.n_signals}. "
                        "Is this a CinC 2017 record?")
    if hdr.sig_len is None:
        raise DataError(f"{path}: the record line gives no length; the CinC 2017 headers state it. "
                        "Re-download the record.")
    if source_fs is not None and hdr.fs != float(source_fs):
        raise DataError(f"sampling-rate mismatch in {path}: header says {hdr.fs} Hz, expected {source_fs} Hz. "
                        "Check the file, or pass source_fs=None to accept the header's rate.")
    sig = hdr.signals[0]
    if source_gain is not None and sig.gain != float(source_gain):
        raise DataError(f"gain mismatch in {path}: header says {sig.gain}/{sig.units}, expected {source_gain}/mV. "
                        "Check the file, or pass source_gain=None to accept the header's gain.")
    if sig.units.lower() != "mv":
        raise DataError(f"{path}: signal units are {sig.units!r}, expected mV. Is this a CinC 2017 record?")
    return hdr


def read_cinc2017_record(
    folder: Path, record: str, *, source_fs: float | None = CINC2017_FS, source_gain: float | None = CINC2017_GAIN
) -> tuple[np.ndarray, Header]:
    """Read one record's raw ADC counts ``(1, n)`` (int16 as stored) and its checked header.

    Raises
    ------
    DataError
        A missing ``.hea``/``.mat``, a ``.mat`` without ``val``, a signal of the wrong shape, or a
        length that disagrees with the header.
    """
    from scipy.io import loadmat

    hea, mat = folder / f"{record}.hea", folder / f"{record}.mat"
    for p in (hea, mat):
        if not p.is_file():
            raise DataError(
                f"CinC 2017 record {record} is in the label file but {p} is missing. Each record needs "
                ".hea and .mat; re-download it, drop it with records=[...], or pass strict=False to skip it."
            )
    hdr = read_cinc2017_header(hea, source_fs=source_fs, source_gain=source_gain)
    try:
        content = loadmat(mat)
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError ... on corrupt files
        raise DataError(f"cannot read {mat}: {exc}. The file is truncated or corrupt; re-download the record.") from exc
    if "val" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{mat} has no variable 'val' (found {found}); CinC 2017 records store the signal as "
                        "'val' (1 x n int16). Re-download the record.")
    val = np.asarray(content["val"])
    if val.ndim == 1:
        val = val[None]
    if val.ndim != 2 or val.shape[0] != 1 or not np.issubdtype(val.dtype, np.integer):
        raise DataError(f"{mat}: 'val' is {val.dtype} of shape {val.shape}; expected 1 x n integers. "
                        "Re-download the record.")
    if val.shape[1] != hdr.sig_len:
        raise DataError(f"length mismatch for {record}: {hea} says {hdr.sig_len} samples, {mat} holds {val.shape[1]}. "
                        "One of the files is truncated or from another record; re-download both.")
    return val, hdr


def _listed_records(folder: Path) -> list[str] | None:
    """Records the folder declares (``RECORDS`` if present, else the ``.hea`` files)."""
    rec_file = folder / "RECORDS"
    if rec_file.is_file():
        return [ln.strip() for ln in rec_file.read_text().splitlines() if ln.strip()]
    return sorted(p.stem for p in folder.glob("*.hea"))


def select_records(
    folder: Path, ref: dict[str, str], *, records: Sequence[str] | None, limit: int | None, strict: bool
) -> tuple[list[str], list[str]]:
    """Records to read (label-file order) and those skipped for missing files.

    Raises
    ------
    DataError
        A requested or listed record without a label; with ``strict``, a labelled record without files.
    """
    if records is None:
        listed = _listed_records(folder) or []
        unlabelled = [r for r in listed if r not in ref]
        if unlabelled:
            raise DataError(
                f"{len(unlabelled)} record(s) in {folder} have no label in the label file (first: {unlabelled[0]}). "
                "Add their rows to REFERENCE.csv, remove them from RECORDS and the folder, or pass records=[...]."
            )
        chosen = list(ref)
    else:
        chosen = [str(r) for r in records]
        unknown = [r for r in chosen if r not in ref]
        if unknown:
            raise DataError(f"record(s) {unknown[:5]} have no label in {folder}'s label file; "
                            "check the names (e.g. 'A00001') or add the rows.")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}.")
        chosen = chosen[:limit]
    missing = [r for r in chosen if not (folder / f"{r}.mat").is_file() or not (folder / f"{r}.hea").is_file()]
    if missing and strict:
        raise DataError(
            f"{len(missing)} labelled record(s) have no .hea/.mat in {folder} (first: {missing[0]}). "
            "Re-download them, or pass strict=False to skip them (counted in meta.options['skipped_missing'])."
        )
    kept = [r for r in chosen if r not in set(missing)]
    if not kept:
        raise DataError(f"none of the selected CinC 2017 records has files in {folder}.")
    return kept, missing


def build_cinc2017(
    root: str | os.PathLike[str] | None = None,
    *,
    records: Sequence[str] | None = None,
    limit: int | None = None,
    labels: str = "v3",
    fs: float | None = None,
    source_fs: float | None = CINC2017_FS,
    source_gain: float | None = CINC2017_GAIN,
    strict: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read (or load from the cache) the raw signals of the selected records.

    Returns
    -------
    arrays, options
        ``signal`` (all records concatenated, ADC counts at the output rate: int16 at 300 Hz,
        float32 when resampled), ``offsets`` (``n + 1``; record ``i`` is
        ``signal[offsets[i]:offsets[i + 1]]``), ``ids``, ``gain``, ``baseline``, ``native_length``,
        ``fingerprint``; and the options used (``labels`` holds the record -> letter mapping).
    """
    if fs is not None and not (fs > 0 and np.isfinite(fs)):
        raise ConfigError(f"fs must be a positive rate in Hz or None, got {fs}.")
    folder = find_cinc2017(root)
    ref = read_reference(folder, labels=labels)
    recs, missing = select_records(folder, ref, records=records, limit=limit, strict=strict)
    paths = [folder / f"{r}.{ext}" for r in recs for ext in ("hea", "mat")]
    key = {"dataset": "cinc2017", "records": recs, "files": file_stats(paths), "fs": fs,
           "source_fs": source_fs, "source_gain": source_gain}
    path = cache_path("cinc2017", key, cache_dir)
    arrays = load_cached(path) if use_cache else None
    if arrays is None:
        sigs, gains, baselines, native, rates = [], [], [], [], []
        for r in recs:
            val, hdr = read_cinc2017_record(folder, r, source_fs=source_fs, source_gain=source_gain)
            rate = hdr.fs
            sig = val[0] if fs is None or float(fs) == rate else resample(val[0], rate, float(fs)).astype(np.float32)
            sigs.append(sig)
            gains.append(hdr.signals[0].gain)
            baselines.append(hdr.signals[0].baseline)
            native.append(val.shape[1])
            rates.append(rate)
        if fs is None and len(set(rates)) > 1:
            raise DataError(f"CinC 2017 records in {folder} have different rates {sorted(set(rates))} Hz; pass fs=... "
                            "to resample them to one rate.")
        lengths = np.asarray([len(s) for s in sigs], dtype=np.int64)
        arrays = {
            "signal": np.concatenate(sigs),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "ids": np.asarray(recs, dtype="U16"),
            "gain": np.asarray(gains, dtype=np.float64),
            "baseline": np.asarray(baselines, dtype=np.float64),
            "native_length": np.asarray(native, dtype=np.int64),
            "native_fs": np.asarray(rates, dtype=np.float64),
            "fingerprint": np.asarray(file_fingerprint(paths)),
        }
        if use_cache:
            save_cached(path, arrays)
    out_fs = float(fs) if fs is not None else float(arrays["native_fs"][0])
    opts = {"labels_version": labels, "fs": out_fs, "source_fs": source_fs, "source_gain": source_gain,
            "strict": strict, "limit": limit, "root": str(folder), "n_records": len(recs),
            "skipped_missing": len(missing), "labels": ref}
    return arrays, opts


def han_oversample_indices(labels: np.ndarray) -> np.ndarray:
    """Han et al.'s training-set balancing: append 5 extra copies of every noisy record (``~``), then
    1 extra copy of every AF record (``A``) to the index list ``0..n-1`` (order kept)."""
    labels = np.asarray(labels)
    base = np.arange(len(labels))
    noisy = np.nonzero(labels == CLASSES.index("~"))[0]
    af = np.nonzero(labels == CLASSES.index("A"))[0]
    return np.concatenate([base, np.tile(noisy, 5), af])


@register_dataset("cinc2017")
def load_cinc2017(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    labels: str = "v3",
    units: str = "mV",
    seconds: float | None = HAN_SECONDS,
    pad: str = "symmetric",
    fs: float | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    balance: str = "none",
    records: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = True,
    source_fs: float | None = CINC2017_FS,
    source_gain: float | None = CINC2017_GAIN,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ECGDataset:
    """CinC 2017 records of one split, fixed length with a mask.

    Parameters
    ----------
    root
        The folder with ``REFERENCE.csv`` and the records, or its parent holding ``cinc2017/``;
        default ``MEDROBUST_DATA``.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    labels
        ``"v3"`` (``REFERENCE.csv``, the final labels) or ``"original"`` (``REFERENCE-original.csv``).
    units
        ``"mV"`` (``(adc - baseline) / gain``) or ``"adc"`` (raw integer counts as float, Han's input).
    seconds
        Fixed duration at the output rate: 60 (Han, 18,000 samples at 300 Hz) or 30 (Shao et al.,
        9,000). Longer records keep their first samples. ``None``: pad every record to the longest
        one (variable lengths; use :class:`~medrobust.data.signal_length.UnpaddedView` with
        :func:`~medrobust.data.signal_length.pad_collate` for per-batch padding).
    pad
        Where zeros go: ``"symmetric"`` (Han: left ``floor(r/2)``, right the rest), ``"left"`` or ``"right"``.
    fs
        Output rate in Hz (polyphase resampling, e.g. 150); ``None`` keeps 300 Hz.
    test_fraction, val_fraction
        Held-out test share of every class; validation share of every class among the rest.
    seed
        Split seed (and of the ``"oversample"`` shuffle).
    balance
        ``"none"``, ``"han"`` (noisy x6, AF x2; Han et al.) or ``"oversample"`` (every class tiled
        to the majority count). Applied to the train split only; val and test stay as recorded.
    records, limit
        Read only these records / the first ``limit`` labelled records (quick tests).
    strict
        ``True``: a labelled record without ``.hea``/``.mat`` is an error; ``False``: skip and count it.
    source_fs, source_gain
        Expected header rate and gain (``None`` accepts any).
    cache_dir, use_cache
        Where the raw-signal cache lives (default the user cache) and whether to use it.

    Returns
    -------
    ECGDataset
        ``x`` ``(N, 1, L)`` float32, ``y`` ``(N,)`` in ``CLASSES`` order, ``mask`` ``(N, 1, L)``
        (1 exactly on the recorded samples).
    """
    if units not in ("mV", "adc"):
        raise ConfigError(f"units must be 'mV' or 'adc', got {units!r}.")
    if pad not in PAD_MODES:
        raise ConfigError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"seconds must be > 0 or None, got {seconds}.")
    if not (0.0 < test_fraction < 1.0 and 0.0 <= val_fraction < 1.0):
        raise ConfigError(f"need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got {test_fraction}, {val_fraction}.")
    if balance not in BALANCE_MODES:
        raise ConfigError(f"balance must be one of {BALANCE_MODES}, got {balance!r}.")
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}.")
    arrays, opts = build_cinc2017(root, records=records, limit=limit, labels=labels, fs=fs, source_fs=source_fs,
                                  source_gain=source_gain, strict=strict, cache_dir=cache_dir, use_cache=use_cache)
    ref = opts.pop("labels")
    ids = arrays["ids"]
    y_all = np.asarray([CLASSES.index(ref[str(r)]) for r in ids], dtype=np.int64)
    if split == "all":
        idx = np.arange(len(ids))
    else:
        idx = train_val_test(y_all, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)[split]
    resampled = balance != "none" and split == "train"
    if resampled:
        if balance == "han":
            idx = idx[han_oversample_indices(y_all[idx])]
        else:
            idx = idx[oversample_indices(y_all[idx], seed=seed)]
    out_fs = opts["fs"]
    length = None if seconds is None else int(round(seconds * out_fs))
    sig, off = arrays["signal"], arrays["offsets"]
    segs = []
    for i in idx:
        seg = sig[off[i] : off[i + 1]].astype(np.float32)
        if units == "mV":
            seg = (seg - np.float32(arrays["baseline"][i])) / np.float32(arrays["gain"][i])
        segs.append(seg[None])
    if not segs:
        raise DataError(f"CinC 2017 split {split!r} is empty for the {len(ids)} selected records; "
                        "select more records or change test_fraction / val_fraction.")
    x, mask = stack_fixed(segs, length=length, pad=pad)
    meta = DatasetMeta(
        name="cinc2017",
        fs=out_fs,
        classes=CLASSES,
        units=units,
        ids=ids[idx],
        leads=("ECG",),
        split=split,
        fingerprint=str(arrays["fingerprint"]),
        options={**opts, "units": units, "seconds": seconds, "length": int(x.shape[-1]), "pad": pad,
                 "test_fraction": test_fraction, "val_fraction": val_fraction, "seed": seed, "balance": balance,
                 "records": None if records is None else [str(r) for r in records]},
        class_resampled=resampled,
    )
    return ECGDataset(torch.from_numpy(x), torch.from_numpy(y_all[idx]), meta, torch.from_numpy(mask))


def challenge_score(confusion: np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """The CinC 2017 challenge score from a 4 x 4 confusion matrix (rows true, columns predicted,
    classes in ``CLASSES`` order).

    Clifford et al. 2017: ``F1_k = 2 C[k, k] / (sum of row k + sum of column k)`` for the normal (N),
    AF (A) and other-rhythm (O) classes; the score is their mean (the noisy class is not scored, but
    noisy records predicted as N, A or O still count as false positives there).

    Returns
    -------
    dict
        ``F1_N``, ``F1_A``, ``F1_O``, ``F1_~`` (reported, not scored) and ``score``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.shape != (len(CLASSES), len(CLASSES)):
        raise ConfigError(f"challenge_score needs a {len(CLASSES)} x {len(CLASSES)} confusion matrix, got {cm.shape}.")
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * np.diag(cm), denom, out=np.zeros(len(CLASSES)), where=denom > 0)
    out = {f"F1_{c}": float(v) for c, v in zip(CLASSES, f1)}
    out["score"] = float(f1[:3].mean())
    return out
