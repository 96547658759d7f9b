"""Square attack piece by piece against Andriushchenko et al., ECCV 2020 (Algorithms 1-3), as implemented.

The pseudo-Gaussian profiles, the window side from ``p``, the window offsets and signs, the placement of
a profile in its window, the L∞ stripes and proposal, and the L2 proposal (mass of a second window moved
into a signed two-lobe bump in the first, rescaled to ``‖δ‖₂ = ε``) are compared with values written
down here, in float64, with the random draws injected so that the expected values are known.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from medrobust.attacks import Square
from medrobust.attacks.base import AttackContext
from medrobust.attacks.losses import get_loss
from medrobust.attacks.square import _bump_1d, _bump_2d, _Layout, p_schedule, two_lobe_bump, window
from medrobust.errors import ConfigError, DataError

from ._blackbox import Recorder

D = torch.float64


def context(atk: Square, x: torch.Tensor, *, mask: torch.Tensor | None = None, seed: int = 0) -> AttackContext:
    m = atk.threat.combined_mask(x, mask)
    with torch.no_grad():
        z = atk.model(x)
    return AttackContext(model=atk.model, threat=atk.threat, x=x, y=z.argmax(1), target=None,
                         eps=atk.threat.resolve_eps(x, m), mask=m, bounds=atk.threat.bounds_for(x),
                         loss_fn=get_loss("margin"), clean_logits=z, generator=torch.Generator().manual_seed(seed))


def linear(n_feat: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_feat, 3)).double()


def tail(d: int, top: int) -> float:
    """``Σ_{r=d}^{top} 1/(r+1)²``."""
    return sum(1.0 / (r + 1) ** 2 for r in range(d, top + 1))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


# ------------------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 8])
def test_pseudo_gaussian_profile_1d(s: int) -> None:
    """Value at distance ``d = ⌊|k − (s−1)/2|⌋`` from the centre: ``Σ_{r=d}^{⌈s/2⌉+1} 1/(r+1)²``, unit norm."""
    top = math.ceil(s / 2) + 1
    want = unit(torch.tensor([tail(math.floor(abs(k - (s - 1) / 2)), top) for k in range(s)], dtype=D))
    got = _bump_1d(s, D)
    assert got.dtype == D
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
    assert _bump_1d(s, torch.float32).dtype == torch.float32


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 3), (4, 2), (2, 5), (6, 3)])
def test_pseudo_gaussian_profile_2d(h: int, w: int) -> None:
    """Chebyshev rings: ``d = max(⌊|i − (h−1)/2|⌋, ⌊|j − (w−1)/2|⌋)``, value ``Σ_{r=d}^{max(h,w)+1} 1/(r+1)²``."""
    top = max(h, w) + 1
    want = torch.tensor([[tail(max(math.floor(abs(i - (h - 1) / 2)), math.floor(abs(j - (w - 1) / 2))), top)
                          for j in range(w)] for i in range(h)], dtype=D)
    got = _bump_2d(h, w, D)
    assert got.shape == (h, w) and got.dtype == D
    torch.testing.assert_close(got, unit(want), rtol=1e-14, atol=0)
    assert _bump_2d(h, w, torch.float32).dtype == torch.float32


def test_two_lobe_bump() -> None:
    """Two pseudo-Gaussians of opposite signs side by side (left ``⌊s/2⌋``), unit norm; one pixel: ``+1``."""
    for spatial in (1, 2):
        for dt in (D, torch.float32):
            one = two_lobe_bump(1, spatial, transpose=False, dtype=dt)
            assert one.shape == (1,) * spatial and one.dtype == dt and float(one.flatten()[0]) == 1.0
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(two_lobe_bump(2, 1, transpose=False, dtype=D), torch.tensor([r, -r], dtype=D))
    got = two_lobe_bump(5, 1, transpose=False, dtype=D)
    torch.testing.assert_close(got, torch.cat([_bump_1d(2, D), -_bump_1d(3, D)]) * r, rtol=1e-14, atol=0)
    assert two_lobe_bump(5, 1, transpose=False, dtype=torch.float32).dtype == torch.float32
    sq = two_lobe_bump(5, 2, transpose=False, dtype=D)
    torch.testing.assert_close(sq, torch.cat([_bump_2d(5, 2, D), -_bump_2d(5, 3, D)], dim=1) * r, rtol=1e-14, atol=0)
    torch.testing.assert_close(two_lobe_bump(5, 2, transpose=True, dtype=D), sq.t(), rtol=0, atol=0)
    assert two_lobe_bump(4, 2, transpose=True, dtype=torch.float32).dtype == torch.float32


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize(("p", "sp", "side"), [
    (0.001, (100,), 1), (0.1, (100,), 10), (0.5, (7,), 4), (1.0, (50,), 50), (0.26, (10,), 3),
    (0.1, (10, 40), 6), (0.0001, (10, 40), 1), (1.0, (10, 40), 10), (0.3, (40, 10), 10), (0.3, (40, 20), 15),
])
def test_window_side_from_p(p: float, sp: tuple[int, ...], side: int) -> None:
    """Signals: ``round(p·L)``; images: ``round(sqrt(p·H·W))``; at least 1, at most the shortest axis."""
    assert Square._side(p, sp) == side


def test_window_offsets_cover_every_position() -> None:
    """L2 offsets are uniform on ``[0, size − s]``: over many samples the window touches both ends."""
    x = torch.zeros(300, 1, 6, dtype=D)
    atk = Square(linear(6), eps=1.0, norm="l2")
    ctx = context(atk, x)
    (o,) = atk._offsets(ctx, ctx.active(only_unsuccessful=False), 4, (6,))
    assert set(o.tolist()) == {0, 1, 2}


def test_window_offsets_and_signs_from_one_uniform_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """``offset = ⌊u·(size − s + 1)⌋`` per spatial axis, sign ``−1`` if ``u < 0.5`` else ``+1`` per channel."""
    x = torch.zeros(4, 2, 10, 12, dtype=D)
    atk = Square(linear(240), eps=1.0)
    ctx = context(atk, x)
    u = torch.tensor([[0.0, 0.0, 0.5, 0.49],
                      [0.999999, 0.999999, 0.0, 1.0 - 1e-16],
                      [0.3, 0.7, 0.51, 0.2],
                      [0.5, 0.15, 0.99, 0.5]], dtype=D)
    monkeypatch.setattr(ctx, "rand", lambda act, *shape: u[: len(act)].view(len(act), *shape).clone())
    lay = _Layout(x)
    offs, signs = Square._window_and_signs(ctx, ctx.active(only_unsuccessful=False), 4, lay)
    assert offs[0].tolist() == [0, 6, 2, 3] and offs[1].tolist() == [0, 8, 6, 1]  # 7 and 9 positions
    assert signs.shape == (4, 2, 1, 1) and signs.dtype == D
    assert signs.view(4, 2).tolist() == [[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]


def test_profile_is_placed_at_the_window_offset() -> None:
    prof = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=D)
    offs = [torch.tensor([0, 5])]
    got = Square._place(prof, offs, (8,), window(offs, 3, (8,)))
    want = torch.tensor([[[1, 2, 3, 0, 0, 0, 0, 0]], [[0, 0, 0, 0, 0, 4, 5, 6]]], dtype=D)
    assert torch.equal(got, want)
    prof2 = torch.arange(1.0, 9.0, dtype=D).view(2, 2, 2)
    offs2 = [torch.tensor([1, 3]), torch.tensor([4, 0])]
    got = Square._place(prof2, offs2, (5, 7), window(offs2, 2, (5, 7)))
    want = torch.zeros(2, 1, 5, 7, dtype=D)
    want[0, 0, 1:3, 4:6] = prof2[0]
    want[1, 0, 3:5, 0:2] = prof2[1]
    assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------ L∞
def test_linf_initialisation_is_vertical_stripes_on_images_and_signs_on_signals() -> None:
    """Algorithm 2's start: on images each column is ``±ε`` over the whole height (per channel); on
    signals every coordinate is ``±ε``. ε = 2 (no bounds), so ε·sign and sign/ε differ."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 6, 7, generator=g, dtype=D)
    rec = Recorder(linear(84))
    Square(rec, eps=2.0, norm="linf", steps=1, early_stop=False)(x, torch.zeros(3, dtype=torch.long))
    d = rec.inputs[1] - x
    torch.testing.assert_close(d.abs(), torch.full_like(d, 2.0), rtol=0, atol=1e-15)
    torch.testing.assert_close(d, d[:, :, :1, :].expand_as(d), rtol=0, atol=1e-15)  # constant along the height
    assert bool((d[:, :, 0, :] > 0).any()) and bool((d[:, :, 0, :] < 0).any())
    xs = torch.rand(3, 2, 9, generator=g, dtype=D)
    rec = Recorder(linear(18))
    Square(rec, eps=2.0, norm="linf", steps=1, early_stop=False)(xs, torch.zeros(3, dtype=torch.long))
    d = rec.inputs[1] - xs
    torch.testing.assert_close(d.abs(), torch.full_like(d, 2.0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("redraws", [0, 3])
def test_linf_redraws_are_bounded_by_max_redraws(redraws: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample whose every coordinate is frozen can never change: its proposal is drawn exactly
    ``max_redraws + 1`` times; a free sample is drawn once and gets ``±ε`` (ε = 2) in its window."""
    x = torch.zeros(2, 1, 8, dtype=D)
    mask = torch.ones(2, 1, 8, dtype=D)
    mask[1] = 0
    atk = Square(linear(8), eps=2.0, norm="linf", max_redraws=redraws)
    ctx = context(atk, x, mask=mask)
    calls: list[int] = []
    orig = ctx.rand

    def rand(act: Any, *shape: int) -> torch.Tensor:
        calls.append(len(act))
        return orig(act, *shape)

    monkeypatch.setattr(ctx, "rand", rand)
    act = ctx.active(only_unsuccessful=False)
    x_best = x.clone()
    new = atk._linf_proposal(ctx, act, _Layout(x), x_best, 3)
    assert calls == [2] + [1] * redraws
    assert torch.equal(new[1], x[1])
    changed = new[0, 0] != 0
    assert int(changed.sum()) == 3 and bool((new[0, 0][changed].abs() == 2.0).all())


# ------------------------------------------------------------------------------------------ L2
def reference_l2(x: torch.Tensor, xb: torch.Tensor, eps: float, s: int, offs1: list[torch.Tensor],
                 offs2: list[torch.Tensor], transpose: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Algorithm 3 for one sample at a time: the window-1 content becomes the normalised old content plus
    the signed two-lobe bump, rescaled per channel to hold the mass of windows 1 ∪ 2 plus the unused budget
    (shared equally by the channels); window 2 (outside window 1) is emptied; then ``‖δ‖₂ = ε``."""
    n, c = x.shape[:2]
    sp = tuple(x.shape[2:])
    out = torch.empty_like(x)
    for i in range(n):
        delta = (xb[i] - x[i]).clone()
        w1 = torch.zeros(sp, dtype=torch.bool)
        w2 = torch.zeros(sp, dtype=torch.bool)
        sl1 = tuple(slice(int(o[i]), int(o[i]) + s) for o in offs1)
        sl2 = tuple(slice(int(o[i]), int(o[i]) + s) for o in offs2)
        w1[sl1] = True
        w2[sl2] = True
        prof = two_lobe_bump(s, len(sp), transpose=bool(transpose[i]), dtype=D)
        unused = max(eps**2 - float(delta.pow(2).sum()), 0.0)
        new = delta.clone()
        for ch in range(c):
            d = delta[ch]
            nu2 = float(d[w1 | w2].pow(2).sum())
            old = torch.where(w1, d, torch.zeros_like(d))
            bump = torch.zeros(sp, dtype=D)
            bump[sl1] = prof * float(signs[i, ch])
            u = bump + old / (float(old.norm()) + 1e-10)
            u = u / float(u.norm()) * math.sqrt(unused / c + nu2)
            new[ch] = torch.where(w1, u, torch.where(w2, torch.zeros_like(d), d))
        out[i] = x[i] + new / float(new.norm()) * eps
    return out


@pytest.mark.parametrize("case", ["signal", "image"])
def test_l2_proposal_matches_algorithm_3(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three samples, two channels, ε = 2.5: a zero perturbation (all budget unused), a partial one, and
    one whose window-1 content nearly cancels the bump (the new window content is short, ‖u‖ < 1)."""
    g = torch.Generator().manual_seed(3)
    sp = (20,) if case == "signal" else (6, 7)
    s = 5 if case == "signal" else 3
    n, c, eps = 3, 2, 2.5
    x = torch.rand(n, c, *sp, generator=g, dtype=D)
    if case == "signal":
        offs1, offs2 = [torch.tensor([0, 7, 15])], [torch.tensor([3, 12, 15])]
    else:
        offs1 = [torch.tensor([0, 2, 3]), torch.tensor([4, 0, 1])]
        offs2 = [torch.tensor([1, 3, 0]), torch.tensor([4, 1, 4])]
    transpose_u = torch.tensor([0.5, 0.2, 0.9], dtype=D)  # 0.5 is not < 0.5: no transpose
    sign_u = torch.tensor([[0.1, 0.7], [0.5, 0.3], [0.8, 0.2]], dtype=D)
    transpose = transpose_u < 0.5
    signs = torch.where(sign_u < 0.5, -1.0, 1.0).to(D)
    delta = torch.randn(n, c, *sp, generator=g, dtype=D)
    delta[0] = 0
    delta[1] *= 0.5 * eps / float(delta[1].norm())
    # sample 2: channel 0 of window 1 holds minus the bump (plus a little), the rest is small
    delta[2] *= 0.01
    prof = two_lobe_bump(s, len(sp), transpose=bool(transpose[2]), dtype=D)
    sl = tuple(slice(int(o[2]), int(o[2]) + s) for o in offs1)
    delta[2, 0][sl] = -0.3 * prof * float(signs[2, 0]) + 0.01 * delta[2, 0][sl]
    x_best = x + delta
    atk = Square(linear(c * math.prod(sp)), eps=eps, norm="l2")
    ctx = context(atk, x)
    ints = [*offs1, *offs2]
    highs: list[int] = []

    def randint(act: Any, high: int, *shape: int) -> torch.Tensor:
        highs.append(high)
        return ints.pop(0).clone()

    floats = [transpose_u, sign_u.view(n, c, *([1] * len(sp)))]
    monkeypatch.setattr(ctx, "randint", randint)
    monkeypatch.setattr(ctx, "rand", lambda act, *shape: floats.pop(0).clone())
    got = atk._l2_proposal(ctx, ctx.active(only_unsuccessful=False), _Layout(x), x_best, s)
    assert highs == [size - s + 1 for size in sp] * 2
    want = reference_l2(x, x_best, eps, s, offs1, offs2, transpose, signs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((got - x).flatten(1).norm(dim=1), torch.full((n,), eps, dtype=D), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(("kw", "message"), [
    ({"steps": 0}, "steps must be an integer >= 1, got 0."),
    ({"p_init": 0.0}, "p_init must be > 0.0, got 0.0."),
    ({"p_init": 1.5}, "p_init must be <= 1.0, got 1.5."),
    ({"early_stop": 1}, "early_stop must be true or false, got 1."),
    ({"max_redraws": -1}, "max_redraws must be an integer >= 0, got -1."),
])
def test_bad_arguments_name_the_argument(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Square(linear(4), eps=0.1, **kw)


def test_smallest_settings_and_the_papers_p_init() -> None:
    model = linear(4)
    atk = Square(model, eps=0.1, steps=1, p_init=1.0, max_redraws=0, early_stop=False)
    hp = atk.hyperparameters()
    assert (hp["steps"], hp["p_init"], hp["max_redraws"], hp["early_stop"]) == (1, 1.0, 0, False)
    assert Square(model, eps=0.1).p_init == 0.05 and Square(model, eps=0.1, norm="l2").p_init == 0.1
    d = Square(model, eps=0.1).hyperparameters()
    assert (d["steps"], d["early_stop"], d["max_redraws"]) == (5000, True, 100)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (2,)])
def test_layouts_other_than_signals_and_images_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match="^" + re.escape(
            f"Square works on (N, samples), (N, leads, samples) or (N, C, H, W) inputs, got {shape}; "
            "reshape the batch to one of these layouts.") + "$"):
        _Layout(torch.zeros(shape))


def test_layouts() -> None:
    for shape, c, sp in [((2, 9), 1, (9,)), ((2, 3, 9), 3, (9,)), ((2, 3, 5, 6), 3, (5, 6))]:
        x = torch.arange(math.prod(shape), dtype=D).view(shape)
        lay = _Layout(x)
        assert (lay.c, lay.sp, lay.feat, lay.dims, lay.ones) == (c, sp, shape[1:], tuple(range(2, 2 + len(sp))),
                                                                 [1] * len(sp))
        can = lay.canon(x)
        assert can.shape == (2, c, *sp) and torch.equal(lay.orig(can), x)


def reference_l2_init(n: int, c: int, sp: tuple[int, ...], eps: torch.Tensor, sign_u: torch.Tensor) -> torch.Tensor:
    """Algorithm 3's start: blocks of side ``b = max(1, ⌊min(sp)/5⌋)`` tiling the input (the last ones cut),
    each a pseudo-Gaussian with its own sign per channel, scaled to ``‖δ‖₂ = ε``."""
    b = max(1, min(sp) // 5)
    out = torch.zeros(n, c, *sp, dtype=D)
    for i in range(n):
        for ch in range(c):
            if len(sp) == 1:
                for q in range(math.ceil(sp[0] / b)):
                    seg = _bump_1d(b, D)[: sp[0] - q * b]
                    out[i, ch, q * b: q * b + len(seg)] = seg * (-1.0 if sign_u[i, ch, q] < 0.5 else 1.0)
            else:
                for q in range(math.ceil(sp[0] / b)):
                    for r in range(math.ceil(sp[1] / b)):
                        blk = _bump_2d(b, b, D)[: sp[0] - q * b, : sp[1] - r * b]
                        sgn = -1.0 if sign_u[i, ch, q, r] < 0.5 else 1.0
                        out[i, ch, q * b: q * b + blk.shape[0], r * b: r * b + blk.shape[1]] = blk * sgn
        out[i] *= float(eps[i]) / float(out[i].norm())
    return out


@pytest.mark.parametrize(("shape", "reps"), [((3, 2, 23), (6,)), ((2, 3, 11, 14), (6, 7)), ((2, 4), (4,)),
                                             ((2, 1, 4, 9), (4, 9))])
def test_l2_initialisation_is_a_signed_grid_of_bumps(shape: tuple[int, ...], reps: tuple[int, ...],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(*shape, generator=g, dtype=D)
    lay = _Layout(x)
    n, c = shape[0], lay.c
    eps = torch.linspace(0.5, 3.0, n, dtype=D)
    atk = Square(linear(math.prod(shape[1:])), eps=1.0, norm="l2")
    ctx = context(atk, x)
    sign_u = torch.rand(n, c, *reps, generator=g, dtype=D)
    sign_u.view(-1)[0] = 0.5  # exactly 0.5: a plus sign
    seen: list[tuple[int, ...]] = []

    def rand(act: Any, *shp: int) -> torch.Tensor:
        seen.append(shp)
        return sign_u.clone()

    monkeypatch.setattr(ctx, "rand", rand)
    act = ctx.active(only_unsuccessful=False)
    act.eps = eps
    got = atk._init_delta(ctx, act, lay)
    assert seen == [(c, *reps)]
    want = reference_l2_init(n, c, lay.sp, eps, sign_u)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert float(got.view(n, -1)[0, 0]) > 0


def test_linf_initialisation_signs_come_from_the_samples_uniform_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2, 2, 3, 4, dtype=D)
    atk = Square(linear(24), eps=1.0)
    ctx = context(atk, x)
    act = ctx.active(only_unsuccessful=False)
    act.eps = torch.tensor([0.5, 2.0], dtype=D)
    u = torch.tensor([[[[0.1, 0.5, 0.9, 0.49]], [[0.6, 0.2, 0.51, 0.0]]],
                      [[[0.5, 0.5, 0.1, 0.1]], [[0.3, 0.8, 0.8, 0.3]]]], dtype=D)
    seen: list[tuple[int, ...]] = []

    def rand(a: Any, *shp: int) -> torch.Tensor:
        seen.append(shp)
        return u.reshape(len(a), *shp).clone()

    monkeypatch.setattr(ctx, "rand", rand)
    got = atk._init_delta(ctx, act, _Layout(x))
    assert seen == [(2, 1, 4)]
    want = torch.where(u < 0.5, -1.0, 1.0).to(D).expand(2, 2, 3, 4) * act.eps.view(2, 1, 1, 1)
    assert torch.equal(got, want)
    xs = torch.zeros(2, 2, 4, dtype=D)
    atk = Square(linear(8), eps=1.0)
    ctx = context(atk, xs)
    act = ctx.active(only_unsuccessful=False)
    act.eps = torch.tensor([0.5, 2.0], dtype=D)
    seen.clear()
    monkeypatch.setattr(ctx, "rand", rand)
    got = atk._init_delta(ctx, act, _Layout(xs))
    assert seen == [(2, 4)]
    assert torch.equal(got, torch.where(u[:, :, 0] < 0.5, -1.0, 1.0).to(D) * act.eps.view(2, 1, 1))


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("shape", [(3, 2, 20), (2, 1, 6, 7)])
def test_float32_batches_stay_float32(norm: str, shape: tuple[int, ...]) -> None:
    """Profiles, signs and windows are cast to the batch's dtype: a float32 model gets float32 queries."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(shape[1:]), 3))
    rec = Recorder(model)
    res = Square(rec, eps=0.5, norm=norm, steps=3, early_stop=False, p_init=0.3)(
        x, torch.zeros(len(x), dtype=torch.long))
    assert res.x_adv.dtype == torch.float32 and all(t.dtype == torch.float32 for t in rec.inputs)
    assert len(rec.inputs) == 1 + 1 + 3


def test_early_stop_leaves_samples_already_misclassified_alone() -> None:
    """With early stop, a sample the model already gets wrong is a success as it is: never queried again;
    without early stop every sample is searched (the clean forward, the start, one query per iteration)."""
    x = torch.rand(4, 1, 12, generator=torch.Generator().manual_seed(2), dtype=D)
    model = linear(12)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # sample 0 is misclassified
    res = Square(model, eps=0.01, norm="linf", steps=5)(x, y)
    assert res.queries_per_sample.tolist()[0] == 1 and torch.equal(res.x_adv[0], x[0])
    assert res.queries_per_sample.tolist()[1:] == [1 + 1 + 5] * 3
    res = Square(model, eps=0.01, norm="linf", steps=5, early_stop=False)(x, y)
    assert res.queries_per_sample.tolist() == [1 + 1 + 5] * 4 and not torch.equal(res.x_adv[0], x[0])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_search_keeps_the_best_targeted_loss(norm: str) -> None:
    """Targeted, without early stop: the output is the first query of highest targeted margin
    ``z_t − max_{j≠t} z_j`` (the start included), as in Algorithm 1 with the targeted loss."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(4, 1, 16, generator=g, dtype=D)
    model = linear(16)
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 3
    rec = Recorder(model)
    res = Square(rec, eps=0.3, norm=norm, steps=25, early_stop=False, generator=torch.Generator().manual_seed(1))(
        x, y, target=target)
    queries = torch.stack(rec.inputs[1:], 1)  # (n, 1 + steps, ...)
    with torch.no_grad():
        z = model(queries.flatten(0, 1)).view(4, 26, 3)
    zt = z.gather(2, target.view(4, 1, 1).expand(4, 26, 1)).squeeze(2)
    others = z.scatter(2, target.view(4, 1, 1).expand(4, 26, 1), -float("inf")).amax(2)
    best = (zt - others).argmax(1)
    assert bool((best > 0).any())  # the search improves on the start
    for i in range(4):
        assert torch.equal(res.x_adv[i], queries[i, int(best[i])])


class Centred(torch.nn.Module):
    """``model(x − mean(x))``: blind to a constant offset, so samples can be told apart by one."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.model(t - t.mean(-1, keepdim=True))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_stop_returns_the_first_adversarial_query_and_stops(norm: str) -> None:
    """With early stop every sample is queried until its first adversarial input (the start included),
    which is its output; it is never queried again."""
    g = torch.Generator().manual_seed(8)
    x = torch.rand(8, 1, 16, generator=g, dtype=D) + torch.arange(8, dtype=D).view(8, 1, 1)  # far apart
    model = Centred(linear(16))
    with torch.no_grad():
        y = model(x).argmax(1)
    steps = 30
    rec = Recorder(model)
    res = Square(rec, eps=0.2 if norm == "linf" else 0.6, norm=norm, steps=steps,
                 generator=torch.Generator().manual_seed(0))(x, y)
    per: list[list[torch.Tensor]] = [[] for _ in range(8)]
    for batch in rec.inputs[1:]:
        for q in batch:
            per[int((q - x).flatten(1).abs().amax(1).argmin())].append(q)
    stopped = 0
    for i, qs in enumerate(per):
        assert int(res.queries_per_sample[i]) == 1 + len(qs)
        with torch.no_grad():
            adv = model(torch.stack(qs)).argmax(1) != y[i]
        if bool(res.success[i]):
            assert bool(adv[-1]) and not bool(adv[:-1].any()) and torch.equal(res.x_adv[i], qs[-1])
            stopped += len(qs) < 1 + steps
        else:
            assert len(qs) == 1 + steps and not bool(adv.any())
    assert stopped >= 2 and not bool(res.success.all())


def test_p_schedule_thresholds_are_fractions_of_the_budget() -> None:
    """The halving points are ``it/steps·10,000 > 10, 50, ...`` (Andriushchenko et al.'s schedule for 10,000
    iterations): iteration 10,999 of 10,000,000 sits at 10.999 and is not yet past the first one."""
    assert p_schedule(0.8, 10_999, 10_000_000) == 0.8
    assert p_schedule(0.8, 11_000, 10_000_000) == 0.4
    assert p_schedule(0.8, 50_999, 10_000_000) == 0.4 and p_schedule(0.8, 51_000, 10_000_000) == 0.2


def test_a_proposal_of_equal_loss_does_not_replace_the_best() -> None:
    """Random search keeps a proposal only if it is strictly better: the model ignores half the coordinates,
    so L∞ proposals there tie exactly, and the output must stay the first query of highest loss."""
    norm = "linf"
    x = torch.rand(4, 1, 20, generator=torch.Generator().manual_seed(3), dtype=D)
    model = linear(20)
    with torch.no_grad():
        model[1].weight[:, 10:] = 0.0
        y = model(x).argmax(1)
    rec = Recorder(model)
    res = Square(rec, eps=0.05, norm=norm, steps=40, early_stop=False, p_init=0.1,
                 generator=torch.Generator().manual_seed(2))(x, y)
    queries = torch.stack(rec.inputs[1:], 1)
    with torch.no_grad():
        z = model(queries.flatten(0, 1)).view(4, 41, 3)
    margin = z.scatter(2, y.view(4, 1, 1).expand(4, 41, 1), -float("inf")).amax(2) - z.gather(
        2, y.view(4, 1, 1).expand(4, 41, 1)).squeeze(2)
    ties = 0
    for i in range(4):
        best = int(margin[i].argmax())  # the first index of the highest margin
        ties += int((margin[i, best + 1:] == margin[i, best]).sum())
        assert torch.equal(res.x_adv[i], queries[i, best])
    assert ties > 0  # later queries tie with the best one
