"""Class-per-subfolder image trees, the layouts in which the seed image datasets are published.

Layouts read (folder names of splits are matched case-insensitively; hidden folders and
``__MACOSX`` are ignored):

* **split folders** ``ROOT/{train,val,test}/CLASS/*.jpeg``: Kermany et al. 2018 (Cell 172:1122),
  ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` and ``OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}``.
  A missing ``val`` folder is drawn from ``train`` (stratified, seeded, ``val_fraction``); a missing
  ``test`` folder likewise (``test_fraction``).
* **class folders** ``ROOT/CLASS/*.jpg`` (e.g. ISIC 2018 / HAM10000 sorted into one folder per
  diagnosis): a seeded stratified train/val/test split (``test_fraction`` of all, then
  ``val_fraction`` of the rest).

``resplit=True`` pools every split folder and draws a seeded stratified split instead, as Hirano et
al. (BMC Med. Imaging 21:9, 2021) did with random draws over Kermany's train and test folders.

Images are decoded with Pillow, converted to grayscale (``"L"``, ITU-R BT.601 luma) or RGB, resized
to ``size`` (aspect ratio not kept, as in the seed code) and scaled to [0, 1]; 16-bit grayscale
PNG/TIFF are scaled by 1/65535. Decoded splits are cached as npz keyed by every option and by the
files' paths, labels, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.cache import cache_path, file_fingerprint, load_cached, save_cached
from medrobust.data.image_ops import CHANNEL_NAMES, check_channels, parse_size
from medrobust.data.registry import SPLITS, register_dataset
from medrobust.data.splits import stratified_split, train_val_test
from medrobust.errors import ConfigError, DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
RESAMPLE_MODES: tuple[str, ...] = ("bilinear", "bicubic", "nearest", "lanczos", "box")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # Pillow arrives with matplotlib (wfdb) and with torchvision
        raise ConfigError(
            "reading image folders needs Pillow: pip install pillow (or pip install 'medrobust[images]')."
        ) from exc
    return Image


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _images_in(folder: Path, extensions: Sequence[str]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in exts and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _class_files(folder: Path, classes: Sequence[str] | None, extensions: Sequence[str]) -> dict[str, list[Path]]:
    """``{class: files}`` of one class-per-subfolder tree; errors on stray or empty class folders."""
    found = {d.name: d for d in _visible_dirs(folder)}
    if not found:
        loose = _images_in(folder, extensions)
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"no class folders in {folder}{hint}. Expected one subfolder per class, e.g. "
            f"{folder}/NORMAL/*.jpeg and {folder}/PNEUMONIA/*.jpeg."
        )
    names = list(classes) if classes is not None else sorted(found)
    out: dict[str, list[Path]] = {}
    for name in names:
        if name not in found:
            raise DataError(
                f"class folder {folder / name} is missing (found {sorted(found)}). Every split needs a folder "
                "for every class; add it or pass classes=[...] naming the classes to use."
            )
        files = _images_in(found[name], extensions)
        if not files:
            others = sum(1 for p in found[name].rglob("*") if p.is_file())
            raise DataError(
                f"class folder {found[name]} holds no images with extensions {tuple(extensions)} "
                f"({others} other files). Put the class's images there, remove the folder, or pass "
                "extensions=(...)."
            )
        out[name] = files
    return out


def scan_image_folder(
    root: Path,
    *,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> tuple[str, tuple[str, ...], dict[str, tuple[list[Path], np.ndarray]]]:
    """Find the layout, the classes and the files of every split folder.

    Returns
    -------
    layout
        ``"split_folders"`` or ``"class_folders"``.
    classes
        Class names; label ``k`` is ``classes[k]`` (sorted folder names unless given).
    groups
        ``{split or "all": (files, labels)}`` for the folders present.
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}. Pass root=/path/to/the/dataset (the folder holding train/ or the class folders).")
    subdirs = {d.name.lower(): d for d in _visible_dirs(root)}
    split_dirs: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        hits = [subdirs[a] for a in aliases if a in subdirs]
        if len(hits) > 1:
            raise DataError(f"{root} has several folders for split '{split}': {[h.name for h in hits]}; keep one.")
        if hits:
            split_dirs[split] = hits[0]
    if split_dirs:
        layout = "split_folders"
        names = list(classes) if classes is not None else sorted(
            {c.name for d in split_dirs.values() for c in _visible_dirs(d)}
        )
        per_split = {s: _class_files(d, names or None, extensions) for s, d in split_dirs.items()}
    else:
        layout = "class_folders"
        per_split = {"all": _class_files(root, classes, extensions)}
        names = list(classes) if classes is not None else sorted(per_split["all"])
    groups: dict[str, tuple[list[Path], np.ndarray]] = {}
    for s, by_class in per_split.items():
        files = [f for c in names for f in by_class[c]]
        labels = np.concatenate([np.full(len(by_class[c]), k, dtype=np.int64) for k, c in enumerate(names)])
        groups[s] = (files, labels)
    return layout, tuple(names), groups


def _assign_splits(
    layout: str,
    groups: dict[str, tuple[list[Path], np.ndarray]],
    *,
    resplit: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, tuple[list[Path], np.ndarray]], dict[str, str]]:
    """Files and labels of train/val/test plus where each split came from."""
    if resplit or layout == "class_folders":
        files = [f for s in groups for f in groups[s][0]]
        labels = np.concatenate([groups[s][1] for s in groups])
        parts = train_val_test(labels, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
        how = f"stratified split of all images (seed {seed})"
        return {s: ([files[i] for i in idx], labels[idx]) for s, idx in parts.items()}, {s: how for s in SPLITS}
    if "train" not in groups:
        raise DataError(f"split folders found ({sorted(groups)}) but no train/ folder; add it or pass resplit=True.")
    out = dict(groups)
    source = {s: f"folder {s}/" for s in groups}
    files, labels = out.pop("train")
    if "test" not in out:
        rest, held = stratified_split(labels, test_fraction, seed)
        out["test"] = ([files[i] for i in held], labels[held])
        files, labels = [files[i] for i in rest], labels[rest]
        source["test"] = f"stratified {test_fraction} of train/ (seed {seed})"
    if "val" not in out:
        rest, held = stratified_split(labels, val_fraction, seed + 1)
        out["val"] = ([files[i] for i in held], labels[held])
        files, labels = [files[i] for i in rest], labels[rest]
        source["val"] = f"stratified {val_fraction} of train/ (seed {seed + 1})"
    out["train"] = (files, labels)
    return out, source


def _cap_per_class(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Sorted indices keeping at most ``cap`` random samples of each class."""
    if cap is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.nonzero(labels == c)[0])[:cap] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def read_image(path: Path, *, size: tuple[int, int], channels: int, resample: str = "bilinear") -> np.ndarray:
    """Decode one image to float32 ``(channels, height, width)`` in [0, 1].

    Raises
    ------
    DataError
        The file cannot be decoded (truncated, not an image, unsupported mode).
    """
    Image = _pil()
    method = getattr(Image.Resampling, resample.upper())
    h, w = size
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB" if channels == 3 else "L", (w, h))  # DCT-domain downscale, never below (w, h)
            im.load()
            if im.mode in _SIXTEEN_BIT:
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                small = Image.fromarray(arr, mode="F").resize((w, h), method)
                gray = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)[None]
                return np.repeat(gray, 3, axis=0) if channels == 3 else gray
            if im.mode == "F":
                raise DataError(f"{path}: floating-point images (mode 'F') are not supported; save it as 8- or 16-bit.")
            conv = im.convert("RGB" if channels == 3 else "L").resize((w, h), method)
            arr = np.asarray(conv, dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ValueError, DecompressionBombError ...
        raise DataError(
            f"cannot read image {path}: {type(exc).__name__}: {exc}. Replace or delete the file, or pass "
            "on_error='skip' to leave unreadable images out."
        ) from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_all(
    files: list[Path], *, size: tuple[int, int], channels: int, resample: str, on_error: str
) -> tuple[np.ndarray, np.ndarray]:
    """uint16 images ``(N, C, H, W)`` (value ``round(x * 65535)``; exact for 8-bit sources) and kept indices."""
    out = np.zeros((len(files), channels, *size), dtype=np.uint16)
    kept = []
    for i, f in enumerate(files):
        try:
            img = read_image(f, size=size, channels=channels, resample=resample)
        except DataError:
            if on_error == "raise":
                raise
            continue
        out[len(kept)] = np.rint(img * 65535.0).astype(np.uint16)
        kept.append(i)
    return out[: len(kept)], np.asarray(kept, dtype=np.int64)


@register_dataset("image_folder")
def load_image_folder(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    size: int | tuple[int, int] = 224,
    channels: int = 3,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    resplit: bool = False,
    max_per_class: int | None = None,
    resample: str = "bilinear",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_error: str = "raise",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ECGDataset:
    """One split of a class-per-subfolder image dataset (chest X-ray, OCT, ISIC layouts).

    Parameters
    ----------
    root
        The dataset folder: the one holding ``train/`` (``val/``, ``test/``), or the class folders.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the three concatenated).
    size
        Output size, int or ``(height, width)``; aspect ratio is not kept.
    channels
        1 (grayscale, BT.601 luma) or 3 (RGB; grayscale images are copied to R, G, B).
    classes
        Class folder names in label order (default: sorted folder names); other folders are ignored.
    val_fraction, test_fraction
        Stratified shares drawn when a split folder is missing, or for ``class_folders`` / ``resplit``.
    seed
        Seed of those draws and of ``max_per_class``.
    resplit
        Pool all split folders and draw a fresh stratified split.
    max_per_class
        Keep at most this many (seeded, random) images per class in the split.
    resample
        Pillow filter: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` (Keras ``load_img`` default),
        ``"lanczos"``, ``"box"``.
    extensions
        File suffixes read as images.
    on_error
        ``"raise"`` on an unreadable image, or ``"skip"`` (the files left out are listed in
        ``meta.options["skipped"]``).
    cache_dir, use_cache
        Where decoded splits are cached (default: the user cache).

    Returns
    -------
    ECGDataset
        ``x`` ``(N, C, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` long, ``meta.ids`` = paths relative to
        ``root``, ``meta.fs = 0.0``.
    """
    if root is None:
        raise ConfigError("image_folder needs root=/path/to/the/dataset (the folder holding train/ or the class folders).")
    hw = parse_size(size)
    if hw is None:
        raise ConfigError("image_folder needs size= (an int or (height, width)); images are resized to it.")
    if channels is None or check_channels(channels) is None:
        raise ConfigError("image_folder needs channels=1 (grayscale) or channels=3 (RGB).")
    if split != "all" and split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS} or 'all', got {split!r}.")
    if not (0.0 < test_fraction < 1.0 and 0.0 < val_fraction < 1.0):
        raise ConfigError(f"need 0 < test_fraction < 1 and 0 < val_fraction < 1, got {test_fraction}, {val_fraction}.")
    if resample not in RESAMPLE_MODES:
        raise ConfigError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}.")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    if max_per_class is not None and max_per_class < 1:
        raise ConfigError(f"max_per_class must be >= 1 or None, got {max_per_class}.")
    folder = Path(root).expanduser()
    layout, names, groups = scan_image_folder(folder, classes=classes, extensions=extensions)
    parts, sources = _assign_splits(layout, groups, resplit=resplit, val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed)
    wanted = list(SPLITS) if split == "all" else [split]
    files: list[Path] = []
    labels_list: list[np.ndarray] = []
    for s in wanted:
        f, lab = parts[s]
        idx = _cap_per_class(lab, max_per_class, seed)
        files.extend(f[i] for i in idx)
        labels_list.append(lab[idx])
    labels = np.concatenate(labels_list) if labels_list else np.zeros(0, dtype=np.int64)
    if not files:
        raise DataError(f"split '{split}' of {folder} holds no images; lower val_fraction/test_fraction or add images.")
    rel = [f.relative_to(folder).as_posix() for f in files]
    stats = [(r, f.stat().st_size, f.stat().st_mtime_ns) for r, f in zip(rel, files)]
    opts = {"size": list(hw), "channels": channels, "resample": resample, "on_error": on_error}
    key = {"dataset": "image_folder", "root": str(folder.resolve()), "files": stats, "labels": labels.tolist(), **opts}
    path = cache_path("image_folder", key, cache_dir)
    arrays = load_cached(path) if use_cache else None
    if arrays is None:
        x16, kept = _decode_all(files, size=hw, channels=channels, resample=resample, on_error=on_error)
        digest = hashlib.sha256(file_fingerprint(files).encode())
        digest.update(json.dumps([rel, labels.tolist()]).encode())
        arrays = {"x": x16, "kept": kept, "fingerprint": np.asarray(digest.hexdigest())}
        if use_cache:
            save_cached(path, arrays)
    kept = arrays["kept"]
    if len(kept) == 0:
        raise DataError(f"no image of split '{split}' in {folder} could be read (on_error='skip' left out all of them).")
    skipped = sorted(set(range(len(files))) - set(kept.tolist()))
    x = torch.from_numpy(arrays["x"].astype(np.float32)).div_(65535.0)
    meta = DatasetMeta(
        name="image_folder",
        fs=0.0,
        classes=names,
        units="intensity [0, 1]",
        ids=np.asarray([rel[i] for i in kept]),
        leads=CHANNEL_NAMES[channels],
        split=split,
        fingerprint=str(arrays["fingerprint"]),
        options={**opts, "root": str(folder), "layout": layout, "classes": list(names), "val_fraction": val_fraction,
                 "test_fraction": test_fraction, "seed": seed, "resplit": resplit, "max_per_class": max_per_class,
                 "split_sources": {s: sources[s] for s in wanted}, "skipped": [rel[i] for i in skipped]},
    )
    return ECGDataset(x, torch.from_numpy(labels[kept]), meta)
