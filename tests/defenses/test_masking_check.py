"""The gradient-masking check flags a model whose input gradients are zero and passes a normal model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.evaluation.masking import gradient_masking_report, loss_landscape
from medrobust.models import build_model
from medrobust.train import TrainConfig, seed_everything


class Quantised(nn.Module):
    """``f(round(16·x)/16)``: the same decisions on a grid, but ``round`` has zero gradient everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


@pytest.fixture(scope="module")
def trained(beats) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from medrobust.defenses import get_defense

    train, val = beats
    seed_everything(0)
    model = build_model("mlp1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_defense("ce", model, TrainConfig(epochs=3, lr=3e-3, batch_size=64, class_balance="oversample",
                                             progress=False, patience=None, select="last")).fit(train, val)
    return model.eval(), val.x[:48], val.y[:48]


KW = dict(eps=0.03, large_eps=0.5, steps=20, black_box_steps=300, bounds=(0.0, 1.0), directions=4)


def test_normal_model_passes(trained) -> None:
    model, x, y = trained
    r = gradient_masking_report(model, x, y, **KW)
    assert r["flags"] == [] and not r["masking_suspected"], r["flags"]
    assert r["large_eps_accuracy"] <= 0.05 < r["clean_accuracy"]
    assert r["pgd_accuracy"] <= r["black_box_accuracy"] + 0.02
    land = r["landscape"]
    assert land["gradient"][-1] > max(land["random_max"][-1], land["gradient"][0])  # gradient ascent works


def test_zero_gradient_model_is_flagged(trained) -> None:
    model, x, y = trained
    r = gradient_masking_report(Quantised(model), x, y, **KW)
    assert r["masking_suspected"]
    assert any("black-box square is stronger" in f for f in r["flags"]), r["flags"]
    assert any("along the gradient sign" in f for f in r["flags"]), r["flags"]
    assert any("unbounded attack" in f for f in r["flags"]), r["flags"]
    assert r["pgd_accuracy"] == pytest.approx(r["clean_accuracy"])  # PGD finds nothing
    assert r["black_box_accuracy"] <= r["pgd_accuracy"] - 0.04  # measured 0.625 vs 0.688 on these 48 beats
    land = r["landscape"]
    assert land["gradient"][-1] == pytest.approx(land["gradient"][0])  # sign(0) = 0: no movement


def test_landscape_and_arguments(trained) -> None:
    model, x, y = trained
    land = loss_landscape(model, x[:4], y[:4], eps=0.02, points=3, directions=2)
    assert land["radii"] == pytest.approx([0.0, 0.01, 0.02]) and len(land["random_max"]) == 3
    with pytest.raises(ConfigError, match="large_eps"):
        gradient_masking_report(model, x, y, eps=0.1, large_eps=0.05)
    with pytest.raises(ConfigError, match="black_box"):
        gradient_masking_report(model, x, y, eps=0.01, large_eps=0.5, black_box="boundary")
