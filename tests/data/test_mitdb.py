"""MIT-BIH reader: counts against the annotations, AAMI mapping, splits, cache, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from medrobust.data import load_dataset
from medrobust.data.beats import AAMI_CLASSES, AAMI_MAP
from medrobust.data.cache import CacheWarning
from medrobust.data.mitdb import DS1, DS2, PACED_RECORDS, UnknownSymbolsWarning, build_mitdb, read_beats
from medrobust.errors import ConfigError, DataError

# Beat-annotation totals over all 48 records (shared/data/README.md).
README_SYMBOL_COUNTS = {"N": 75052, "L": 8075, "R": 7259, "V": 7130, "/": 7028, "A": 2546, "f": 982, "F": 803,
                        "j": 229, "a": 150, "E": 106, "J": 83, "Q": 33, "e": 16, "S": 2}
README_AAMI = {"N": {"N", "L", "R", "e", "j"}, "S": {"A", "a", "J", "S"}, "V": {"V", "E"}, "F": {"F"},
               "Q": {"/", "f", "Q"}}


@pytest.fixture(scope="module")
def mitdb(shared_data: Path) -> Path:
    return shared_data / "mitdb"


def test_aami_mapping_matches_the_standard() -> None:
    for cls, symbols in README_AAMI.items():
        for s in symbols:
            assert AAMI_MAP[s] == cls
    assert AAMI_CLASSES == ("N", "S", "V", "F", "Q")


@pytest.mark.parametrize("record", ["100", "208", "232"])
def test_per_record_counts_equal_annotation_counts(mitdb: Path, session_cache: Path, record: str) -> None:
    ann = wfdb.rdann(str(mitdb / record), "atr")
    expected = np.zeros(5, dtype=int)
    for sym in ann.symbol:
        for k, cls in enumerate(AAMI_CLASSES):
            if sym in README_AAMI[cls]:
                expected[k] += 1
    arrays, _ = build_mitdb(mitdb, records=[record], cache_dir=session_cache)
    assert np.array_equal(np.bincount(arrays["y"], minlength=5), expected)
    assert (arrays["ids"] == record).all()


def test_record_100_hand_counts(mitdb: Path) -> None:
    # PhysioNet's table for record 100: 2239 normal, 33 atrial premature, 1 PVC.
    _, labels, skipped = read_beats(mitdb, "100")
    assert skipped == {}
    assert np.bincount(labels, minlength=5).tolist() == [2239, 33, 1, 0, 0]


def test_all_records_total_equals_readme(shared_data: Path, session_cache: Path) -> None:
    full = load_dataset("mitdb", root=shared_data, split="all", cache_dir=session_cache)
    counts = dict(zip(full.meta.classes, full.class_counts().tolist()))
    expected = {c: sum(README_SYMBOL_COUNTS[s] for s in syms) for c, syms in README_AAMI.items()}
    assert counts == expected
    assert len(full) == sum(README_SYMBOL_COUNTS.values()) == 109494
    assert full.x.shape == (109494, 1, 187)
    assert float(full.x.min()) >= 0.0 and float(full.x.max()) <= 1.0
    assert full.meta.fs == 125.0 and full.meta.units == "normalized [0, 1]"
    assert set(full.meta.options["leads_used"]) == {"MLII", "V5"}  # 102 and 104 have no MLII


def _keys(ds) -> set[tuple[str, int]]:
    return set(zip(ds.meta.ids.tolist(), ds.meta.positions.tolist()))


def test_intra_split_is_disjoint_stratified_and_complete(shared_data: Path, session_cache: Path) -> None:
    parts = {s: load_dataset("mitdb", root=shared_data, split=s, cache_dir=session_cache) for s in ("train", "val", "test")}
    keys = {s: _keys(d) for s, d in parts.items()}
    assert all(len(keys[s]) == len(parts[s]) for s in parts)  # no duplicate beat inside a split
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert sum(len(d) for d in parts.values()) == 109494
    total = sum(d.class_counts() for d in parts.values())
    frac = parts["test"].class_counts() / total
    assert np.allclose(frac, 0.2, atol=0.005)
    again = load_dataset("mitdb", root=shared_data, split="test", cache_dir=session_cache)
    assert _keys(again) == keys["test"]
    other = load_dataset("mitdb", root=shared_data, split="test", cache_dir=session_cache, seed=1)
    assert _keys(other) != keys["test"]


def test_inter_patient_split_has_no_shared_record(shared_data: Path, session_cache: Path) -> None:
    kw = dict(root=shared_data, scheme="inter", cache_dir=session_cache)
    train = load_dataset("mitdb", split="train", **kw)
    val = load_dataset("mitdb", split="val", **kw)
    test = load_dataset("mitdb", split="test", **kw)
    assert set(train.meta.ids) | set(val.meta.ids) <= set(DS1)
    assert set(test.meta.ids) == set(DS2)
    assert not (set(train.meta.ids) | set(val.meta.ids) | set(test.meta.ids)) & set(PACED_RECORDS)
    assert not _keys(train) & _keys(val)


def test_native_format_in_mv(mitdb: Path, session_cache: Path) -> None:
    ds = load_dataset("mitdb", root=mitdb, split="all", records=["100"], format="native", cache_dir=session_cache)
    assert ds.meta.units == "mV" and ds.meta.fs == 360.0
    assert ds.x.shape[1:] == (1, 90 + 162)
    # The R peak sits at sample 90 of every window: it is (close to) the window's maximum for normal beats.
    normal = ds.x[ds.y == 0, 0]
    assert float((normal.argmax(1) - 90).abs().float().median()) <= 3
    down = load_dataset("mitdb", root=mitdb, split="all", records=["100"], format="native", fs=250,
                        cache_dir=session_cache)
    assert down.meta.fs == 250.0 and down.x.shape[-1] == round(0.25 * 250) + round(0.45 * 250)


def test_oversampling_balances_classes(mitdb: Path, session_cache: Path) -> None:
    ds = load_dataset("mitdb", root=mitdb, split="train", records=["208"], balance="oversample",
                      cache_dir=session_cache)
    counts = ds.class_counts()
    present = counts[counts > 0]
    assert (present == present.max()).all() and ds.meta.class_resampled


def test_cache_is_reused_and_never_half_written(mitdb: Path, tmp_path: Path) -> None:
    a, _ = build_mitdb(mitdb, records=["100"], cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    files[0].write_bytes(files[0].read_bytes()[:100])  # simulate a corrupt cache file
    with pytest.warns(CacheWarning, match="unreadable"):
        b, _ = build_mitdb(mitdb, records=["100"], cache_dir=tmp_path)
    assert np.array_equal(a["x"], b["x"])
    assert [f.name for f in tmp_path.iterdir()] == [files[0].name]  # rebuilt in place, no temp leftovers


# ---------------------------------------------------------------- bad input
def _copy_record(mitdb: Path, dst: Path, record: str = "100") -> Path:
    dst.mkdir(exist_ok=True)
    for ext in ("hea", "dat", "atr"):
        shutil.copy(mitdb / f"{record}.{ext}", dst / f"{record}.{ext}")
    return dst


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found.*--data-dir"):
        load_dataset("mitdb", root=tmp_path / "nowhere")


def test_missing_record_file(mitdb: Path, tmp_path: Path) -> None:
    d = _copy_record(mitdb, tmp_path / "db")
    (d / "100.atr").unlink()
    with pytest.raises(DataError, match=r"missing file .*100\.atr"):
        build_mitdb(d, records=["100"], cache_dir=tmp_path / "c")


def test_truncated_signal_file(mitdb: Path, tmp_path: Path) -> None:
    d = _copy_record(mitdb, tmp_path / "db")
    data = (d / "100.dat").read_bytes()
    (d / "100.dat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"100\.dat.*(truncated|corrupt)"):
        build_mitdb(d, records=["100"], cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").glob("*")) if (tmp_path / "c").exists() else True


def test_corrupt_header(mitdb: Path, tmp_path: Path) -> None:
    d = _copy_record(mitdb, tmp_path / "db")
    (d / "100.hea").write_text("this is not a header\n")
    with pytest.raises(DataError, match=r"corrupt WFDB header .*100\.hea"):
        build_mitdb(d, records=["100"], cache_dir=tmp_path / "c")


def test_sampling_rate_mismatch(mitdb: Path, tmp_path: Path) -> None:
    d = _copy_record(mitdb, tmp_path / "db")
    lines = (d / "100.hea").read_text().splitlines()
    first = lines[0].split()
    first[2] = "250"
    (d / "100.hea").write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="sampling-rate mismatch.*250.*360"):
        build_mitdb(d, records=["100"], cache_dir=tmp_path / "c")


def _write_record(folder: Path, signal: np.ndarray, symbols: list[str], samples: list[int], custom=None) -> None:
    folder.mkdir(exist_ok=True)
    cwd = Path.cwd()
    try:
        import os

        os.chdir(folder)
        wfdb.wrsamp("900", fs=360, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None], fmt=["212"],
                    adc_gain=[200.0], baseline=[0])
        wfdb.wrann("900", "atr", np.asarray(samples), symbol=symbols, custom_labels=custom)
    finally:
        os.chdir(cwd)


def test_unknown_beat_symbol(tmp_path: Path) -> None:
    sig = np.sin(np.arange(7200) / 20.0) * 0.5
    custom = pd.DataFrame({"label_store": [45], "symbol": ["Z"], "description": ["made up"]})
    _write_record(tmp_path / "db", sig, ["N", "Z", "N"], [1000, 2000, 3000], custom)
    with pytest.raises(DataError, match=r"unknown annotation symbol 'Z'.*900\.atr.*unknown_symbols='skip'"):
        build_mitdb(tmp_path / "db", records=["900"], cache_dir=tmp_path / "c")
    with pytest.warns(UnknownSymbolsWarning, match=r"skipped 1 annotation.*unknown_symbols='skip'.*'900': 1"):
        arrays, _ = build_mitdb(tmp_path / "db", records=["900"], cache_dir=tmp_path / "c", unknown_symbols="skip")
    assert len(arrays["y"]) == 2 and arrays["skipped"].tolist() == [1]


def test_nan_in_signal(tmp_path: Path) -> None:
    sig = np.sin(np.arange(7200) / 20.0) * 0.5
    sig[1234] = np.nan
    _write_record(tmp_path / "db", sig, ["N", "N"], [1000, 3000])
    with pytest.raises(DataError, match=r"record 900: 1 NaN/inf samples .*first at sample 1234"):
        build_mitdb(tmp_path / "db", records=["900"], cache_dir=tmp_path / "c")


def test_bad_options(mitdb: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        load_dataset("mitdb", root=mitdb, format="wavelet")
    with pytest.raises(ConfigError, match="scheme"):
        load_dataset("mitdb", root=mitdb, scheme="cross")
    with pytest.raises(ConfigError, match="unknown dataset 'mitbih'"):
        load_dataset("mitbih")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("mitdb", root=mitdb, split="training")


# ---------------------------------------------------------------- issue 21: corrupt annotations, empty splits
def test_random_bytes_annotation_file_is_reported_as_corrupt(mitdb: Path, tmp_path: Path) -> None:
    """Random bytes in 100.atr used to surface as "unknown annotation symbol nan"; now the file is named corrupt,
    with and without unknown_symbols='skip' (which used to build beats with random labels)."""
    d = _copy_record(mitdb, tmp_path / "db")
    for seed in range(4):
        (d / "100.atr").write_bytes(np.random.default_rng(seed).bytes(2000))
        for mode in ("error", "skip"):
            with pytest.raises(DataError) as info:
                build_mitdb(d, records=["100"], cache_dir=tmp_path / "c", unknown_symbols=mode)
            msg = str(info.value)
            assert msg.startswith("corrupt annotation file") and "100.atr" in msg and "nan" not in msg
            assert "\n" not in msg


def test_annotation_beyond_the_signal_is_corrupt(tmp_path: Path) -> None:
    sig = np.sin(np.arange(7200) / 20.0) * 0.5
    _write_record(tmp_path / "db", sig, ["N", "N"], [1000, 9000])
    with pytest.raises(DataError, match=r"corrupt annotation file .*900\.atr: .*outside the signal \(0\.\.7200\)"):
        build_mitdb(tmp_path / "db", records=["900"], cache_dir=tmp_path / "c")


def test_skip_refuses_to_leave_an_empty_split(tmp_path: Path) -> None:
    """Mostly unknown symbols skipped: 6 beats is too few for a test split of 20 % ... of each class."""
    sig = np.sin(np.arange(7200) / 20.0) * 0.5
    custom = pd.DataFrame({"label_store": [45], "symbol": ["Z"], "description": ["made up"]})
    syms = ["N", "Z", "Z", "V", "Z", "Z"]
    _write_record(tmp_path / "db", sig, syms, [600, 1500, 2500, 3500, 4500, 5500], custom)
    with pytest.warns(UnknownSymbolsWarning, match="skipped 4 annotation"):
        with pytest.raises(DataError) as info:
            load_dataset("mitdb", root=tmp_path / "db", records=["900"], split="val", unknown_symbols="skip",
                         cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert "'val' split would be empty" in msg and "unknown_symbols='skip' dropped 4" in msg and "\n" not in msg


@pytest.mark.parametrize("options, match", [
    ({"records": []}, r"records=\[\] is not allowed: records must be a non-empty list"),
    ({"bogus_key": 1}, r"unknown option bogus_key=1; allowed: .*records"),
    ({"fs": "ten"}, r"fs='ten' is not allowed: fs must be a number or null"),
    ({"use_cache": "yes"}, r"use_cache='yes' is not allowed: use_cache must be true or false"),
])
def test_options_are_checked_before_any_file_is_read(options: dict, match: str, tmp_path: Path) -> None:
    # root does not exist: a type/key error must come first, before the folder is even looked for
    with pytest.raises(ConfigError, match=match):
        load_dataset("mitdb", root=tmp_path / "nowhere", **options)


def test_scalar_record_is_one_record(mitdb: Path, session_cache: Path) -> None:
    one = load_dataset("mitdb", root=mitdb, split="all", records=100, cache_dir=session_cache)
    assert set(one.meta.ids.tolist()) == {"100"} and one.meta.options["records"] == ["100"]
