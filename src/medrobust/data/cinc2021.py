"""PhysioNet/Computing in Cardiology Challenge 2021 12-lead reader (WFDB, SNOMED-CT labels).

Reyna, M. A. et al. "Will two do? Varying dimensions in electrocardiography: the
PhysioNet/Computing in Cardiology Challenge 2021", Computing in Cardiology 48, 2021. Licence: CC BY 4.0.

Layout: one WFDB record per ECG, ``NAME.hea`` + ``NAME.mat`` (variable ``val``, 12 x n int16,
gain 1000/mV). Headers are parsed with the ``wfdb`` package; the signal is read with
``scipy.io.loadmat`` (so a file without ``val`` is an error rather than raw bytes read at the
header's byte offset) and calibrated with the header's gains and baselines,
``(val - baseline) / gain``. Most sources are sampled at 500 Hz (INCART 257 Hz, PTB 1000 Hz:
resampled to ``fs``). Diagnoses are SNOMED-CT codes in the header comment
``# Dx: 164889003,59118001``. The challenge's training data spreads the records over sub-folders
(``recursive=True`` finds them).

Labels are multi-hot over ``codes`` (default: every code present, most frequent first, ties by
code). Class names are the challenge's abbreviations where :data:`SNOMED_ABBREVIATIONS` knows the
code (the scored table ``dx_mapping_scored.csv`` of the 2021 evaluation repository and the
unscored codes common in the data), else the code itself. ``merge_equivalent=True`` maps the four
code pairs that the challenge scores as one diagnosis onto one code (:data:`EQUIVALENT_CODES`).

Splits: seeded and stratified on each record's first listed code; ``test_fraction`` (0.2) test,
``val_fraction`` (0.1) of the rest validation.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import resample
from medrobust.data.cache import cache_path, file_fingerprint, file_stats, load_cached, save_cached
from medrobust.data.cpsc2018 import LEADS_12, resolve_leads
from medrobust.data.registry import register_dataset
from medrobust.data.signal_length import PAD_MODES, stack_fixed
from medrobust.data.splits import train_val_test
from medrobust.errors import ConfigError, DataError
from medrobust.paths import resolve_dataset_dir

CINC2021_FS = 500.0

# SNOMED-CT code -> abbreviation, from the challenge's dx_mapping_scored.csv (all 30 scored rows)
# and dx_mapping_unscored.csv (a selection of the more frequent unscored codes).
SNOMED_ABBREVIATIONS: dict[str, str] = {
    # scored
    "164889003": "AF", "164890007": "AFL", "6374002": "BBB", "426627000": "Brady", "733534002": "CLBBB",
    "713427006": "CRBBB", "270492004": "IAVB", "713426002": "IRBBB", "39732003": "LAD", "445118002": "LAnFB",
    "164909002": "LBBB", "251146004": "LQRSV", "698252002": "NSIVCB", "426783006": "NSR", "284470004": "PAC",
    "10370003": "PR", "365413008": "PRWP", "427172004": "PVC", "164947007": "LPR", "111975006": "LQT",
    "164917005": "QAb", "47665007": "RAD", "59118001": "RBBB", "427393009": "SA", "426177001": "SB",
    "427084000": "STach", "63593006": "SVPB", "164934002": "TAb", "59931005": "TInv", "17338001": "VPB",
    # unscored, frequent
    "164951009": "abQRS", "251187003": "AED", "426434006": "AnMIs", "54329005": "AnMI", "713422000": "ATach",
    "233917008": "AVB", "251170000": "BPAC", "27885002": "CHB", "428417006": "ERe", "195042002": "IIAVB",
    "425419005": "IIs", "251120003": "ILBBB", "253352002": "LAA", "67741000119109": "LAE", "425623009": "LIs",
    "445211001": "LPFB", "164873001": "LVH", "55827005": "LVHV", "164865005": "MI", "164861001": "MIs",
    "428750005": "NSSTTA", "164867002": "OldMI", "89792004": "RVH", "55930002": "STC", "429622005": "STD",
    "164931005": "STE", "164930006": "STIAb", "426761007": "SVT", "164884008": "VEB", "74390002": "WPW",
}
# Pairs the challenge scores as the same diagnosis: code -> the code it is merged into.
EQUIVALENT_CODES: dict[str, str] = {
    "733534002": "164909002",  # CLBBB -> LBBB
    "713427006": "59118001",  # CRBBB -> RBBB
    "63593006": "284470004",  # SVPB -> PAC
    "17338001": "427172004",  # VPB -> PVC
}


class MissingLabelError(DataError):
    """A CinC 2021 header without a ``# Dx:`` comment (skipped with ``missing_dx="skip"``)."""


def find_cinc2021(root: str | os.PathLike[str] | None, *, recursive: bool = False) -> Path:
    """Locate the folder holding the ``.hea`` records (or ``root/cinc2021``)."""
    return resolve_dataset_dir(root, "cinc2021", "**/*.hea" if recursive else "*.hea")


def parse_dx(comments: Sequence[str], path: Path) -> tuple[str, ...]:
    """SNOMED-CT codes of the ``Dx:`` header comment (order kept, duplicates removed).

    Raises
    ------
    DataError
        No ``Dx:`` comment, an empty one, or a code that is not a number.
    """
    for c in comments:
        if c.lower().startswith("dx:"):
            codes = tuple(dict.fromkeys(v.strip() for v in c.split(":", 1)[1].split(",") if v.strip()))
            if not codes:
                break
            bad = [v for v in codes if not v.isdigit()]
            if bad:
                raise DataError(f"{path}: '# Dx:' holds {bad} which are not SNOMED-CT codes; fix the header comment.")
            return codes
    raise MissingLabelError(f"record {path} has no label: its header lacks a '# Dx: <SNOMED codes>' comment. "
                    "Add the diagnosis codes, or pass missing_dx='skip' to leave such records out.")


def _wfdb() -> Any:
    import wfdb  # imported lazily: it pulls pandas and matplotlib

    return wfdb


def read_cinc2021_record(
    hea: Path, *, leads: Sequence[str] = LEADS_12
) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
    """Read a record: ``(leads, n)`` float64 mV in the requested lead order, rate, Dx codes, lead names.

    Raises
    ------
    DataError
        Unreadable header or signal file, missing leads, a length that disagrees with the header,
        non-finite samples, or no ``Dx`` comment.
    """
    from scipy.io import loadmat

    wfdb = _wfdb()
    stem = str(hea.with_suffix(""))
    try:
        header = wfdb.rdheader(stem)
    except Exception as exc:  # wfdb raises many types on malformed headers
        raise DataError(f"cannot parse WFDB header {hea}: {exc}. Re-download the record.") from exc
    codes = parse_dx(header.comments or [], hea)
    names = [str(n) for n in (header.sig_name or [])]
    lost = [ld for ld in leads if ld not in names]
    if lost:
        raise DataError(f"{hea} has no lead(s) {lost} (leads: {names}); choose leads=... that every record has.")
    for f in sorted(set(header.file_name or [])):
        if not (hea.parent / f).is_file():
            raise DataError(f"record {hea.stem}: signal file {hea.parent / f} named by its header is missing; "
                            "re-download the record or remove its .hea.")
    files = sorted(set(header.file_name or []))
    if len(files) != 1 or not files[0].endswith(".mat"):
        raise DataError(f"{hea} stores its signals in {files}; CinC 2021 records keep all leads in one NAME.mat file.")
    mat = hea.parent / files[0]
    try:
        content = loadmat(mat)
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError ... on corrupt files
        raise DataError(f"cannot read {mat}: {exc}. The file is truncated or corrupt; re-download the record.") from exc
    if "val" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{mat} has no variable 'val' (found {found}); CinC 2021 records store the signals as "
                        "'val' (leads x n). Re-download the record.")
    val = np.asarray(content["val"])
    if val.ndim != 2 or val.shape[0] != header.n_sig:
        raise DataError(f"{mat}: 'val' has shape {val.shape}; {hea} declares {header.n_sig} signals. "
                        "Re-download the record.")
    if val.shape[1] != header.sig_len:
        raise DataError(f"length mismatch for {hea.stem}: {hea} says {header.sig_len} samples, {mat} holds "
                        f"{val.shape[1]}. Re-download the record.")
    gain = np.asarray([g if g else 200.0 for g in header.adc_gain], dtype=np.float64)[:, None]
    baseline = np.asarray(header.baseline, dtype=np.float64)[:, None]
    sig = (val.astype(np.float64) - baseline) / gain
    if not np.isfinite(sig).all():
        raise DataError(f"{hea.stem}: the signal contains NaN or inf samples; repair or exclude the record.")
    out = sig[[names.index(ld) for ld in leads]]
    return out, float(header.fs), codes, tuple(names)


def list_records(folder: Path, *, recursive: bool) -> list[Path]:
    """``.hea`` files of the folder (sorted by record name); duplicate record names are an error."""
    heas = sorted(folder.rglob("*.hea") if recursive else folder.glob("*.hea"), key=lambda p: (p.stem, str(p)))
    seen: dict[str, Path] = {}
    for h in heas:
        if h.stem in seen:
            raise DataError(f"record name {h.stem} appears twice ({seen[h.stem]} and {h}); keep one copy.")
        seen[h.stem] = h
    return heas


def build_cinc2021(
    root: str | os.PathLike[str] | None = None,
    *,
    records: Sequence[str] | None = None,
    leads: str | Sequence[str] = "12",
    fs: float = CINC2021_FS,
    truncate_seconds: float | None = None,
    recursive: bool = False,
    missing_dx: str = "error",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read (or load from the cache) the records at ``fs``.

    Returns
    -------
    arrays, options
        ``signal`` ``(leads, total)`` float32 mV, ``offsets``, ``ids``, ``dx`` (comma-joined codes),
        ``native_fs``, ``native_length``, ``fingerprint``; and the options used.
    """
    if not (fs > 0 and np.isfinite(fs)):
        raise ConfigError(f"fs must be a positive rate in Hz, got {fs}.")
    if missing_dx not in ("error", "skip"):
        raise ConfigError(f"missing_dx must be 'error' or 'skip', got {missing_dx!r}.")
    names = resolve_leads(leads)
    folder = find_cinc2021(root, recursive=recursive)
    heas = list_records(folder, recursive=recursive)
    if records is not None:
        by_name = {h.stem: h for h in heas}
        unknown = [str(r) for r in records if str(r) not in by_name]
        if unknown:
            raise DataError(f"record(s) {unknown[:5]} have no .hea file in {folder}; check the names "
                            "(or pass recursive=True for the challenge's sub-folders).")
        heas = [by_name[str(r)] for r in records]
    keep_n = None if truncate_seconds is None else int(round(truncate_seconds * fs))
    paths = [p for h in heas for p in (h, h.with_suffix(".mat"))]
    missing_mat = [p for p in paths if not p.is_file()]
    if missing_mat:
        raise DataError(f"record {missing_mat[0].stem}: {missing_mat[0]} is missing; each record needs .hea and .mat. "
                        "Re-download it or remove its .hea.")
    key = {"dataset": "cinc2021", "files": [str(h.relative_to(folder)) for h in heas], "stats": file_stats(paths),
           "leads": names, "fs": float(fs), "truncate": keep_n, "missing_dx": missing_dx}
    path = cache_path("cinc2021", key, cache_dir)
    arrays = load_cached(path) if use_cache else None
    if arrays is None:
        sigs, ids, dx, rates, native = [], [], [], [], []
        skipped = 0
        for h in heas:
            try:
                sig, rate, codes, _ = read_cinc2021_record(h, leads=names)
            except MissingLabelError:
                if missing_dx == "error":
                    raise
                skipped += 1
                continue
            native.append(sig.shape[1])
            sig = resample(sig, rate, float(fs))
            sigs.append(sig[:, :keep_n].astype(np.float32))
            ids.append(h.stem)
            dx.append(",".join(codes))
            rates.append(rate)
        if not sigs:
            raise DataError(f"no labelled CinC 2021 record in {folder}.")
        lengths = np.asarray([s.shape[1] for s in sigs], dtype=np.int64)
        arrays = {
            "signal": np.concatenate(sigs, axis=1),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "ids": np.asarray(ids, dtype="U32"),
            "dx": np.asarray(dx),
            "native_fs": np.asarray(rates, dtype=np.float64),
            "native_length": np.asarray(native, dtype=np.int64),
            "skipped_unlabelled": np.asarray(skipped),
            "fingerprint": np.asarray(file_fingerprint(paths)),
        }
        if use_cache:
            save_cached(path, arrays)
    opts = {"leads": list(names), "fs": float(fs), "truncate_seconds": truncate_seconds, "recursive": recursive,
            "missing_dx": missing_dx, "root": str(folder), "n_records": int(len(arrays["ids"])),
            "skipped_unlabelled": int(arrays["skipped_unlabelled"])}
    return arrays, opts


def class_name(code: str) -> str:
    """The challenge abbreviation of a SNOMED-CT code, or the code itself when not in the table."""
    return SNOMED_ABBREVIATIONS.get(code, code)


@register_dataset("cinc2021")
def load_cinc2021(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    codes: Sequence[str] | None = None,
    merge_equivalent: bool = False,
    leads: str | Sequence[str] = "12",
    fs: float = CINC2021_FS,
    seconds: float | None = 10.0,
    truncate_seconds: float | None = None,
    pad: str = "right",
    scale: str = "none",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    records: Sequence[str] | None = None,
    recursive: bool = False,
    missing_dx: str = "error",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ECGDataset:
    """CinC 2021 records of one split with multi-hot SNOMED-CT labels.

    Parameters
    ----------
    root
        Folder with the ``.hea``/``.mat`` records (or its parent holding ``cinc2021/``).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    codes
        SNOMED-CT codes that form the classes, in order (codes of a record outside the list are
        ignored); ``None``: every code present, most frequent first.
    merge_equivalent
        Merge the challenge's equivalent code pairs (CLBBB->LBBB, CRBBB->RBBB, SVPB->PAC, VPB->PVC).
    leads
        ``"12"``, ``"8"`` or lead names.
    fs
        Output rate; records at other rates are resampled (polyphase).
    seconds
        Output length ``round(seconds * fs)`` (longer records keep their first samples); ``None``: the longest record.
    truncate_seconds
        Drop samples after this time when reading (bounds memory for long records); ``None`` keeps all.
    pad
        ``"right"``, ``"left"`` or ``"symmetric"`` zero padding.
    scale
        ``"none"`` (mV) or ``"maxabs"`` (each lead divided by its max |value| in the kept window).
    test_fraction, val_fraction, seed
        Seeded split stratified on each record's first code.
    records, recursive, missing_dx
        Record names to read; search sub-folders; ``"skip"`` records without ``# Dx`` instead of raising.
    cache_dir, use_cache
        Cache of the read signals.

    Returns
    -------
    ECGDataset
        ``y`` ``(N, K)`` float multi-hot, ``meta.multilabel=True``, ``meta.options["codes"]`` the codes.
    """
    if pad not in PAD_MODES:
        raise ConfigError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    if scale not in ("none", "maxabs"):
        raise ConfigError(f"scale must be 'none' or 'maxabs', got {scale!r}.")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"seconds must be > 0 or None, got {seconds}.")
    if not (0.0 < test_fraction < 1.0 and 0.0 <= val_fraction < 1.0):
        raise ConfigError(f"need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got {test_fraction}, {val_fraction}.")
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}.")
    arrays, opts = build_cinc2021(root, records=records, leads=leads, fs=fs, truncate_seconds=truncate_seconds,
                                  recursive=recursive, missing_dx=missing_dx, cache_dir=cache_dir, use_cache=use_cache)
    ids = arrays["ids"]
    rec_codes = [str(d).split(",") for d in arrays["dx"]]
    if merge_equivalent:
        rec_codes = [list(dict.fromkeys(EQUIVALENT_CODES.get(c, c) for c in cs)) for cs in rec_codes]
    if codes is None:
        freq = Counter(c for cs in rec_codes for c in cs)
        class_codes = sorted(freq, key=lambda c: (-freq[c], int(c)))
    else:
        class_codes = [str(c) for c in codes]
        if not class_codes or len(set(class_codes)) != len(class_codes) or not all(c.isdigit() for c in class_codes):
            raise ConfigError(f"codes must be distinct SNOMED-CT codes (digits), got {codes!r}.")
        if merge_equivalent:
            merged = [c for c in class_codes if c in EQUIVALENT_CODES]
            if merged:
                raise ConfigError(f"codes {merged} are merged away by merge_equivalent=True; list "
                                  f"{[EQUIVALENT_CODES[c] for c in merged]} instead.")
    col = {c: k for k, c in enumerate(class_codes)}
    y_all = np.zeros((len(ids), len(class_codes)), dtype=np.float32)
    for i, cs in enumerate(rec_codes):
        for c in cs:
            if c in col:
                y_all[i, col[c]] = 1.0
    strata = np.asarray([col.get(cs[0], -1) for cs in rec_codes], dtype=np.int64)
    if split == "all":
        idx = np.arange(len(ids))
    else:
        idx = train_val_test(strata, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)[split]
    if idx.size == 0:
        raise DataError(f"CinC 2021 split {split!r} is empty for the {len(ids)} records; "
                        "use split='all' or change test_fraction / val_fraction.")
    sig, off = arrays["signal"], arrays["offsets"]
    length = None if seconds is None else int(round(seconds * fs))
    segs = []
    for i in idx:
        seg = sig[:, off[i] : off[i + 1]]
        if length is not None:
            seg = seg[:, :length]
        if scale == "maxabs":
            m = np.abs(seg).max(axis=1) if seg.shape[1] else np.zeros(seg.shape[0], dtype=np.float32)
            seg = seg / np.where(m > 0, m, 1.0).astype(np.float32)[:, None]
        segs.append(seg)
    x, mask = stack_fixed(segs, length=length, pad=pad)
    meta = DatasetMeta(
        name="cinc2021",
        fs=float(fs),
        classes=tuple(class_name(c) for c in class_codes),
        units="max-abs scaled [-1, 1]" if scale == "maxabs" else "mV",
        ids=ids[idx],
        leads=tuple(opts["leads"]),
        split=split,
        fingerprint=str(arrays["fingerprint"]),
        options={**opts, "codes": class_codes, "merge_equivalent": merge_equivalent, "seconds": seconds,
                 "length": int(x.shape[-1]), "pad": pad, "scale": scale, "test_fraction": test_fraction,
                 "val_fraction": val_fraction, "seed": seed,
                 "records": None if records is None else [str(r) for r in records]},
        multilabel=True,
    )
    return ECGDataset(torch.from_numpy(x), torch.from_numpy(y_all[idx]), meta, torch.from_numpy(mask))
