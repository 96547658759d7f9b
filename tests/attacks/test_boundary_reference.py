"""The boundary attack step by step against the paper's rules (Brendel, Rauber & Bethge, ICLR 2018, §3.1).

Each piece of the walk is checked on its own, on tiny float64 problems where the expected value can be
written down: the Hann smoothing kernel, the orthogonal (spherical) step and the step towards the
original, the acceptance of the first adversarial candidate, the step-size adaptation on the success
rates of the last trials, the bisection of the start towards ``x``, the choice of the start in the pool,
the random-noise starts, and the query accounting of a whole run. Random draws are recorded by
wrapping the context's ``rand`` / ``randn`` (the real per-sample streams), so the expected values use
exactly the numbers the attack drew.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import pytest
import torch

from medrobust.attacks import BinaryLogitWrapper, Boundary
from medrobust.attacks.base import AttackContext
from medrobust.attacks.boundary import _Steps, hann_smooth
from medrobust.attacks.losses import get_loss
from medrobust.errors import ConfigError, DataError

from ._blackbox import Linear, Recorder, Spy

D = torch.float64


# ------------------------------------------------------------------------------------------ helpers
def context(atk: Boundary, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
            mask: torch.Tensor | None = None, seed: int = 0) -> AttackContext:
    """The context ``Attack.__call__`` would build for ``atk`` on ``(x, y)``."""
    m = atk.threat.combined_mask(x, mask)
    with torch.no_grad():
        z = atk.model(x)
    return AttackContext(model=atk.model, threat=atk.threat, x=x, y=y, target=target,
                         eps=atk.threat.resolve_eps(x, m), mask=m, bounds=atk.threat.bounds_for(x),
                         loss_fn=get_loss("margin"), clean_logits=z, generator=torch.Generator().manual_seed(seed))


class Affine3(torch.nn.Module):
    """Three logits ``x·W + b`` of the flattened input (float64)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.to(D))
        self.b = torch.nn.Parameter(b.to(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


def first_coordinate_model(n_feat: int, threshold: float = 0.5) -> torch.nn.Module:
    """Two classes: 1 iff the first coordinate exceeds ``threshold`` (score ``x_0 − threshold``)."""
    w = torch.zeros(n_feat, dtype=D)
    w[0] = 1.0
    return BinaryLogitWrapper(Linear(w, -threshold)).double()


def third_class_model() -> torch.nn.Module:
    """On ``(N, 1, 2)`` inputs: class 1 when ``u_0 > 1``, else class 2 when ``u_1 > 1``, else class 0."""
    w = torch.tensor([[0.0, 10.0, 0.0], [0.0, 0.0, 5.0]])
    return Affine3(w, torch.tensor([0.0, -10.0, -5.0]))


class Draws:
    """Wraps ``AttackContext.rand`` / ``randn`` and keeps every draw (the real per-sample streams)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rand: list[torch.Tensor] = []
        self.randn: list[torch.Tensor] = []
        orig_rand, orig_randn = AttackContext.rand, AttackContext.randn

        def rand(ctx: AttackContext, act: Any, *shape: int) -> torch.Tensor:
            out = orig_rand(ctx, act, *shape)
            self.rand.append(out.clone())
            return out

        def randn(ctx: AttackContext, act: Any, *shape: int) -> torch.Tensor:
            out = orig_randn(ctx, act, *shape)
            self.randn.append(out.clone())
            return out

        monkeypatch.setattr(AttackContext, "rand", rand)
        monkeypatch.setattr(AttackContext, "randn", randn)


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(("kw", "message"), [
    ({"steps": 0}, "steps must be an integer >= 1, got 0."),
    ({"candidates": 0}, "candidates must be an integer >= 1, got 0."),
    ({"spherical_step": 0.0}, "spherical_step must be > 0.0, got 0.0."),
    ({"spherical_step": -0.1}, "spherical_step must be > 0.0, got -0.1."),
    ({"source_step": 0.0}, "source_step (a fraction of the distance) must be > 0.0, got 0.0."),
    ({"source_step": 1.0}, "source_step (a fraction of the distance) must be <= 0.999999999999, got 1.0."),
    ({"step_adaptation": 1.0}, "step_adaptation must be > 1.0, got 1.0."),
    ({"spherical_window": 0}, "spherical_window must be an integer >= 1, got 0."),
    ({"source_window": 0}, "source_window must be an integer >= 1, got 0."),
    ({"smooth_window": 0}, "smooth_window must be an integer >= 1, got 0."),
    ({"init": "best"}, "init must be one of ('random', 'closest'), got 'best'."),
    ({"init_trials": -1}, "init_trials must be an integer >= 0, got -1."),
    ({"bisection_steps": -1}, "bisection_steps must be an integer >= 0, got -1."),
    ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0."),
    ({"starting_points": torch.zeros(3, 1, 4, dtype=torch.long)},
     "starting_points must be a floating-point tensor (P, ...) of inputs, or None."),
    ({"starting_points": [[0.0, 1.0]]}, "starting_points must be a floating-point tensor (P, ...) of inputs, or None."),
])
def test_bad_arguments_name_the_argument(kw: dict[str, Any], message: str) -> None:
    model = first_coordinate_model(4)
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Boundary(model, eps=1.0, **kw)


def test_smallest_admissible_values_and_paper_defaults() -> None:
    """The smallest legal settings are accepted, and the defaults are Shao et al.'s (25 candidates, windows
    100 / 30, factor 1.5, 8,000 iterations, Hann window 41) with the start settings of the docstring."""
    model = first_coordinate_model(4)
    atk = Boundary(model, eps=1.0, steps=1, candidates=1, spherical_step=1e-9, source_step=1.0 - 1e-12,
                   step_adaptation=1.0 + 1e-9, spherical_window=1, source_window=1, smooth_window=1, init_trials=0,
                   bisection_steps=0, max_batch_size=1, init="closest")
    hp = atk.hyperparameters()
    assert (hp["steps"], hp["candidates"], hp["spherical_window"], hp["source_window"], hp["smooth_window"]) == (
        1, 1, 1, 1, 1)
    assert (hp["init_trials"], hp["bisection_steps"], hp["max_batch_size"], hp["init"]) == (0, 0, 1, "closest")
    assert hp["source_step"] == 1.0 - 1e-12 and hp["starting_points"] is None
    assert Boundary(model, eps=1.0, max_batch_size=7).max_batch_size == 7
    assert Boundary(model, eps=1.0, max_batch_size=None).max_batch_size is None
    d = Boundary(model, eps=1.0).hyperparameters()
    assert {k: d[k] for k in ("steps", "candidates", "spherical_step", "source_step", "step_adaptation",
                              "spherical_window", "source_window", "smooth_window", "init", "init_trials",
                              "bisection_steps", "max_batch_size", "starting_points")} == {
        "steps": 8000, "candidates": 25, "spherical_step": 0.01, "source_step": 0.01, "step_adaptation": 1.5,
        "spherical_window": 100, "source_window": 30, "smooth_window": 41, "init": "random", "init_trials": 50,
        "bisection_steps": 10, "max_batch_size": None, "starting_points": None}
    for pool in (torch.rand(5, 1, 4, dtype=D), torch.rand(2, 1, 4, dtype=D)):  # large and small pools
        hp = Boundary(model, eps=1.0, starting_points=pool).hyperparameters()
        assert hp["starting_points"] == f"tensor{tuple(pool.shape)}"  # the shape, never the values
        assert set(hp) == {*Boundary.own_parameters(), "loss"}


def test_bad_starting_points_at_call_time() -> None:
    model = first_coordinate_model(4)
    x, y = torch.zeros(2, 1, 4, dtype=D), torch.zeros(2, dtype=torch.long)
    with pytest.raises(DataError, match="^" + re.escape(
            "starting_points have per-sample shape (1, 5) but the batch has (1, 4); pass inputs of the same shape.")
            + "$"):
        Boundary(model, eps=1.0, steps=1, starting_points=torch.zeros(3, 1, 5, dtype=D))(x, y)
    bad = torch.ones(3, 1, 4, dtype=D)
    bad[1, 0, 2] = float("nan")
    with pytest.raises(DataError, match="^" + re.escape("starting_points contain NaN or inf.") + "$"):
        Boundary(model, eps=1.0, steps=1, starting_points=bad)(x, y)


# ------------------------------------------------------------------------------------------ smoothing
def test_hann_kernel_is_the_symmetric_window_without_its_zero_ends() -> None:
    """An impulse returns the kernel: ``sin²(πj/(w+1))``, ``j = 1..w``, normalised (w = 5: [1, 3, 4, 3, 1]/12)."""
    v = torch.zeros(1, 1, 21, dtype=D)
    v[0, 0, 10] = 1.0
    out = hann_smooth(v, 5)
    expect = torch.zeros(21, dtype=D)
    expect[8:13] = torch.tensor([1.0, 3.0, 4.0, 3.0, 1.0], dtype=D) / 12.0
    torch.testing.assert_close(out[0, 0], expect, rtol=0, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes the zero-padded copy of an even kernel
        two = hann_smooth(v, 2)
    expect2 = torch.zeros(21, dtype=D)
    expect2[9:11] = 0.5  # two equal taps: the window is applied, not skipped
    torch.testing.assert_close(two[0, 0], expect2, rtol=0, atol=1e-15)


def test_hann_smoothing_of_leads_and_images() -> None:
    """``(M, C, L)``: each lead along time only; ``(M, C, H, W)``: separably along W and H (outer product)."""
    k = torch.tensor([1.0, 3.0, 4.0, 3.0, 1.0], dtype=D) / 12.0
    v = torch.zeros(2, 3, 15, dtype=D)
    v[1, 1, 7] = 1.0
    out = hann_smooth(v, 5)
    expect = torch.zeros_like(v)
    expect[1, 1, 5:10] = k
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-15)
    img = torch.zeros(2, 2, 9, 11, dtype=D)
    img[1, 1, 4, 5] = 1.0
    out = hann_smooth(img, 5)
    expect = torch.zeros_like(img)
    expect[1, 1, 2:7, 3:8] = k.view(5, 1) * k.view(1, 5)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------ step sizes
def test_step_state_starts_on_the_given_device_in_float64_with_long_counters() -> None:
    for dev in (torch.device("cpu"), torch.device("meta")):
        st = _Steps.start(3, 0.25, 0.125, dev)
        for t in (st.sph, st.src):
            assert t.dtype == torch.float64 and t.device.type == dev.type and t.shape == (3,)
        for t in (st.sph_t, st.sph_s, st.src_t, st.src_s):
            assert t.dtype == torch.long and t.device.type == dev.type and t.shape == (3,)
    st = _Steps.start(2, 0.25, 0.125, torch.device("cpu"))
    assert st.sph.tolist() == [0.25, 0.25] and st.src.tolist() == [0.125, 0.125]
    st.sph_t += 1  # the counters are independent tensors
    assert st.sph_s.tolist() == [0, 0] and st.src_t.tolist() == [0, 0] and st.src_s.tolist() == [0, 0]


def reference_adapt(s: dict[str, list[Any]], a1: list[list[bool]], a2: list[list[bool]], sw: int, rw: int,
                    f: float) -> None:
    """Brendel et al. §3.1 per sample, in Python floats: after ``sw`` spherical trials, both steps ×f if
    more than half succeeded, ÷f if fewer than 20 %; after ``rw`` source trials the source step alone;
    a step that adapts is then kept in [1e-6, 0.5] (source) or [1e-6, 1] (spherical); the steps the user gave
    are used unchanged until their window first fills."""
    for i in range(len(a1)):
        s["sph_t"][i] += len(a1[i])
        s["sph_s"][i] += sum(a1[i])
        s["src_t"][i] += len(a2[i])
        s["src_s"][i] += sum(a2[i])
        if s["sph_t"][i] >= sw:
            rate = s["sph_s"][i] / s["sph_t"][i]
            if rate > 0.5:
                s["sph"][i] *= f
                s["src"][i] *= f
            elif rate < 0.2:
                s["sph"][i] /= f
                s["src"][i] /= f
            s["sph"][i] = min(max(s["sph"][i], 1e-6), 1.0)
            s["src"][i] = min(max(s["src"][i], 1e-6), 0.5)
            s["sph_t"][i] = s["sph_s"][i] = 0
        if s["src_t"][i] >= rw:
            rate = s["src_s"][i] / s["src_t"][i]
            if rate > 0.5:
                s["src"][i] *= f
            elif rate < 0.2:
                s["src"][i] /= f
            s["src"][i] = min(max(s["src"][i], 1e-6), 0.5)
            s["src_t"][i] = s["src_s"][i] = 0


def _check_adapt(atk: Boundary, st: _Steps, seq1: torch.Tensor, seq2: torch.Tensor) -> None:
    """Feed the trial outcomes ``(calls, n, k)`` one call at a time and compare every field after each call."""
    ref = {f: getattr(st, f).tolist() for f in ("sph", "src", "sph_t", "sph_s", "src_t", "src_s")}
    for a1, a2 in zip(seq1, seq2):
        atk._adapt(st, a1, a2)
        reference_adapt(ref, a1.tolist(), a2.tolist(), atk.spherical_window, atk.source_window, atk.step_adaptation)
        for f, want in ref.items():
            assert getattr(st, f).tolist() == want, f


def test_step_adaptation_at_the_exact_rate_thresholds() -> None:
    """Ten trials per window, one per call: success counts 0..10 hit the rates 0.2 and 0.5 exactly
    (neither changes the step) and the ones on either side (which do)."""
    model = first_coordinate_model(4)
    atk = Boundary(model, eps=1.0, spherical_window=10, source_window=10, step_adaptation=2.0)
    n = 11
    # sample i: i successes out of the 10 spherical trials, 10 - i out of the 10 source trials
    seq1 = torch.tensor([[[t < i] for i in range(n)] for t in range(10)])
    seq2 = torch.tensor([[[t < 10 - i] for i in range(n)] for t in range(10)])
    st = _Steps.start(n, 0.1, 0.01, torch.device("cpu"))
    _check_adapt(atk, st, seq1, seq2)
    # the spherical rate i/10 moves both steps, then the source rate (10-i)/10 moves the source step again
    assert st.sph.tolist()[:3] == [0.05, 0.05, 0.1] and st.sph.tolist()[5] == 0.1 and st.sph.tolist()[6] == 0.2
    assert st.src.tolist()[0] == 0.01 and st.src.tolist()[5] == 0.01 and st.src.tolist()[10] == 0.01
    assert st.src.tolist()[2] == 0.02 and st.src.tolist()[8] == 0.02  # a rate of 0.2 changes nothing, 0.8 doubles
    assert st.sph_t.tolist() == [0] * n and st.src_s.tolist() == [0] * n  # windows restart


@pytest.mark.parametrize(("sw", "rw", "k", "f", "calls"), [(4, 6, 2, 1.5, 40), (1, 1, 1, 1.5, 30), (5, 3, 3, 2.0, 30)])
def test_step_adaptation_matches_the_paper_rule_over_many_windows(sw: int, rw: int, k: int, f: float,
                                                                   calls: int) -> None:
    """Random success patterns with a different success probability per sample, several windows long."""
    model = first_coordinate_model(4)
    atk = Boundary(model, eps=1.0, spherical_window=sw, source_window=rw, step_adaptation=f)
    n = 6
    g = torch.Generator().manual_seed(sw * 100 + rw)
    p = torch.linspace(0.0, 1.0, n).view(1, n, 1)
    seq1 = torch.rand(calls, n, k, generator=g) < p
    seq2 = torch.rand(calls, n, k, generator=g) < p.flip(1)
    st = _Steps.start(n, 0.3, 0.2, torch.device("cpu"))
    _check_adapt(atk, st, seq1, seq2)


def test_step_sizes_are_kept_in_their_ranges() -> None:
    model = first_coordinate_model(4)
    atk = Boundary(model, eps=1.0, spherical_window=1, source_window=1, step_adaptation=3.0)
    st = _Steps.start(2, 0.6, 0.4, torch.device("cpu"))
    up = torch.ones(2, 1, dtype=torch.bool)
    atk._adapt(st, up, up)
    assert st.sph.tolist() == [1.0, 1.0] and st.src.tolist() == [0.5, 0.5]  # 1.8 -> 1, 3.6 -> 0.5
    st = _Steps.start(2, 2e-6, 2e-6, torch.device("cpu"))
    atk._adapt(st, ~up, ~up)
    assert st.sph.tolist() == [1e-6, 1e-6] and st.src.tolist() == [1e-6, 1e-6]


# ------------------------------------------------------------------------------------------ proposals
def reference_proposals(x: torch.Tensor, cur: torch.Tensor, eta: torch.Tensor, sph: torch.Tensor, src: torch.Tensor,
                        window: int, mask: torch.Tensor | None, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Brendel et al. §3.1 for one candidate at a time: a smoothed Gaussian direction made orthogonal to
    ``x − cur``, scaled to ``sph·d``, projected back on the sphere of radius ``d`` around ``x``; then the
    step of ``src·d'`` towards ``x``."""
    n, k = eta.shape[:2]
    out = torch.empty(n, 2 * k, *x.shape[1:], dtype=D)
    for i in range(n):
        diff = (x[i] - cur[i]).double()
        d = float(diff.norm())
        u = diff / d
        for j in range(k):
            e = hann_smooth(eta[i, j].unsqueeze(0), window)[0].double()
            if mask is not None:
                e = e * mask[i if mask.shape[0] > 1 else 0]
            e = e - (e * u).sum() * u
            e = e * (float(sph[i]) * d / float(e.norm()))
            v = cur[i] + e - x[i]
            c1 = x[i] + v * (d / float(v.norm()))
            c2 = c1 + (x[i] - c1) * float(src[i])
            out[i, j], out[i, k + j] = c1, c2
    if bounds is not None:
        out = out.clamp(*bounds)
    return out


@pytest.mark.parametrize("case", ["leads", "image", "bounded"])
def test_proposals_are_the_orthogonal_step_then_the_step_towards_the_original(case: str) -> None:
    """Two samples with their own step sizes, three candidates each, a per-sample mask; the Gaussian
    directions are small (norm < 1) so that their normalisation matters."""
    g = torch.Generator().manual_seed(5)
    feat = {"leads": (2, 16), "image": (2, 5, 6), "bounded": (2, 16)}[case]
    n, k = 2, 3
    x = torch.rand(n, *feat, generator=g, dtype=D) * 0.5 + 0.25
    cur = x + 0.2 * torch.randn(n, *feat, generator=g, dtype=D)
    mask = (torch.rand(n, *feat, generator=g) > 0.3).to(D)
    bounds = (0.0, 1.0) if case == "bounded" else None
    model = first_coordinate_model(x[0].numel())
    atk = Boundary(model, eps=1.0, norm="l2", candidates=k, smooth_window=3, bounds=bounds)
    ctx = context(atk, x, torch.zeros(n, dtype=torch.long), mask=mask)
    eta = 1e-3 * torch.randn(n, k, *feat, generator=g, dtype=D)
    ctx.randn = lambda act, *shape: eta.clone()  # type: ignore[method-assign]
    st = _Steps.start(n, 0.1, 0.2, torch.device("cpu"))
    st.sph = torch.tensor([0.05, 0.3], dtype=D)
    st.src = torch.tensor([0.1, 0.02], dtype=D)
    act = ctx.active(only_unsuccessful=False)
    both = atk._proposals(ctx, act, cur, st)
    want = reference_proposals(x, cur, eta, st.sph, st.src, 3, mask, bounds)
    assert both.shape == want.shape and both.dtype == D
    torch.testing.assert_close(both, want, rtol=1e-12, atol=1e-13)
    if bounds is None:  # on the sphere of radius d, then d·(1 − src) from x
        d = (x - cur).flatten(1).norm(dim=1)
        r = (both - x.unsqueeze(1)).flatten(2).norm(dim=2)
        torch.testing.assert_close(r[:, :k], d.view(n, 1).expand(n, k), rtol=1e-12, atol=0)
        torch.testing.assert_close(r[:, k:], (d * (1 - st.src)).view(n, 1).expand(n, k), rtol=1e-12, atol=0)
    else:
        assert float(both.min()) >= 0.0 and float(both.max()) <= 1.0 and bool((both == 0).any() | (both == 1).any())


# ------------------------------------------------------------------------------------------ one iteration
@pytest.mark.parametrize("targeted", [False, True])
def test_step_accepts_the_first_adversarial_final_candidate(targeted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates are given; the attack must move to the first final candidate (second half) that is
    adversarial (of the target class when targeted; a third class is not), keep its logits, and count
    the spherical / final successes for the adaptation."""
    model = third_class_model()
    k = 3
    atk = Boundary(model, eps=1.0, norm="l2", candidates=k, spherical_window=100, source_window=100)
    x = torch.zeros(3, 1, 2, dtype=D)
    y = torch.zeros(3, dtype=torch.long)
    target = torch.ones(3, dtype=torch.long) if targeted else None
    ctx = context(atk, x, y, target=target)
    c0, c1, c2 = [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]  # classes 0, 1, 2
    both = torch.tensor([
        [c1, c2, c0, c0, c2, c1],  # final: class 0, 2, 1
        [c0, c0, c0, c0, c0, c0],  # nothing adversarial
        [c2, c2, c1, c1, c0, c2],  # final: class 1, 0, 2
    ], dtype=D).unsqueeze(2)
    monkeypatch.setattr(atk, "_proposals", lambda *a: both.clone())
    act = ctx.active(only_unsuccessful=False)
    cur = torch.full((3, 1, 2), 7.0, dtype=D)
    cur_logits = torch.full((3, 3), -1.0, dtype=D)
    st = _Steps.start(3, 0.1, 0.1, torch.device("cpu"))
    new, new_logits = atk._step(ctx, act, cur, cur_logits, st)
    pick = [5, None, 3] if targeted else [4, None, 3]
    for i, j in enumerate(pick):
        if j is None:
            assert torch.equal(new[i], cur[i]) and torch.equal(new_logits[i], cur_logits[i])
        else:
            assert torch.equal(new[i], both[i, j]) and torch.equal(new_logits[i], model(both[i, j:j + 1])[0])
    if targeted:
        assert st.sph_s.tolist() == [1, 0, 1] and st.src_s.tolist() == [1, 0, 1]
    else:
        assert st.sph_s.tolist() == [2, 0, 3] and st.src_s.tolist() == [2, 0, 2]
    assert st.sph_t.tolist() == [k] * 3 and st.src_t.tolist() == [k] * 3
    assert ctx.n_fwd.tolist() == [1 + 2 * k] * 3


# ------------------------------------------------------------------------------------------ bisection
def test_bisection_keeps_the_upper_end_of_the_bracket() -> None:
    """On a linear decision along the segment, the boundary sits at ``t* = −s(x)/(s(start) − s(x))``;
    ``m`` halvings end at ``hi = ⌈t*·2^m⌉ / 2^m``; a start never moved is returned exactly."""
    n_feat = 3
    model = first_coordinate_model(n_feat, threshold=0.0)
    tstar = torch.tensor([0.3, 0.7, 0.05, 0.97], dtype=D)
    x = torch.zeros(4, 1, n_feat, dtype=D)
    x[:, 0, 0] = -tstar  # s(x) = -t*, s(start) = 1 - t*: boundary at t*
    x[:, 0, 1:] = torch.tensor([0.5, -2.0], dtype=D)
    start = x.clone()
    start[:, 0, 0] += 1.0
    start[:, 0, 1:] += torch.tensor([[3.0, 1.0], [-1.0, 2.0], [0.5, 0.5], [4.0, -4.0]], dtype=D)
    atk = Boundary(model, eps=1.0, norm="l2", bisection_steps=4)
    ctx = context(atk, x, torch.zeros(4, dtype=torch.long))
    act = ctx.active(only_unsuccessful=False)
    out = atk._bisect(ctx, act, start)
    hi = torch.tensor([5 / 16, 12 / 16, 1 / 16, 1.0], dtype=D)
    want = x + (start - x) * hi.view(-1, 1, 1)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-15)
    assert torch.equal(out[3], start[3])
    assert ctx.n_fwd.tolist() == [1 + 4] * 4
    fine = Boundary(model, eps=1.0, norm="l2", bisection_steps=45)
    ctx = context(fine, x, torch.zeros(4, dtype=torch.long))
    out = fine._bisect(ctx, ctx.active(only_unsuccessful=False), start)
    s = out[:, 0, 0]
    assert bool((s > 0).all()) and bool((s < 2.0**-44).all())  # float64 bracket, not float32


# ------------------------------------------------------------------------------------------ recording
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_sample_is_recorded_when_adversarial_within_the_radius_in_the_threat_norm(norm: str) -> None:
    """Distances are measured from ``x`` in the threat model's norm, the radius itself counts as inside,
    and a targeted sample needs the target class (a third class is not a success)."""
    model = third_class_model()
    atk = Boundary(model, eps=5.0, norm=norm)
    x = torch.tensor([[1.0, 1.0]] * 4, dtype=D).unsqueeze(1) * 0.1
    y = torch.zeros(4, dtype=torch.long)
    target = torch.tensor([1, 1, 2, 1])
    ctx = context(atk, x, y, target=target)
    act = ctx.active(only_unsuccessful=False)
    step = torch.tensor([[3.0, 4.0], [4.0, 4.0], [3.0, 4.0], [0.5, 0.0]], dtype=D)  # l2: 5, 5.66, 5, .5
    cur = x + step.unsqueeze(1)
    with torch.no_grad():
        logits = model(cur)
    inside = atk._try_record(ctx, act, cur, logits)
    # classes of cur: 1, 1, 1, 0 -> targets met: yes, yes, no (target 2), no
    want = [True, norm == "linf", False, False]
    assert inside.tolist() == want and ctx.success.tolist() == want
    assert torch.equal(ctx.x_out[0], cur[0]) and torch.equal(ctx.x_out[2], x[2])


# ------------------------------------------------------------------------------------------ starts
def test_random_start_is_the_drawn_rank_among_the_admissible_pool_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``init="random"``: with ``u`` the sample's uniform draw and ``c`` its admissible pool inputs, the
    start is the ``⌊u·c⌋``-th of them (in pool order)."""
    draws = Draws(monkeypatch)
    n_feat = 4
    model = first_coordinate_model(n_feat)
    g = torch.Generator().manual_seed(2)
    pool = torch.rand(40, 1, n_feat, generator=g, dtype=D)
    x = torch.rand(16, 1, n_feat, generator=g, dtype=D) * 0.4  # class 0
    y = torch.zeros(16, dtype=torch.long)
    rec = Recorder(model)
    Boundary(rec, eps=1e-3, norm="l2", steps=1, candidates=1, starting_points=pool, bisection_steps=0,
             generator=torch.Generator().manual_seed(3))(x, y)
    adm = (pool[:, 0, 0] > 0.5).nonzero().squeeze(1)
    assert 2 <= len(adm) < 40
    u = draws.rand[0].view(-1)
    want = pool[adm[(u * len(adm)).floor().long()]]
    assert torch.equal(rec.inputs[2], want)
    assert bool(((u * len(adm)).floor() == len(adm) - 1).any())  # the last admissible input is drawn too


def test_pool_of_another_dtype_is_cast_to_the_batch() -> None:
    model = first_coordinate_model(3)
    pool = torch.tensor([[[0.9, 0.0, 0.0]], [[0.1, 0.0, 0.0]]], dtype=torch.float32)
    x = torch.tensor([[[0.2, 0.1, 0.3]]], dtype=D)
    rec = Recorder(model)
    res = Boundary(rec, eps=1e-3, norm="l2", steps=1, candidates=1, starting_points=pool, bisection_steps=0)(
        x, torch.zeros(1, dtype=torch.long))
    assert rec.inputs[1].dtype == D and torch.equal(rec.inputs[2], pool[:1].double())
    assert res.x_adv.dtype == D


def _noise_problem(bounded: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Five samples of class 0 (score ``x_0 − 0.5``) that all share their class (no pool start), a mask
    freezing the last coordinate; one constant sample (range 0: scale floor 1e-6)."""
    n_feat = 6
    model = first_coordinate_model(n_feat, threshold=0.5 if bounded else 0.6)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 1, n_feat, generator=g, dtype=D) * 0.3
    x[:, 0, 1], x[:, 0, 2] = 0.0, 0.3  # range 0.3
    x[4] = 0.2
    mask = torch.ones(5, 1, n_feat, dtype=D)
    mask[:, :, -1] = 0
    return model, x, torch.zeros(5, dtype=torch.long), mask


@pytest.mark.parametrize("bounded", [True, False])
def test_noise_starts_follow_the_documented_law_until_adversarial(bounded: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Untargeted samples without a pool start try noise: uniform in the bounds, or ``x + σ·2^(t/5)·N(0, 1)``
    with ``σ`` the sample's range (at least 1e-6) at trial ``t``; masked; only the samples still without an
    adversarial start are queried, and the first adversarial draw is the start."""
    draws = Draws(monkeypatch)
    model, x, y, mask = _noise_problem(bounded)
    rec = Recorder(model)
    trials = 20
    atk = Boundary(rec, eps=1e-3, norm="l2", steps=1, candidates=1, init_trials=trials, bisection_steps=0,
                   bounds=(-0.5, 1.0) if bounded else None, generator=torch.Generator().manual_seed(1))
    atk(x, y, mask=mask)
    scale = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp_min(1e-6)
    need = torch.arange(5)
    start = x.clone()
    calls = rec.inputs[1:]
    noise = draws.rand if bounded else draws.randn
    done = 0
    for t in range(trials):
        if len(need) == 0:
            break
        r = noise[t]
        assert r.shape == (len(need), 1, 6)
        if bounded:
            cand = -0.5 + (1.0 - (-0.5)) * r
        else:
            cand = x[need] + r * (scale[need] * 2.0 ** (t / 5.0)).view(-1, 1, 1)
        cand = x[need] + (cand - x[need]) * mask[need]
        torch.testing.assert_close(calls[t], cand, rtol=0, atol=1e-15)
        good = cand[:, 0, 0] > model.model.b.neg()
        start[need[good]] = cand[good]
        need = need[~good]
        done += 1
    assert done >= 3  # several trials were needed
    if bounded:
        assert len(need) == 0 and torch.equal(calls[done], start)  # the walk starts there (no bisection)
    else:  # the constant sample's noise (σ = 1e-6) never reaches the boundary: it gets the fallback
        assert need.tolist() == [4] and done == trials and torch.equal(calls[done + 1], start[:4])


def test_init_trials_one_tries_one_noise_start_and_targeted_attacks_none() -> None:
    model, x, y, _ = _noise_problem(True)
    rec = Recorder(model)
    Boundary(rec, eps=0.01, norm="l2", steps=1, candidates=1, init_trials=1, bisection_steps=0,
             bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(1))(x, y)
    noise = rec.inputs[1]  # after the clean batch (the pool is the batch: no pool query)
    assert noise.shape == x.shape and bool(((noise - x).flatten(1).abs().amax(1) > 0.1).all())  # not the ε-ball
    spy = Spy(model)
    with pytest.warns(RuntimeWarning):
        res = Boundary(spy, eps=0.01, norm="l2", steps=1, candidates=1, init_trials=5, bisection_steps=0,
                       bounds=(0.0, 1.0))(x, y, target=torch.ones(5, dtype=torch.long))
    # targeted without a pool start: no noise trials, just the clean forward and the fallback's query
    assert res.queries_per_sample.tolist() == [2] * 5 and not bool(res.success.any())


@pytest.mark.parametrize("targeted", [False, True])
def test_pool_starts_that_masking_makes_clean_are_not_used(targeted: bool) -> None:
    """A pool start is masked to the frozen coordinates of ``x``; if that makes it non-adversarial the
    sample has no start: targeted samples are reported (warning) as failures, untargeted ones get noise."""
    model = first_coordinate_model(3)
    x = torch.tensor([[[0.1, 0.2, 0.3]], [[0.2, 0.1, 0.0]], [[0.3, 0.3, 0.3]]], dtype=D)
    y = torch.zeros(3, dtype=torch.long)
    mask = torch.ones(3, 1, 3, dtype=D)
    mask[1, 0, 0] = 0  # sample 1 cannot move the coordinate that decides the class
    pool = torch.tensor([[[0.9, 0.9, 0.9]]], dtype=D)
    kw = dict(eps=10.0, norm="l2", steps=2, candidates=2, starting_points=pool, init_trials=3, bounds=(0.0, 1.0))
    if targeted:
        with pytest.warns(RuntimeWarning, match=r"^boundary attack: 1 sample\(s\) have no starting point"):
            res = Boundary(model, **kw)(  # type: ignore[arg-type]
                x, y, target=torch.ones(3, dtype=torch.long), mask=mask)
        assert res.success.tolist() == [True, False, True]
    else:
        rec = Recorder(model)
        res = Boundary(rec, **kw)(x, y, mask=mask)  # type: ignore[arg-type]
        assert res.success.tolist() == [True, False, True]
        # after clean, pool, masked starts: three noise trials for sample 1 alone
        assert [len(t) for t in rec.inputs[3:6]] == [1, 1, 1]
        assert all(float(t[0, 0, 0]) == 0.2 for t in rec.inputs[3:6])


# ------------------------------------------------------------------------------------------ whole runs
def test_every_forward_respects_max_batch_size() -> None:
    """With ``max_batch_size=1`` every query (pool, masked starts, noise starts, bisection, the walk, the
    fallbacks) forwards one input at a time; only the clean batch is forwarded whole."""
    model = first_coordinate_model(3)
    x = torch.tensor([[[0.1, 0.2, 0.3]], [[0.2, 0.1, 0.0]], [[0.3, 0.3, 0.3]], [[0.0, 0.3, 0.1]]], dtype=D)
    y = torch.zeros(4, dtype=torch.long)
    mask = torch.ones(4, 1, 3, dtype=D)
    mask[:2, 0, 0] = 0  # samples 0 and 1 cannot change class: noise starts then the fallback projection
    pool = torch.tensor([[[0.9, 0.9, 0.9]], [[0.8, 0.0, 0.1]]], dtype=D)
    spy = Spy(model)
    atk = Boundary(spy, eps=0.05, norm="l2", steps=2, candidates=2, starting_points=pool, init_trials=2,
                   bisection_steps=2, max_batch_size=1, bounds=(0.0, 1.0))
    atk(x, y, mask=mask)
    assert spy.largest == 4  # the clean forward
    full = Spy(model)
    Boundary(full, eps=0.05, norm="l2", steps=2, candidates=2, starting_points=pool, init_trials=2,
             bisection_steps=2, bounds=(0.0, 1.0))(x, y, mask=mask)
    assert spy.rows == full.rows
    spy.largest = 0
    spy.rows = 0

    class Largest(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            self.sizes.append(t.shape[0])
            return model(t)

    lg = Largest()
    Boundary(lg, eps=0.05, norm="l2", steps=2, candidates=2, starting_points=pool, init_trials=2, bisection_steps=2,
             max_batch_size=1, bounds=(0.0, 1.0))(x, y, mask=mask)
    assert lg.sizes[0] == 4 and set(lg.sizes[1:]) == {1}
    with pytest.warns(RuntimeWarning):
        lg.sizes.clear()
        Boundary(lg, eps=0.05, norm="l2", steps=2, candidates=2, starting_points=pool[1:] * 0, init_trials=2,
                 max_batch_size=1)(x, y, target=torch.ones(4, dtype=torch.long))
    assert lg.sizes[0] == 4 and set(lg.sizes[1:]) == {1}


def test_query_accounting_and_the_fallback_projection() -> None:
    """Exact per-sample queries: clean 1, the pool (charged to its owners in turn), bisection, the start,
    then 2k per iteration until the sample is inside the ball (it then stops), plus one for the projection
    of those that never are."""
    n_feat = 4
    model = first_coordinate_model(n_feat)
    x = torch.tensor([[[0.45, 0.0, 0.1, 0.2]], [[0.47, 0.0, 0.0, 0.1]], [[0.0, 0.1, 0.2, 0.3]]], dtype=D)
    y = torch.zeros(3, dtype=torch.long)
    pool = torch.tensor([[[0.9, 0.9, 0.9, 0.9]]], dtype=D)
    steps, k, bis = 40, 2, 3
    res = Boundary(model, eps=0.15, norm="l2", steps=steps, candidates=k, starting_points=pool, bisection_steps=bis,
                   smooth_window=1, spherical_step=0.05, source_step=0.05, spherical_window=10, source_window=5,
                   generator=torch.Generator().manual_seed(0))(x, y)
    assert res.success.tolist() == [True, True, False]  # sample 2 is 0.5 from the boundary
    per = res.queries_per_sample.tolist()
    assert per[2] == 1 + bis + 1 + steps * 2 * k + 1
    walk0, walk1 = per[0] - (1 + 1 + bis + 1), per[1] - (1 + bis + 1)
    assert walk0 % (2 * k) == 0 and walk1 % (2 * k) == 0
    assert 0 < walk0 < steps * 2 * k and 0 < walk1 < steps * 2 * k  # they stop when inside


def test_a_sample_never_inside_returns_the_projection_of_its_walk_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a walk that does not move, the walk point is the bisected start ``x + hi·(start − x)``; the
    output is its projection on the ball, ``x + ε·(cur − x)/‖cur − x‖`` (not adversarial here)."""
    model = first_coordinate_model(3, threshold=0.0)
    x = torch.tensor([[[-0.3, 0.2, 0.1]], [[-0.7, 0.0, 0.5]]], dtype=D)
    pool = torch.tensor([[[0.7, 1.2, -0.9]]], dtype=D)
    monkeypatch.setattr(Boundary, "_step", lambda self, ctx, act, cur, z, st: (cur, z))
    res = Boundary(model, eps=0.1, norm="l2", steps=3, candidates=2, starting_points=pool, bisection_steps=4)(
        x, torch.zeros(2, dtype=torch.long))
    hi = torch.tensor([5 / 16, 12 / 16], dtype=D).view(-1, 1, 1)  # boundary at t* = 0.3, 0.7 of the segment
    cur = x + (pool - x) * hi
    want = x + 0.1 * (cur - x) / (cur - x).flatten(1).norm(dim=1).view(-1, 1, 1)
    torch.testing.assert_close(res.x_adv, want, rtol=0, atol=1e-14)
    assert res.success.tolist() == [False, False]
    assert res.queries_per_sample.tolist() == [1 + 1 + 4 + 1 + 1, 1 + 4 + 1 + 1]


def test_a_single_sample_is_attacked() -> None:
    model = first_coordinate_model(3)
    x = torch.tensor([[[0.45, 0.0, 0.1]]], dtype=D)
    res = Boundary(model, eps=0.2, norm="l2", steps=5, candidates=2, starting_points=torch.full((1, 1, 3), 0.9,
                                                                                               dtype=D))(
        x, torch.zeros(1, dtype=torch.long))
    assert res.success.tolist() == [True] and float(res.norms[0]) <= 0.2 and float(res.x_adv[0, 0, 0]) > 0.5


def test_linf_projection_of_a_far_walk_point_can_still_succeed() -> None:
    """The walk minimises L2; with an L∞ threat model a sample whose walk point is outside the L∞ ball is
    returned as its projection, which here (only the first coordinate decides) is still adversarial."""
    model = first_coordinate_model(6)
    x = torch.zeros(2, 1, 6, dtype=D)
    pool = torch.tensor([[[1.0, 5.0, 5.0, -5.0, 5.0, 5.0]]], dtype=D)
    res = Boundary(model, eps=0.9, norm="linf", steps=1, candidates=2, starting_points=pool, bisection_steps=6,
                   smooth_window=1)(x, torch.zeros(2, dtype=torch.long))
    assert res.success.tolist() == [True, True]
    assert float(res.norms.max()) <= 0.9 and float(res.x_adv[:, 0, 0].min()) > 0.5


def test_lost_targeted_samples_warn_with_their_count() -> None:
    model = third_class_model()
    x = torch.zeros(4, 1, 2, dtype=D)
    pool = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]], dtype=D)  # classes 1 and 0: no start of class 2
    target = torch.tensor([1, 2, 2, 2])
    with pytest.warns(RuntimeWarning) as rec:
        res = Boundary(model, eps=0.5, norm="l2", steps=2, candidates=2, starting_points=pool)(
            x, torch.zeros(4, dtype=torch.long), target=target)
    msgs = [w for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1
    assert str(msgs[0].message) == (
        "boundary attack: 3 sample(s) have no starting point classified as their target; pass starting_points= "
        "with inputs of the target classes. They are reported as failures.")
    assert res.success.tolist() == [False] * 4
    lost = res.x_adv[1:]
    assert bool((lost.flatten(1).norm(dim=1) <= 0.5 + 1e-12).all()) and bool((lost != 0).any())  # random points


def test_run_with_everything_already_misclassified_queries_nothing() -> None:
    model = first_coordinate_model(3)
    x = torch.full((2, 1, 3), 0.9, dtype=D)
    spy = Spy(model)
    res = Boundary(spy, eps=0.1, norm="l2", steps=3)(x, torch.zeros(2, dtype=torch.long))
    assert spy.rows == 2 and res.success.tolist() == [True, True] and torch.equal(res.x_adv, x)
    assert math.isclose(float(res.norms.max()), 0.0)


def test_float32_distances_are_accumulated_in_float64() -> None:
    """The radius test uses the exact (float64-accumulated) L2 norm: a float32 walk point whose float64 norm
    is the radius is inside, although the float32 accumulation rounds one ulp above it."""
    g = torch.Generator().manual_seed(0)
    torch.randn(1, 1, 20, generator=g)
    v = torch.randn(1, 1, 20, generator=g)  # a vector where the two accumulations differ
    exact = v.flatten(1).double().norm(dim=1).float()
    assert float(v.flatten(1).norm(dim=1)) > float(exact)
    w = torch.zeros(20)
    w[0] = float(v[0, 0, 0].sign())
    model = BinaryLogitWrapper(Linear(w, 0.0))
    x = torch.zeros(1, 1, 20)
    atk = Boundary(model, eps=float(exact), norm="l2")
    ctx = context(atk, x, torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        z = model(x + v)
    assert int(z.argmax(1)) == 1
    inside = atk._try_record(ctx, ctx.active(only_unsuccessful=False), x + v, z)
    assert inside.tolist() == [True]


def test_step_sizes_given_are_used_until_a_window_adapts() -> None:
    model = first_coordinate_model(4)
    try:
        atk = Boundary(model, eps=1.0, source_step=0.9, spherical_step=1.5, spherical_window=100, source_window=100)
    except ConfigError:
        return  # also a fix: refuse values outside the ranges the walk keeps
    st = _Steps.start(1, atk.spherical_step, atk.source_step, torch.device("cpu"))
    none = torch.zeros(1, 1, dtype=torch.bool)
    atk._adapt(st, none, none)  # one trial of each window: nothing to adapt yet
    assert st.src.tolist() == [0.9] and st.sph.tolist() == [1.5]
