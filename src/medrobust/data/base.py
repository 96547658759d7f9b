"""The dataset type every loader returns.

``ECGDataset`` holds the whole split in memory as tensors in the ``(N, leads, samples)`` layout
(images: ``(N, channels, height, width)``) together with the metadata that must travel with it:
sampling rate, class names, units and per-sample record ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medrobust.errors import DataError


@dataclass(frozen=True)
class DatasetMeta:
    """Metadata carried by a dataset.

    Attributes
    ----------
    name
        Dataset name as registered (``"mitdb"``, ``"synthetic"`` ...).
    fs
        Sampling rate in Hz (``0.0`` for images).
    classes
        Class names, index ``k`` names label ``k``.
    units
        Signal units: ``"mV"``, ``"normalized [0, 1]"``, ``"adc"`` or ``"intensity [0, 1]"``.
    ids
        Per-sample record (or patient) identifier, length ``N``.
    leads
        Lead (channel) names.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    fingerprint
        SHA-256 over the source files (or the generator settings); identifies the data.
    options
        Every option the dataset was built with.
    positions
        Optional per-sample position in the source record (e.g. the R-peak sample index).
    multilabel
        ``True`` when ``y`` is an ``(N, K)`` multi-hot float tensor.
    class_resampled
        ``True`` when samples were repeated to balance classes (metrics then are not plain accuracy).
    uv_scale, uv_offset
        Optional per-sample affine map to µV for data without one physical scale (min-max scaled beats):
        sample ``i``'s value ``v`` was ``v · uv_scale[i] + uv_offset[i]`` µV before scaling (``uv_scale`` is
        the scaled segment's max − min in µV, ``uv_offset`` its min). ``None`` when unknown.
    """

    name: str
    fs: float
    classes: tuple[str, ...]
    units: str
    ids: np.ndarray
    leads: tuple[str, ...] = ("MLII",)
    split: str = "all"
    fingerprint: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    positions: np.ndarray | None = None
    multilabel: bool = False
    class_resampled: bool = False
    uv_scale: np.ndarray | None = None
    uv_offset: np.ndarray | None = None

    def card(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no per-sample arrays)."""
        return {
            "name": self.name,
            "fs": self.fs,
            "classes": list(self.classes),
            "units": self.units,
            "leads": list(self.leads),
            "split": self.split,
            "fingerprint": self.fingerprint,
            "options": self.options,
            "multilabel": self.multilabel,
            "class_resampled": self.class_resampled,
            "n_samples": int(len(self.ids)),
        }


class ECGDataset(Dataset):
    """An in-memory labelled dataset: ``x`` ``(N, leads, samples)`` float32, ``y`` ``(N,)`` long.

    Parameters
    ----------
    x
        Signals, float32, at least 3-D (``(N, leads, samples)``; images ``(N, C, H, W)``).
    y
        Labels: ``(N,)`` int64 class indices, or ``(N, K)`` float multi-hot when ``meta.multilabel``.
    meta
        The dataset's :class:`DatasetMeta`.
    mask
        Optional ``(N, 1, samples)`` (or broadcastable) float mask, 1 on real signal, 0 on padding.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, meta: DatasetMeta, mask: torch.Tensor | None = None
    ) -> None:
        if x.ndim < 3:
            raise DataError(
                f"dataset '{meta.name}': x must be (N, leads, samples), got shape {tuple(x.shape)}; "
                "add a lead axis with x.unsqueeze(1)."
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"dataset '{meta.name}': x has {x.shape[0]} samples but y has {y.shape[0]} labels."
            )
        if len(meta.ids) != x.shape[0]:
            raise DataError(
                f"dataset '{meta.name}': meta.ids has {len(meta.ids)} entries for {x.shape[0]} samples."
            )
        for name in ("uv_scale", "uv_offset"):
            arr = getattr(meta, name)
            if arr is not None and len(arr) != x.shape[0]:
                raise DataError(f"dataset '{meta.name}': meta.{name} has {len(arr)} entries for {x.shape[0]} "
                                "samples; give one value per sample or None.")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0, 0])
            raise DataError(
                f"dataset '{meta.name}': sample {bad} (record {meta.ids[bad]}) contains NaN or inf; "
                "clean or drop it before building the dataset."
            )
        self.x = x.to(torch.float32).contiguous()
        self.y = y if meta.multilabel else y.to(torch.long)
        self.meta = meta
        self.mask = mask

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    @property
    def num_classes(self) -> int:
        return len(self.meta.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 187)``."""
        return tuple(self.x.shape[1:])

    def class_counts(self) -> np.ndarray:
        """Number of samples per class (multi-label: per positive label)."""
        if self.meta.multilabel:
            return self.y.sum(0).to(torch.long).numpy()
        return np.bincount(self.y.numpy(), minlength=self.num_classes)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor, *, split: str | None = None) -> "ECGDataset":
        """Return a new dataset holding ``indices`` (order kept), optionally renaming the split."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        idx_np = idx.numpy()
        meta = replace(
            self.meta,
            ids=self.meta.ids[idx_np],
            positions=None if self.meta.positions is None else self.meta.positions[idx_np],
            uv_scale=None if self.meta.uv_scale is None else self.meta.uv_scale[idx_np],
            uv_offset=None if self.meta.uv_offset is None else self.meta.uv_offset[idx_np],
            split=split or self.meta.split,
        )
        mask = None if self.mask is None else self.mask[idx]
        return ECGDataset(self.x[idx], self.y[idx], meta, mask)

    def __repr__(self) -> str:
        counts = dict(zip(self.meta.classes, self.class_counts().tolist()))
        return (
            f"ECGDataset(name={self.meta.name!r}, split={self.meta.split!r}, n={len(self)}, "
            f"shape={self.input_shape}, fs={self.meta.fs}, units={self.meta.units!r}, classes={counts})"
        )


def fingerprint_arrays(*arrays: np.ndarray, extra: str = "") -> str:
    """SHA-256 of array bytes plus a string (for generated data)."""
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
