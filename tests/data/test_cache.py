"""Issue 21: caches carry a checksum of their arrays; edited or incomplete caches are rebuilt with a warning."""

from __future__ import annotations

import io
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medrobust.data import load_dataset
from medrobust.data.cache import CHECKSUM_KEY, CacheWarning, arrays_checksum, load_cached, save_cached
from medrobust.data.mitdb import build_mitdb


def _arrays() -> dict[str, np.ndarray]:
    return {"x": np.arange(12, dtype=np.float32).reshape(3, 1, 4), "y": np.array([0, 1, 2]),
            "fingerprint": np.asarray("abc")}


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    """Rewrite the npz at ``path`` with some arrays changed (``None``: removed), keeping the stored checksum."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def test_round_trip_keeps_arrays_and_hides_the_checksum(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    save_cached(p, _arrays())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_cached(p)
    assert got is not None and set(got) == {"x", "y", "fingerprint"}
    assert all(np.array_equal(got[k], v) for k, v in _arrays().items())


def test_checksum_changes_with_any_byte_dtype_or_name() -> None:
    a = _arrays()
    base = arrays_checksum(a)
    assert arrays_checksum({**a, "y": np.array([0, 1, 3])}) != base
    assert arrays_checksum({**a, "y": a["y"].astype(np.int32)}) != base
    assert arrays_checksum({**a, "x": a["x"].reshape(3, 4, 1)}) != base
    assert arrays_checksum({"x": a["x"], "z": a["y"], "fingerprint": a["fingerprint"]}) != base
    assert arrays_checksum(dict(reversed(list(a.items())))) == base


@pytest.mark.parametrize("change, why", [
    ({"y": np.array([0, 1, 1])}, "does not match its checksum"),          # labels edited
    ({"fingerprint": None}, r"lacks \['fingerprint'\]"),                  # fingerprint key removed
    ({CHECKSUM_KEY: None}, r"lacks \['__checksum__'\]"),                  # a cache from before checksums
])
def test_edited_or_incomplete_cache_is_discarded_with_a_warning(tmp_path: Path, change: dict, why: str) -> None:
    p = tmp_path / "c.npz"
    save_cached(p, _arrays())
    _rewrite(p, **change)
    with pytest.warns(CacheWarning, match=why):
        assert load_cached(p) is None
    assert not p.exists()


def test_unreadable_cache_is_discarded_with_a_warning(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    save_cached(p, _arrays())
    p.write_bytes(p.read_bytes()[:50])
    with pytest.warns(CacheWarning, match="unreadable"):
        assert load_cached(p) is None
    with zipfile.ZipFile(p, "w") as z:  # a zip holding a pickled object array is refused, not unpickled
        z.writestr("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
                   + b" " * 50 + b"\n")
    with pytest.warns(CacheWarning):
        assert load_cached(p) is None


def test_mitdb_cache_with_edited_labels_is_rebuilt_from_the_records(shared_data: Path, tmp_path: Path) -> None:
    """The issue's case: labels edited in the cache were used and reported under the original fingerprint."""
    mitdb = tmp_path / "db"
    mitdb.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(shared_data / "mitdb" / f"100.{ext}", mitdb / f"100.{ext}")
    cache = tmp_path / "cache"
    clean = load_dataset("mitdb", root=mitdb, split="all", records=["100"], cache_dir=cache)
    (path,) = cache.glob("*.npz")
    edited = clean.y.numpy().copy()
    edited[:50] = 4
    _rewrite(path, y=edited)
    with pytest.warns(CacheWarning, match=r"does not match its checksum"):
        again = load_dataset("mitdb", root=mitdb, split="all", records=["100"], cache_dir=cache)
    assert np.array_equal(again.y.numpy(), clean.y.numpy())  # rebuilt from the records, not the edited labels
    assert again.meta.fingerprint == clean.meta.fingerprint
    _rewrite(path, fingerprint=None)  # the KeyError case
    with pytest.warns(CacheWarning, match="lacks"):
        arrays, _ = build_mitdb(mitdb, records=["100"], cache_dir=cache)
    assert str(arrays["fingerprint"]) == clean.meta.fingerprint


def _unsupported_zip_version(data: bytes) -> bytes:
    """The npz with its first central-directory entry's 'version needed to extract' set to 10.9 (zipfile
    raises NotImplementedError, not BadZipFile: found by tests/fuzz)."""
    buf = bytearray(data)
    at = buf.find(b"PK\x01\x02")
    assert at > 0
    buf[at + 6] = 109
    return bytes(buf)


def test_npz_with_unsupported_zip_version_is_discarded_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    save_cached(p, _arrays())
    p.write_bytes(_unsupported_zip_version(p.read_bytes()))
    with pytest.warns(CacheWarning, match="unreadable"):
        assert load_cached(p) is None


def test_medmnist_npz_with_unsupported_zip_version_is_a_data_error(tmp_path: Path) -> None:
    from medrobust.errors import DataError

    arrays = {f"{s}_{k}": (np.zeros((2, 4, 4), np.uint8) if k == "images" else np.zeros((2, 1), np.int64))
              for s in ("train", "val", "test") for k in ("images", "labels")}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    p = tmp_path / "breastmnist.npz"
    p.write_bytes(_unsupported_zip_version(buf.getvalue()))
    with pytest.raises(DataError, match=r"cannot read MedMNIST file .*breastmnist\.npz"):
        load_dataset("medmnist", path=p)
