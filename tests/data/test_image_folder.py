"""Image-folder reader on tiny PNG/JPEG trees in the published layouts (chest X-ray, OCT, ISIC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from medrobust.data import load_dataset  # noqa: E402
from medrobust.data.image_folder import load_image_folder, read_image  # noqa: E402
from medrobust.errors import ConfigError, DataError  # noqa: E402

# One gray level per class so every loaded pixel can be checked exactly.
LEVEL = {"NORMAL": 40, "PNEUMONIA": 200, "CNV": 10, "DME": 90, "DRUSEN": 170, "MEL": 30, "NV": 130, "BCC": 230}


def _tree(root: Path, layout: dict[str, dict[str, int]], *, size: tuple[int, int] = (30, 20), ext: str = ".png") -> Path:
    """``layout`` = {relative folder: {class: count}}; images are constant at the class's LEVEL."""
    for folder, classes in layout.items():
        for cls, count in classes.items():
            d = root / folder / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("L", size, LEVEL[cls]).save(d / f"{cls.lower()}_{i}{ext}")
    return root


@pytest.fixture
def chest_xray(tmp_path: Path) -> Path:
    return _tree(tmp_path / "chest_xray", {
        "train": {"NORMAL": 6, "PNEUMONIA": 9},
        "val": {"NORMAL": 2, "PNEUMONIA": 2},
        "test": {"NORMAL": 3, "PNEUMONIA": 4},
    })


def test_split_folders_like_chest_xray(chest_xray: Path, tmp_path: Path) -> None:
    counts = {"train": [6, 9], "val": [2, 2], "test": [3, 4]}
    for split, expected in counts.items():
        ds = load_dataset("image_folder", root=chest_xray, split=split, size=16, channels=1, cache_dir=tmp_path / "c")
        assert ds.class_counts().tolist() == expected
        assert ds.meta.classes == ("NORMAL", "PNEUMONIA") and ds.meta.options["layout"] == "split_folders"
        assert ds.x.shape == (sum(expected), 1, 16, 16) and ds.meta.fs == 0.0
        assert ds.meta.units == "intensity [0, 1]" and ds.meta.leads == ("gray",)
        for x, y, rid in zip(ds.x, ds.y, ds.meta.ids):
            cls = ds.meta.classes[int(y)]
            assert rid.startswith(f"{split}/{cls}/")  # ids are paths relative to root
            assert torch.allclose(x, torch.full_like(x, LEVEL[cls] / 255), atol=1e-6)
    rgb = load_image_folder(root=chest_xray, split="val", size=(12, 8), channels=3, cache_dir=tmp_path / "c")
    assert rgb.x.shape == (4, 3, 12, 8) and rgb.meta.leads == ("R", "G", "B")
    assert torch.equal(rgb.x[:, 0], rgb.x[:, 2])


def test_rgb_to_gray_is_bt601_and_jpeg_decodes(tmp_path: Path) -> None:
    d = tmp_path / "isic" / "MEL"
    d.mkdir(parents=True)
    Image.new("RGB", (40, 40), (255, 0, 0)).save(d / "red.png")
    gray = read_image(d / "red.png", size=(8, 8), channels=1)
    assert gray.shape == (1, 8, 8) and np.allclose(gray, 76 / 255)  # Pillow "L": 0.299 * 255 -> 76
    rgb = read_image(d / "red.png", size=(8, 8), channels=3)
    assert np.allclose(rgb[0], 1.0) and np.allclose(rgb[1:], 0.0)
    Image.new("L", (64, 48), 128).save(d / "gray.jpg", quality=95)
    jpg = read_image(d / "gray.jpg", size=(16, 16), channels=1)
    assert np.abs(jpg - 128 / 255).max() < 2 / 255  # JPEG draft decoding + resize keeps the level


def test_sixteen_bit_png_is_scaled_by_65535(tmp_path: Path) -> None:
    f = tmp_path / "ct.png"
    Image.fromarray(np.full((10, 10), 30000, dtype=np.uint16)).save(f)
    assert Image.open(f).mode.startswith("I")
    img = read_image(f, size=(5, 5), channels=3)
    assert img.shape == (3, 5, 5) and np.allclose(img, 30000 / 65535, atol=1e-6)


def test_oct_layout_draws_val_from_train(tmp_path: Path) -> None:
    root = _tree(tmp_path / "OCT2017", {
        "train": {"CNV": 20, "DME": 10, "DRUSEN": 10},
        "test": {"CNV": 2, "DME": 2, "DRUSEN": 2},
    })
    kw = dict(root=root, size=8, channels=1, val_fraction=0.2, seed=3, cache_dir=tmp_path / "c")
    tr, va, te = (load_image_folder(split=s, **kw) for s in ("train", "val", "test"))
    assert va.class_counts().tolist() == [4, 2, 2]  # round(0.2 * n_c) per class
    assert tr.class_counts().tolist() == [16, 8, 8] and te.class_counts().tolist() == [2, 2, 2]
    assert not set(tr.meta.ids) & set(va.meta.ids)
    assert all(i.startswith("train/") for i in va.meta.ids)
    assert "train/" in va.meta.options["split_sources"]["val"]
    again = load_image_folder(split="val", **{**kw, "use_cache": False})
    assert list(again.meta.ids) == list(va.meta.ids)  # seeded
    other = load_image_folder(split="val", **{**kw, "seed": 4})
    assert list(other.meta.ids) != list(va.meta.ids)


def test_class_folders_like_isic_get_a_stratified_split(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ISIC", {".": {"MEL": 10, "NV": 30, "BCC": 10}}, ext=".jpg")
    kw = dict(root=root, size=8, channels=3, test_fraction=0.2, val_fraction=0.25, cache_dir=tmp_path / "c")
    parts = {s: load_image_folder(split=s, **kw) for s in ("train", "val", "test")}
    assert parts["test"].meta.classes == ("BCC", "MEL", "NV")
    assert parts["test"].class_counts().tolist() == [2, 2, 6]
    assert parts["val"].class_counts().tolist() == [2, 2, 6]
    assert parts["train"].class_counts().tolist() == [6, 6, 18]
    ids = [set(p.meta.ids) for p in parts.values()]
    assert sum(len(i) for i in ids) == 50 and len(set.union(*ids)) == 50
    everything = load_image_folder(split="all", **kw)
    assert len(everything) == 50 and everything.meta.options["layout"] == "class_folders"


def test_resplit_max_per_class_and_classes(chest_xray: Path, tmp_path: Path) -> None:
    kw = dict(root=chest_xray, size=8, channels=1, cache_dir=tmp_path / "c")
    pooled = load_image_folder(split="all", resplit=True, **kw)
    assert len(pooled) == 26
    assert any(i.startswith("test/") for i in load_image_folder(split="train", resplit=True, **kw).meta.ids)
    capped = load_image_folder(split="train", max_per_class=5, **kw)
    assert capped.class_counts().tolist() == [5, 5]
    only = load_image_folder(split="train", classes=["PNEUMONIA", "NORMAL"], **kw)
    assert only.meta.classes == ("PNEUMONIA", "NORMAL") and only.class_counts().tolist() == [9, 6]


def test_cache_follows_file_changes(chest_xray: Path, tmp_path: Path) -> None:
    kw = dict(root=chest_xray, split="val", size=8, channels=1, cache_dir=tmp_path / "c")
    first = load_image_folder(**kw)
    assert len(list((tmp_path / "c").glob("image_folder-*.npz"))) == 1
    target = chest_xray / "val" / "NORMAL" / "normal_0.png"
    Image.new("L", (30, 20), 250).save(target)
    second = load_image_folder(**kw)
    i = list(second.meta.ids).index("val/NORMAL/normal_0.png")
    assert torch.allclose(second.x[i], torch.full_like(second.x[i], 250 / 255))
    assert second.meta.fingerprint != first.meta.fingerprint


def test_empty_class_folder(chest_xray: Path) -> None:
    (chest_xray / "test" / "PNEUMONIA").rename(chest_xray / "old")
    (chest_xray / "test" / "PNEUMONIA").mkdir()
    (chest_xray / "test" / "PNEUMONIA" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"PNEUMONIA holds no images"):
        load_image_folder(root=chest_xray, split="train", size=8, channels=1)


def test_missing_class_folder_in_a_split(chest_xray: Path) -> None:
    (chest_xray / "val" / "NORMAL").rename(chest_xray / "elsewhere")
    with pytest.raises(DataError, match=r"val/NORMAL is missing"):
        load_image_folder(root=chest_xray, split="train", size=8, channels=1)


def test_unreadable_image_raises_or_is_skipped(chest_xray: Path, tmp_path: Path) -> None:
    bad = chest_xray / "test" / "NORMAL" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(root=chest_xray, split="test", size=8, channels=1, cache_dir=tmp_path / "c")
    ds = load_image_folder(root=chest_xray, split="test", size=8, channels=1, on_error="skip", cache_dir=tmp_path / "c")
    assert len(ds) == 7 and ds.meta.options["skipped"] == ["test/NORMAL/broken.png"]
    assert "test/NORMAL/broken.png" not in ds.meta.ids and ds.class_counts().tolist() == [3, 4]


def test_layout_and_option_errors(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (4, 4)).save(flat / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        load_image_folder(root=flat, size=8, channels=1)
    with pytest.raises(DataError, match="not found"):
        load_image_folder(root=tmp_path / "absent", size=8, channels=1)
    with pytest.raises(ConfigError, match="root"):
        load_image_folder(size=8, channels=1)
    with pytest.raises(ConfigError, match="channels"):
        load_image_folder(root=flat, size=8, channels=2)
    with pytest.raises(ConfigError, match="size"):
        load_image_folder(root=flat, size=(8,), channels=1)
    with pytest.raises(ConfigError, match="on_error"):
        load_image_folder(root=flat, size=8, channels=1, on_error="ignore")
    nosplit = _tree(tmp_path / "only_test", {"test": {"NORMAL": 1, "PNEUMONIA": 1}})
    with pytest.raises(DataError, match="no train/ folder"):
        load_image_folder(root=nosplit, size=8, channels=1)
