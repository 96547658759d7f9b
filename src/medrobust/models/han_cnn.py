"""Han et al.'s 13-layer dilated CNN for single-lead AF classification (CinC 2017).

Han, X. et al. "Deep learning models for electrocardiograms are susceptible to adversarial
attack", Nat. Med. 26: 360-363, 2020 (arXiv 1905.05163); architecture as in the authors'
``model/CNN.py`` (Han et al., Nat. Med. 2020, Methods), also used by Shao et al. (arXiv 2203.09487, §5.2).

Every block is Conv1d (stride 1, bias) -> BatchNorm1d -> ReLU -> [MaxPool] -> Dropout(0.3). The
max-pool has kernel 2, stride 2, padding 1 and dilation 2 (output length ``floor((L - 1) / 2) + 1``).
Padding of every convolution is ``dilation * (kernel - 1) // 2``, which reproduces Han's values
(11, 15, 30, 14, 21, 28): block 1 (even kernel 24) shortens 18,000 to 17,999, the others keep the
length. Head: mean over time -> Linear(64 -> classes), so any input length works. At
``width_scale=1`` the model has 5,486,916 parameters (the paper's ~5.49 M).

``width_scale`` multiplies every channel count (at least 1 channel); ``length_scale`` multiplies
every kernel size (at least 2 taps), for inputs resampled to ``length_scale x 300`` Hz so that the
receptive field keeps its duration in seconds.
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.registry import register_model

# (in, out, kernel, dilation, pool after) for the 13 blocks of Han's model/CNN.py
HAN_LAYERS: tuple[tuple[int, int, int, int, bool], ...] = (
    (1, 320, 24, 1, True),
    (320, 256, 16, 2, False),
    (256, 256, 16, 4, False),
    (256, 256, 16, 4, False),
    (256, 256, 16, 4, False),
    (256, 128, 8, 4, True),
    (128, 128, 8, 6, False),
    (128, 128, 8, 6, False),
    (128, 128, 8, 6, False),
    (128, 128, 8, 6, False),
    (128, 128, 8, 8, True),
    (128, 64, 8, 8, False),
    (64, 64, 8, 8, False),
)


class HanBlock(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU -> optional dilated MaxPool -> Dropout."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, pool: bool, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.bn = nn.BatchNorm1d(c_out)
        self.pool: nn.Module = nn.MaxPool1d(2, stride=2, padding=1, dilation=2) if pool else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.pool(torch.relu(self.bn(self.conv(x)))))


@register_model("han_cnn")
class HanCNN(nn.Module):
    """Han et al.'s 13-layer dilated 1-D CNN (Han et al., Nat. Med. 26: 360-363, 2020).

    Parameters
    ----------
    in_channels
        Leads (1 for CinC 2017).
    num_classes
        Output logits (4: N, A, O, ~).
    input_length
        Accepted for a uniform signature; the head pools over time, so any length >= 1 works.
    width_scale
        Multiplies every channel count (1.0 = Han's 320/256/128/64 channels).
    length_scale
        Multiplies every kernel size (1.0 = Han's 24/16/8 taps at 300 Hz; 0.5 for 150 Hz input).
    dropout
        Dropout probability after every block (0.3 in Han's code).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 4,
        input_length: int | None = None,
        width_scale: float = 1.0,
        length_scale: float = 1.0,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if not width_scale > 0 or not length_scale > 0:
            raise ConfigError(f"width_scale and length_scale must be > 0, got {width_scale}, {length_scale}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")

        def ch(c: int) -> int:
            return max(1, int(round(c * width_scale)))

        blocks = []
        for i, (c_in, c_out, k, d, pool) in enumerate(HAN_LAYERS):
            c_in = in_channels if i == 0 else ch(c_in)
            blocks.append(HanBlock(c_in, ch(c_out), max(2, int(round(k * length_scale))), d, pool, dropout))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(ch(HAN_LAYERS[-1][1]), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the 13th block, ``(B, 64 * width_scale, L')``."""
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))
