"""Fixed-length crop/pad with masks, and a collate function for variable-length batches.

Whole-record ECG datasets (CinC 2017, CPSC 2018, CinC 2021) hold recordings of different lengths.
Two conventions from the seed papers are supported:

* Han et al. 2020 (Nat. Med. 26: 360-363): keep the first ``length`` samples
  of a longer record; pad a shorter one with zeros **symmetrically**, ``left = floor(r / 2)``,
  ``right = r - left`` with ``r = length - n``.
* Ma & Liang 2022 (Comput. Biol. Med., arXiv 2110.09759): keep the first samples and pad on the
  **left** (the signal is right-aligned).

Every function returns a mask that is 1 exactly on the real samples and 0 on the padding, so
attacks can re-zero the padding and pooling can ignore it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medrobust.errors import ConfigError

PAD_MODES = ("symmetric", "left", "right")


def pad_amounts(n: int, length: int, pad: str) -> tuple[int, int]:
    """Zeros to add ``(left, right)`` to a record of ``n <= length`` samples."""
    if pad not in PAD_MODES:
        raise ConfigError(f"pad must be one of {PAD_MODES}, got {pad!r}.")
    r = max(length - n, 0)
    if pad == "symmetric":
        return r // 2, r - r // 2
    return (r, 0) if pad == "left" else (0, r)


def fix_length(signal: np.ndarray, *, length: int, pad: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """Crop (keep the first ``length`` samples) or zero-pad ``signal`` ``(leads, n)`` to ``length``.

    Returns
    -------
    out, mask
        ``(leads, length)`` in the input dtype and a ``(1, length)`` float32 mask (1 on real samples).
    """
    if length < 1:
        raise ConfigError(f"length must be >= 1, got {length}.")
    signal = np.atleast_2d(signal)
    n = min(signal.shape[-1], length)
    left, _ = pad_amounts(n, length, pad)
    out = np.zeros((signal.shape[0], length), dtype=signal.dtype)
    out[:, left : left + n] = signal[:, :n]
    mask = np.zeros((1, length), dtype=np.float32)
    mask[:, left : left + n] = 1.0
    return out, mask


def stack_fixed(
    signals: Sequence[np.ndarray], *, length: int | None, pad: str = "symmetric", dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Stack records ``(leads, n_i)`` into ``(N, leads, length)`` plus an ``(N, 1, length)`` mask.

    ``length=None`` pads every record to the longest one (variable-length data in one array).
    """
    if not signals:
        raise ConfigError("stack_fixed: no records given.")
    leads = signals[0].shape[0]
    if length is None:
        length = max(s.shape[-1] for s in signals)
    if length < 1:
        raise ConfigError(f"length must be >= 1, got {length}.")
    pad_amounts(0, 1, pad)  # validates ``pad``
    x = np.zeros((len(signals), leads, length), dtype=dtype)
    mask = np.zeros((len(signals), 1, length), dtype=np.float32)
    for i, s in enumerate(signals):
        n = min(s.shape[-1], length)
        left, _ = pad_amounts(n, length, pad)
        x[i, :, left : left + n] = s[:, :n]
        mask[i, :, left : left + n] = 1.0
    return x, mask


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], *, pad: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``collate_fn`` for a ``DataLoader`` over variable-length records.

    Parameters
    ----------
    batch
        Items ``(x_i, y_i)`` with ``x_i`` of shape ``(leads, n_i)``.
    pad
        Where the zeros go (``functools.partial(pad_collate, pad="symmetric")`` for Han's layout).

    Returns
    -------
    x, y, mask
        ``(B, leads, max n_i)``, stacked labels and a ``(B, 1, max n_i)`` float mask.
    """
    if not batch:
        raise ConfigError("pad_collate: empty batch.")
    length = max(int(x.shape[-1]) for x, _ in batch)
    xs = torch.zeros((len(batch), batch[0][0].shape[0], length), dtype=batch[0][0].dtype)
    mask = torch.zeros((len(batch), 1, length), dtype=torch.float32)
    for i, (x, _) in enumerate(batch):
        n = int(x.shape[-1])
        left, _ = pad_amounts(n, length, pad)
        xs[i, :, left : left + n] = x
        mask[i, :, left : left + n] = 1.0
    ys = torch.stack([torch.as_tensor(y) for _, y in batch])
    return xs, ys, mask


def trim_to_mask(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the time steps where every record of the batch is padding (saves compute per batch)."""
    keep = mask.flatten(0, -2).amax(0) > 0
    idx = torch.nonzero(keep).flatten()
    if idx.numel() == 0:
        return x[..., :0], mask[..., :0]
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    return x[..., lo:hi], mask[..., lo:hi]


class UnpaddedView(Dataset):
    """The records of a padded dataset without their padding, for per-batch padding.

    ``DataLoader(UnpaddedView(ds), batch_size=32, collate_fn=pad_collate)`` yields batches padded
    only to their own longest record, with masks.

    Parameters
    ----------
    dataset
        A dataset with a ``mask`` (e.g. ``load_dataset("cinc2017", seconds=None)``).
    """

    def __init__(self, dataset: Any) -> None:
        if getattr(dataset, "mask", None) is None:
            raise ConfigError("UnpaddedView needs a dataset with a mask "
                              "(the CinC 2017 / CPSC 2018 / CinC 2021 loaders set one).")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[i]
        real = torch.nonzero(self.dataset.mask[i].flatten(0, -2).amax(0) > 0).flatten()
        if real.numel() == 0:
            return x[..., :0], y
        return x[..., int(real[0]) : int(real[-1]) + 1], y
