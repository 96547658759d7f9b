"""MedMNIST 2-D reader (the official ``<flag>.npz`` files of MedMNIST v2 and MedMNIST+).

Yang, J. et al. "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10:41, 2023. Licences per dataset (CC BY 4.0; DermaMNIST CC BY-NC 4.0).

A MedMNIST npz holds six arrays: ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images``, ``test_labels``. Images are uint8, ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB);
labels are ``(N, 1)`` class indices or ``(N, K)`` 0/1 multi-label targets (ChestMNIST). The official
splits are used as they are (model selection on ``val``, evaluation on ``test``).

The reader returns ``x`` ``(N, C, H, W)`` float32 in [0, 1] (``uint8 / 255``), ``meta.fs = 0.0``,
``meta.units = "intensity [0, 1]"`` and the class names of the MedMNIST ``INFO`` table for the known
flags (``"0" .. "K-1"`` otherwise). Options convert grayscale <-> RGB (``channels``) and resize
(``size``, :func:`torch.nn.functional.interpolate`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.cache import NPZ_READ_ERRORS, file_fingerprint
from medrobust.data.image_ops import CHANNEL_NAMES, check_channels, convert_channels, parse_size, resize_images
from medrobust.data.registry import SPLITS, register_dataset
from medrobust.errors import ConfigError, DataError
from medrobust.paths import resolve_dataset_dir


@dataclass(frozen=True)
class MedMNISTInfo:
    """What the MedMNIST ``INFO`` table says about one 2-D dataset.

    Attributes
    ----------
    classes
        Label names, index ``k`` names label ``k``.
    channels
        1 (grayscale) or 3 (RGB).
    multilabel
        ``True`` for multi-label binary tasks (labels ``(N, K)``).
    n_samples
        Official (train, val, test) sizes of the 28x28 release.
    """

    classes: tuple[str, ...]
    channels: int
    multilabel: bool
    n_samples: tuple[int, int, int]


# Label names, channels, task type and split sizes as listed in MedMNIST's INFO table (v2 / v3 package).
MEDMNIST_INFO: dict[str, MedMNISTInfo] = {
    "pathmnist": MedMNISTInfo(
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
         "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), 3, False, (89996, 10004, 7180)),
    "chestmnist": MedMNISTInfo(
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
         "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), 1, True, (78468, 11219, 22433)),
    "dermamnist": MedMNISTInfo(
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
         "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), 3, False, (7007, 1003, 2005)),
    "octmnist": MedMNISTInfo(
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1, False, (97477, 10832, 1000)),
    "pneumoniamnist": MedMNISTInfo(("normal", "pneumonia"), 1, False, (4708, 524, 624)),
    "retinamnist": MedMNISTInfo(("0", "1", "2", "3", "4"), 3, False, (1080, 120, 400)),
    "breastmnist": MedMNISTInfo(("malignant", "normal, benign"), 1, False, (546, 78, 156)),
    "bloodmnist": MedMNISTInfo(
        ("basophil", "eosinophil", "erythroblast", "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
         "lymphocyte", "monocyte", "neutrophil", "platelet"), 3, False, (11959, 1712, 3421)),
    "tissuemnist": MedMNISTInfo(
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
         "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
         "Thick Ascending Limb"), 1, False, (165466, 23640, 47280)),
}

_SIZE_SUFFIX = re.compile(r"_(\d+)$")


def base_flag(flag: str) -> str:
    """``"pneumoniamnist_64"`` -> ``"pneumoniamnist"`` (MedMNIST+ files carry a size suffix)."""
    return _SIZE_SUFFIX.sub("", flag)


def classes_of(info: MedMNISTInfo | None, k: int) -> tuple[str, ...]:
    """Class names from the INFO table, or ``"0" .. "K-1"`` for an unknown flag."""
    return info.classes if info is not None else tuple(str(i) for i in range(k))


def find_medmnist(root: str | os.PathLike[str] | None, flag: str) -> Path:
    """Path of ``<flag>.npz`` under ``root`` or ``root/medmnist`` (see :func:`resolve_dataset_dir`)."""
    return resolve_dataset_dir(root, "medmnist", f"{flag}.npz") / f"{flag}.npz"


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(
                    f"MedMNIST file {path} lacks {missing} (it has {sorted(z.files)}). A MedMNIST npz holds "
                    "train_/val_/test_ images and labels; re-download the official file."
                )
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except NPZ_READ_ERRORS as exc:
        raise DataError(f"cannot read MedMNIST file {path}: {exc}. The file is truncated or not an npz; re-download it.") from exc


def _images_to_nchw(images: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, 1|3)`` -> float32 ``(N, C, H, W)`` in [0, 1]."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: '{key}' has shape {images.shape}; expected (N, H, W) grayscale or (N, H, W, 3) RGB images."
        )
    if images.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    elif np.issubdtype(images.dtype, np.floating) and images.size and (images.min() < 0 or images.max() > 1):
        raise DataError(f"{path}: '{key}' is {images.dtype} with values outside [0, 1]; expected uint8 images.")
    elif np.issubdtype(images.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    else:
        raise DataError(f"{path}: '{key}' has dtype {images.dtype}; expected uint8 images (0..255).")
    return x.permute(0, 3, 1, 2).contiguous()


def _check_labels(labels: np.ndarray, n: int, key: str, path: Path) -> np.ndarray:
    """Return labels as int64 ``(N,)`` (single-label) or ``(N, K)`` (multi-label candidate)."""
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != n:
        raise DataError(
            f"{path}: '{key}' has shape {labels.shape} but the images hold {n} samples; expected ({n}, 1) "
            f"class indices or ({n}, K) multi-label targets. The file is inconsistent; re-download it."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError(f"{path}: '{key}' holds non-integer labels; expected class indices.")
    out = labels.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(f"{path}: '{key}' holds negative labels (min {out.min()}); expected class indices >= 0.")
    return out


@register_dataset("medmnist")
def load_medmnist(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    flag: str | None = None,
    path: str | os.PathLike[str] | None = None,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    resize_mode: str = "bilinear",
) -> ECGDataset:
    """One split of a 2-D MedMNIST dataset (Yang et al., Sci. Data 10:41, 2023).

    Parameters
    ----------
    root
        Folder holding ``<flag>.npz`` (or its parent holding ``medmnist/<flag>.npz``); default
        ``MEDROBUST_DATA``.
    split
        ``"train"``, ``"val"``, ``"test"`` (the official splits) or ``"all"`` (concatenated).
    flag
        Dataset file name without ``.npz``: ``"pneumoniamnist"`` (default), ``"breastmnist"``,
        ``"dermamnist"``, ``"pneumoniamnist_64"`` (MedMNIST+) ...
    path
        Explicit path of the npz file (instead of ``root`` + ``flag``); ``flag`` still picks the class
        names and defaults to the file's stem.
    channels
        ``None`` keeps the file's channels; 1 converts RGB to grayscale (BT.601 luma); 3 copies
        grayscale to R, G, B.
    size
        Resize to ``size`` (int or ``(height, width)``) with ``resize_mode`` (``"bilinear"``,
        ``"bicubic"``, ``"nearest"``, ``"area"``); ``None`` keeps the file's resolution.

    Returns
    -------
    ECGDataset
        ``x`` ``(N, C, H, W)`` float32 in [0, 1]; ``y`` ``(N,)`` long, or ``(N, K)`` float multi-hot for
        multi-label files (``meta.multilabel``); ``meta.ids`` ``"<split>/<index>"``.

    Raises
    ------
    DataError
        Missing file, split or key; label shape not matching the images; labels out of range; a
        grayscale file where the dataset is RGB (or the reverse).
    ConfigError
        Invalid options.
    """
    check_channels(channels)
    hw = parse_size(size)
    if split != "all" and split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS} or 'all', got {split!r}.")
    if flag is None:
        flag = Path(path).stem if path is not None else "pneumoniamnist"
    if not isinstance(flag, str) or not flag:
        raise ConfigError(f"flag must be a MedMNIST file name such as 'pneumoniamnist', got {flag!r}.")
    flag = flag.lower().removesuffix(".npz")
    if path is not None:
        if root is not None:
            raise ConfigError("give either root= (with flag=) or path=, not both.")
        npz = Path(path).expanduser()
        if not npz.is_file():
            raise DataError(f"MedMNIST file not found: {npz}. Pass the path of an existing <flag>.npz file.")
    else:
        npz = find_medmnist(root, flag)
    info = MEDMNIST_INFO.get(base_flag(flag))
    arrays = _load_npz(npz)

    labels: dict[str, np.ndarray] = {}
    src_channels: set[int] = set()
    for s in SPLITS:
        img = arrays[f"{s}_images"]
        if img.ndim not in (3, 4):
            raise DataError(f"{npz}: '{s}_images' has shape {img.shape}; expected (N, H, W) or (N, H, W, 3).")
        src_channels.add(1 if img.ndim == 3 else int(img.shape[-1]))
        labels[s] = _check_labels(arrays[f"{s}_labels"], img.shape[0], f"{s}_labels", npz)
    if len(src_channels) != 1:
        raise DataError(f"{npz}: the splits have different channel counts {sorted(src_channels)}; the file is inconsistent.")
    src_c = src_channels.pop()
    widths = {lab.shape[1] for lab in labels.values()}
    if len(widths) != 1:
        raise DataError(f"{npz}: the splits' labels have different widths {sorted(widths)}; the file is inconsistent.")
    width = widths.pop()
    multilabel = info.multilabel if info is not None else width > 1
    if info is not None and src_c != info.channels:
        kind = {1: "grayscale", 3: "RGB"}
        raise DataError(
            f"grayscale/RGB mismatch: {npz} holds {kind.get(src_c, f'{src_c}-channel')} images, but {flag} is "
            f"{kind[info.channels]} ({info.channels} channel(s)). The file is not {flag}.npz: check flag= / path=."
        )
    if multilabel:
        k = len(info.classes) if info is not None else width
        if width != k:
            raise DataError(f"{npz}: labels have {width} columns, but {flag} is multi-label with {k} classes.")
        if any(lab.size and lab.max() > 1 for lab in labels.values()):
            raise DataError(f"{npz}: multi-label targets must be 0 or 1.")
    else:
        if width != 1:
            raise DataError(
                f"{npz}: labels have shape (N, {width}) but {flag} is single-label; expected (N, 1) class indices."
            )
        top = max((int(lab.max()) for lab in labels.values() if lab.size), default=0)
        k = len(info.classes) if info is not None else top + 1
        if top >= k:
            raise DataError(
                f"{npz}: label {top} is out of range for {flag}'s {k} classes {list(classes_of(info, k))}; "
                "the file is not this dataset: check flag= / path=."
            )
    classes = classes_of(info, k)

    parts = list(SPLITS) if split == "all" else [split]
    xs, ys, ids = [], [], []
    for s in parts:
        x = _images_to_nchw(arrays[f"{s}_images"], f"{s}_images", npz)
        x = convert_channels(x, channels=channels, source=str(npz))
        xs.append(resize_images(x, size=hw, mode=resize_mode))
        lab = labels[s]
        ys.append(torch.from_numpy(lab.astype(np.float32)) if multilabel else torch.from_numpy(lab[:, 0]))
        ids.extend(f"{s}/{i}" for i in range(len(lab)))
    x_all = torch.cat(xs) if len(xs) > 1 else xs[0]
    y_all = torch.cat(ys) if len(ys) > 1 else ys[0]
    out_c = int(x_all.shape[1])
    options: dict[str, Any] = {
        "flag": flag,
        "path": str(npz),
        "channels": channels,
        "source_channels": src_c,
        "size": list(hw) if hw else None,
        "source_size": list(arrays["train_images"].shape[1:3]),
        "resize_mode": resize_mode,
        "official_n_samples": dict(zip(SPLITS, info.n_samples)) if info is not None else None,
    }
    meta = DatasetMeta(
        name="medmnist",
        fs=0.0,
        classes=tuple(classes),
        units="intensity [0, 1]",
        ids=np.asarray(ids),
        leads=CHANNEL_NAMES[out_c],
        split=split,
        fingerprint=file_fingerprint([npz]),
        options=options,
        multilabel=multilabel,
    )
    return ECGDataset(x_all, y_all, meta)
