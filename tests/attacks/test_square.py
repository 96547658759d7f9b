"""Square attack: p-schedule, windows on signals and squares on images, budgets, accounting, soundness."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import GaussianNoise, Square
from medrobust.attacks.square import p_schedule, two_lobe_bump, window
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.flags import is_black_box

from ._blackbox import Recorder, Spy, batch_invariant, linear_problem, min_distance


@pytest.fixture(scope="module")
def lin(beats_x: torch.Tensor):  # type: ignore[no-untyped-def]
    return linear_problem(beats_x)


def test_p_schedule_halves_at_the_papers_iterations() -> None:
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 10, 10000) == 0.8 and p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 51, 10000) == 0.2
    assert p_schedule(0.8, 9999, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 2, 1000) == 0.4  # thresholds rescaled to the budget: 2/1000 → 20/10000


def test_windows_are_intervals_shared_by_all_leads() -> None:
    offs = [torch.tensor([0, 5, 93, 40, 17])]
    win = window(offs, 7, (100,))
    assert win.shape == (5, 1, 100)  # one location per sample, broadcast over the leads
    for i in range(5):
        pos = win[i, 0].nonzero().squeeze(1)
        assert len(pos) == 7 and int(pos[-1] - pos[0]) == 6 and int(pos[0]) == int(offs[0][i])
    win2 = window([torch.tensor([0, 3, 24]), torch.tensor([24, 0, 10])], 4, (28, 28))
    assert win2.shape == (3, 1, 28, 28) and bool((win2.flatten(1).sum(1) == 16).all())
    assert bool(win2[1, 0, 3:7, 0:4].all()) and bool(win2[2, 0, 24:28, 10:14].all())


def test_two_lobe_bump_unit_norm_and_opposite_lobes() -> None:
    b = two_lobe_bump(10, 1, transpose=False, dtype=torch.float64)
    assert float(b.norm()) == pytest.approx(1.0) and bool((b[:5] > 0).all()) and bool((b[5:] < 0).all())
    b2 = two_lobe_bump(6, 2, transpose=True, dtype=torch.float64)
    assert float(b2.norm()) == pytest.approx(1.0) and bool((b2[:3] > 0).all()) and bool((b2[3:] < 0).all())


@pytest.mark.parametrize("norm, factor", [("linf", 2.0), ("l2", 3.0)])
def test_breaks_linear_beat_model_within_budget(norm: str, factor: float, lin) -> None:  # type: ignore[no-untyped-def]
    """ε = 2 (L∞) / 3 (L2) × the minimal distance; budget: 1,000 iterations (≤ 1,002 queries per sample).

    The random control (Gaussian noise of the same L2 norm, 100 draws per sample) fools none of them.
    """
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    spy = Spy(model)
    x0 = x.clone()
    res = Square(spy, eps=d * factor, norm=norm, steps=1000, generator=torch.Generator().manual_seed(0))(x, y)
    assert torch.equal(x, x0)
    assert float(res.success.double().mean()) == 1.0
    assert bool((res.queries_per_sample <= 1002).all())
    assert res.queries == spy.rows and res.grad_evals == 0 and not any(spy.grad_enabled)
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y).all())
    if norm == "l2":
        ctrl = GaussianNoise(model, eps=d * factor, norm="l2", trials=100)(x, y)
        assert not bool(ctrl.success.any())


@pytest.mark.parametrize("norm, factor", [("linf", 2.0), ("l2", 3.0)])
def test_breaks_linear_image_model(norm: str, factor: float, images_x: torch.Tensor) -> None:
    """2-D squares on BreastMNIST images (1 × 28 × 28) in [0, 1]."""
    model, x, y, s = linear_problem(images_x[:4], seed=5)
    d = min_distance(model, s, norm)
    res = Square(model, eps=d * factor, norm=norm, steps=1000, bounds=(0, 1),
                 generator=torch.Generator().manual_seed(0))(x, y)
    assert float(res.success.double().mean()) >= 0.75
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert bool((res.norms <= d * factor * (1 + 1e-6)).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_exact_accounting_and_soundness_below_minimal_distance(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    spy = Spy(model)
    res = Square(spy, eps=d * 0.98, norm=norm, steps=50)(x, y)
    assert not bool(res.success.any())
    assert res.queries_per_sample.tolist() == [1 + 1 + 50] * len(x)  # clean + init + one per iteration
    assert res.queries == spy.rows


def test_linf_output_on_the_ball_corners(lin) -> None:  # type: ignore[no-untyped-def]
    """L∞ Square only ever writes ±ε (no bounds here): every coordinate of δ is ±ε."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    res = Square(model, eps=d * 0.9, steps=20)(x, y)
    delta = (res.x_adv - x).abs()
    torch.testing.assert_close(delta, (d * 0.9).view(-1, 1, 1).expand_as(delta), rtol=1e-6, atol=0)


def test_errors_and_flags() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 4 * 5, 2))
    assert is_black_box("square") and Square.black_box
    with pytest.raises(ConfigError, match="p_init"):
        Square(model, eps=0.1, p_init=1.5)
    with pytest.raises(ConfigError, match="steps"):
        Square(model, eps=0.1, steps=0)
    with pytest.raises(DataError, match="layouts"):
        Square(model, eps=0.1, steps=2)(torch.rand(2, 2, 3, 4, 5), torch.zeros(2, dtype=torch.long))


def test_flat_signals_without_a_lead_axis(lin) -> None:  # type: ignore[no-untyped-def]
    """(N, samples) input: windows along the only axis; same success as with the lead axis."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    res = Square(model, eps=d * 2.0, steps=1000, generator=torch.Generator().manual_seed(0))(x.flatten(1), y)
    assert res.x_adv.shape == x.flatten(1).shape
    assert float(res.success.double().mean()) == 1.0


def _margins(model: torch.nn.Module, q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(q)
    return z.scatter(1, y.view(-1, 1), -float("inf")).amax(1) - z.gather(1, y.view(-1, 1)).squeeze(1)


def _per_sample_queries(rec: Recorder, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """The inputs queried for each sample after the clean forward (rows matched by the untouched sample)."""
    out: list[list[torch.Tensor]] = [[] for _ in range(len(x))]
    for batch in rec.inputs[1:]:
        for q in batch:
            i = int((q - x).flatten(1).abs().amax(1).argmin())
            out[i].append(q)
    return out


def test_linf_proposals_that_change_nothing_are_redrawn(lin) -> None:  # type: ignore[no-untyped-def]
    """Two thirds of every beat frozen by the mask: most random windows would change nothing. Every
    queried proposal differs from the sample's current best (kills a Square without the redraw)."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    mask = torch.zeros_like(x)
    mask[:, :, 60:120] = 1
    rec = Recorder(model)
    Square(rec, eps=d * 0.5, steps=40, early_stop=False)(x, y, mask=mask)
    for i, qs in enumerate(_per_sample_queries(rec, x)):
        assert len(qs) == 41
        best, best_m = qs[0], _margins(model, qs[0][None], y[i:i + 1])
        for q in qs[1:]:
            assert not torch.equal(q, best)
            m = _margins(model, q[None], y[i:i + 1])
            if bool(m > best_m):
                best, best_m = q, m
        assert torch.equal(q[:, :60], x[i, :, :60]) and torch.equal(q[:, 120:], x[i, :, 120:])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_without_early_stop_the_output_is_the_best_iterate(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    """``early_stop=False``: every sample is queried at every iteration and the output is its best query."""
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    rec = Recorder(model)
    res = Square(rec, eps=d * 2.0, norm=norm, steps=30, early_stop=False)(x, y)
    assert res.queries_per_sample.tolist() == [1 + 1 + 30] * len(x)
    for i, qs in enumerate(_per_sample_queries(rec, x)):
        m = _margins(model, torch.stack(qs), y[i].expand(len(qs)))
        assert torch.equal(res.x_adv[i], qs[int(m.argmax())])  # the first query of highest margin


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_samples_result_does_not_depend_on_its_batch(norm: str, lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, norm)
    full, part = batch_invariant(Square(model, eps=float(d.median()) * 1.5, norm=norm, steps=60), x, y, 4)
    assert norm == "l2" or 0 < int(full.success.sum()) < len(x)  # L∞: some samples stop early
    torch.testing.assert_close(full.x_adv[4:], part.x_adv, atol=1e-12, rtol=0)
    assert torch.equal(full.queries_per_sample[4:], part.queries_per_sample)


def test_l2_masked_coordinates_never_change(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "l2")
    mask = torch.ones_like(x)
    mask[:, :, 100:] = 0
    rec = Recorder(model)
    res = Square(rec, eps=d * 2.0, norm="l2", steps=30)(x, y, mask=mask)
    for i, qs in enumerate(_per_sample_queries(rec, x)):
        assert all(torch.equal(q[:, 100:], x[i, :, 100:]) for q in qs)
    assert torch.equal(res.x_adv[:, :, 100:], x[:, :, 100:]) and bool((res.x_adv != x).any())


def test_l2_proposal_bumps_split_left_right_or_top_bottom(images_x: torch.Tensor) -> None:
    """From δ = 0 an L2 proposal is one signed two-lobe bump in an s × s square; its lobes are split
    left/right or top/bottom at random per sample (Andriushchenko et al., Algorithm 3), both occur."""
    from medrobust.attacks.base import AttackContext
    from medrobust.attacks.losses import get_loss
    from medrobust.attacks.square import _Layout

    x = images_x[:1].repeat(16, 1, 1, 1).double() * 0.5 + 0.25
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2)).double()
    with torch.no_grad():
        z = model(x)
    atk = Square(model, eps=1.0, norm="l2")
    ctx = AttackContext(model=model, threat=atk.threat, x=x, y=z.argmax(1), target=None,
                        eps=torch.ones(16, dtype=x.dtype), mask=None, bounds=None, loss_fn=get_loss("margin"),
                        clean_logits=z, generator=torch.Generator().manual_seed(0))
    d = (atk._l2_proposal(ctx, ctx.active(), _Layout(x), x.clone(), 6) - x)[:, 0]
    kinds = set()
    for i in range(16):
        rows, cols = d[i].abs().sum(1).nonzero().squeeze(1), d[i].abs().sum(0).nonzero().squeeze(1)
        sq = d[i][rows][:, cols]
        assert sq.shape == (6, 6) and float(sq.flatten().norm()) == pytest.approx(1.0, rel=1e-9)
        s0 = sq[0, 0].sign()
        if bool((sq[:, :3].sign() == s0).all() and (sq[:, 3:].sign() == -s0).all()):
            kinds.add("left/right")
        elif bool((sq[:3].sign() == s0).all() and (sq[3:].sign() == -s0).all()):
            kinds.add("top/bottom")
    assert kinds == {"left/right", "top/bottom"}
