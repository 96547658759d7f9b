"""Smoothed boundary attack: decision-based, targeted, query accounting, soundness, convergence."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import Boundary
from medrobust.attacks.boundary import hann_smooth
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.flags import is_black_box

from ._blackbox import Spy, linear_problem, min_distance
from .conftest import SmallECGNet


@pytest.fixture(scope="module")
def lin(beats_x: torch.Tensor):  # type: ignore[no-untyped-def]
    return linear_problem(beats_x)


def test_reaches_three_times_the_minimal_l2_distance(lin) -> None:  # type: ignore[no-untyped-def]
    """Starting from beats of the other class, 300 iterations × 10 candidates bring every sample within
    3 × its minimal L2 distance (the walk starts several times farther away)."""
    model, x, y, s = lin
    d = min_distance(model, s, "l2")
    start_dist = torch.cdist(x.flatten(1), x.flatten(1)).masked_fill(y.view(-1, 1) == y.view(1, -1), float("inf"))
    assert bool((start_dist.amin(1) > 3 * d).all())  # the starts are outside the ball
    spy = Spy(model)
    x0 = x.clone()
    res = Boundary(spy, eps=d * 3.0, norm="l2", steps=300, candidates=10, smooth_window=1,
                   generator=torch.Generator().manual_seed(0))(x, y)
    assert torch.equal(x, x0)
    assert bool(res.success.all())
    assert bool((res.norms <= d * 3.0 * (1 + 1e-6)).all())
    assert res.queries == spy.rows and res.grad_evals == 0 and not any(spy.grad_enabled)
    assert bool((res.queries_per_sample <= 1 + 1 + 10 + 1 + 300 * 20).all())


def test_nothing_below_the_minimal_distance(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "l2")
    res = Boundary(model, eps=d * 0.98, norm="l2", steps=30, candidates=5, smooth_window=1)(x, y)
    assert not bool(res.success.any())
    assert bool((res.norms <= d * 0.98 * (1 + 1e-6)).all())


def test_decision_based_invariant_to_logit_rescaling(lin) -> None:  # type: ignore[no-untyped-def]
    """Only labels are used: a model with the same decisions but other logits gives the same examples."""
    model, x, y, s = lin
    d = min_distance(model, s, "l2")

    class Scaled(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return 7.0 * model(t) - 3.0

    kw = dict(eps=d * 3.0, norm="l2", steps=20, candidates=4, generator=None)
    a = Boundary(model, **kw)(x, y)  # type: ignore[arg-type]
    b = Boundary(Scaled(), **kw)(x, y)  # type: ignore[arg-type]
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries_per_sample, b.queries_per_sample)


def test_targeted_with_a_pool_of_target_records(beats_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(187, 3))
    pool = torch.rand(64, 1, 187, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model[1].bias -= model(torch.cat([pool, beats_x])).mean(0)  # centre the logits: every class occurs
        y = model(beats_x).argmax(1)
        pool_pred = model(pool).argmax(1)
    assert len(set(pool_pred.tolist())) == 3  # the pool holds inputs of every class
    target = (y + 1) % 3
    spy = Spy(model)
    res = Boundary(spy, eps=5.0, norm="l2", steps=20, candidates=5, bounds=(0, 1), starting_points=pool,
                   generator=torch.Generator().manual_seed(0))(beats_x, y, target=target)
    assert bool(res.success.all()) and torch.equal(res.adv_pred, target)
    assert res.queries == spy.rows  # includes the pool's 64 queries, spread over the samples
    assert bool((res.norms <= 5.0 * (1 + 1e-6)).all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


def test_hann_smoothing() -> None:
    v = torch.ones(2, 3, 200)
    sm = hann_smooth(v, 41)
    torch.testing.assert_close(sm[..., 30:170], v[..., 30:170])  # the kernel sums to one
    w = torch.randn(4, 1, 1000, generator=torch.Generator().manual_seed(0))
    hi = lambda t: torch.fft.rfft(t, dim=-1).abs()[..., 100:].pow(2).sum()  # noqa: E731
    assert float(hi(hann_smooth(w, 41))) < 1e-3 * float(hi(w))  # high frequencies removed
    assert torch.equal(hann_smooth(w, 1), w)


def test_errors_and_flags(beats_x: torch.Tensor) -> None:
    model = SmallECGNet(1, classes=5)
    assert is_black_box("boundary") and Boundary.black_box
    with pytest.raises(ConfigError, match="source_step"):
        Boundary(model, eps=1.0, source_step=1.5)
    with pytest.raises(ConfigError, match="step_adaptation"):
        Boundary(model, eps=1.0, step_adaptation=1.0)
    with pytest.raises(DataError, match="starting_points"):
        Boundary(model, eps=1.0, steps=2, starting_points=torch.rand(4, 1, 100))(
            beats_x, torch.zeros(8, dtype=torch.long))
    with pytest.warns(RuntimeWarning, match="no starting point"):
        res = Boundary(model, eps=1.0, steps=2, starting_points=torch.zeros(2, 1, 187))(
            beats_x, torch.zeros(8, dtype=torch.long), target=torch.full((8,), 4))
    assert not bool(res.success.any())
