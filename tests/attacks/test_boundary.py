"""Smoothed boundary attack: decision-based, targeted, query accounting, soundness, convergence."""

from __future__ import annotations

import warnings

import pytest
import torch

from medrobust.attacks import Boundary
from medrobust.attacks.boundary import hann_smooth
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.flags import is_black_box

from ._blackbox import Recorder, Spy, linear_problem, min_distance
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


def _three_class(beats_x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3-class linear beat model, a pool of 64 uniform inputs holding every class, labels and targets."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(187, 3))
    pool = torch.rand(64, 1, 187, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model[1].bias -= model(torch.cat([pool, beats_x])).mean(0)  # centre the logits: every class occurs
        y = model(beats_x).argmax(1)
        assert len(set(model(pool).argmax(1).tolist())) == 3
    return model, pool, y, (y + 1) % 3


def _admissible_distances(model: torch.nn.Module, pool: torch.Tensor, x: torch.Tensor, target: torch.Tensor
                          ) -> torch.Tensor:
    """``(N, P)`` L2 distances to the pool inputs of each sample's target class (inf elsewhere)."""
    with torch.no_grad():
        ok = model(pool).argmax(1).view(1, -1) == target.view(-1, 1)
    return torch.cdist(x.flatten(1), pool.flatten(1)).masked_fill(~ok, float("inf"))


def test_targeted_walk_ends_in_the_target_class_closer_than_its_start(beats_x: torch.Tensor) -> None:
    """No bisection, so the walk starts at a pool input of the target class, at distance >= d_min (the
    closest such input). ε = 0.6·d_min: only the walk can bring a sample inside; 300 iterations do."""
    model, pool, y, target = _three_class(beats_x)
    dmin = _admissible_distances(model, pool, beats_x, target).amin(1)
    eps = 0.6 * dmin
    spy = Spy(model)
    res = Boundary(spy, eps=eps, norm="l2", steps=300, candidates=10, bounds=(0, 1), starting_points=pool,
                   bisection_steps=0, generator=torch.Generator().manual_seed(0))(beats_x, y, target=target)
    assert bool(res.success.all()) and torch.equal(res.adv_pred, target)
    assert bool((res.norms <= eps * (1 + 1e-6)).all()) and bool((res.norms < dmin).all())
    assert res.queries == spy.rows  # includes the pool's 64 queries, spread over the samples
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


@pytest.mark.parametrize("init", ["random", "closest"])
def test_starting_point_is_a_random_or_the_closest_target_record(init: str, beats_x: torch.Tensor) -> None:
    """The first query after the clean batch and the pool is the starting points (no bisection): with
    ``init="closest"`` the nearest pool input of the target class, with ``"random"`` (Brendel et al.'s
    start) any of them, drawn independently per sample."""
    model, pool, y, target = _three_class(beats_x)
    dist = _admissible_distances(model, pool, beats_x, target)
    rec = Recorder(model)
    Boundary(rec, eps=1e-3, norm="l2", steps=1, candidates=2, starting_points=pool, bisection_steps=0,
             init=init)(beats_x, y, target=target)
    starts = rec.inputs[2]
    j = torch.cdist(starts.flatten(1), pool.flatten(1)).argmin(1)
    assert torch.equal(starts, pool[j])  # every start is a pool input ...
    assert bool(torch.isfinite(dist[torch.arange(len(j)), j]).all())  # ... of the sample's target class
    closest = dist.argmin(1)
    first = torch.isfinite(dist).long().argmax(1)
    if init == "closest":
        assert torch.equal(j, closest)
    else:
        assert int((j != closest).sum()) >= 4 and int((j != first).sum()) >= 4
        part = Recorder(model)
        Boundary(part, eps=1e-3, norm="l2", steps=1, candidates=2, starting_points=pool, bisection_steps=0)(
            beats_x[4:], y[4:], target=target[4:], sample_ids=torch.arange(4, 8))
        assert torch.equal(part.inputs[2], starts[4:])  # each sample's draw is its own


@pytest.mark.parametrize("targeted", [False, True])
def test_masked_coordinates_never_change(targeted: bool, beats_x: torch.Tensor) -> None:
    """Every input the attack queries (masked pool starts, noise starts, proposals) and every output
    keeps the frozen coordinates of its sample."""
    model, pool, y, target = _three_class(beats_x)
    mask = torch.ones_like(beats_x)
    mask[:, :, 170:] = 0
    rec = Recorder(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every sample finds a masked start of its class
        res = Boundary(rec, eps=3.0, norm="l2", steps=20, candidates=4, starting_points=pool, bounds=(0, 1))(
            beats_x, y, target=target if targeted else None, mask=mask)
    assert torch.equal(res.x_adv[:, :, 170:], beats_x[:, :, 170:])
    queried = torch.cat(rec.inputs[2:])  # after the clean batch and the pool
    same = (queried[:, None, :, 170:] - beats_x[None, :, :, 170:]).abs().amax((2, 3)) == 0
    assert bool(same.any(1).all())
    assert bool((res.x_adv[:, :, :170] != beats_x[:, :, :170]).any())


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
