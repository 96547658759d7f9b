"""Models: a registry by name, safe checkpoints, and the user's own models (TorchScript, ONNX, factories).

>>> from medrobust.models import build_model
>>> model = build_model("cnn1", in_channels=1, input_length=187, num_classes=5)
"""

from medrobust.models import ma_liang, resnet1d  # noqa: F401  (register architectures)
from medrobust.models import vision  # noqa: F401  (torchvision architectures; torchvision itself is optional)
from medrobust.models import han_cnn, resnet18_12lead  # noqa: F401  (ECG architectures of issue 7)
from medrobust.models import cnn2d  # noqa: F401  (the small image CNN: CPU baseline of the image tasks)
from medrobust.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from medrobust.models.kernel_norm import normalize_kernels
from medrobust.models.ma_liang import CNN1, MLP1
from medrobust.models.registry import available_models, build_model, register_model
from medrobust.models.resnet1d import ResNet1d
from medrobust.models.sources import SOURCE_KINDS, load_model, source_kind

__all__ = [
    "build_model",
    "register_model",
    "available_models",
    "save_checkpoint",
    "load_checkpoint",
    "read_card",
    "load_model",
    "source_kind",
    "SOURCE_KINDS",
    "normalize_kernels",
    "CNN1",
    "MLP1",
    "ResNet1d",
]
