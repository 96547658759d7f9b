"""CinC 2021 WFDB reader on the 50 sample records: SNOMED-CT labels from every header, signals,
lengths and masks, code lists, equivalent codes and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from medrobust.data import cinc2021 as c21
from medrobust.data import load_dataset
from medrobust.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "cinc2021_sample"


def _load(folder: Path, cache: Path, **kw: object):
    kw.setdefault("split", "all")
    return load_dataset("cinc2021", root=folder, cache_dir=cache, **kw)


def _dx_by_hand(hea: Path) -> list[str]:
    for line in hea.read_text().splitlines():
        if line.startswith("# Dx:"):
            return [c.strip() for c in line[len("# Dx:"):].split(",")]
    raise AssertionError(f"no Dx in {hea}")


def test_labels_parsed_for_every_record(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache)
    heas = sorted(folder.glob("*.hea"))
    assert len(heas) == 50 and ds.meta.ids.tolist() == [h.stem for h in heas]
    codes = ds.meta.options["codes"]
    assert ds.meta.multilabel and ds.y.shape == (50, len(codes))
    for i, h in enumerate(heas):
        expected = sorted(set(_dx_by_hand(h)))
        assert sorted(codes[k] for k in ds.y[i].nonzero().flatten().tolist()) == expected
    # default class order: most frequent first; names are the challenge abbreviations
    counts = ds.y.sum(0)
    assert (counts[:-1] >= counts[1:]).all()
    assert ds.meta.classes[codes.index("426783006")] == "NSR" and ds.meta.classes[codes.index("427084000")] == "STach"
    assert all(name == c21.SNOMED_ABBREVIATIONS.get(c, c) for name, c in zip(ds.meta.classes, codes))


def test_signals_rates_lengths_and_masks(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, seconds=None)
    assert ds.meta.fs == 500.0 and ds.x.shape[1] == 12 and ds.meta.units == "mV"
    for i, rec in enumerate(ds.meta.ids[:10]):
        hdr = wfdb.rdheader(str(folder / rec))
        assert hdr.fs == 500 and int(ds.mask[i].sum()) == hdr.sig_len
        assert ds.mask[i, 0, : hdr.sig_len].all() and not ds.mask[i, 0, hdr.sig_len :].any()
    raw = scipy.io.loadmat(folder / "E07500.mat")["val"]
    i = ds.meta.ids.tolist().index("E07500")
    np.testing.assert_allclose(ds.x[i, :, : raw.shape[1]].numpy(), raw / 1000.0, atol=1e-6)
    for rec in ("E07500", "HR06003", "JS20007"):  # calibration agrees with wfdb's own reader
        j = ds.meta.ids.tolist().index(rec)
        p = wfdb.rdrecord(str(folder / rec), physical=True).p_signal.T
        np.testing.assert_allclose(ds.x[j, :, : p.shape[1]].numpy(), p, atol=1e-5)
    fixed = _load(folder, session_cache, seconds=4.0, pad="left")
    assert fixed.x.shape[-1] == 2000 and fixed.mask.all()
    np.testing.assert_allclose(fixed.x[i].numpy(), raw[:, :2000] / 1000.0, atol=1e-6)
    eight = _load(folder, session_cache, leads="8", seconds=4.0)
    np.testing.assert_array_equal(eight.x.numpy(), fixed.x[:, [0, 1, 6, 7, 8, 9, 10, 11]].numpy())


def test_given_code_list_and_equivalent_codes(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, codes=["426783006", "164889003", "427172004"], seconds=1.0)
    assert ds.meta.classes == ("NSR", "AF", "PVC")
    nsr = [_dx_by_hand(folder / f"{r}.hea").count("426783006") for r in ds.meta.ids]
    assert ds.y[:, 0].tolist() == [float(v) for v in nsr] and ds.y[:, 1].sum() == 0
    with pytest.raises(ConfigError, match="merged away"):
        _load(folder, session_cache, codes=["17338001"], merge_equivalent=True)


def test_splits_are_disjoint_and_cover(folder: Path, session_cache: Path) -> None:
    parts = [_load(folder, session_cache, split=s, seconds=1.0).meta.ids.tolist() for s in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(p.stem for p in folder.glob("*.hea")) and all(parts)


@pytest.fixture()
def copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cinc2021"
    out.mkdir()
    for r in ("E07500", "E07501", "HR06000", "JS20000"):
        for ext in ("hea", "mat"):
            shutil.copy(folder / f"{r}.{ext}", out / f"{r}.{ext}")
    return out


def _edit(hea: Path, old: str, new: str) -> None:
    text = hea.read_text()
    assert old in text
    hea.write_text(text.replace(old, new))


def test_merge_equivalent(copy: Path, tmp_path: Path) -> None:
    _edit(copy / "E07500.hea", "# Dx: 67741000119109,426177001", "# Dx: 17338001,426177001")
    _edit(copy / "E07501.hea", "# Dx: ", "# Dx: 427172004,")
    plain = _load(copy, tmp_path / "c", seconds=1.0)
    assert {"VPB", "PVC"} <= set(plain.meta.classes)
    merged = _load(copy, tmp_path / "c", seconds=1.0, merge_equivalent=True)
    assert "VPB" not in merged.meta.classes
    k = merged.meta.classes.index("PVC")
    assert merged.y[:2, k].tolist() == [1.0, 1.0]


def test_record_without_label(copy: Path, tmp_path: Path) -> None:
    hea = copy / "E07501.hea"
    hea.write_text("\n".join(ln for ln in hea.read_text().splitlines() if not ln.startswith("# Dx")) + "\n")
    with pytest.raises(DataError, match=r"E07501\.hea has no label.*# Dx"):
        _load(copy, tmp_path / "c")
    ds = _load(copy, tmp_path / "c", missing_dx="skip")
    assert len(ds) == 3 and ds.meta.options["skipped_unlabelled"] == 1


def test_missing_and_broken_signal_files(copy: Path, tmp_path: Path) -> None:
    (copy / "HR06000.mat").unlink()
    with pytest.raises(DataError, match=r"HR06000\.mat is missing"):
        _load(copy, tmp_path / "c")
    shutil.copy(copy / "E07500.mat", copy / "HR06000.mat")
    scipy.io.savemat(copy / "JS20000.mat", {"ECG": np.zeros((12, 5000), dtype=np.int16)})
    with pytest.raises(DataError, match=r"JS20000.*'val'"):
        _load(copy, tmp_path / "c", use_cache=False)


def test_header_disagreements(copy: Path, tmp_path: Path) -> None:
    _edit(copy / "E07500.hea", "E07500 12 500 5000", "E07500 12 500 6000")
    with pytest.raises(DataError, match=r"E07500"):
        _load(copy, tmp_path / "c", use_cache=False)
    _edit(copy / "E07500.hea", "E07500 12 500 6000", "E07500 12 500 5000")
    _edit(copy / "E07501.hea", " V6\n", " V7\n")
    with pytest.raises(DataError, match=r"no lead\(s\) \['V6'\]"):
        _load(copy, tmp_path / "c", use_cache=False)
    _edit(copy / "E07501.hea", " V7\n", " V6\n")
    _edit(copy / "E07501.hea", "# Dx: ", "# Dx: AF,")
    with pytest.raises(DataError, match="not SNOMED-CT codes"):
        _load(copy, tmp_path / "c", use_cache=False)


def test_resampled_source_rates(copy: Path, tmp_path: Path) -> None:
    ds = _load(copy, tmp_path / "c", fs=250.0, seconds=None)
    assert ds.meta.fs == 250.0 and ds.mask.sum((1, 2)).tolist() == [2500.0] * 4
