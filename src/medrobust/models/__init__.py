"""Models: a registry by name and safe checkpoints.

>>> from medrobust.models import build_model
>>> model = build_model("cnn1", in_channels=1, input_length=187, num_classes=5)
"""

from medrobust.models import ma_liang, resnet1d  # noqa: F401  (register architectures)
from medrobust.models import vision  # noqa: F401  (torchvision architectures; torchvision itself is optional)
from medrobust.models import han_cnn, resnet18_12lead  # noqa: F401  (ECG architectures of issue 7)
from medrobust.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from medrobust.models.kernel_norm import normalize_kernels
from medrobust.models.ma_liang import CNN1, MLP1
from medrobust.models.registry import available_models, build_model, register_model
from medrobust.models.resnet1d import ResNet1d

__all__ = [
    "build_model",
    "register_model",
    "available_models",
    "save_checkpoint",
    "load_checkpoint",
    "read_card",
    "normalize_kernels",
    "CNN1",
    "MLP1",
    "ResNet1d",
]
