"""Fixtures of the defence tests: a small slice of real MIT-BIH beats and tiny hand-checkable models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data.base import ECGDataset


@pytest.fixture(scope="package")
def beats(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ECGDataset, ECGDataset]:
    """MIT-BIH records 100, 119 and 208 (Kachuee beats, [0, 1]): 384 training and 96 validation beats."""
    from medrobust.data import load_dataset

    kw = dict(root=shared_data / "mitdb", records=["100", "119", "208"], cache_dir=tmp_path_factory.mktemp("dcache"))
    train = load_dataset("mitdb", split="train", **kw)
    val = load_dataset("mitdb", split="val", **kw)
    g = np.random.default_rng(0)
    return train.subset(g.choice(len(train), 384, replace=False)), val.subset(g.choice(len(val), 96, replace=False))


class Linear(nn.Module):
    """``z = W·flatten(x) + b`` — its input Jacobian is ``W`` everywhere."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = None if bias is None else nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.weight.T
        return z if self.bias is None else z + self.bias


class TinyNet(nn.Module):
    """A small smooth non-linear net (tanh) for comparisons against per-sample autograd."""

    def __init__(self, d: int, k: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(d, 6)
        self.b = nn.Linear(6, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.flatten(1))))
