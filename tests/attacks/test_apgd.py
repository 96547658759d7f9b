"""APGD specifics: the checkpoint schedule, loss choice, strength relative to its first step."""

from __future__ import annotations

import warnings

import pytest
import torch

from medrobust.attacks import APGD, FGSM
from medrobust.attacks.apgd import checkpoints
from medrobust.errors import ConfigError

from .conftest import SmallECGNet, SmallImageNet


def test_checkpoint_schedule() -> None:
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, §3.2)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    c = checkpoints(7)
    assert c == sorted(set(c)) and c[-1] <= 7 and c[0] >= 1


def test_dlr_falls_back_to_margin_below_four_classes(images_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallImageNet()  # 2 classes
    with torch.no_grad():
        y = model(images_x).argmax(1)
    with pytest.warns(UserWarning, match="DLR"):
        res = APGD(model, eps=0.03, steps=3, loss="dlr", bounds=(0, 1))(images_x, y)
    assert res.config["loss"] == "margin"


def test_dlr_with_enough_classes(beats_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():
        y = model(beats_x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = APGD(model, eps=0.05, steps=3, loss="dlr", bounds=(0, 1))(beats_x, y)
    assert res.config["loss"] == "dlr"


def test_apgd_at_least_as_strong_as_fgsm(beats_x: torch.Tensor) -> None:
    """APGD's first step is an FGSM step of size 2ε from a random start; with best-tracking it never loses."""
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():
        y = model(beats_x).argmax(1)
    fgsm = FGSM(model, eps=0.1, bounds=(0, 1))(beats_x, y)
    apgd = APGD(model, eps=0.1, steps=20, random_start=False, bounds=(0, 1))(beats_x, y)
    assert bool((apgd.success | ~fgsm.success).all())


def test_parameter_checks(beats_x: torch.Tensor) -> None:
    model = SmallECGNet(1)
    with pytest.raises(ConfigError, match="rho"):
        APGD(model, eps=0.1, rho=1.5)
    with pytest.raises(ConfigError, match="steps"):
        APGD(model, eps=0.1, steps=0)
    with pytest.raises(ConfigError, match="random_start"):
        APGD(model, eps=0.1, restarts=3, random_start=False)
