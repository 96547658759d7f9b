"""SPSA: independent probes per sample, exact query accounting, no backward, success on a breakable model."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import SPSA, get_attack
from medrobust.attacks.base import AttackContext
from medrobust.attacks.losses import get_loss
from medrobust.errors import ConfigError
from medrobust.evaluation.flags import is_black_box

from ._blackbox import Recorder, Spy, batch_invariant, linear_problem, min_distance


@pytest.fixture(scope="module")
def lin(beats_x: torch.Tensor):  # type: ignore[no-untyped-def]
    return linear_problem(beats_x)


def _ctx(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> AttackContext:
    with torch.no_grad():
        z = model(x)
    return AttackContext(model=model, threat=SPSA(model, eps=eps).threat, x=x, y=y, target=None,
                         eps=torch.full((len(x),), eps, dtype=x.dtype), mask=None, bounds=None,
                         loss_fn=get_loss("margin"), clean_logits=z, generator=torch.Generator().manual_seed(seed))


def test_probes_differ_between_samples_of_a_batch(lin) -> None:  # type: ignore[no-untyped-def]
    """Eight copies of one beat: shared probes (torchattacks / advertorch) would give eight equal estimates."""
    model, x, y, _ = lin
    xs = x[:1].repeat(8, 1, 1)
    ys = y[:1].repeat(8)
    atk = SPSA(model, eps=0.1, nb_samples=16)
    ctx = _ctx(model, xs, ys, 0.1)
    g = atk.estimate_gradient(ctx, ctx.active(), xs)
    flat = g.flatten(1)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(flat[i], flat[j]), f"samples {i} and {j} got the same probes"
    # and each estimate is still an estimate of the true gradient (± w for the margin of a linear model)
    w = model.model.w.detach()
    ref = torch.where(ys == 1, -1.0, 1.0).view(-1, 1).double() * w  # ∇(z_other − z_y) = ∓ w
    big = SPSA(model, eps=0.1, nb_samples=2048, max_batch_size=1024)
    ctx = _ctx(model, xs[:2], ys[:2], 0.1)
    gb = big.estimate_gradient(ctx, ctx.active(), xs[:2]).flatten(1)
    cos = torch.nn.functional.cosine_similarity(gb, ref[:2], dim=1)
    assert bool((cos > 0.6).all()), cos


def test_chunking_bounds_every_forward_and_counts_queries_exactly(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    spy = Spy(model)
    d = min_distance(model, s, "linf")
    steps, nb = 4, 24
    res = SPSA(spy, eps=d * 0.5, steps=steps, nb_samples=nb, max_batch_size=40, early_stop=True)(x, y)
    assert not bool(res.success.any())  # below the minimal distance: nobody leaves the active set
    assert spy.largest <= 40
    # clean forward + (steps + 1) success checks + steps estimates of 2·nb probes, per sample
    expected = 1 + (steps + 1) + steps * 2 * nb
    assert res.queries_per_sample.tolist() == [expected] * len(x)
    assert res.queries == spy.rows == expected * len(x)
    assert res.grad_evals == 0
    assert not any(spy.grad_enabled)  # every query ran without autograd (backward would raise)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_breaks_linear_model_within_budget(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    """ε = 1.5 × the minimal distance; budget: 30 iterations × 64 probes (≤ 3,872 queries per sample)."""
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    spy = Spy(model)
    x0 = x.clone()
    res = SPSA(spy, eps=d * 1.5, norm=norm, steps=30, nb_samples=64, generator=torch.Generator().manual_seed(0))(x, y)
    assert torch.equal(x, x0)
    assert float(res.success.double().mean()) == 1.0
    assert bool((res.queries_per_sample <= 1 + 31 + 30 * 128).all())
    assert bool((res.norms <= d * 1.5 * (1 + 1e-6)).all())
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y).all())


@pytest.mark.parametrize("update, sign", [("adam", False), ("adamax", True), ("adam", True)])
def test_updates(update: str, sign: bool, lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    lr = 0.01 if sign else 5.0  # raw estimates of a linear margin are O(|w|): Adam normalises them anyway
    res = SPSA(model, eps=d * 2.0, steps=40, nb_samples=64, update=update, sign=sign, lr=lr, random_start=False,
               generator=torch.Generator().manual_seed(1))(x, y)
    assert float(res.success.double().mean()) >= 0.875


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_nothing_below_minimal_distance(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    res = SPSA(model, eps=d * 0.98, norm=norm, steps=10, nb_samples=32)(x, y)
    assert not bool(res.success.any())


def test_registered_black_box_and_errors(lin) -> None:  # type: ignore[no-untyped-def]
    model = lin[0]
    assert is_black_box("spsa") and SPSA.black_box
    assert isinstance(get_attack("spsa", model, eps=0.1), SPSA)
    with pytest.raises(ConfigError, match="nb_samples"):
        SPSA(model, eps=0.1, nb_samples=0)
    with pytest.raises(ConfigError, match="update"):
        SPSA(model, eps=0.1, update="sgd")
    with pytest.raises(ConfigError, match="delta"):
        SPSA(model, eps=0.1, delta=-1.0)
    with pytest.raises(ConfigError, match="max_batch_size"):
        SPSA(model, eps=0.1, max_batch_size=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_the_first_point_queried(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    """After the clean forward, SPSA's first query is its starting point: with ``random_start`` a uniform
    point of the ball (L∞: |δ|/ε has mean 1/2), without it ``x`` itself. Kills "SPSA without its random start"."""
    model, x, y, s = lin
    eps = min_distance(model, s, norm) * 0.5
    rec = Recorder(model)
    SPSA(rec, eps=eps, norm=norm, steps=1, nb_samples=2, random_start=True)(x, y)
    delta = rec.inputs[1] - x
    size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert bool((size <= eps * (1 + 1e-9)).all()) and bool((size > 0.3 * eps).all())
    if norm == "linf":
        ratio = (delta.abs() / eps.view(-1, 1, 1)).mean(dim=(1, 2))
        torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5), atol=0.08, rtol=0)
    rec = Recorder(model)
    SPSA(rec, eps=eps, norm=norm, steps=1, nb_samples=2, random_start=False)(x, y)
    assert torch.equal(rec.inputs[1], x)


def test_a_samples_result_does_not_depend_on_its_batch(lin) -> None:  # type: ignore[no-untyped-def]
    """Per-sample random streams: samples 4..7 attacked alone (same sample ids) give the same examples
    and query counts as inside the full batch, where other samples stop early at other iterations."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    atk = SPSA(model, eps=float(d.median()), steps=6, nb_samples=8, max_batch_size=24)
    full, part = batch_invariant(atk, x, y, 4)
    assert 0 < int(full.success.sum()) < len(x)  # some stop early, some run to the end
    torch.testing.assert_close(full.x_adv[4:], part.x_adv, atol=1e-12, rtol=0)
    assert torch.equal(full.queries_per_sample[4:], part.queries_per_sample)


def test_without_early_stop_every_sample_runs_every_iteration(lin) -> None:  # type: ignore[no-untyped-def]
    """``early_stop=False``: every sample, even one misclassified when clean, gets all iterations (exact
    query count) and its final iterate."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    steps, nb = 5, 8
    y = y.clone()
    y[0] = 1 - y[0]  # sample 0 is already "adversarial" before the attack
    rec = Recorder(model)
    res = SPSA(rec, eps=d * 3.0, steps=steps, nb_samples=nb, early_stop=False)(x, y)
    assert res.queries_per_sample.tolist() == [1 + (steps + 1) + steps * 2 * nb] * len(x)
    assert torch.equal(res.x_adv, rec.inputs[-1])  # the last success check is the final iterate
    assert not torch.equal(res.x_adv[0], x[0])
    stopped = SPSA(model, eps=d * 3.0, steps=steps, nb_samples=nb)(x, y)
    assert bool((stopped.queries_per_sample < res.queries_per_sample).any())


def test_masked_coordinates_never_change(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    mask = torch.ones_like(x)
    mask[:, :, 90:] = 0
    rec = Recorder(model)
    res = SPSA(rec, eps=d * 3.0, steps=4, nb_samples=8)(x, y, mask=mask)
    assert torch.equal(res.x_adv[:, :, 90:], x[:, :, 90:])
    queried = torch.cat(rec.inputs)  # every query (starts, probes x ± δv, iterates) is masked too
    same = (queried[:, None, :, 90:] - x[None, :, :, 90:]).abs().amax((2, 3)) == 0  # (queries, samples)
    assert bool(same.any(1).all())
    assert bool((res.x_adv[:, :, :90] != x[:, :, :90]).any())
