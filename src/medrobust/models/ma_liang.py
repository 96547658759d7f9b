"""Ma & Liang's MIT-BIH beat models CNN1 and MLP1 (ICLR 2020 AI4AH workshop, arXiv 2005.09134, their models).

Ma, L. & Liang, L. "Improve robustness of DNN for ECG signal classification: a noise-to-signal
ratio perspective", ICLR 2020 AI4AH (arXiv 2005.09134); Ma & Liang, Comput. Biol. Med. 2022
(arXiv 2110.09759). CNN1 follows Kachuee et al. 2018 (arXiv 1805.00794).
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.kernel_norm import KernelNormMixin, unit_norm_init
from medrobust.models.registry import register_model


class _ResBlock(nn.Module):
    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 5, padding=2, bias=bias)
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2, bias=bias)
        self.pool = nn.MaxPool1d(5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)
        return self.pool(y)


@register_model("cnn1")
class CNN1(KernelNormMixin, nn.Module):
    """Ma & Liang CNN1: Conv1d(in->32, k5) + 5 residual blocks with max-pooling + 2 linear layers.

    Parameters
    ----------
    in_channels
        Leads (1 for MIT-BIH beats).
    input_length
        Samples per input (187 for Kachuee beats: lengths 187->92->44->20->8->2, 64 features).
    num_classes
        Output logits (5 AAMI classes).
    channels
        Convolution width (32 in the paper).
    bias
        ``False`` gives the bias-free variant used by NSR Method 1.
    weight_norm
        Unit-norm initialisation and per-step kernel normalisation (Ma & Liang's recipe).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        input_length: int = 187,
        num_classes: int = 5,
        channels: int = 32,
        bias: bool = True,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.weight_norm = weight_norm
        self.conv0 = nn.Conv1d(in_channels, channels, 5, padding=2, bias=bias)
        self.blocks = nn.ModuleList(_ResBlock(channels, bias) for _ in range(5))
        length = input_length
        for _ in range(5):
            length = (length - 5) // 2 + 1
        if length < 1:
            raise ConfigError(f"cnn1: input_length={input_length} is too short for 5 pooling stages (need >= 67).")
        self.linear1 = nn.Linear(channels * length, 32, bias=bias)
        self.linear2 = nn.Linear(32, num_classes, bias=bias)
        if weight_norm:
            unit_norm_init(self.norm_layers())

    def norm_layers(self) -> list[nn.Module]:
        convs = [c for b in self.blocks for c in (b.conv1, b.conv2)]
        return [self.conv0, *convs, self.linear1, self.linear2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(x)
        for block in self.blocks:
            h = block(h)
        return self.linear2(torch.relu(self.linear1(h.flatten(1))))


@register_model("mlp1")
class MLP1(KernelNormMixin, nn.Module):
    """Ma & Liang MLP1: 187->128->128->128->32 (no activation) ->classes.

    Parameters
    ----------
    in_channels, input_length
        Input shape; the input is flattened to ``in_channels * input_length`` features.
    num_classes
        Output logits.
    width
        Hidden width (128).
    bias
        ``False`` for the bias-free NSR Method 1 variant.
    weight_norm
        Unit-norm init and kernel normalisation of the four hidden layers (not the output layer).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        input_length: int = 187,
        num_classes: int = 5,
        width: int = 128,
        bias: bool = True,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.weight_norm = weight_norm
        self.fc1 = nn.Linear(in_channels * input_length, width, bias=bias)
        self.fc2 = nn.Linear(width, width, bias=bias)
        self.fc3 = nn.Linear(width, width, bias=bias)
        self.fc4 = nn.Linear(width, 32, bias=bias)
        self.out = nn.Linear(32, num_classes, bias=bias)
        if weight_norm:
            unit_norm_init(self.norm_layers())

    def norm_layers(self) -> list[nn.Module]:
        return [self.fc1, self.fc2, self.fc3, self.fc4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        h = torch.relu(self.fc1(h))
        h = torch.relu(self.fc2(h))
        h = torch.relu(self.fc3(h))
        return self.out(self.fc4(h))
