"""Datasets in the ``(N, leads, samples)`` layout with their metadata.

>>> from medrobust.data import load_dataset
>>> train = load_dataset("synthetic", split="train")
>>> train.x.shape, train.meta.fs
(torch.Size([2000, 1, 187]), 125.0)
"""

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.registry import (
    available_datasets,
    check_dataset_options,
    dataset_options,
    load_dataset,
    register_dataset,
)
from medrobust.data.synthetic import load_synthetic, make_synthetic

register_dataset("synthetic", options_from=(make_synthetic,))(load_synthetic)

from medrobust.data import kaggle as _kaggle  # noqa: E402,F401  (registers kaggle_heartbeat)
from medrobust.data import mitdb as _mitdb  # noqa: E402,F401  (registers mitdb)
from medrobust.data import image_folder as _image_folder  # noqa: E402,F401  (registers image_folder)
from medrobust.data import medmnist as _medmnist  # noqa: E402,F401  (registers medmnist)
from medrobust.data import cinc2017 as _cinc2017  # noqa: E402,F401  (registers cinc2017)
from medrobust.data import cpsc2018 as _cpsc2018  # noqa: E402,F401  (registers cpsc2018)
from medrobust.data import cinc2021 as _cinc2021  # noqa: E402,F401  (registers cinc2021)
from medrobust.data.balance import class_weights, oversample_indices  # noqa: E402

__all__ = [
    "load_dataset",
    "register_dataset",
    "available_datasets",
    "dataset_options",
    "check_dataset_options",
    "ECGDataset",
    "DatasetMeta",
    "make_synthetic",
    "class_weights",
    "oversample_indices",
]
