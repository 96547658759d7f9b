"""A small two-block 2-D CNN for MedMNIST-scale images (28x28), trainable and attackable on a CPU.

Not a paper's architecture: the CPU baseline of the image leaderboard tasks and of quick experiments, where the
torchvision models of :mod:`medrobust.models.vision` (ResNet-18 at 28x28: ~1.7 GFLOP per training image) are
too slow for a full adversarial evaluation on a laptop. The design is the classic LeNet-style pair of
convolution blocks (LeCun et al., Proc. IEEE 1998), with ReLU (Nair & Hinton, ICML 2010) and batch
normalisation (Ioffe & Szegedy, ICML 2015):

``[conv3x3(w) → BN → ReLU → maxpool2] → [conv3x3(2w) → BN → ReLU → maxpool2] → adaptive avg-pool to 7x7
→ linear(2w·49 → hidden) → ReLU → linear(hidden → classes)``.

Inputs are images in [0, 1] of shape ``(batch, in_channels, H, W)``; ``(x − mean) / std`` is applied inside
the model, so attacks and threat models work in intensity units, like the torchvision wrappers. Any H, W ≥ 4
are accepted (the adaptive pool makes the head size-independent; at 28x28 it is the identity).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medrobust.checks import check_int
from medrobust.errors import ConfigError
from medrobust.models.registry import register_model

__all__ = ["CNN2d"]


def _channel_stats(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    vals = [value] * channels if number else list(value) if isinstance(value, (list, tuple)) else [None]
    if len(vals) != channels or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        raise ConfigError(f"cnn2d: {name} must be a number or {channels} numbers (one per channel), got {value!r}.")
    t = torch.tensor([float(v) for v in vals], dtype=torch.float32)
    if not bool(torch.isfinite(t).all()) or (name == "std" and bool((t <= 0).any())):
        raise ConfigError(f"cnn2d: {name} must be finite{' and positive' if name == 'std' else ''}, got {value!r}.")
    return t.view(1, channels, 1, 1)


@register_model("cnn2d")
class CNN2d(nn.Module):
    """Two convolution blocks and a two-layer head for small images (the image tasks' CPU baseline).

    Parameters
    ----------
    in_channels
        1 (grayscale) or 3 (RGB).
    num_classes
        Output logits.
    input_size
        ``H`` or ``(H, W)``; only checked (≥ 4 per side): the head adapts to any size.
    width
        Channels of the first block (the second has ``2 * width``); 32 by default.
    hidden
        Width of the hidden linear layer; 128 by default.
    mean, std
        Per-channel scaling of the [0, 1] input, applied inside the model.
    """

    def __init__(self, *, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
                 width: int = 32, hidden: int = 128, mean: float | Sequence[float] = 0.5,
                 std: float | Sequence[float] = 0.5) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "cnn2d: in_channels", minimum=1)
        num_classes = check_int(num_classes, "cnn2d: num_classes", minimum=1)
        width = check_int(width, "cnn2d: width", minimum=1)
        hidden = check_int(hidden, "cnn2d: hidden", minimum=1)
        sizes = [input_size] * 2 if isinstance(input_size, int) and not isinstance(input_size, bool) else input_size
        if not isinstance(sizes, (list, tuple)) or len(sizes) != 2:
            raise ConfigError(f"cnn2d: input_size must be an int or (height, width), got {input_size!r}.")
        self.input_size = tuple(check_int(s, "cnn2d: input_size", minimum=4) for s in sizes)
        self.in_channels = in_channels
        self.register_buffer("mean", _channel_stats(mean, in_channels, "mean"), persistent=False)
        self.register_buffer("std", _channel_stats(std, in_channels, "std"), persistent=False)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"cnn2d expects images (batch, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                              "build it with in_channels equal to the data's channels.")
        if min(x.shape[-2:]) < 4:
            raise ConfigError(f"cnn2d needs images of at least 4x4 pixels, got {tuple(x.shape[-2:])}.")
        return self.head(self.features((x - self.mean) / self.std))
