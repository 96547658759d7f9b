"""MedMNIST npz reader: the real PneumoniaMNIST and BreastMNIST files, conversions and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data import load_dataset
from medrobust.data.image_ops import LUMA_WEIGHTS
from medrobust.data.medmnist import load_medmnist
from medrobust.errors import ConfigError, DataError

# (split size, class counts) of the files in ../shared/data/medmnist. PneumoniaMNIST's train split has
# 4,707 images in this copy (official 4,708); val and test and all of BreastMNIST are the official sizes.
EXPECTED = {
    "pneumoniamnist": {"train": (4707, [1213, 3494]), "val": (524, [135, 389]), "test": (624, [234, 390])},
    "breastmnist": {"train": (546, [147, 399]), "val": (78, [21, 57]), "test": (156, [42, 114])},
}


@pytest.fixture(scope="module")
def medmnist_dir(shared_data: Path) -> Path:
    return shared_data / "medmnist"


@pytest.mark.parametrize("flag", sorted(EXPECTED))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_real_split_sizes_labels_and_pixels(medmnist_dir: Path, flag: str, split: str) -> None:
    ds = load_dataset("medmnist", root=medmnist_dir, split=split, flag=flag)
    n, counts = EXPECTED[flag][split]
    assert len(ds) == n
    assert ds.class_counts().tolist() == counts
    assert ds.x.shape == (n, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.long and not ds.meta.multilabel
    assert ds.meta.fs == 0.0 and ds.meta.units == "intensity [0, 1]" and ds.meta.leads == ("gray",)
    with np.load(medmnist_dir / f"{flag}.npz") as z:
        raw, lab = z[f"{split}_images"], z[f"{split}_labels"]
    # x is exactly uint8 / 255 in the file's order, labels likewise.
    assert torch.equal(ds.x[:, 0], torch.from_numpy(raw).float() / 255)
    assert torch.equal(ds.y, torch.from_numpy(lab[:, 0].astype(np.int64)))
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert ds.meta.ids[0] == f"{split}/0" and len(set(ds.meta.ids)) == n


def test_class_names_and_official_sizes(medmnist_dir: Path) -> None:
    p = load_medmnist(root=medmnist_dir, split="test")  # default flag: pneumoniamnist
    assert p.meta.classes == ("normal", "pneumonia")
    b = load_medmnist(root=medmnist_dir.parent, split="val", flag="breastmnist")  # parent root works too
    assert b.meta.classes == ("malignant", "normal, benign")
    assert b.meta.options["official_n_samples"] == {"train": 546, "val": 78, "test": 156}
    assert p.meta.options["official_n_samples"]["train"] == 4708
    assert len(b.meta.fingerprint) == 64


def test_explicit_path_and_all_split(medmnist_dir: Path) -> None:
    ds = load_medmnist(path=medmnist_dir / "breastmnist.npz", split="all")
    assert ds.meta.classes == ("malignant", "normal, benign")  # flag defaults to the file's stem
    assert len(ds) == 546 + 78 + 156 and ds.class_counts().tolist() == [210, 570]
    assert ds.meta.ids[546] == "val/0" and ds.meta.ids[-1] == "test/155"


def test_channel_conversion_and_resize(medmnist_dir: Path) -> None:
    gray = load_medmnist(root=medmnist_dir, split="val", flag="breastmnist")
    rgb = load_medmnist(root=medmnist_dir, split="val", flag="breastmnist", channels=3)
    assert rgb.x.shape == (78, 3, 28, 28) and rgb.meta.leads == ("R", "G", "B")
    assert all(torch.equal(rgb.x[:, c], gray.x[:, 0]) for c in range(3))
    big = load_medmnist(root=medmnist_dir, split="val", flag="breastmnist", size=56, resize_mode="nearest")
    assert big.x.shape == (78, 1, 56, 56)
    assert torch.equal(big.x[..., ::2, ::2], gray.x)  # nearest x2 repeats every pixel
    smooth = load_medmnist(root=medmnist_dir, split="val", flag="breastmnist", size=(32, 40), resize_mode="bicubic")
    assert smooth.x.shape == (78, 1, 32, 40) and smooth.x.min() >= 0 and smooth.x.max() <= 1
    # Bilinear resizing preserves the mean intensity closely.
    half = load_medmnist(root=medmnist_dir, split="val", flag="breastmnist", size=14)
    assert torch.allclose(half.x.mean((1, 2, 3)), gray.x.mean((1, 2, 3)), atol=0.01)


def _write_npz(path: Path, *, n: tuple[int, int, int] = (6, 3, 3), shape: tuple[int, ...] = (8, 8),
               k: int = 2, multilabel: bool = False, drop: tuple[str, ...] = (), seed: int = 0,
               **override: np.ndarray) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, m in zip(("train", "val", "test"), n):
        arrays[f"{s}_images"] = rng.integers(0, 256, size=(m, *shape), dtype=np.uint8)
        if multilabel:
            arrays[f"{s}_labels"] = rng.integers(0, 2, size=(m, k), dtype=np.uint8)
        else:
            arrays[f"{s}_labels"] = (np.arange(m) % k).astype(np.uint8)[:, None]
    arrays.update(override)
    for key in drop:
        arrays.pop(key)
    np.savez(path, **arrays)
    return path


def test_rgb_file_to_grayscale_uses_bt601_luma(tmp_path: Path) -> None:
    f = _write_npz(tmp_path / "dermamnist.npz", shape=(4, 4, 3), k=7)
    raw = np.load(f)["test_images"].astype(np.float64) / 255
    ds = load_medmnist(path=f, split="test", channels=1)
    expected = (raw * np.asarray(LUMA_WEIGHTS)).sum(-1)
    assert ds.x.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(ds.x[:, 0].numpy(), expected, atol=1e-6)
    native = load_medmnist(path=f, split="test")
    assert native.x.shape == (3, 3, 4, 4) and native.meta.classes[4] == "melanoma"


def test_unknown_flag_and_multilabel(tmp_path: Path) -> None:
    single = load_medmnist(path=_write_npz(tmp_path / "mydata.npz", k=3), split="train")
    assert single.meta.classes == ("0", "1", "2") and single.y.tolist() == [0, 1, 2, 0, 1, 2]
    _write_npz(tmp_path / "multi.npz", k=4, multilabel=True)
    ml = load_medmnist(root=tmp_path, flag="multi", split="val")
    assert ml.meta.multilabel and ml.y.shape == (3, 4) and ml.y.dtype == torch.float32
    assert ml.meta.classes == ("0", "1", "2", "3")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="octmnist.npz"):
        load_medmnist(root=tmp_path, flag="octmnist")
    with pytest.raises(DataError, match="not found"):
        load_medmnist(path=tmp_path / "nothere.npz")


def test_medmnist_plus_suffix_keeps_class_names(tmp_path: Path) -> None:
    _write_npz(tmp_path / "pneumoniamnist_64.npz", shape=(64, 64))
    ds = load_medmnist(root=tmp_path, flag="pneumoniamnist_64", split="val")
    assert ds.meta.classes == ("normal", "pneumonia") and ds.x.shape == (3, 1, 64, 64)


@pytest.mark.parametrize("missing", ["val_images", "test_labels"])
def test_npz_missing_a_split_key(tmp_path: Path, missing: str) -> None:
    f = _write_npz(tmp_path / "breastmnist.npz", drop=(missing,))
    with pytest.raises(DataError, match=missing):
        load_medmnist(path=f, split="train")


def test_label_shape_not_matching_images(tmp_path: Path) -> None:
    f = _write_npz(tmp_path / "breastmnist.npz", val_labels=np.zeros((2, 1), dtype=np.uint8))
    with pytest.raises(DataError, match="val_labels.*3 samples"):
        load_medmnist(path=f, split="train")


def test_grayscale_rgb_mismatch_with_the_known_dataset(tmp_path: Path) -> None:
    f = _write_npz(tmp_path / "pneumoniamnist.npz", shape=(8, 8, 3))
    with pytest.raises(DataError, match="grayscale/RGB mismatch"):
        load_medmnist(path=f)
    f2 = _write_npz(tmp_path / "pathmnist.npz", shape=(8, 8), k=9)
    with pytest.raises(DataError, match="grayscale/RGB mismatch"):
        load_medmnist(path=f2)


def test_unsupported_channel_count_and_bad_options(tmp_path: Path) -> None:
    f = _write_npz(tmp_path / "x.npz", shape=(8, 8, 2))
    with pytest.raises(DataError, match="expected"):
        load_medmnist(path=f)
    g = _write_npz(tmp_path / "breastmnist.npz")
    with pytest.raises(ConfigError, match="channels"):
        load_medmnist(path=g, channels=2)
    with pytest.raises(ConfigError, match="split"):
        load_medmnist(path=g, split="dev")
    with pytest.raises(ConfigError, match="not both"):
        load_medmnist(path=g, root=tmp_path)
    with pytest.raises(ConfigError, match="size"):
        load_medmnist(path=g, size=0)
    with pytest.raises(ConfigError, match="resize mode"):
        load_medmnist(path=g, size=16, resize_mode="cubic")


def test_labels_out_of_range_or_single_vs_multi(tmp_path: Path) -> None:
    f = _write_npz(tmp_path / "breastmnist.npz", k=3)  # BreastMNIST has two classes
    with pytest.raises(DataError, match="out of range"):
        load_medmnist(path=f)
    g = _write_npz(tmp_path / "pneumoniamnist.npz", k=2, multilabel=True)
    with pytest.raises(DataError, match="single-label"):
        load_medmnist(path=g)
    h = _write_npz(tmp_path / "chestmnist.npz", k=3, multilabel=True)  # ChestMNIST has 14 labels
    with pytest.raises(DataError, match="14 classes"):
        load_medmnist(path=h)


def test_corrupt_file(tmp_path: Path) -> None:
    f = tmp_path / "breastmnist.npz"
    f.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataError, match="cannot read MedMNIST file"):
        load_medmnist(path=f)
