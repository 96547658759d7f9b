"""ThreatModel: radii, projections, bounds and masks, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.attacks import ThreatModel
from medrobust.attacks.threat import add_toward, canonical_norm, lp_norm, project
from medrobust.errors import ConfigError, DataError


def test_norm_spellings() -> None:
    assert canonical_norm("Linf") == canonical_norm(math.inf) == canonical_norm("inf") == "linf"
    assert canonical_norm("L2") == canonical_norm(2) == "l2"
    with pytest.raises(ConfigError, match="norm"):
        canonical_norm("l1")


def test_absolute_and_per_sample_eps() -> None:
    x = torch.zeros(3, 2, 5)
    assert torch.equal(ThreatModel(eps=0.1).resolve_eps(x), torch.full((3,), 0.1))
    e = torch.tensor([0.1, 0.2, 0.3])
    torch.testing.assert_close(ThreatModel(eps=e).resolve_eps(x), e)
    with pytest.raises(DataError, match="per-sample"):
        ThreatModel(eps=torch.tensor([0.1, 0.2])).resolve_eps(x)


def test_relative_to_peak_to_peak_amplitude() -> None:
    x = torch.tensor([[[0.0, 2.0, -1.0, 1.0]], [[5.0, 5.5, 5.0, 5.0]]])  # ptp 3 and 0.5
    torch.testing.assert_close(ThreatModel(eps=0.1, eps_mode="ptp").resolve_eps(x), torch.tensor([0.3, 0.05]))
    # L2: the RMS of δ is the fraction of the ptp amplitude -> radius ε·ptp·sqrt(n)
    torch.testing.assert_close(ThreatModel(eps=0.1, norm="l2", eps_mode="ptp").resolve_eps(x),
                               torch.tensor([0.3, 0.05]) * 2.0)
    # over the masked region only: the -1.0 is outside the mask
    mask = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])
    torch.testing.assert_close(ThreatModel(eps=0.1, eps_mode="ptp").resolve_eps(x, mask), torch.tensor([0.2, 0.05]))


def test_snr_in_db() -> None:
    x = torch.tensor([[[3.0, -3.0, 3.0, -3.0]]])  # rms 3, ‖x‖₂ = 6
    torch.testing.assert_close(ThreatModel(eps=20.0, eps_mode="snr_db").resolve_eps(x), torch.tensor([0.3]))
    torch.testing.assert_close(ThreatModel(eps=20.0, norm="l2", eps_mode="snr_db").resolve_eps(x),
                               torch.tensor([0.6]))
    # a negative SNR is a perturbation larger than the signal, and is allowed
    torch.testing.assert_close(ThreatModel(eps=-20.0, eps_mode="snr_db").resolve_eps(x), torch.tensor([30.0]))


def test_projection_and_rounding_toward_x() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(6, 3, 50, generator=g)
    e = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 100.0])
    p = project(d, e, "linf")
    assert bool((lp_norm(p, "linf") <= e).all())
    p2 = project(d, e, "l2")
    assert bool((p2.flatten(1).double().norm(dim=1) <= e.double()).all())
    inside = d.flatten(1).norm(dim=1) <= e
    torch.testing.assert_close(p2[inside], d[inside])  # points inside the ball are unchanged
    # x + δ rounded away from x would leave the L∞ ball; add_toward never does
    x = torch.full((1000,), 100.0) + torch.rand(1000, generator=g)
    delta = torch.rand(1000, generator=g) * 1e-3
    out = add_toward(x, delta)
    assert bool(((out - x).abs() <= delta).all())
    assert bool(((x + delta - x).abs() > delta).any())  # the naive sum does overshoot somewhere


def test_bounds_scalars_and_per_channel() -> None:
    x = torch.zeros(2, 3, 4)
    tm = ThreatModel(eps=0.1, bounds=(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0])))
    lo, hi = tm.bounds_for(x)
    assert lo.shape == (1, 3, 1) and float(hi[0, 2, 0]) == 3.0
    out = tm.constrain(x, torch.full_like(x, 10.0), torch.full((2,), 100.0), None, (lo, hi))
    assert torch.equal(out[:, :, 0], torch.tensor([[1.0, 2.0, 3.0]] * 2))
    with pytest.raises(ConfigError, match="lo < hi"):
        ThreatModel(eps=0.1, bounds=(1.0, 0.0))
    with pytest.raises(ConfigError, match="broadcast"):
        ThreatModel(eps=0.1, bounds=(torch.zeros(5), torch.ones(5))).bounds_for(x)
    with pytest.raises(DataError, match="bounds"):
        ThreatModel(eps=0.1, bounds=(0.0, 1.0)).check_inside(torch.full((1, 1, 3), 2.0))


def test_mask_validation() -> None:
    x = torch.zeros(4, 2, 10)
    tm = ThreatModel(eps=0.1, mask=torch.tensor([1.0, 0.0]).view(2, 1))
    m = tm.combined_mask(x, torch.ones(4, 1, 10))
    assert m.shape == (4, 2, 10) and float(m[:, 1].sum()) == 0
    with pytest.raises(DataError, match="broadcast"):
        ThreatModel(eps=0.1, mask=torch.ones(3, 10)).combined_mask(x)
    with pytest.raises(DataError, match="0/1"):
        ThreatModel(eps=0.1, mask=torch.full((1, 1, 10), 0.5)).combined_mask(x)
    with pytest.raises(DataError, match="no coordinate"):
        ThreatModel(eps=0.1, eps_mode="ptp").resolve_eps(x + torch.arange(10.0), torch.zeros(1, 1, 10))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_eps(bad: float) -> None:
    with pytest.raises(ConfigError, match="eps"):
        ThreatModel(eps=bad)
    with pytest.raises(ConfigError, match="eps"):
        ThreatModel(eps=torch.tensor([0.1, bad]))
