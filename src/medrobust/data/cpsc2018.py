"""China Physiological Signal Challenge 2018 (CPSC 2018) 12-lead reader.

Liu, F. et al. "An open access database for evaluating the algorithms of electrocardiogram rhythm
and morphology abnormality detection", J. Med. Imaging Health Inform. 8(7): 1368-1373, 2018.
Licence: free for research use (challenge terms).

Layout: ``A0001.mat`` ... ``A6877.mat``, each a MATLAB struct ``ECG`` with fields ``sex``, ``age``
and ``data`` (12 x n, mV, 500 Hz, leads I, II, III, aVR, aVL, aVF, V1-V6), and ``REFERENCE.csv``
with header ``Recording,First_label,Second_label,Third_label``; labels 1..9 are Normal, AF, I-AVB,
LBBB, RBBB, PAC, PVC, STD, STE (class indices 0..8). 477 rows fill a second (or third) label; one of
them (A0953, ``6,6``) repeats its first label, which is read as a single label, so 476 records are
multi-label (Ma & Liang report removing 477).

Ma & Liang 2022 (Comput. Biol. Med., arXiv 2110.09759) keep leads I, II, V1-V6 (``leads="8"``),
scale every lead of a record by its max |value| (``scale="maxabs"``), keep the first 30,720 samples
(``truncate_seconds=61.44``) and zero-pad on the left to 33,792 (``seconds=67.584``, the defaults)
with a mask, and drop the multi-label records (``drop_multilabel=True``).

Records and labels
------------------
Only records with a ``.mat`` file are loaded; ``REFERENCE.csv`` rows without one are skipped and
counted in ``meta.options["skipped_missing"]`` (``strict=True`` makes them an error). This lets the
full 6,877-row label file sit beside a subset of the records. A ``.mat`` without a label row is an
error. Single-label mode (default) refuses multi-label rows unless ``drop_multilabel=True``;
``multilabel=True`` returns multi-hot ``y`` ``(N, 9)``.

Splits
------
Stratified on the first label, seeded: ``test_fraction`` (0.2) of every class is test,
``val_fraction`` (0.1) of the rest is validation. (Ma & Liang's own split, 5 records per class for
validation and 50 for test drawn with numpy ``RandomState(0)``, cannot be rebuilt from the paper.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import resample
from medrobust.data.cache import cache_path, file_fingerprint, file_stats, load_cached, save_cached
from medrobust.data.registry import register_dataset
from medrobust.data.signal_length import PAD_MODES, stack_fixed
from medrobust.data.splits import train_val_test
from medrobust.errors import ConfigError, DataError
from medrobust.paths import resolve_dataset_dir

CPSC2018_FS = 500.0
CLASSES: tuple[str, ...] = ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
LEADS_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LEADS_8: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
REFERENCE_HEADER = ("Recording", "First_label", "Second_label", "Third_label")
MA_LIANG_TRUNCATE_S = 30720 / CPSC2018_FS  # 61.44 s
MA_LIANG_SECONDS = 33792 / CPSC2018_FS  # 67.584 s


def resolve_leads(leads: str | Sequence[str]) -> tuple[str, ...]:
    """``"12"`` -> all twelve, ``"8"`` -> I, II, V1-V6, or an explicit list of lead names."""
    if isinstance(leads, str):
        if leads == "12":
            return LEADS_12
        if leads == "8":
            return LEADS_8
        leads = [leads]
    out = tuple(str(ld) for ld in leads)
    bad = [ld for ld in out if ld not in LEADS_12]
    if bad or not out or len(set(out)) != len(out):
        raise ConfigError(f"leads must be '12', '8' or distinct names from {LEADS_12}, got {leads!r}.")
    return out


def find_cpsc2018(root: str | os.PathLike[str] | None) -> Path:
    """Locate the folder holding ``REFERENCE.csv`` and the ``.mat`` records (or ``root/cpsc2018``)."""
    return resolve_dataset_dir(root, "cpsc2018", "REFERENCE.csv")


def read_reference(folder: Path) -> dict[str, tuple[int, ...]]:
    """Record -> labels (1..9, first label first) from ``REFERENCE.csv``.

    Raises
    ------
    DataError
        Missing file, wrong header, a row without a first label, a label outside 1..9, or a
        duplicated record.
    """
    path = folder / "REFERENCE.csv"
    if not path.is_file():
        raise DataError(f"CPSC 2018 label file missing: {path}. "
                        "Put the challenge's REFERENCE.csv beside the .mat files.")
    lines = path.read_text().splitlines()
    head = tuple(h.strip() for h in (lines[0].split(",") if lines else []))
    if head != REFERENCE_HEADER:
        raise DataError(f"{path}: first line is {lines[0] if lines else ''!r}; expected the header "
                        f"{','.join(REFERENCE_HEADER)}. Is this the CPSC 2018 REFERENCE.csv?")
    out: dict[str, tuple[int, ...]] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        rec, raw = parts[0], [p for p in parts[1:] if p]
        if not rec or not raw or len(parts) > 4:
            raise DataError(f"{path}, line {lineno}: {line!r} needs a record and 1 to 3 labels; fix the row.")
        try:
            labs = tuple(int(float(v)) for v in raw)
        except ValueError:
            raise DataError(f"{path}, line {lineno}: non-numeric label in {line!r}; labels are 1..9.") from None
        if any(lab < 1 or lab > 9 for lab in labs):
            raise DataError(f"{path}, line {lineno}: label out of range in {line!r}; labels are 1..9 "
                            f"({', '.join(f'{i + 1}={c}' for i, c in enumerate(CLASSES))}).")
        if rec in out:
            raise DataError(f"{path}, line {lineno}: record {rec} is listed twice; keep one row per record.")
        out[rec] = tuple(dict.fromkeys(labs))
    if not out:
        raise DataError(f"{path} has a header but no label rows.")
    return out


def read_cpsc_record(path: Path) -> tuple[np.ndarray, str, float]:
    """Read ``ECG.data`` ``(12, n)`` (float64, mV), ``ECG.sex`` and ``ECG.age`` (NaN when absent) from a ``.mat``.

    Raises
    ------
    DataError
        Unreadable file, no ``ECG`` struct, no ``data`` field, wrong shape or non-finite samples.
    """
    from scipy.io import loadmat

    try:
        content = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError ... on corrupt files
        raise DataError(f"cannot read {path}: {exc}. The file is truncated or corrupt; "
                        "re-download the record.") from exc
    if "ECG" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path} has no struct 'ECG' (found {found}); CPSC 2018 records store ECG.data (12 x n), "
                        "ECG.sex and ECG.age. Is this a CPSC 2018 record?")
    ecg = content["ECG"]
    if not hasattr(ecg, "data"):
        raise DataError(f"{path}: struct 'ECG' has no field 'data'; re-download the record.")
    data = np.asarray(ecg.data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(LEADS_12):
        raise DataError(f"{path}: ECG.data has shape {data.shape}; expected 12 x n (leads {', '.join(LEADS_12)}).")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: ECG.data contains NaN or inf; repair the record or exclude it with records=[...].")
    sex = str(getattr(ecg, "sex", "") or "")
    try:
        age = float(np.asarray(getattr(ecg, "age", np.nan), dtype=np.float64).reshape(-1)[0])
    except (ValueError, IndexError, TypeError):
        age = float("nan")
    return data, sex, age


def select_records(
    folder: Path, ref: dict[str, tuple[int, ...]], *, records: Sequence[str] | None, strict: bool
) -> tuple[list[str], list[str]]:
    """Records to read (label-file order) and labelled records skipped for lack of a ``.mat``."""
    on_disk = {p.stem for p in folder.glob("*.mat")}
    unlabelled = sorted(on_disk - set(ref))
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} record file(s) in {folder} have no row in REFERENCE.csv (first: {unlabelled[0]}.mat). "
            "Add their labels to REFERENCE.csv or move the files out of the folder."
        )
    if records is not None:
        chosen = [str(r) for r in records]
        unknown = [r for r in chosen if r not in ref]
        if unknown:
            raise DataError(f"record(s) {unknown[:5]} have no row in {folder / 'REFERENCE.csv'}; "
                            "check the names (e.g. 'A0001').")
    else:
        chosen = list(ref)
    missing = [r for r in chosen if r not in on_disk]
    if missing and (strict or records is not None):
        raise DataError(
            f"{len(missing)} record(s) listed in {folder / 'REFERENCE.csv'}"
            f"{' (and requested)' if records is not None else ''} have no .mat file "
            f"(first: {folder / (missing[0] + '.mat')}). "
            "Add the files, or load without strict=True to skip them (counted in meta.options['skipped_missing'])."
        )
    kept = [r for r in chosen if r in on_disk]
    if not kept:
        raise DataError(f"no CPSC 2018 record file (.mat) of REFERENCE.csv was found in {folder}.")
    return kept, missing


def build_cpsc2018(
    root: str | os.PathLike[str] | None = None,
    *,
    records: Sequence[str] | None = None,
    leads: str | Sequence[str] = "12",
    fs: float | None = None,
    truncate_seconds: float | None = MA_LIANG_TRUNCATE_S,
    strict: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read (or load from the cache) the selected records' leads, truncated, at the output rate.

    Returns
    -------
    arrays, options
        ``signal`` ``(leads, total)`` float32 mV (records concatenated), ``offsets``, ``ids``,
        ``maxabs`` ``(N, leads)`` (per-lead max |value| of the whole record), ``sex``, ``age``,
        ``native_length``, ``fingerprint``; and the options (``labels``: record -> label tuple).
    """
    if fs is not None and not (fs > 0 and np.isfinite(fs)):
        raise ConfigError(f"fs must be a positive rate in Hz or None, got {fs}.")
    if truncate_seconds is not None and not truncate_seconds > 0:
        raise ConfigError(f"truncate_seconds must be > 0 or None, got {truncate_seconds}.")
    names = resolve_leads(leads)
    folder = find_cpsc2018(root)
    ref = read_reference(folder)
    recs, missing = select_records(folder, ref, records=records, strict=strict)
    out_fs = float(fs) if fs is not None else CPSC2018_FS
    keep_n = None if truncate_seconds is None else int(round(truncate_seconds * out_fs))
    paths = [folder / f"{r}.mat" for r in recs]
    key = {"dataset": "cpsc2018", "records": recs, "files": file_stats(paths), "leads": names, "fs": out_fs,
           "truncate": keep_n}
    path = cache_path("cpsc2018", key, cache_dir)
    arrays = load_cached(path) if use_cache else None
    if arrays is None:
        chan = [LEADS_12.index(ld) for ld in names]
        sigs, maxabs, sexes, ages, native = [], [], [], [], []
        for p in paths:
            data, sex, age = read_cpsc_record(p)
            sig = resample(data[chan], CPSC2018_FS, out_fs)
            maxabs.append(np.abs(sig).max(axis=1))
            sigs.append(sig[:, :keep_n].astype(np.float32))
            sexes.append(sex)
            ages.append(age)
            native.append(data.shape[1])
        lengths = np.asarray([s.shape[1] for s in sigs], dtype=np.int64)
        arrays = {
            "signal": np.concatenate(sigs, axis=1),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "ids": np.asarray(recs, dtype="U16"),
            "maxabs": np.asarray(maxabs, dtype=np.float32),
            "sex": np.asarray(sexes, dtype="U16"),
            "age": np.asarray(ages, dtype=np.float64),
            "native_length": np.asarray(native, dtype=np.int64),
            "fingerprint": np.asarray(file_fingerprint(paths)),
        }
        if use_cache:
            save_cached(path, arrays)
    opts = {"leads": list(names), "fs": out_fs, "truncate_seconds": truncate_seconds, "truncate": keep_n,
            "strict": strict, "root": str(folder), "n_records": len(recs), "skipped_missing": len(missing),
            "labels": ref}
    return arrays, opts


@register_dataset("cpsc2018")
def load_cpsc2018(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    leads: str | Sequence[str] = "12",
    scale: str = "none",
    fs: float | None = None,
    truncate_seconds: float | None = MA_LIANG_TRUNCATE_S,
    seconds: float | None = MA_LIANG_SECONDS,
    pad: str = "left",
    multilabel: bool = False,
    drop_multilabel: bool = False,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    records: Sequence[str] | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ECGDataset:
    """CPSC 2018 records of one split, fixed length with a mask.

    Parameters
    ----------
    root
        Folder with ``REFERENCE.csv`` and the ``.mat`` files (or its parent holding ``cpsc2018/``).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    leads
        ``"12"``, ``"8"`` (I, II, V1-V6; Ma & Liang) or a list of lead names.
    scale
        ``"none"`` (mV) or ``"maxabs"``: each lead of a record divided by its max |value| over the whole
        record (range [-1, 1]; an all-zero lead stays zero).
    fs
        Output rate (polyphase resampling); ``None`` keeps 500 Hz.
    truncate_seconds
        Keep the first ``round(truncate_seconds * fs)`` samples (61.44 s = 30,720 at 500 Hz); ``None`` keeps all.
    seconds
        Fixed output length ``round(seconds * fs)`` (67.584 s = 33,792 at 500 Hz); ``None``: the longest record.
    pad
        ``"left"`` (Ma & Liang: signal right-aligned), ``"right"`` or ``"symmetric"``.
    multilabel
        Return multi-hot ``y`` ``(N, 9)`` float (``meta.multilabel``).
    drop_multilabel
        Single-label mode: drop records with more than one label (Ma & Liang) instead of raising.
    test_fraction, val_fraction, seed
        Stratified (first label) seeded split.
    records
        Only these records (each must have a ``.mat`` file).
    strict
        Raise when a REFERENCE.csv row has no ``.mat`` file (default: skip and count).
    cache_dir, use_cache
        Cache of the read signals.
    """
    if scale not in ("none", "maxabs"):
        raise ConfigError(f"scale must be 'none' or 'maxabs', got {scale!r}.")
    if pad not in PAD_MODES:
        raise ConfigError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"seconds must be > 0 or None, got {seconds}.")
    if multilabel and drop_multilabel:
        raise ConfigError("multilabel=True and drop_multilabel=True contradict each other; pass one of them.")
    if not (0.0 < test_fraction < 1.0 and 0.0 <= val_fraction < 1.0):
        raise ConfigError(f"need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got {test_fraction}, {val_fraction}.")
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}.")
    arrays, opts = build_cpsc2018(root, records=records, leads=leads, fs=fs, truncate_seconds=truncate_seconds,
                                  strict=strict, cache_dir=cache_dir, use_cache=use_cache)
    ref = opts.pop("labels")
    ids = arrays["ids"]
    labs = [ref[str(r)] for r in ids]
    multi = np.asarray([len(lab) > 1 for lab in labs])
    keep = np.arange(len(ids))
    if multi.any() and not multilabel:
        if not drop_multilabel:
            first = str(ids[np.nonzero(multi)[0][0]])
            raise DataError(
                f"{int(multi.sum())} selected record(s) have more than one label in {opts['root']}/REFERENCE.csv "
                f"(first: {first} with labels {ref[first]}). Pass drop_multilabel=True to drop them (Ma & Liang) "
                "or multilabel=True for multi-hot targets."
            )
        keep = np.nonzero(~multi)[0]
        if keep.size == 0:
            raise DataError("every selected CPSC 2018 record is multi-label; "
                            "nothing is left with drop_multilabel=True.")
    first_label = np.asarray([labs[i][0] - 1 for i in keep], dtype=np.int64)
    if split == "all":
        idx = keep
    else:
        parts = train_val_test(first_label, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
        idx = keep[parts[split]]
    if idx.size == 0:
        raise DataError(f"CPSC 2018 split {split!r} is empty for the {len(keep)} usable records; "
                        "use split='all' or change test_fraction / val_fraction.")
    sig, off = arrays["signal"], arrays["offsets"]
    segs = []
    for i in idx:
        seg = sig[:, off[i] : off[i + 1]]
        if scale == "maxabs":
            m = arrays["maxabs"][i]
            seg = seg / np.where(m > 0, m, 1.0).astype(np.float32)[:, None]
        segs.append(seg)
    length = None if seconds is None else int(round(seconds * opts["fs"]))
    x, mask = stack_fixed(segs, length=length, pad=pad)
    if multilabel:
        y = torch.zeros((len(idx), len(CLASSES)), dtype=torch.float32)
        for row, i in enumerate(idx):
            y[row, [lab - 1 for lab in labs[i]]] = 1.0
    else:
        y = torch.as_tensor([labs[i][0] - 1 for i in idx], dtype=torch.long)
    meta = DatasetMeta(
        name="cpsc2018",
        fs=opts["fs"],
        classes=CLASSES,
        units="max-abs scaled [-1, 1]" if scale == "maxabs" else "mV",
        ids=ids[idx],
        leads=tuple(opts["leads"]),
        split=split,
        fingerprint=str(arrays["fingerprint"]),
        options={**opts, "scale": scale, "seconds": seconds, "length": int(x.shape[-1]), "pad": pad,
                 "multilabel": multilabel, "drop_multilabel": drop_multilabel,
                 "dropped_multilabel": int(len(ids) - len(keep)), "test_fraction": test_fraction,
                 "val_fraction": val_fraction, "seed": seed,
                 "records": None if records is None else [str(r) for r in records]},
        multilabel=multilabel,
    )
    return ECGDataset(torch.from_numpy(x), y, meta, torch.from_numpy(mask))
