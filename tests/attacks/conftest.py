"""Shared fixtures for the attack tests: small slices of real data and small models built here.

* ``ecg12``: 12 twelve-lead records of the PhysioNet/CinC 2021 sample (Georgia, 500 Hz, mV), 2 s each.
* ``beats``: 8 MIT-BIH beats of record 100 (Kachuee format: 187 samples at 125 Hz in [0, 1]).
* ``images``: 8 BreastMNIST test images (1 x 28 x 28 in [0, 1]).

Labels are the small models' own clean predictions, so every sample is clean-correct and is
actually attacked (a random-init model would otherwise misclassify most samples and early stop
would leave them untouched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@dataclass
class Case:
    """A batch, a model, its threat-model scale and the settings that make sense for it."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    model: nn.Module
    eps_linf: float
    eps_l2: float
    bounds: tuple[float, float] | None
    fs: float | None


def _need(path: Path) -> Path:
    """``path``, or a skip when the real data is missing; under ``CI`` (set to anything) a failure, never a skip."""
    if not path.exists():
        msg = f"real data not found at {path} (expected ../shared/data beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must run every real-data test", pytrace=False)
        pytest.skip(msg)
    return path


class SmallECGNet(nn.Module):
    """A small 1-D CNN for (N, leads, samples) with 4 classes."""

    def __init__(self, leads: int, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(leads, 8, 7, stride=2), nn.ReLU(), nn.Conv1d(8, 8, 5, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(32, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallImageNet(nn.Module):
    """A small 2-D CNN for (N, 1, 28, 28) with 2 classes (binary, like BreastMNIST)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="session")
def ecg12_x() -> torch.Tensor:
    import wfdb

    folder = _need(DATA / "cinc2021_sample")
    names = sorted(p.stem for p in folder.glob("E*.hea"))[:12]
    sigs = []
    for n in names:
        rec = wfdb.rdrecord(str(folder / n), sampto=1000)
        assert rec.fs == 500
        sigs.append(np.nan_to_num(rec.p_signal.T.astype(np.float32)))
    return torch.from_numpy(np.stack(sigs))  # (12, 12, 1000) mV


@pytest.fixture(scope="session")
def beats_x() -> torch.Tensor:
    from medrobust.data import load_dataset

    _need(DATA / "mitdb")
    ds = load_dataset("mitdb", root=DATA, split="test", records=["100"])
    idx = torch.arange(0, len(ds), max(1, len(ds) // 8))[:8]
    return ds.x[idx].contiguous()  # (8, 1, 187) in [0, 1]


@pytest.fixture()
def centred(beats_x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """SmallECGNet on 8 MIT-BIH beats (float64) with centred logits: small margins, so successes happen during a
    run; labels are the model's own predictions."""
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5).double()
    x = beats_x.double()
    with torch.no_grad():
        model.net[-1].bias -= model(x).mean(0)
        y = model(x).argmax(1)
    return model, x, y


@pytest.fixture(scope="session")
def images_x() -> torch.Tensor:
    path = _need(DATA / "medmnist" / "breastmnist.npz")
    with np.load(path) as z:
        imgs = z["test_images"][:8].astype(np.float32) / 255.0
    return torch.from_numpy(imgs).unsqueeze(1)  # (8, 1, 28, 28)


def make_case(kind: str, ecg12_x: torch.Tensor, beats_x: torch.Tensor, images_x: torch.Tensor) -> Case:
    torch.manual_seed(0)
    if kind == "ecg12":
        model: nn.Module = SmallECGNet(12)
        x = ecg12_x
        return Case(kind, x, _labels(model, x), model, 0.05, 0.5, None, 500.0)
    if kind == "beat":
        model = SmallECGNet(1, classes=5)
        x = beats_x
        return Case(kind, x, _labels(model, x), model, 0.05, 0.3, (0.0, 1.0), 125.0)
    model = SmallImageNet()
    x = images_x
    return Case(kind, x, _labels(model, x), model, 0.03, 0.5, (0.0, 1.0), None)


@pytest.fixture(params=["ecg12", "beat", "image"])
def case(request: Any, ecg12_x: torch.Tensor, beats_x: torch.Tensor, images_x: torch.Tensor) -> Case:
    return make_case(request.param, ecg12_x, beats_x, images_x)


# few steps: the properties under test do not depend on the budget
SMALL: dict[str, dict[str, Any]] = {
    "pgd": {"steps": 5, "rel_step_size": 0.4},
    "apgd": {"steps": 5},
    "sap": {"steps": 2, "smooth_steps": 3},
    "fgsm": {},
    "spsa": {"steps": 3, "nb_samples": 8},
    "square": {"steps": 10},
    "boundary": {"steps": 3, "candidates": 4, "bisection_steps": 3},
    "physio_noise": {"fs": 125.0},
}


def small_kwargs(name: str) -> dict[str, Any]:
    """Fast settings for attack ``name`` (empty for attacks registered later)."""
    return dict(SMALL.get(name, {}))
