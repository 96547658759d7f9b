"""A small 1-D ResNet for ECG beats and strips.

He, K. et al. "Deep Residual Learning for Image Recognition", CVPR 2016, adapted to 1-D signals
(as in Hannun et al. 2019, Nat. Med. 25: 65-69). Global average pooling makes it length-agnostic.
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.models.registry import register_model


class BasicBlock1d(nn.Module):
    """Two ``k``-tap convolutions with batch-norm and an identity (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


@register_model("resnet1d")
class ResNet1d(nn.Module):
    """Compact 1-D ResNet: stem, ``len(widths)`` stages of ``blocks`` basic blocks, global pooling.

    Parameters
    ----------
    in_channels
        Leads.
    num_classes
        Output logits.
    input_length
        Accepted for a uniform signature; the network is length-agnostic.
    widths
        Channels per stage; every stage after the first halves the length.
    blocks
        Basic blocks per stage.
    kernel_size
        Convolution taps.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 5,
        input_length: int | None = None,
        widths: tuple[int, ...] | list[int] = (32, 64, 128),
        blocks: int = 2,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        widths = list(widths)
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, widths[0], kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock1d(c_in, w, 2 if (i > 0 and b == 0) else 1, kernel_size))
                c_in = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))
        return self.head(h.mean(-1))
