"""Channel conversion and resizing of image batches in the ``(N, C, H, W)`` layout, values in [0, 1].

Shared by the image loaders (:mod:`medrobust.data.medmnist`, :mod:`medrobust.data.image_folder`).
Grayscale from RGB uses the ITU-R BT.601 luma weights (0.299, 0.587, 0.114), the same weights as
Pillow's ``"L"`` conversion, so both loaders give the same gray levels for the same picture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medrobust.errors import ConfigError, DataError

LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
RESIZE_MODES: tuple[str, ...] = ("bilinear", "bicubic", "nearest", "area")
CHANNEL_NAMES: dict[int, tuple[str, ...]] = {1: ("gray",), 3: ("R", "G", "B")}


def parse_size(size: int | tuple[int, int] | list[int] | None, *, argument: str = "size") -> tuple[int, int] | None:
    """``None``, an int ``s`` (-> ``(s, s)``) or ``(height, width)``; raises :class:`ConfigError` otherwise."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise ConfigError(f"{argument} must be an int or (height, width), got {size!r}.")
    if isinstance(size, int):
        hw = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ConfigError(f"{argument} must be an int or a (height, width) pair of ints, got {size!r}.")
    if min(hw) < 1:
        raise ConfigError(f"{argument} must be positive, got {size!r}.")
    return hw


def check_channels(channels: int | None, *, argument: str = "channels") -> int | None:
    """Validate a requested channel count (``None``, 1 or 3)."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ConfigError(f"{argument} must be 1 (grayscale), 3 (RGB) or None (keep the file's), got {channels!r}.")
    return channels


def convert_channels(x: torch.Tensor, *, channels: int | None, source: str) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to ``channels`` (1: BT.601 luma of RGB; 3: gray copied to R, G, B).

    Parameters
    ----------
    x
        Images, ``C`` in {1, 3}.
    channels
        Target channel count, or ``None`` to keep ``C``.
    source
        Name of the file or folder, used in error messages.

    Raises
    ------
    DataError
        When ``C`` is neither 1 nor 3 (no defined conversion).
    """
    check_channels(channels)
    c = int(x.shape[1])
    if c not in (1, 3):
        raise DataError(
            f"{source}: images have {c} channels; only grayscale (1) and RGB (3) images are supported. "
            "Convert them to grayscale or RGB first."
        )
    if channels is None or channels == c:
        return x
    if c == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def resize_images(
    x: torch.Tensor, *, size: tuple[int, int] | None, mode: str = "bilinear", chunk: int = 1024
) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``size`` with :func:`torch.nn.functional.interpolate`.

    Bilinear and bicubic use ``antialias=True`` (area-weighted when shrinking); the result is clipped to
    [0, 1] (bicubic overshoots). Work is chunked over ``N`` to bound peak memory.
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}.")
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    kwargs: dict[str, object] = {}
    if mode in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": True}
    out = [
        F.interpolate(part, size=size, mode=mode, **kwargs).clamp_(0.0, 1.0)  # type: ignore[arg-type]
        for part in x.split(chunk)
    ]
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], *size))
