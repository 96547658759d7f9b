"""CinC 2017 reader: label counts, lengths and rates against the headers, masks, padding, splits,
Han's oversampling, the cache and every bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import wfdb
from torch.utils.data import DataLoader

from medrobust.data import cinc2017 as c17
from medrobust.data import load_dataset
from medrobust.data.signal_length import UnpaddedView, fix_length, pad_collate, trim_to_mask
from medrobust.errors import ConfigError, DataError

SLICE = 40  # records read by the quick tests (A00001..A00040)


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "cinc2017"


def _load(folder: Path, cache: Path, **kw: object):
    kw.setdefault("split", "all")
    kw.setdefault("limit", SLICE)
    return load_dataset("cinc2017", root=folder, cache_dir=cache, **kw)


def test_label_counts_without_reading_signals(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("label counting must not open .mat files")

    monkeypatch.setattr(scipy.io, "loadmat", boom)
    assert c17.label_counts(folder) == {"N": 5050, "A": 738, "O": 2456, "~": 284}
    assert c17.label_counts(folder.parent, labels="original") == {"N": 5154, "A": 771, "O": 2557, "~": 46}
    ref = c17.read_reference(folder)
    assert len(ref) == 8528 and list(ref)[:2] == ["A00001", "A00002"] and list(ref)[-1] == "A08528"


def test_lengths_rates_and_values_match_headers_and_mat(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, seconds=None, pad="right")
    assert ds.meta.fs == 300.0 and ds.meta.units == "mV" and ds.meta.classes == ("N", "A", "O", "~")
    assert ds.x.shape[:2] == (SLICE, 1) and ds.mask.shape == (SLICE, 1, ds.x.shape[-1])
    ref = c17.read_reference(folder)
    for i, rec in enumerate(ds.meta.ids):
        hdr = wfdb.rdheader(str(folder / rec))  # an independent header parser
        assert hdr.fs == 300 and hdr.adc_gain == [1000.0]
        n = hdr.sig_len
        assert int(ds.mask[i].sum()) == n  # the mask covers exactly the real samples
        assert ds.mask[i, 0, :n].all() and not ds.mask[i, 0, n:].any()
        assert ds.meta.classes[int(ds.y[i])] == ref[rec]
    raw = scipy.io.loadmat(folder / "A00005.mat")["val"][0]
    i = list(ds.meta.ids).index("A00005")
    np.testing.assert_allclose(ds.x[i, 0, : len(raw)].numpy(), raw / 1000.0, rtol=0, atol=1e-6)
    adc = _load(folder, session_cache, seconds=None, pad="right", units="adc")
    assert adc.meta.units == "adc"
    np.testing.assert_array_equal(adc.x[i, 0, : len(raw)].numpy(), raw.astype(np.float32))


def test_han_symmetric_padding_and_crop(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, seconds=60, units="adc")  # Han: 18,000 samples
    assert ds.x.shape[-1] == 18000
    for i, rec in enumerate(ds.meta.ids):
        raw = scipy.io.loadmat(folder / f"{rec}.mat")["val"][0].astype(np.float32)
        n = len(raw)
        if n >= 18000:  # crop: the first 18,000 samples
            np.testing.assert_array_equal(ds.x[i, 0].numpy(), raw[:18000])
            assert ds.mask[i].all()
        else:
            r = 18000 - n
            left = r // 2
            np.testing.assert_array_equal(ds.x[i, 0, left : left + n].numpy(), raw)
            assert int(ds.mask[i].sum()) == n and ds.mask[i, 0, left] == 1 and ds.mask[i, 0, left - 1] == 0
            assert ds.mask[i, 0, left + n - 1] == 1 and (left + n == 18000 or ds.mask[i, 0, left + n] == 0)
            assert not ds.x[i, 0, :left].any() and not ds.x[i, 0, left + n :].any()
    lengths = ds.mask.sum((1, 2))
    assert (lengths == 18000).any() and (lengths < 18000).any()  # both branches exercised
    short = _load(folder, session_cache, seconds=30, units="adc")
    assert short.x.shape[-1] == 9000


def test_fix_length_by_hand() -> None:
    sig = np.arange(1, 6, dtype=np.float32)[None]  # 5 samples into 8: r = 3, left 1, right 2
    out, mask = fix_length(sig, length=8, pad="symmetric")
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 0, 0]] and mask.tolist() == [[0, 1, 1, 1, 1, 1, 0, 0]]
    out, mask = fix_length(sig, length=8, pad="left")
    assert out.tolist() == [[0, 0, 0, 1, 2, 3, 4, 5]]
    out, mask = fix_length(sig, length=3)
    assert out.tolist() == [[1, 2, 3]] and mask.all()
    with pytest.raises(ConfigError, match="pad must be"):
        fix_length(sig, length=8, pad="middle")


def test_resampling_is_rate_aware(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, fs=150, seconds=30, pad="right", limit=10)
    assert ds.meta.fs == 150.0 and ds.x.shape[-1] == 4500
    for i, rec in enumerate(ds.meta.ids):
        n = wfdb.rdheader(str(folder / rec)).sig_len
        assert int(ds.mask[i].sum()) == min(math.ceil(n / 2), 4500)
    native = _load(folder, session_cache, seconds=30, pad="right", limit=10)
    # a 300 -> 150 Hz polyphase resampling keeps the slow waveform: compare every other sample
    a, b = ds.x[0, 0, 200:2000].numpy(), native.x[0, 0, 400:4000:2].numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_splits_are_stratified_disjoint_and_seeded(folder: Path, session_cache: Path) -> None:
    kw = dict(limit=300, seconds=1)
    parts = {s: _load(folder, session_cache, split=s, **kw) for s in ("train", "val", "test")}
    ids = {s: set(d.meta.ids.tolist()) for s, d in parts.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    full = _load(folder, session_cache, split="all", **kw)
    assert ids["train"] | ids["val"] | ids["test"] == set(full.meta.ids.tolist())
    counts = full.class_counts()
    assert parts["test"].class_counts().tolist() == [int(round(0.2 * c)) for c in counts]
    again = _load(folder, session_cache, split="test", **kw)
    assert again.meta.ids.tolist() == parts["test"].meta.ids.tolist()
    other = _load(folder, session_cache, split="test", seed=1, **kw)
    assert other.meta.ids.tolist() != parts["test"].meta.ids.tolist()


def test_han_oversampling_on_train_only(folder: Path, session_cache: Path) -> None:
    kw = dict(limit=400, seconds=1)
    plain = _load(folder, session_cache, split="train", **kw)
    han = _load(folder, session_cache, split="train", balance="han", **kw)
    n, a, o, noisy = plain.class_counts().tolist()
    assert han.class_counts().tolist() == [n, 2 * a, o, 6 * noisy] and noisy > 0
    assert han.meta.class_resampled and not plain.meta.class_resampled
    assert han.meta.ids[: len(plain)].tolist() == plain.meta.ids.tolist()  # copies are appended
    val = _load(folder, session_cache, split="val", balance="han", **kw)
    assert not val.meta.class_resampled
    assert val.meta.ids.tolist() == _load(folder, session_cache, split="val", **kw).meta.ids.tolist()
    idx = c17.han_oversample_indices(np.array([0, 3, 1, 3, 2]))
    assert idx.tolist() == [0, 1, 2, 3, 4] + [1, 3] * 5 + [2]


def test_cache_is_reused_and_post_cache_options_do_not_reread(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load(folder, tmp_path, limit=5)
    assert len(list(tmp_path.glob("cinc2017-*.npz"))) == 1

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("records re-read although cached")

    monkeypatch.setattr(c17, "read_cinc2017_record", boom)
    again = _load(folder, tmp_path, limit=5, seconds=30, units="adc", pad="left", labels="original")
    for i in range(5):  # same samples, other units / length / padding
        real_first = first.x[i, 0][first.mask[i, 0] > 0]
        real_again = again.x[i, 0][again.mask[i, 0] > 0]
        torch.testing.assert_close(real_again, real_first[: len(real_again)] * 1000, rtol=0, atol=1e-3)
        assert again.mask[i, 0, -1] == 1  # left padding: right-aligned
    assert again.meta.fingerprint == first.meta.fingerprint
    with pytest.raises(AssertionError, match="re-read"):
        _load(folder, tmp_path, limit=5, fs=100)  # a new rate needs the files


def test_variable_length_batches(folder: Path, session_cache: Path) -> None:
    ds = _load(folder, session_cache, seconds=None, pad="right", limit=12)
    view = UnpaddedView(ds)
    lengths = ds.mask.sum((1, 2)).long()
    assert [int(view[i][0].shape[-1]) for i in range(len(ds))] == lengths.tolist()
    x, y, mask = next(iter(DataLoader(view, batch_size=4, collate_fn=pad_collate)))
    assert x.shape[-1] == int(lengths[:4].max()) and mask.sum((1, 2)).long().tolist() == lengths[:4].tolist()
    assert torch.equal(y, ds.y[:4])
    xt, _ = trim_to_mask(ds.x[:4], ds.mask[:4])
    assert xt.shape[-1] == int(lengths[:4].max())


# -- bad input: broken copies of a few records -------------------------------------------------
@pytest.fixture()
def small(folder: Path, tmp_path: Path) -> Path:
    recs = [f"A0000{i}" for i in range(1, 7)]
    out = tmp_path / "cinc2017"
    out.mkdir()
    ref = c17.read_reference(folder)
    for r in recs:
        for ext in ("hea", "mat"):
            shutil.copy(folder / f"{r}.{ext}", out / f"{r}.{ext}")
    (out / "REFERENCE.csv").write_text("".join(f"{r},{ref[r]}\n" for r in recs))
    (out / "RECORDS").write_text("".join(f"{r}\n" for r in recs))
    return out


def test_small_copy_loads(small: Path, tmp_path: Path) -> None:
    ds = _load(small, tmp_path / "c", limit=None)
    assert len(ds) == 6 and ds.meta.options["skipped_missing"] == 0


def test_reference_row_without_record(small: Path, tmp_path: Path) -> None:
    (small / "A00003.mat").unlink()
    with pytest.raises(DataError, match="A00003"):
        _load(small, tmp_path / "c", limit=None)
    ds = _load(small, tmp_path / "c", limit=None, strict=False)
    assert len(ds) == 5 and ds.meta.options["skipped_missing"] == 1 and "A00003" not in ds.meta.ids


def test_record_without_label(small: Path, tmp_path: Path) -> None:
    lines = (small / "REFERENCE.csv").read_text().splitlines()
    (small / "REFERENCE.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="no label.*A00006"):
        _load(small, tmp_path / "c", limit=None)
    with pytest.raises(DataError, match="no label"):
        _load(small, tmp_path / "c", limit=None, records=["A00001", "A00006"])


def test_mat_without_val(small: Path, tmp_path: Path) -> None:
    scipy.io.savemat(small / "A00002.mat", {"signal": np.zeros((1, 9000), dtype=np.int16)})
    with pytest.raises(DataError, match=r"A00002\.mat has no variable 'val'"):
        _load(small, tmp_path / "c", limit=None, use_cache=False)


def test_header_rate_and_length_disagreements(small: Path, tmp_path: Path) -> None:
    hea = small / "A00001.hea"
    text = hea.read_text()
    hea.write_text(text.replace("A00001 1 300 9000", "A00001 1 250 9000"))
    with pytest.raises(DataError, match=r"sampling-rate mismatch in .*A00001\.hea"):
        _load(small, tmp_path / "c", limit=None, use_cache=False)
    hea.write_text(text.replace("A00001 1 300 9000", "A00001 1 300 9100"))
    with pytest.raises(DataError, match=r"length mismatch for A00001.*9100.*9000"):
        _load(small, tmp_path / "c", limit=None, use_cache=False)
    hea.write_text(text.replace("1000/mV", "200/mV"))
    with pytest.raises(DataError, match="gain mismatch"):
        _load(small, tmp_path / "c", limit=None, use_cache=False)


def test_bad_reference_rows(small: Path, tmp_path: Path) -> None:
    ref = small / "REFERENCE.csv"
    good = ref.read_text()
    ref.write_text(good.replace("A00002,N", "A00002,X"))
    with pytest.raises(DataError, match="unknown label 'X'"):
        _load(small, tmp_path / "c", limit=None)
    ref.write_text(good + "A00001,N\n")
    with pytest.raises(DataError, match="listed twice"):
        _load(small, tmp_path / "c", limit=None)
    ref.write_text(good.replace("A00002,N", "A00002;N"))
    with pytest.raises(DataError, match="line 2"):
        _load(small, tmp_path / "c", limit=None)
    with pytest.raises(DataError, match="REFERENCE-original.csv"):
        _load(small, tmp_path / "c", limit=None, labels="original")


def test_bad_options(small: Path, tmp_path: Path) -> None:
    for kw, msg in [({"units": "uV"}, "units"), ({"pad": "middle"}, "pad"), ({"balance": "smote"}, "balance"),
                    ({"seconds": 0}, "seconds"), ({"test_fraction": 1.0}, "test_fraction"),
                    ({"labels": "v2"}, "labels")]:
        with pytest.raises(ConfigError, match=msg):
            _load(small, tmp_path / "c", limit=None, **kw)
    with pytest.raises(DataError, match="dataset folder not found"):
        _load(tmp_path / "nowhere", tmp_path / "c")


def test_challenge_score_by_hand() -> None:
    cm = [[8, 1, 1, 0], [0, 3, 1, 0], [2, 0, 4, 0], [1, 0, 0, 1]]
    s = c17.challenge_score(cm)
    # F1_N = 2*8/(10+11), F1_A = 2*3/(4+4), F1_O = 2*4/(6+6); mean of the three
    assert s["F1_N"] == pytest.approx(16 / 21) and s["F1_A"] == pytest.approx(0.75)
    assert s["F1_O"] == pytest.approx(8 / 12)
    assert s["score"] == pytest.approx((16 / 21 + 0.75 + 8 / 12) / 3) and s["F1_~"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="4 x 4"):
        c17.challenge_score([[1, 0], [0, 1]])
