"""Randomized smoothing: Clopper-Pearson bound, closed-form radius of a linear model, abstention."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import norm
from torch import nn

from medrobust.defenses import GaussianNoiseTraining, SmoothedClassifier, certified_radius, clopper_pearson_lower
from medrobust.errors import ConfigError, DataError
from medrobust.train import TrainConfig


class LinearBinary(nn.Module):
    """Logits ``[0, wᵀx + b]``: class 1 iff ``wᵀx + b > 0``; distance to the boundary ``(wᵀx + b)/‖w‖``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_clopper_pearson_closed_forms() -> None:
    # all successes: the lower bound solves p^n = alpha
    assert clopper_pearson_lower(50, 50, 0.01) == pytest.approx(0.01 ** (1 / 50), rel=1e-9)
    assert clopper_pearson_lower(0, 50, 0.01) == 0.0
    assert clopper_pearson_lower(70, 100, 0.05) == pytest.approx(float(beta_dist.ppf(0.05, 70, 31)))
    assert clopper_pearson_lower(70, 100, 0.05) < 0.7
    assert certified_radius(0.5, 1.0) == 0.0 and certified_radius(0.3, 1.0) == 0.0
    assert certified_radius(norm.cdf(2.0), 0.25) == pytest.approx(0.5)


def test_certified_radius_matches_the_linear_closed_form() -> None:
    """For a linear classifier p_A = Φ(d/σ), so σ·Φ⁻¹(p_A) = d, the distance to the decision boundary."""
    torch.manual_seed(0)
    w = torch.tensor([0.6, -0.8, 0.0, 0.0], dtype=torch.float64)  # ‖w‖ = 1
    x = torch.tensor([[[0.5, -0.25, 0.3, -0.1]], [[0.2, 0.1, 0.0, 0.0]]], dtype=torch.float64)
    b = -0.1
    d = ((x.flatten(1) @ w + b) / w.norm()).abs()  # 0.4 (class 1) and 0.06 (class 0)
    sigma, n, alpha = 0.4, 40000, 0.001
    g = SmoothedClassifier(LinearBinary(w, b).double(), sigma=sigma, batch_size=10000, units="mV")
    res = g.certify(x, n0=100, n=n, alpha=alpha, generator=torch.Generator().manual_seed(0))
    assert res.prediction.tolist() == [1, 0]
    for i in range(2):
        c = int(res.prediction[i])
        n_a = int(res.counts[i, c])
        # the radius is exactly σ·Φ⁻¹ of the Clopper-Pearson bound of the observed count
        expected = sigma * norm.ppf(beta_dist.ppf(alpha, n_a, n - n_a + 1))
        assert float(res.radius[i]) == pytest.approx(expected, rel=1e-9)
        # and close to, and below, the exact distance d (above it only with probability <= alpha)
        assert float(d[i]) - 0.02 < float(res.radius[i]) < float(d[i]) + 0.002
    torch.testing.assert_close(res.radius_uV, res.radius * 1000.0)
    assert res.certified_accuracy(torch.tensor([1, 0])) == 1.0
    assert res.certified_accuracy(torch.tensor([1, 0]), radius=0.2) == 0.5


def test_abstains_when_noise_dominates() -> None:
    torch.manual_seed(0)
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[[0.01, 0.0]]], dtype=torch.float64)  # 0.01 from the boundary, σ = 10: p_A ≈ 0.5004
    g = SmoothedClassifier(LinearBinary(w, 0.0).double(), sigma=10.0, batch_size=5000)
    res = g.certify(x, n0=100, n=5000, alpha=0.001, generator=torch.Generator().manual_seed(1))
    assert res.abstained.tolist() == [True] and float(res.radius[0]) == 0.0 and res.radius_uV is None
    assert g.predict(x, n=2000, alpha=0.001, generator=torch.Generator().manual_seed(2)).tolist() == [-1]
    # with small noise the same point is certified and predicted
    g2 = SmoothedClassifier(LinearBinary(w, 0.0).double(), sigma=0.001, batch_size=5000)
    assert g2.predict(x, n=200, generator=torch.Generator().manual_seed(3)).tolist() == [1]
    assert g2.certify(x, n0=50, n=500, generator=torch.Generator().manual_seed(4)).prediction.tolist() == [1]


def test_bad_input() -> None:
    g = SmoothedClassifier(LinearBinary(torch.ones(2), 0.0), sigma=0.1)
    with pytest.raises(DataError):
        g.certify(torch.tensor([[[math.nan, 0.0]]]))
    with pytest.raises(ConfigError):
        SmoothedClassifier(LinearBinary(torch.ones(2), 0.0), sigma=0.0)
    with pytest.raises(ConfigError):
        g.certify(torch.zeros(1, 1, 2), alpha=1.5)


def test_noise_training_adds_gaussian_noise() -> None:
    seen: list[torch.Tensor] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(1000, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach())
            return self.fc(x.flatten(1))

    t = GaussianNoiseTraining(Probe(), TrainConfig(epochs=1), sigma=0.3)
    x = torch.zeros(8, 1, 1000)
    t.compute_loss(x, torch.zeros(8, dtype=torch.long))
    assert float(seen[0].std()) == pytest.approx(0.3, rel=0.03) and abs(float(seen[0].mean())) < 0.01
