"""torchvision image classifiers adapted to one-channel and small (28x28) medical images.

The architectures of Hirano, Minagi & Takemoto, "Universal adversarial attacks on deep neural networks
for medical image classification", BMC Medical Imaging 21:9 (2021): VGG-16/19 (Simonyan & Zisserman,
ICLR 2015), ResNet-18/50 (He et al., CVPR 2016), DenseNet-121/169 (Huang et al., CVPR 2017),
Inception-v3 (Szegedy et al., CVPR 2016), plus MobileNetV2 (Sandler et al., CVPR 2018). They are built
from torchvision **without pretrained weights** and adapted as follows (``docs/images.md``):

* **channels**: the first convolution takes ``in_channels`` (1 or 3) inputs.
* **input scaling inside the model**: the model takes intensities in [0, 1] (what the image loaders
  return) and computes ``(x - mean) / std`` itself (default 0.5 / 0.5, the MedMNIST recipe, which
  equals the seed paper's ``(raw - 128) / 128`` up to 0.4 %), so attack budgets are in [0, 1] units.
* **small inputs** (``small_input``; default: shorter side of ``input_size`` <= 64):
  ResNet: a 3x3 stride-1 stem without max-pool (the CIFAR ResNet of He et al. 2016, the
  "ResNet-18 (28)" of MedMNIST v2); DenseNet: the same 3x3 stride-1 stem without pool0;
  MobileNetV2: stride 1 in the stem and in the first stride-2 stage (overall stride 8 instead of 32);
  VGG: max-pools with ``ceil_mode=True`` (28 -> 14 -> 7 -> 4 -> 2 -> 1 instead of failing at the
  fifth pool).
* **head**: VGG ends in global average pooling and one linear layer (the seed paper's head), not
  torchvision's 4096-4096 ImageNet head; the others keep torchvision's pooling + linear head.
  Inception-v3 is built without the auxiliary classifier.
* **minimum size**: inputs smaller than the architecture's minimum (Inception-v3: 75x75; VGG and
  DenseNet with the ImageNet stem: 32x32; DenseNet with the small stem: 8x8) are bilinearly upsampled
  inside the model, so a 28x28 image is fed to Inception-v3 at 75x75 and perturbations stay in the
  28x28 input space.

torchvision is an optional dependency (``pip install 'medrobust[images]'``); the names are always
registered, and building one without torchvision raises :class:`~medrobust.errors.ConfigError`.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.registry import register_model

SMALL_INPUT_MAX = 64
INCEPTION_MIN_SIZE = 75
INSTALL_HINT = (
    "torchvision is needed for the image architectures: pip install 'medrobust[images]' "
    "(or `make test-images`, which builds .venv-images with torch==2.14.1 torchvision==0.29.1)."
)


def _tv_models() -> Any:
    """``torchvision.models``, or a :class:`ConfigError` saying how to install it."""
    try:
        return importlib.import_module("torchvision.models")
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc


def _size_pair(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, bool):
        raise ConfigError(f"input_size must be an int or (height, width), got {input_size!r}.")
    if isinstance(input_size, int):
        hw = (input_size, input_size)
    elif isinstance(input_size, (list, tuple)) and len(input_size) == 2 and all(isinstance(s, int) for s in input_size):
        hw = (int(input_size[0]), int(input_size[1]))
    else:
        raise ConfigError(f"input_size must be an int or (height, width), got {input_size!r}.")
    if min(hw) < 1:
        raise ConfigError(f"input_size must be positive, got {input_size!r}.")
    return hw


def _stats(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    vals = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(vals) != channels or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{name} must be a number or {channels} numbers (one per channel), got {value!r}.")
    if name == "std" and min(vals) <= 0:
        raise ConfigError(f"std must be positive, got {value!r}.")
    return torch.tensor(vals, dtype=torch.float32).view(1, channels, 1, 1)


def _check_common(in_channels: int, num_classes: int) -> None:
    if isinstance(in_channels, bool) or in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}.")


def _new_conv(old: nn.Conv2d, *, in_channels: int, kernel_size: int | None = None, stride: int | None = None,
              padding: int | None = None, init: str = "kaiming") -> nn.Conv2d:
    """A fresh convolution like ``old`` with another input-channel count (and optionally kernel/stride)."""
    k = kernel_size if kernel_size is not None else old.kernel_size
    conv = nn.Conv2d(
        in_channels, old.out_channels, k,  # type: ignore[arg-type]
        stride=stride if stride is not None else old.stride,  # type: ignore[arg-type]
        padding=padding if padding is not None else old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    if init == "kaiming":
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    else:  # Inception-v3's truncated normal
        nn.init.trunc_normal_(conv.weight, mean=0.0, std=0.1, a=-2, b=2)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class VisionClassifier(nn.Module):
    """A torchvision backbone behind input checks, in-model scaling and minimum-size upsampling.

    Parameters
    ----------
    net
        The adapted torchvision network (maps scaled ``(B, C, H, W)`` to logits).
    arch
        Architecture name.
    in_channels, num_classes, input_size
        What the model expects and predicts.
    min_size
        Inputs with a side below this are bilinearly upsampled (inside the model) to it.
    mean, std
        Per-channel scaling applied to the [0, 1] input: ``(x - mean) / std``.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        in_channels: int,
        num_classes: int,
        input_size: tuple[int, int],
        min_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        self.min_size = min_size
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape)
            raise ConfigError(
                f"{self.arch} expects images (batch, {self.in_channels}, H, W), got {got}. "
                + ("Grayscale/RGB mismatch: load the data with channels="
                   f"{self.in_channels} or build the model with in_channels={x.shape[1]}." if x.ndim == 4 else
                   "Add the channel axis (x.unsqueeze(1)) or the batch axis (x.unsqueeze(0)).")
            )
        x = (x - self.mean) / self.std
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            x = F.interpolate(x, size=(max(h, self.min_size), max(w, self.min_size)), mode="bilinear", align_corners=False)
        return self.net(x)

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}, min_size={self.min_size}")


def _wrap(net: nn.Module, arch: str, in_channels: int, num_classes: int, hw: tuple[int, int], min_size: int,
          mean: float | Sequence[float], std: float | Sequence[float]) -> VisionClassifier:
    return VisionClassifier(net, arch=arch, in_channels=in_channels, num_classes=num_classes, input_size=hw,
                            min_size=min_size, mean=_stats(mean, in_channels, "mean"), std=_stats(std, in_channels, "std"))


def _is_small(hw: tuple[int, int], small_input: bool | None) -> bool:
    return min(hw) <= SMALL_INPUT_MAX if small_input is None else bool(small_input)


def _resnet(arch: str, in_channels: int, num_classes: int, input_size: int | Sequence[int], small_input: bool | None,
            mean: float | Sequence[float], std: float | Sequence[float]) -> VisionClassifier:
    _check_common(in_channels, num_classes)
    hw = _size_pair(input_size)
    net = getattr(_tv_models(), arch)(weights=None, num_classes=num_classes)
    if _is_small(hw, small_input):
        net.conv1 = _new_conv(net.conv1, in_channels=in_channels, kernel_size=3, stride=1, padding=1)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = _new_conv(net.conv1, in_channels=in_channels)
    return _wrap(net, arch, in_channels, num_classes, hw, 1, mean, std)


def _vgg(arch: str, in_channels: int, num_classes: int, input_size: int | Sequence[int], small_input: bool | None,
         batch_norm: bool, mean: float | Sequence[float], std: float | Sequence[float]) -> VisionClassifier:
    _check_common(in_channels, num_classes)
    hw = _size_pair(input_size)
    net = getattr(_tv_models(), f"{arch}_bn" if batch_norm else arch)(weights=None)
    net.features[0] = _new_conv(net.features[0], in_channels=in_channels)
    small = _is_small(hw, small_input)
    if small:
        for m in net.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    head = nn.Linear(512, num_classes)  # the last VGG block has 512 channels
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
    net.classifier = head
    return _wrap(net, arch, in_channels, num_classes, hw, 1 if small else 32, mean, std)


def _densenet(arch: str, in_channels: int, num_classes: int, input_size: int | Sequence[int], small_input: bool | None,
              mean: float | Sequence[float], std: float | Sequence[float]) -> VisionClassifier:
    _check_common(in_channels, num_classes)
    hw = _size_pair(input_size)
    net = getattr(_tv_models(), arch)(weights=None, num_classes=num_classes)
    small = _is_small(hw, small_input)
    if small:
        net.features.conv0 = _new_conv(net.features.conv0, in_channels=in_channels, kernel_size=3, stride=1, padding=1)
        net.features.pool0 = nn.Identity()
    else:
        net.features.conv0 = _new_conv(net.features.conv0, in_channels=in_channels)
    return _wrap(net, arch, in_channels, num_classes, hw, 8 if small else 32, mean, std)


@register_model("resnet18")
def resnet18(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
             small_input: bool | None = None, mean: float | Sequence[float] = 0.5,
             std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """ResNet-18 (He et al., CVPR 2016; torchvision, no pretrained weights) for medical images.

    Parameters
    ----------
    in_channels
        1 (grayscale) or 3 (RGB).
    num_classes
        Output logits.
    input_size
        Expected image size (int or ``(height, width)``); picks the stem when ``small_input`` is None.
    small_input
        3x3 stride-1 stem without max-pool (CIFAR-style); default: shorter side <= 64.
    mean, std
        In-model scaling of [0, 1] inputs, per channel or one value for all.
    """
    return _resnet("resnet18", in_channels, num_classes, input_size, small_input, mean, std)


@register_model("resnet50")
def resnet50(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
             small_input: bool | None = None, mean: float | Sequence[float] = 0.5,
             std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """ResNet-50 (He et al., CVPR 2016; torchvision, no pretrained weights); arguments as :func:`resnet18`."""
    return _resnet("resnet50", in_channels, num_classes, input_size, small_input, mean, std)


@register_model("vgg16")
def vgg16(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
          small_input: bool | None = None, batch_norm: bool = False, mean: float | Sequence[float] = 0.5,
          std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """VGG-16 (Simonyan & Zisserman, ICLR 2015; torchvision) with the seed paper's GAP + linear head.

    ``small_input`` switches the max-pools to ``ceil_mode``; ``batch_norm`` builds VGG-16-BN (easier
    to train from scratch; the seed paper's Keras VGG-16 has none). Other arguments as :func:`resnet18`.
    """
    return _vgg("vgg16", in_channels, num_classes, input_size, small_input, batch_norm, mean, std)


@register_model("vgg19")
def vgg19(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
          small_input: bool | None = None, batch_norm: bool = False, mean: float | Sequence[float] = 0.5,
          std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """VGG-19 (Simonyan & Zisserman, ICLR 2015; torchvision); arguments as :func:`vgg16`."""
    return _vgg("vgg19", in_channels, num_classes, input_size, small_input, batch_norm, mean, std)


@register_model("densenet121")
def densenet121(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
                small_input: bool | None = None, mean: float | Sequence[float] = 0.5,
                std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """DenseNet-121 (Huang et al., CVPR 2017; torchvision); ``small_input``: 3x3 stride-1 stem, no pool0."""
    return _densenet("densenet121", in_channels, num_classes, input_size, small_input, mean, std)


@register_model("densenet169")
def densenet169(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
                small_input: bool | None = None, mean: float | Sequence[float] = 0.5,
                std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """DenseNet-169 (Huang et al., CVPR 2017; torchvision); arguments as :func:`densenet121`."""
    return _densenet("densenet169", in_channels, num_classes, input_size, small_input, mean, std)


@register_model("mobilenet_v2")
def mobilenet_v2(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
                 small_input: bool | None = None, width_mult: float = 1.0, mean: float | Sequence[float] = 0.5,
                 std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """MobileNetV2 (Sandler et al., CVPR 2018; torchvision).

    ``small_input`` sets stride 1 in the stem and in the first stride-2 stage (overall stride 8).
    Other arguments as :func:`resnet18`.
    """
    _check_common(in_channels, num_classes)
    hw = _size_pair(input_size)
    small = _is_small(hw, small_input)
    setting = [[1, 16, 1, 1], [6, 24, 2, 1 if small else 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
               [6, 160, 3, 2], [6, 320, 1, 1]]
    net = _tv_models().mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width_mult,
                                    inverted_residual_setting=setting)
    net.features[0][0] = _new_conv(net.features[0][0], in_channels=in_channels, stride=1 if small else 2)
    return _wrap(net, "mobilenet_v2", in_channels, num_classes, hw, 1, mean, std)


@register_model("inception_v3")
def inception_v3(*, in_channels: int = 1, num_classes: int = 2, input_size: int | Sequence[int] = 28,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> VisionClassifier:
    """Inception-v3 (Szegedy et al., CVPR 2016; torchvision), no auxiliary head.

    Inputs below 75x75 (e.g. 28x28 MedMNIST) are bilinearly upsampled to 75 inside the model (its
    stem needs >= 75x75); the seed paper's 299x299 inputs pass unchanged. Arguments as :func:`resnet18`.
    """
    _check_common(in_channels, num_classes)
    hw = _size_pair(input_size)
    net = _tv_models().inception_v3(weights=None, num_classes=num_classes, aux_logits=False, init_weights=True,
                                    transform_input=False)
    net.Conv2d_1a_3x3.conv = _new_conv(net.Conv2d_1a_3x3.conv, in_channels=in_channels, init="truncnormal")
    return _wrap(net, "inception_v3", in_channels, num_classes, hw, INCEPTION_MIN_SIZE, mean, std)


VISION_MODELS: dict[str, Callable[..., VisionClassifier]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "densenet121": densenet121,
    "densenet169": densenet169,
    "mobilenet_v2": mobilenet_v2,
    "inception_v3": inception_v3,
}
