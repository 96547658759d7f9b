"""Ma & Liang's 12-lead 1-D ResNet-18 with GroupNorm and masked average pooling (CPSC 2018).

Ma, L. & Liang, L. "Enhance CNN robustness against noises for classification of 12-lead ECG with
variable length", ICMLA 2020 (arXiv 2008.03609) and Comput. Biol. Med. 2022 (arXiv 2110.09759);
the "resnet18a" model of their CPSC2018 code, as described in the Comput. Biol. Med. paper:

* stem: Conv1d(leads -> 64, k11, s2, p5, no bias) -> GroupNorm(64 groups) -> LeakyReLU ->
  MaxPool(k3, s2, p1);
* 4 stages x 2 basic blocks with 64, 128, 256, 512 channels; **every** block has stride 2:
  ``out = LeakyReLU(GN(conv3(LeakyReLU(GN(conv3_s2(x))))) + GN(conv1x1_s2(x)))`` (the 1x1
  shortcut is always present); GroupNorm has one group per channel;
* Conv1d(512 -> 512, k3, no padding) -> ReLU;
* masked average pooling: the mask is average-pooled with kernel ``3 x 1024`` and stride 1024 (the
  receptive window of each output position), values below 0.5 are set to 0, and the feature is
  ``sum_t h_t m_t / (sum_t m_t + 1e-8)``; Linear(512 -> classes). With a mask the input's padding is
  zeroed first, so the logits ignore whatever the padded region holds.

For the paper's input of 33,792 samples the time axis goes 16,896 -> 8,448 -> 33 (after 8 blocks)
-> 31 positions, and the pooled mask has 31 positions as well. For other lengths the pooled mask is
cut or zero-extended at the end to the feature length. Without a mask every position has weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.registry import register_model

DOWNSAMPLE = 1024  # stem conv 2 x max-pool 2 x 8 stride-2 blocks
WINDOW = 3 * DOWNSAMPLE  # the final k3 convolution spans three positions


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels, channels)


class GNBlock1d(nn.Module):
    """Basic block with stride 2 on its first 3-tap conv and on the always-present 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, slope: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.gn1 = _gn(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.gn2 = _gn(c_out)
        self.short = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=2, bias=False), _gn(c_out))
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.gn1(self.conv1(x)), self.slope)
        return F.leaky_relu(self.gn2(self.conv2(h)) + self.short(x), self.slope)


def pooled_mask(mask: torch.Tensor, positions: int) -> torch.Tensor:
    """Weights ``(B, positions)`` of the output positions from an input mask ``(B, 1, L)``."""
    m = F.avg_pool1d(mask.to(torch.float32).flatten(1, -2).amax(1, keepdim=True), WINDOW, DOWNSAMPLE).flatten(1)
    if m.shape[1] > positions:
        m = m[:, :positions]
    elif m.shape[1] < positions:
        m = F.pad(m, (0, positions - m.shape[1]))
    return torch.where(m < 0.5, torch.zeros_like(m), m)


@register_model("resnet18_12lead")
class ResNet18Lead12(nn.Module):
    """1-D ResNet-18 with GroupNorm, LeakyReLU and masked pooling (Ma & Liang, Comput. Biol. Med. 2022).

    Parameters
    ----------
    in_channels
        Leads (8 for Ma & Liang: I, II, V1-V6; 12 for all leads).
    num_classes
        Output logits (9 CPSC 2018 classes; a multi-label head is the same K logits).
    input_length
        Accepted for a uniform signature; inputs need at least 3,072 samples.
    width_scale
        Multiplies the channel counts 64/128/256/512 (at least 1 channel each).
    negative_slope
        LeakyReLU slope (PyTorch's default 0.01).
    """

    def __init__(
        self,
        *,
        in_channels: int = 8,
        num_classes: int = 9,
        input_length: int | None = None,
        width_scale: float = 1.0,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if not width_scale > 0:
            raise ConfigError(f"width_scale must be > 0, got {width_scale}.")
        if input_length is not None and input_length < WINDOW:
            raise ConfigError(f"input_length={input_length} is too short: resnet18_12lead needs >= {WINDOW} samples.")
        widths = [max(1, int(round(c * width_scale))) for c in (64, 128, 256, 512)]
        self.slope = negative_slope
        self.stem_conv = nn.Conv1d(in_channels, widths[0], 11, stride=2, padding=5, bias=False)
        self.stem_gn = _gn(widths[0])
        self.stem_pool = nn.MaxPool1d(3, stride=2, padding=1)
        blocks = []
        c_in = widths[0]
        for w in widths:
            for _ in range(2):
                blocks.append(GNBlock1d(c_in, w, negative_slope))
                c_in = w
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = nn.Conv1d(c_in, c_in, 3, bias=False)
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position features ``(B, 512 * width_scale, T)``."""
        if x.shape[-1] < WINDOW:
            raise ConfigError(f"resnet18_12lead needs inputs of >= {WINDOW} samples, got {x.shape[-1]}; "
                              "zero-pad the records (with a mask) to a longer fixed length.")
        h = self.stem_pool(F.leaky_relu(self.stem_gn(self.stem_conv(x)), self.slope))
        return torch.relu(self.final_conv(self.blocks(h)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, classes)``; ``mask`` ``(B, 1, L)`` (1 on the signal) restricts the pooling.

        With a mask the padding is set to zero before the network (the value Ma & Liang pad with), so
        the logits do not depend on what the padded region holds: GroupNorm statistics over the time
        axis and the receptive fields of the kept positions would otherwise see it.
        """
        if mask is None:
            return self.head(self.features(x).mean(-1))
        if mask.ndim != x.ndim or mask.shape[0] != x.shape[0] or mask.shape[-1] != x.shape[-1]:
            raise ConfigError(f"mask shape {tuple(mask.shape)} does not match input {tuple(x.shape)}; "
                              "pass the (B, 1, L) mask of the dataset.")
        h = self.features(x * (mask != 0).to(x.dtype))
        m = pooled_mask(mask, h.shape[-1]).to(h.dtype)
        pooled = (h * m.unsqueeze(1)).sum(-1) / (m.sum(-1, keepdim=True) + 1e-8)
        return self.head(pooled)
