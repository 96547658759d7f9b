"""Jacobian regularisation: exact values by hand, per-sample autograd agreement, unbiased projections."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.defenses import JacobianTrainer, jacobian_norm
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig

from .conftest import Linear, TinyNet


def _linear() -> tuple[Linear, torch.Tensor, torch.Tensor]:
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.1, 0.2, -0.3, 0.4], [-0.7, 0.0, 0.6, 0.1]], dtype=torch.float64)
    x = torch.randn(5, 1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return Linear(w, torch.zeros(3, dtype=torch.float64)), w, x


def test_exact_variants_by_hand_on_a_linear_model() -> None:
    model, w, x = _linear()
    n, k, d = 5, 3, 4
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    l1 = jacobian_norm(xg, z, variant="l1")
    fro = jacobian_norm(xg, z, variant="frobenius")
    sq = jacobian_norm(xg, z, variant="squared")
    assert l1.item() == pytest.approx(n * float(w.abs().sum()) / (n * d), rel=1e-12)
    assert fro.item() == pytest.approx(math.sqrt(n * float((w**2).sum())) / (n * k), rel=1e-12)
    assert sq.item() == pytest.approx(n * float((w**2).sum()) / n, rel=1e-12)


def _per_sample_jacobians(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], xi).flatten(1)
                        for xi in x])  # (N, K, D)


def test_exact_matches_per_sample_autograd_on_a_nonlinear_net() -> None:
    net = TinyNet(7, 4).double()
    x = torch.randn(6, 1, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = _per_sample_jacobians(net, x)
    xg = x.clone().requires_grad_(True)
    z = net(xg)
    assert jacobian_norm(xg, z, variant="l1").item() == pytest.approx(float(jac.abs().sum()) / (6 * 7), rel=1e-10)
    assert jacobian_norm(xg, z, variant="squared").item() == pytest.approx(float((jac**2).sum()) / 6, rel=1e-10)


def test_random_projection_estimate_is_unbiased() -> None:
    net = TinyNet(7, 5, seed=3).double()
    x = torch.randn(4, 1, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xg = x.clone().requires_grad_(True)
    z = net(xg)
    exact = jacobian_norm(xg, z, variant="squared").item()
    gen = torch.Generator().manual_seed(0)
    est = torch.tensor([jacobian_norm(xg, z, variant="squared", method="projection", projections=1, generator=gen,
                                      create_graph=False).item() for _ in range(600)])
    se = float(est.std()) / math.sqrt(len(est))
    assert se < 0.05 * exact  # the test has power
    assert abs(float(est.mean()) - exact) < 4 * se
    # the single estimates really are random (not the exact value)
    assert float(est.std()) > 0.05 * exact
    # more projections per call: the mean of P single estimates
    avg = jacobian_norm(xg, z, variant="squared", method="projection", projections=200, generator=gen,
                        create_graph=False).item()
    assert abs(avg - exact) < 4 * float(est.std()) / math.sqrt(200)


def test_projection_refuses_l1_and_trainer_defaults() -> None:
    x = torch.randn(2, 1, 4, requires_grad=True)
    z = TinyNet(4, 3)(x)
    with pytest.raises(ConfigError, match="squared Frobenius"):
        jacobian_norm(x, z, variant="l1", method="projection")
    with pytest.raises(ConfigError, match="requires_grad"):
        jacobian_norm(x.detach(), z, variant="l1")
    assert JacobianTrainer(build_model("cnn1")).weight == 0.7
    assert JacobianTrainer(build_model("mlp1")).weight == 0.9
    c = JacobianTrainer(build_model("cnn1"), TrainConfig(epochs=70), recipe="cpsc2018")
    assert (c.variant, c.weight, c.warmup_epochs) == ("frobenius", 24.0, 10)
    i = JacobianTrainer(build_model("cnn1"), recipe="icmla2020")
    assert (i.variant, i.weight, i.warmup_epochs) == ("frobenius", 44.0, 0)
    cd = JacobianTrainer(build_model("cnn1"), recipe="cardiodefense")
    assert (cd.variant, cd.weight, cd.warmup_epochs) == ("squared", 44.0, 10)
    with pytest.raises(ConfigError):
        JacobianTrainer(build_model("cnn1"), method="projection")  # L1 variant by default


def test_trainer_loss_is_ce_plus_weighted_regulariser() -> None:
    model = TinyNet(6, 3)
    t = JacobianTrainer(model, TrainConfig(epochs=20), recipe="cardiodefense")
    x, y = torch.randn(8, 1, 6), torch.randint(0, 3, (8,))
    t.on_epoch_start(0)
    loss, z = t.compute_loss(x, y)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item())
    t.on_epoch_start(10)
    loss, _ = t.compute_loss(x, y)
    assert loss.item() == pytest.approx(t.last_terms["ce"] + 44.0 * t.last_terms["regularizer"], rel=1e-5)
