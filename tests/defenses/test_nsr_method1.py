"""NSR Method 1 (gradient alignment on bias-free models; Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134):
the trainer's loss term by term by hand, its settings, and the bias check that names the offending parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.defenses import NSRAlignTrainer
from medrobust.defenses.nsr import _MSEMarginBase
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import Linear


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.1, 0.2, -0.3, 0.4], [-0.7, 0.0, 0.6, 0.1]], dtype=torch.float64)
    x = torch.tensor([[[1.0, -0.5, 0.3, 0.2]], [[0.2, 0.4, -0.1, 1.0]], [[-0.3, 0.1, 0.9, 0.0]],
                      [[0.6, 0.3, 0.0, -0.2]]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    return w, x, y


def _by_hand(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, margin_weight: float, weight: float,
             margin: float = 1.0) -> tuple[float, float, float, float]:
    """L_mse, L_margin (Ma & Liang's within-margin hinge) and L_align = (1/N_c) Σ_correct ‖w_y − x/‖x‖²‖²."""
    z = x.flatten(1) @ w.T
    onehot = torch.nn.functional.one_hot(y, 3).double()
    mse = float(((z - onehot) ** 2).sum(1).mean())
    correct = [i for i in range(len(y)) if int(z[i].argmax()) == int(y[i])]
    kept = []
    for i in correct:
        for j in range(3):
            t = margin - float(z[i, y[i]]) + float(z[i, j])
            if j != int(y[i]) and 0 < t < 2 * margin:
                kept.append(t)
    hinge = sum(kept) / len(kept) if len(kept) > 1 else sum(kept)
    align = 0.0
    for i in correct:
        xi = x[i, 0]
        align += float(((w[y[i]] - xi / (xi @ xi + 1e-8)) ** 2).sum())
    align /= len(correct)
    return mse, hinge, align, mse + margin_weight * hinge + weight * align


def test_method1_loss_is_mse_plus_margin_plus_alignment_on_the_correct_samples() -> None:
    w, x, y = _case()
    z = x.flatten(1) @ w.T
    assert (z.argmax(1) == y).tolist() == [True, True, False, False]  # two misclassified samples are excluded
    t = NSRAlignTrainer(Linear(w), TrainConfig(epochs=1), weight=0.7, margin_weight=0.4)
    loss, logits = t.compute_loss(x, y)
    mse, hinge, align, total = _by_hand(w, x, y, margin_weight=0.4, weight=0.7)
    assert t.last_terms == pytest.approx({"mse": mse, "margin": hinge, "regularizer": align}, rel=1e-10)
    assert loss.item() == pytest.approx(total, rel=1e-10)
    torch.testing.assert_close(logits.detach(), z)


def test_method1_warmup_and_weight_zero() -> None:
    w, x, y = _case()
    t = NSRAlignTrainer(Linear(w), TrainConfig(epochs=3), warmup_epochs=2, weight=0.0)
    t.on_epoch_start(1)
    loss, _ = t.compute_loss(x, y)
    mse, hinge, _, _ = _by_hand(w, x, y, margin_weight=1.0, weight=0.0)
    assert loss.item() == pytest.approx(mse, rel=1e-10) and set(t.last_terms) == {"mse"}
    t.on_epoch_start(2)
    loss, _ = t.compute_loss(x, y)
    assert loss.item() == pytest.approx(mse + hinge, rel=1e-10) and set(t.last_terms) == {"mse", "margin"}


def test_the_base_trainer_has_no_regulariser() -> None:
    """_MSEMarginBase alone is Ma & Liang's mseMargin loss: no regulariser is ever evaluated."""
    w, x, y = _case()
    t = _MSEMarginBase(Linear(w), None, out_dir=None, generator=None, margin=1.0, margin_weight=1.0,
                       warmup_epochs=0)
    loss, _ = t.compute_loss(x, y)
    mse, hinge, _, _ = _by_hand(w, x, y, margin_weight=1.0, weight=0.0)
    assert loss.item() == pytest.approx(mse + hinge, rel=1e-10) and set(t.last_terms) == {"mse", "margin"}


def test_method1_settings(tmp_path: Path) -> None:
    w, _, _ = _case()
    gen = torch.Generator().manual_seed(3)
    t = NSRAlignTrainer(Linear(w), TrainConfig(epochs=4, seed=2), out_dir=tmp_path, generator=gen)
    assert t.hyperparameters() == {"method": 1, "weight": 0.2, "margin": 1.0, "margin_weight": 1.0,
                                   "warmup_epochs": 0}
    assert t.config.epochs == 4 and t.out_dir == tmp_path and t.generator is gen
    assert NSRAlignTrainer(Linear(w), weight=0.0).weight == 0.0
    with pytest.raises(ConfigError, match=r"^weight must be >= 0\.0, got -0\.1\.$"):
        NSRAlignTrainer(Linear(w), weight=-0.1)


class _Biased(nn.Module):
    """``k`` bias parameters at different depths (``a.bias``, ``blocks.0.bias``, ``blocks.1.0.bias`` ...)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2, bias=k >= 1)
        self.blocks = nn.ModuleList([nn.Linear(2, 2, bias=k >= 2),
                                     nn.Sequential(nn.Linear(2, 2, bias=k >= 3), nn.Linear(2, 2, bias=k >= 4))])


def test_bias_check_names_at_most_three_parameters() -> None:
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=True)))
    with pytest.raises(ConfigError, match=r"this model has bias parameters \['0\.1\.bias'\]\. Build it"):
        NSRAlignTrainer(nested)
    tail = r"Build it with bias=False, e\.g\. build_model\('mlp1', bias=False\)\.$"
    with pytest.raises(ConfigError, match=r"\['a\.bias', 'blocks\.0\.bias', 'blocks\.1\.0\.bias'\]\. " + tail):
        NSRAlignTrainer(_Biased(3))
    with pytest.raises(ConfigError, match=r"\['a\.bias', 'blocks\.0\.bias', 'blocks\.1\.0\.bias'\] \.\.\.\. " + tail):
        NSRAlignTrainer(_Biased(4))
    assert NSRAlignTrainer(_Biased(0)).weight == 0.2


def test_method1_alignment_ignores_the_padding() -> None:
    """With a padding mask the alignment compares the masked gradient with the masked input x/‖x‖² (padded
    samples enter neither)."""
    w, x, y = _case()
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=torch.float64)
    t = NSRAlignTrainer(Linear(w), TrainConfig(epochs=1), weight=1.0, margin_weight=0.0)
    t.compute_loss(x, y, mask)
    z = x.flatten(1) @ w.T
    correct = [i for i in range(len(y)) if int(z[i].argmax()) == int(y[i])]
    m = mask.flatten()
    align = 0.0
    for i in correct:
        xi = x[i, 0] * m
        align += float(((w[y[i]] * m - xi / (xi @ xi + 1e-8)) ** 2).sum())
    assert t.last_terms["regularizer"] == pytest.approx(align / len(correct), rel=1e-10)
