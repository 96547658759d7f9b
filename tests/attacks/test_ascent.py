"""The ascent rules driven directly, against hand-written updates.

* Sign: steepest ascent of the norm, ``sign(g)`` for L∞ and ``g / ‖g‖₂`` for L2 (Madry et al., ICLR 2018,
  arXiv 1706.06083, §2.1).
* Adam: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (arXiv 1412.6980),
  Algorithm 1 with both bias corrections, ``t`` counted per sample.
* Adamax: the same paper, §7.1 (Algorithm 2): ``u ← max(β2·u, |g|)``, step ``α/(1−β1^t) · m/u``; ε sits
  inside the max as in ``torch.optim.Adamax`` so that ``u`` is never zero.

The references below are element-wise loops over Python floats, independent of the tensor code.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from medrobust.attacks.ascent import RULES, AdamaxRule, AdamRule, SignRule, make_rule
from medrobust.errors import ConfigError

F64 = torch.float64


def _adam_ref(gs: list[list[float]], *, b1: float, b2: float, eps: float) -> list[list[float]]:
    """Adam (Kingma & Ba 2015, Algorithm 1) on a sequence of gradients of one sample; the ascent updates."""
    m = [0.0] * len(gs[0])
    v = [0.0] * len(gs[0])
    out = []
    for t, g in enumerate(gs, start=1):
        m = [b1 * mi + (1.0 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1.0 - b2) * gi * gi for vi, gi in zip(v, g)]
        mhat = [mi / (1.0 - b1**t) for mi in m]
        vhat = [vi / (1.0 - b2**t) for vi in v]
        out.append([a / (math.sqrt(b) + eps) for a, b in zip(mhat, vhat)])
    return out


def _adamax_ref(gs: list[list[float]], *, b1: float, b2: float, eps: float,
                lrs: list[float] | None = None) -> list[list[float]]:
    """Adamax (Kingma & Ba 2015, §7.1) on a sequence of gradients of one sample; the ascent updates."""
    m = [0.0] * len(gs[0])
    u = [0.0] * len(gs[0])
    out = []
    for t, g in enumerate(gs, start=1):
        lr = 1.0 if lrs is None else lrs[t - 1]
        m = [b1 * mi + (1.0 - b1) * gi for mi, gi in zip(m, g)]
        u = [max(b2 * ui, abs(gi) + eps) for ui, gi in zip(u, g)]
        out.append([lr / (1.0 - b1**t) * mi / ui for mi, ui in zip(m, u)])
    return out


def _sign(x: float) -> float:
    return float((x > 0) - (x < 0))


# three samples of shape (1, 3); each row's gradients over four steps (rows differ in sign and scale)
GRADS = [
    [[0.5, -2.0, 0.0], [1.5, -0.25, 3.0], [-0.75, 1.0, 2.0], [0.1, 0.2, -0.3]],
    [[-1.0, 4.0, 0.5], [2.0, 2.0, -1.0], [0.0, -3.0, 0.25], [1.0, 1.0, 1.0]],
    [[3.0, 0.125, -0.5], [-0.5, 0.5, 0.5], [1.25, -1.5, 0.0], [-2.0, 0.75, 1.5]],
]
# which rows are active at each call: a row's state must only move when it is stepped
SCHEDULE = [[0, 2], [2], [0, 1, 2], [1, 0], [2, 1], [0, 1]]


def _drive(rule, dtype: torch.dtype, *, scales: dict[int, list[float]] | None = None):  # type: ignore[no-untyped-def]
    """Feed GRADS to ``rule`` following SCHEDULE; each row's list of updates (as float lists)."""
    seen = {r: 0 for r in range(3)}
    outs: dict[int, list[list[float]]] = {r: [] for r in range(3)}
    for rows in SCHEDULE:
        g = torch.tensor([[GRADS[r][seen[r]]] for r in rows], dtype=dtype)
        scale = None
        if scales is not None:
            scale = torch.tensor([scales[r][seen[r]] for r in rows], dtype=F64)
        inc = rule.step(g, torch.tensor(rows), scale=scale)
        assert inc.shape == g.shape and inc.dtype == dtype
        for i, r in enumerate(rows):
            outs[r].append(inc[i, 0].tolist())
            seen[r] += 1
    assert seen == {0: 4, 1: 4, 2: 4}
    return outs


def _close(got: list[list[float]], want: list[list[float]], *, tol: float) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a == pytest.approx(b, rel=tol, abs=tol)


# --- Adam ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.8), 1e-3), ((0.0, 0.3), 0.25)])
def test_adam_matches_algorithm_1_with_per_sample_counters(betas, eps):  # type: ignore[no-untyped-def]
    rule = make_rule("adam", n=3, shape=(1, 3), device="cpu", dtype=F64, betas=betas, eps=eps)
    assert isinstance(rule, AdamRule) and rule.name == "adam"
    outs = _drive(rule, F64)
    for r in range(3):
        _close(outs[r], _adam_ref(GRADS[r], b1=betas[0], b2=betas[1], eps=eps), tol=1e-12)
    assert rule.t.tolist() == [4, 4, 4]


def test_adam_default_hyperparameters_and_first_step():
    """Defaults β=(0.9, 0.999), ε=1e-8; step 1 is ``g/(|g|+ε)`` whatever the betas (the bias corrections)."""
    rule = AdamRule(n=2, shape=(3,), device="cpu", dtype=F64)
    assert (rule.beta1, rule.beta2, rule.eps) == (0.9, 0.999, 1e-8) and rule.normalize is None
    g = torch.tensor([[0.5, -2.0, 0.0], [1e-3, -4.0, 7.0]], dtype=F64)
    inc = rule.step(g, torch.tensor([0, 1]))
    torch.testing.assert_close(inc, g / (g.abs() + 1e-8), rtol=1e-13, atol=0)
    assert rule.t.tolist() == [1, 1]


def test_adam_normalize_feeds_the_steepest_direction():
    """``normalize="linf"`` runs Adam on ``sign(g)``; ``"l2"`` on ``g/‖g‖₂`` (per sample)."""
    b = (0.6, 0.7)
    for norm, f in (("linf", lambda g: [_sign(x) for x in g]),
                    ("l2", lambda g: [x / math.sqrt(sum(y * y for y in g)) for x in g])):
        rule = make_rule("adam", n=3, shape=(1, 3), device="cpu", dtype=F64, betas=b, eps=1e-6, normalize=norm)
        assert rule.normalize == norm
        outs = _drive(rule, F64)
        for r in range(3):
            _close(outs[r], _adam_ref([f(g) for g in GRADS[r]], b1=b[0], b2=b[1], eps=1e-6), tol=1e-12)


def test_adam_float32_state_and_output_stay_float32():
    """float32 in, float32 out: the float64 bias corrections are cast to the direction's dtype."""
    rule = make_rule("adam", n=3, shape=(1, 3), device="cpu", dtype=torch.float32, betas=(0.5, 0.8), eps=1e-3)
    assert rule.m.dtype == rule.v.dtype == torch.float32
    outs = _drive(rule, torch.float32)  # asserts every update is float32
    for r in range(3):
        _close(outs[r], _adam_ref(GRADS[r], b1=0.5, b2=0.8, eps=1e-3), tol=1e-5)
    assert rule.m.dtype == rule.v.dtype == torch.float32


def test_adam_scale_multiplies_each_row():
    rule = make_rule("adam", n=2, shape=(2,), device="cpu", dtype=torch.float32, betas=(0.5, 0.5))
    ref = make_rule("adam", n=2, shape=(2,), device="cpu", dtype=torch.float32, betas=(0.5, 0.5))
    g = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    inc = rule.step(g, torch.tensor([0, 1]), scale=torch.tensor([0.25, 2.0]))
    base = ref.step(g, torch.tensor([0, 1]))
    assert inc.dtype == torch.float32
    torch.testing.assert_close(inc, base * torch.tensor([[0.25], [2.0]]))


@pytest.mark.parametrize("name", ["sign", "adam"])
def test_float64_scale_keeps_a_float32_update_float32(name):  # type: ignore[no-untyped-def]
    rule = make_rule(name, n=2, shape=(2,), device="cpu", dtype=torch.float32)
    inc = rule.step(torch.tensor([[1.0, -3.0], [0.5, 2.0]]), torch.tensor([0, 1]),
                    scale=torch.tensor([0.25, 2.0], dtype=F64))
    assert inc.dtype == torch.float32


# --- Adamax ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.8), 1e-3), ((0.0, 0.0), 0.5)])
def test_adamax_matches_section_7_1_with_per_sample_counters(betas, eps):  # type: ignore[no-untyped-def]
    rule = make_rule("adamax", n=3, shape=(1, 3), device="cpu", dtype=F64, betas=betas, eps=eps)
    assert isinstance(rule, AdamaxRule) and rule.name == "adamax"
    outs = _drive(rule, F64)  # scale=None: step size 1
    for r in range(3):
        _close(outs[r], _adamax_ref(GRADS[r], b1=betas[0], b2=betas[1], eps=eps), tol=1e-12)
    assert rule.t.tolist() == [4, 4, 4]


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_adamax_per_sample_scale_and_dtype(dtype, tol):  # type: ignore[no-untyped-def]
    """A float64 per-row ``scale`` multiplies the bias-corrected update; the output keeps the grad's dtype."""
    scales = {0: [0.5, 2.0, 0.125, 1.0], 1: [3.0, 0.25, 1.5, 0.75], 2: [1.0, 0.01, 4.0, 0.5]}
    rule = make_rule("adamax", n=3, shape=(1, 3), device="cpu", dtype=dtype, betas=(0.5, 0.8), eps=1e-3)
    assert rule.m.dtype == rule.u.dtype == dtype
    outs = _drive(rule, dtype, scales=scales)
    for r in range(3):
        _close(outs[r], _adamax_ref(GRADS[r], b1=0.5, b2=0.8, eps=1e-3, lrs=scales[r]), tol=tol)


def test_adamax_float32_without_scale_stays_float32():
    rule = make_rule("adamax", n=2, shape=(3,), device="cpu", dtype=torch.float32)
    g = torch.tensor([[0.5, -2.0, 0.0], [1.0, 1.0, -1.0]])
    inc = rule.step(g, torch.tensor([1, 0]))
    assert inc.dtype == torch.float32
    # step 1: m = (1-β1) g, u = |g| + ε, correction 1/(1-β1): g/(|g|+ε)
    torch.testing.assert_close(inc, g / (g.abs() + 1e-8))


def test_adamax_normalize_linf_is_ma_liang_sign_input():
    rule = make_rule("adamax", n=3, shape=(1, 3), device="cpu", dtype=F64, betas=(0.7, 0.9), eps=1e-4,
                     normalize="Linf")
    outs = _drive(rule, F64)
    for r in range(3):
        signs = [[_sign(x) for x in g] for g in GRADS[r]]
        _close(outs[r], _adamax_ref(signs, b1=0.7, b2=0.9, eps=1e-4), tol=1e-12)


# --- Sign ------------------------------------------------------------------------------------------


def test_sign_rule_defaults_to_linf_sign():
    rule = SignRule(n=3, shape=(1, 3), device="cpu", dtype=F64)
    assert rule.norm == "linf" and rule.name == "sign"
    g = torch.tensor([[[0.5, -2.0, 0.0]], [[-1e-9, 4.0, 0.5]]], dtype=F64)
    inc = rule.step(g, torch.tensor([0, 2]))
    assert inc.tolist() == [[[1.0, -1.0, 0.0]], [[-1.0, 1.0, 1.0]]]
    assert rule.t.tolist() == [1, 0, 1]
    also = make_rule("sign", n=1, shape=(3,), device="cpu", dtype=torch.float32)
    out = also.step(torch.tensor([[3.0, -0.5, 0.0]]), torch.tensor([0]))
    assert out.dtype == torch.float32 and out.tolist() == [[1.0, -1.0, 0.0]]


def test_sign_rule_l2_normalised_gradient_and_scale():
    rule = make_rule("sign", n=2, shape=(1, 2), device="cpu", dtype=torch.float32, norm="L2")
    g = torch.tensor([[[3.0, -4.0]], [[0.0, 0.0]]])
    inc = rule.step(g, torch.tensor([0, 1]), scale=torch.tensor([0.5, 2.0]))
    assert inc.dtype == torch.float32
    torch.testing.assert_close(inc, torch.tensor([[[0.3, -0.4]], [[0.0, 0.0]]]))  # zero gradient: zero step
    inc = rule.step(g[:1], torch.tensor([0]))
    torch.testing.assert_close(inc, torch.tensor([[[0.6, -0.8]]]))
    assert rule.t.tolist() == [2, 1]


# --- state: counter, device -------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_state_is_int64_counter_and_zero_moments(name):  # type: ignore[no-untyped-def]
    rule = make_rule(name, n=4, shape=(2, 3), device="cpu", dtype=torch.float32)
    assert rule.t.dtype == torch.int64 and rule.t.tolist() == [0, 0, 0, 0]
    for attr in ("m", "v", "u"):
        if hasattr(rule, attr):
            s = getattr(rule, attr)
            assert s.shape == (4, 2, 3) and s.dtype == torch.float32 and not s.any()


@pytest.mark.parametrize("name", RULES)
def test_state_lives_on_the_given_device(name):  # type: ignore[no-untyped-def]
    """The ``meta`` device (no data) shows where the counter and moments are allocated."""
    rule = make_rule(name, n=2, shape=(3,), device="meta", dtype=F64)
    assert rule.t.device.type == "meta" and rule.t.dtype == torch.int64
    for attr in ("m", "v", "u"):
        if hasattr(rule, attr):
            assert getattr(rule, attr).device.type == "meta"
    g = torch.empty(1, 3, dtype=F64, device="meta")
    out = rule.step(g, torch.tensor([1], device="meta"), scale=torch.empty(1, dtype=F64, device="meta"))
    assert out.device.type == "meta" and out.shape == (1, 3) and out.dtype == F64
    direct = {"sign": SignRule, "adam": AdamRule, "adamax": AdamaxRule}[name](n=2, shape=(3,), device="meta",
                                                                               dtype=F64)
    assert direct.t.device.type == "meta"


# --- validation -------------------------------------------------------------------------------------


def _raises(msg: str):  # type: ignore[no-untyped-def]
    return pytest.raises(ConfigError, match="^" + re.escape(msg) + "$")


@pytest.mark.parametrize("betas", [(0.0, 0.999), (0.999, 0.0), [0.0, 0.0], (0.5, 0.999)])
def test_betas_boundaries_accepted(betas):  # type: ignore[no-untyped-def]
    for name in ("adam", "adamax"):
        rule = make_rule(name, n=1, shape=(2,), device="cpu", dtype=F64, betas=betas)
        assert (rule.beta1, rule.beta2) == tuple(betas)


@pytest.mark.parametrize("betas,msg", [
    ((1.0, 0.5), "betas must be in [0, 1), got (1.0, 0.5)."),
    ((0.5, 1.0), "betas must be in [0, 1), got (0.5, 1.0)."),
    ([1.0, 1.0], "betas must be in [0, 1), got [1.0, 1.0]."),
    ((1.5, 0.9), "betas must be in [0, 1), got (1.5, 0.9)."),
    ((0.9, 1.5), "betas must be in [0, 1), got (0.9, 1.5)."),
    ((-0.1, 0.9), "betas[0] must be >= 0.0, got -0.1."),
    ((0.9, -0.1), "betas[1] must be >= 0.0, got -0.1."),
    (("0.9", 0.9), "betas[0] must be a finite number, got '0.9'."),
    ((0.9, float("nan")), "betas[1] must be a finite number, got nan."),
    ((0.9, 0.999, 0.5), "betas must be a pair (beta1, beta2) in [0, 1), got (0.9, 0.999, 0.5)."),
    ((0.9,), "betas must be a pair (beta1, beta2) in [0, 1), got (0.9,)."),
    (0.9, "betas must be a pair (beta1, beta2) in [0, 1), got 0.9."),
])
def test_betas_refused_with_whole_message(betas, msg):  # type: ignore[no-untyped-def]
    for cls in (AdamRule, AdamaxRule):
        with _raises(msg):
            cls(n=1, shape=(2,), device="cpu", dtype=F64, betas=betas)
    with _raises(msg):
        make_rule("adam", n=1, shape=(2,), device="cpu", dtype=F64, betas=betas)


@pytest.mark.parametrize("eps,msg", [
    (0.0, "eps must be > 0.0, got 0.0."),
    (0, "eps must be > 0.0, got 0.0."),
    (-1e-8, "eps must be > 0.0, got -1e-08."),
    (float("inf"), "eps must be a finite number, got inf."),
])
def test_eps_must_be_positive(eps, msg):  # type: ignore[no-untyped-def]
    for name in ("adam", "adamax"):
        with _raises(msg):
            make_rule(name, n=1, shape=(2,), device="cpu", dtype=F64, eps=eps)
    assert make_rule("adamax", n=1, shape=(2,), device="cpu", dtype=F64, eps=1e-300).eps == 1e-300


def test_make_rule_wrong_names_and_keywords():
    with _raises("unknown ascent rule 'rmsprop'; choose one of ('sign', 'adam', 'adamax')."):
        make_rule("rmsprop", n=1, shape=(2,), device="cpu", dtype=F64)
    with pytest.raises(ConfigError, match="^" + re.escape("ascent rule 'sign': invalid arguments ['betas', 'eps']: ")
                       + ".*unexpected keyword argument 'eps'$"):
        make_rule("sign", n=1, shape=(2,), device="cpu", dtype=F64, eps=1e-8, betas=(0.9, 0.999))
    with pytest.raises(ConfigError, match="^" + re.escape("ascent rule 'adam': invalid arguments ['norm']: ")):
        make_rule("adam", n=1, shape=(2,), device="cpu", dtype=F64, norm="linf")
    with _raises("norm must be 'linf' or 'l2' (or inf / 2), got 'l1'."):
        make_rule("sign", n=1, shape=(2,), device="cpu", dtype=F64, norm="l1")
