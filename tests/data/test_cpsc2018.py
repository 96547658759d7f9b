"""CPSC 2018 reader on the 10 sample records: labels, leads, scaling, left padding with masks,
single- and multi-label modes and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from medrobust.data import cpsc2018 as cp
from medrobust.data import load_dataset
from medrobust.errors import ConfigError, DataError

# Rows of the challenge REFERENCE.csv for the 10 sample records (label 1..9).
SAMPLE_LABELS = {"A1980": 6, "A1981": 8, "A1982": 3, "A1983": 1, "A1984": 8, "A1985": 8, "A1986": 5,
                 "A1987": 5, "A1988": 3, "A1989": 3}


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "cpsc2018_sample"


def _load(folder: Path, cache: Path, **kw: object):
    kw.setdefault("split", "all")
    return load_dataset("cpsc2018", root=folder, cache_dir=cache, **kw)


def _raw(folder: Path, rec: str) -> np.ndarray:
    return scipy.io.loadmat(folder / f"{rec}.mat")["ECG"]["data"][0, 0]


def test_labels_parsed_for_every_sample_record(folder: Path, session_cache: Path) -> None:
    ref = cp.read_reference(folder)
    assert len(ref) == 6877 and ref["A0001"] == (5,)
    # 477 rows fill Second_label, but A0953 repeats its first label ("6,6"): 476 records are multi-label
    assert ref["A0953"] == (6,) and sum(len(v) > 1 for v in ref.values()) == 476
    ds = _load(folder, session_cache)
    assert ds.meta.ids.tolist() == sorted(SAMPLE_LABELS)
    assert [ds.meta.classes[int(y)] for y in ds.y] == [cp.CLASSES[SAMPLE_LABELS[r] - 1] for r in ds.meta.ids]
    assert ds.meta.options["skipped_missing"] == 6867 and ds.meta.fs == 500.0 and not ds.meta.multilabel
    assert cp.CLASSES == ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")


def test_values_leads_and_left_padding(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache)  # 12 leads, mV, 33,792 samples, left padding
    eight = _load(folder, session_cache, leads="8")
    assert ds.x.shape == (10, 12, 33792) and eight.x.shape == (10, 8, 33792)
    assert eight.meta.leads == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    for i, rec in enumerate(ds.meta.ids):
        raw = _raw(folder, rec)
        n = min(raw.shape[1], 30720)
        assert int(ds.mask[i].sum()) == n and ds.mask[i, 0, -n:].all() and not ds.mask[i, 0, :-n].any()
        np.testing.assert_allclose(ds.x[i, :, -n:].numpy(), raw[:, :n], rtol=1e-6, atol=1e-6)
        assert not ds.x[i, :, :-n].any()
        np.testing.assert_array_equal(eight.x[i].numpy(), ds.x[i, [0, 1, 6, 7, 8, 9, 10, 11]].numpy())


def test_truncation_to_30720(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, truncate_seconds=10.0, seconds=12.0)  # 5,000 kept of 6,000
    assert ds.x.shape[-1] == 6000
    for i, rec in enumerate(ds.meta.ids):
        raw = _raw(folder, rec)
        n = min(raw.shape[1], 5000)
        np.testing.assert_allclose(ds.x[i, :, -n:].numpy(), raw[:, :n], rtol=1e-6, atol=1e-6)
    assert cp.MA_LIANG_TRUNCATE_S * 500 == 30720 and cp.MA_LIANG_SECONDS * 500 == 33792


def test_maxabs_scaling_per_lead(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, leads="8", scale="maxabs")
    assert ds.meta.units == "max-abs scaled [-1, 1]"
    peak = ds.x.abs().amax(-1)
    assert torch_allclose(peak, 1.0)
    raw = _raw(folder, "A1983")[[0, 1, 6, 7, 8, 9, 10, 11]]
    i = ds.meta.ids.tolist().index("A1983")
    n = raw.shape[1]
    np.testing.assert_allclose(ds.x[i, :, -n:].numpy(), raw / np.abs(raw).max(1, keepdims=True), atol=1e-6)


def torch_allclose(t, value: float) -> bool:
    return bool(((t - value).abs() < 1e-6).all())


def test_variable_length_and_resampling(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, seconds=None, pad="right", fs=250)
    lengths = [int(np.ceil(_raw(folder, r).shape[1] / 2)) for r in ds.meta.ids]
    assert ds.meta.fs == 250.0 and ds.x.shape[-1] == max(lengths)
    assert ds.mask.sum((1, 2)).long().tolist() == lengths


def test_splits_cover_all_records(folder: Path, session_cache: Path) -> None:
    kw = dict(test_fraction=0.3, val_fraction=0.5, seconds=1.0)
    parts = [_load(folder, session_cache, split=s, **kw).meta.ids.tolist() for s in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(SAMPLE_LABELS) and all(parts)


# -- multi-label rows and bad input on broken copies ----------------------------------------------
@pytest.fixture()
def copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cpsc2018"
    shutil.copytree(folder, out)
    return out


def _set_row(folder: Path, rec: str, row: str) -> None:
    ref = folder / "REFERENCE.csv"
    lines = [row if ln.startswith(rec + ",") else ln for ln in ref.read_text().splitlines()]
    ref.write_text("\n".join(lines) + "\n")


def test_multilabel_modes(copy: Path, tmp_path: Path) -> None:
    _set_row(copy, "A1980", "A1980,6,2,")
    with pytest.raises(DataError, match=r"more than one label.*A1980.*drop_multilabel=True"):
        _load(copy, tmp_path / "c", seconds=1.0)
    dropped = _load(copy, tmp_path / "c", seconds=1.0, drop_multilabel=True)
    assert len(dropped) == 9 and "A1980" not in dropped.meta.ids and dropped.meta.options["dropped_multilabel"] == 1
    multi = _load(copy, tmp_path / "c", seconds=1.0, multilabel=True)
    assert multi.meta.multilabel and multi.y.shape == (10, 9) and multi.y.dtype.is_floating_point
    i = multi.meta.ids.tolist().index("A1980")
    assert multi.y[i].nonzero().flatten().tolist() == [1, 5]  # AF and PAC
    assert (multi.y.sum(1) >= 1).all() and int(multi.y.sum()) == 11
    with pytest.raises(ConfigError, match="contradict"):
        _load(copy, tmp_path / "c", multilabel=True, drop_multilabel=True)


def test_rows_without_records(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"have no \.mat file.*A0001\.mat"):
        _load(copy, tmp_path / "c", strict=True)
    with pytest.raises(DataError, match="no .mat file"):
        _load(copy, tmp_path / "c", records=["A1980", "A0001"])


def test_record_without_label(copy: Path, tmp_path: Path) -> None:
    shutil.copy(copy / "A1980.mat", copy / "B0001.mat")
    with pytest.raises(DataError, match=r"no row in REFERENCE.csv.*B0001\.mat"):
        _load(copy, tmp_path / "c")


def test_mat_without_ecg(copy: Path, tmp_path: Path) -> None:
    scipy.io.savemat(copy / "A1981.mat", {"val": np.zeros((12, 5000))})
    with pytest.raises(DataError, match=r"A1981\.mat has no struct 'ECG'.*found \['val'\]"):
        _load(copy, tmp_path / "c", use_cache=False)
    scipy.io.savemat(copy / "A1981.mat", {"ECG": {"sex": "Male", "age": 50, "data": np.zeros((8, 5000))}})
    with pytest.raises(DataError, match="shape"):
        _load(copy, tmp_path / "c", use_cache=False)


def test_bad_reference(copy: Path, tmp_path: Path) -> None:
    ref = copy / "REFERENCE.csv"
    text = ref.read_text()
    _set_row(copy, "A1982", "A1982,12,,")
    with pytest.raises(DataError, match="out of range"):
        _load(copy, tmp_path / "c")
    ref.write_text(text.split("\n", 1)[1])  # header removed
    with pytest.raises(DataError, match="header"):
        _load(copy, tmp_path / "c")
    for kw, msg in [({"leads": "6"}, "leads"), ({"scale": "zscore"}, "scale"), ({"pad": "centre"}, "pad")]:
        with pytest.raises(ConfigError, match=msg):
            _load(copy, tmp_path / "c", **kw)
