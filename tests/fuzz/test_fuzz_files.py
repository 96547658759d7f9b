"""Property: damaged .mat (CinC 2017), npz (cache, MedMNIST-like) and CSV (Kaggle heartbeat) files give a correct
result or a medrobust error naming the file; never another exception."""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from medrobust.data import load_dataset
from medrobust.data.cache import CacheWarning, load_cached, save_cached
from medrobust.data.cinc2017 import read_cinc2017_record

from ._fuzz import accepted, assert_names, fuzz_settings, mutate, mutations


# ---------------------------------------------------------------- CinC 2017 .mat + .hea
@pytest.fixture(scope="module")
def cinc_record(shared_data: Path) -> dict[str, bytes]:
    return {ext: (shared_data / "cinc2017" / f"A00001.{ext}").read_bytes() for ext in ("hea", "mat")}


@fuzz_settings(10)
@given(ext=st.sampled_from(["mat", "mat", "hea"]), ops=mutations())
def test_damaged_cinc2017_record(cinc_record: dict[str, bytes], ext: str, ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for e, data in cinc_record.items():
            (folder / f"A00001.{e}").write_bytes(mutate(data, ops, head=256) if e == ext else data)
        try:
            val, hdr = read_cinc2017_record(folder, "A00001")
        except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
            assert_names(exc, "A00001.hea", "A00001.mat", "A00001")
        else:
            accepted()
            assert val.shape == (1, hdr.sig_len) and np.issubdtype(val.dtype, np.integer)


# ---------------------------------------------------------------- cache npz
@fuzz_settings(10)
@given(ops=mutations())
def test_damaged_cache_is_used_intact_or_rebuilt(ops: list) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(6, 1, 32)).astype(np.float32), "y": np.arange(6) % 5,
              "ids": np.array(["100"] * 6, dtype="U8"), "fingerprint": np.asarray("f" * 64)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mitdb-0.npz"
        save_cached(path, arrays)
        path.write_bytes(mutate(path.read_bytes(), ops))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = load_cached(path)
        if got is None:  # refused: the file is gone and the caller was warned, naming it
            event("refused: CacheWarning")
            assert not path.exists()
            assert any(issubclass(w.category, CacheWarning) and str(path) in str(w.message) for w in caught)
        else:  # accepted: exactly the arrays that were saved (a byte edit never slips through)
            accepted()
            assert set(got) == set(arrays) and all(np.array_equal(got[k], arrays[k]) for k in arrays)


# ---------------------------------------------------------------- MedMNIST-like npz
@pytest.fixture(scope="module")
def small_medmnist(shared_data: Path) -> bytes:
    with np.load(shared_data / "medmnist" / "breastmnist.npz", allow_pickle=False) as z:
        sizes = {"train": 12, "val": 4, "test": 4}
        arrays = {f"{s}_{k}": z[f"{s}_{k}"][:n] for s, n in sizes.items() for k in ("images", "labels")}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@fuzz_settings(10)
@given(ops=mutations(), split=st.sampled_from(["train", "test", "all"]))
def test_damaged_medmnist_npz(small_medmnist: bytes, ops: list, split: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "breastmnist.npz"
        path.write_bytes(mutate(small_medmnist, ops))
        try:
            ds = load_dataset("medmnist", path=path, split=split)
        except Exception as exc:  # noqa: BLE001
            assert_names(exc, "breastmnist.npz")
        else:
            accepted()
            assert ds.x.ndim == 4 and ds.x.shape[1] == 1 and len(ds.y) == len(ds.x)
            assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
            assert int(ds.y.min()) >= 0 and int(ds.y.max()) < ds.num_classes


# ---------------------------------------------------------------- Kaggle heartbeat CSV
@pytest.fixture(scope="module")
def kaggle_csv() -> bytes:
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.uniform(0, 1, size=(15, 187)), (np.arange(15) % 5)[:, None]], axis=1)
    buf = io.StringIO()
    np.savetxt(buf, rows, delimiter=",", fmt="%.6e")
    return buf.getvalue().encode()


@fuzz_settings(10)
@given(ops=mutations())
def test_damaged_kaggle_csv(kaggle_csv: bytes, ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mitbih_train.csv").write_bytes(mutate(kaggle_csv, ops))
        try:
            ds = load_dataset("kaggle_heartbeat", root=folder, split="train", val_fraction=0.0)
        except Exception as exc:  # noqa: BLE001
            assert_names(exc, "mitbih_train.csv")
        else:
            accepted()
            assert ds.x.shape[1:] == (1, 187) and bool(((ds.y >= 0) & (ds.y < 5)).all())
            assert bool(ds.x.isfinite().all())
