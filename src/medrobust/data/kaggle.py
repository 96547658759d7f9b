"""Reader for the Kaggle "ECG Heartbeat Categorization" MIT-BIH CSV files.

Kachuee, M., Fazeli, S. & Sarrafzadeh, M. "ECG Heartbeat Classification: A Deep Transferable
Representation", IEEE ICHI 2018 (arXiv 1805.00794). Files ``mitbih_train.csv`` (87,554 rows) and
``mitbih_test.csv`` (21,892 rows): 187 samples at 125 Hz scaled to [0, 1] and zero-padded, then the
label 0..4 = N, S, V, F, Q as the 188th column, no header.

Splits follow Ma & Liang (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134): the train CSV is shuffled with numpy
``RandomState(seed)`` (seed 0) and its first ``int(0.8 n)`` rows are train, the rest validation;
the test CSV is test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from medrobust.data.balance import oversample_indices
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.beats import AAMI_CLASSES, KACHUEE_FS, KACHUEE_LENGTH
from medrobust.data.cache import file_fingerprint
from medrobust.data.registry import register_dataset
from medrobust.errors import ConfigError, DataError
from medrobust.paths import resolve_dataset_dir

FILES = {"train": "mitbih_train.csv", "test": "mitbih_test.csv"}


def read_kaggle_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CSV into ``(n, 187)`` float32 beats and ``(n,)`` int64 labels, validating every row."""
    import pandas as pd  # a dependency of wfdb

    if not path.is_file():
        raise DataError(f"Kaggle heartbeat CSV not found: {path}. Download mitbih_train.csv / mitbih_test.csv "
                        "and pass their folder as root / --data-dir.")
    try:
        frame = pd.read_csv(path, header=None, dtype=np.float64)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} is not a numeric CSV ({exc}); expected 188 numbers per row, no header.") from exc
    if frame.shape[1] != KACHUEE_LENGTH + 1:
        raise DataError(f"{path} has {frame.shape[1]} columns; expected {KACHUEE_LENGTH + 1} "
                        "(187 samples + label). Is this the MIT-BIH heartbeat CSV (not PTB)?")
    values = frame.to_numpy()
    bad = ~np.isfinite(values).all(1)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise DataError(f"{path}: row {row + 1} has missing or non-finite values; fix or remove that row.")
    labels = values[:, -1]
    if not np.isin(labels, np.arange(len(AAMI_CLASSES))).all():
        row = int(np.nonzero(~np.isin(labels, np.arange(len(AAMI_CLASSES))))[0][0])
        raise DataError(f"{path}: row {row + 1} has label {labels[row]:g}; labels must be 0..4 (N, S, V, F, Q).")
    return values[:, :-1].astype(np.float32), labels.astype(np.int64)


@register_dataset("kaggle_heartbeat")
def load_kaggle_heartbeat(
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    val_fraction: float = 0.2,
    seed: int = 0,
    balance: str = "none",
) -> ECGDataset:
    """Beats from the Kaggle MIT-BIH CSVs (folder ``root`` or ``root/kaggle_heartbeat``).

    Parameters
    ----------
    root
        Folder holding ``mitbih_train.csv`` and ``mitbih_test.csv``.
    split
        ``"train"``, ``"val"`` (both from the train CSV) or ``"test"`` (the test CSV).
    val_fraction
        Share of the train CSV held out for validation (0.2 as in Ma & Liang).
    seed
        ``RandomState`` seed of the train/val shuffle (0 as in Ma & Liang).
    balance
        ``"none"`` or ``"oversample"`` (Ma & Liang's tiled class balancing).
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test' for kaggle_heartbeat, got {split!r}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if balance not in ("none", "oversample"):
        raise ConfigError(f"balance must be 'none' or 'oversample', got {balance!r}.")
    folder = resolve_dataset_dir(root, "kaggle_heartbeat", FILES["train"] if split != "test" else FILES["test"])
    path = folder / FILES["test" if split == "test" else "train"]
    x, y = read_kaggle_csv(path)
    idx = np.arange(len(y))
    if split != "test":
        perm = np.random.RandomState(seed).permutation(len(y))
        n_train = int((1.0 - val_fraction) * len(y))
        idx = perm[:n_train] if split == "train" else perm[n_train:]
    if balance == "oversample":
        idx = idx[oversample_indices(y[idx], seed=seed)]
    meta = DatasetMeta(
        name="kaggle_heartbeat",
        fs=KACHUEE_FS,
        classes=AAMI_CLASSES,
        units="normalized [0, 1]",
        ids=np.array([f"{path.stem}:{i}" for i in idx]),
        leads=("MLII",),
        split=split,
        fingerprint=file_fingerprint([path]),
        options={"val_fraction": val_fraction, "seed": seed, "balance": balance, "file": str(path)},
        positions=idx.astype(np.int64),
        class_resampled=balance == "oversample",
    )
    return ECGDataset(torch.from_numpy(x[idx][:, None, :]), torch.from_numpy(y[idx]), meta)
