"""Datasets in the ``(N, leads, samples)`` layout with their metadata.

>>> from medrobust.data import load_dataset
>>> train = load_dataset("synthetic", split="train")
>>> train.x.shape, train.meta.fs
(torch.Size([2000, 1, 187]), 125.0)
"""

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.data.registry import available_datasets, load_dataset, register_dataset
from medrobust.data.synthetic import load_synthetic, make_synthetic

register_dataset("synthetic")(load_synthetic)

from medrobust.data import mitdb as _mitdb  # noqa: E402,F401  (registers mitdb, kaggle_heartbeat)
from medrobust.data.balance import class_weights, oversample_indices  # noqa: E402

__all__ = [
    "load_dataset",
    "register_dataset",
    "available_datasets",
    "ECGDataset",
    "DatasetMeta",
    "make_synthetic",
    "class_weights",
    "oversample_indices",
]
