"""Universal perturbations on tiny synthetic problems whose answers are computed by hand.

Linear classifiers make every step exact: for logits ``[0, w·x + b]`` the cross-entropy gradient has the sign of
``±w``, the DeepFool step (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016) is the minimal L2 step
``(|f| + 1e-4) / ‖w‖² · w``, and the fooling rate is a count. Checked here: the projection ``P_{p,ξ}``, the budget
``ξ = ζ · mean ‖x‖_p``, the loop of Moosavi-Dezfooli et al. (CVPR 2017, Algorithm 1) and of Hirano & Takemoto
(Algorithms 13:268, 2020) with its stop rules and counters, the batched solver's cosine step and best iterate,
bounds, masks, seeds, dtypes, the metrics of ``evaluate`` and every argument error, matched in full.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from medrobust.attacks import UAPResult, UniversalPerturbation
from medrobust.attacks.universal import UAPConfig, mean_norm, project_uap
from medrobust.errors import ConfigError, DataError

D = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raises(exc: type[Exception], msg: str):  # type: ignore[no-untyped-def]
    return pytest.raises(exc, match="^" + re.escape(msg) + "$")


class Lin(nn.Module):
    """Logits ``W x + b`` of the flattened input (float64): a linear multi-class classifier."""

    def __init__(self, w: list[list[float]], b: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=D))
        self.b = nn.Parameter(torch.tensor(b, dtype=D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def two_class(w: list[float], b: float) -> Lin:
    """Logits ``[0, w·x + b]``: class 1 where ``w·x + b > 0``."""
    return Lin([[0.0] * len(w), w], [0.0, b])


class MaskLin(nn.Module):
    """Logits ``[0, Σ_j w_j m_j x_j + b]``: the model ignores coordinates whose padding mask is 0 (and records
    the dtypes of the masks it receives)."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.w = torch.tensor(w, dtype=D)
        self.b = b
        self.seen: list[torch.dtype | None] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(None if mask is None else mask.dtype)
        xm = x if mask is None else x * mask
        s = xm.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def x_(*rows: list[float]) -> torch.Tensor:
    """A batch ``(N, 1, L)`` in float64."""
    return torch.tensor([[r] for r in rows], dtype=D)


# ------------------------------------------------------------------------------------------ projection, budget
def test_projection_onto_the_ball_by_hand() -> None:
    v = torch.tensor([[3.0, -4.0]], dtype=D)  # ‖v‖₂ = 5, ‖v‖∞ = 4
    out = project_uap(v, 1.0, "l2")
    assert out.dtype == D and out.shape == (1, 2)
    torch.testing.assert_close(out, torch.tensor([[0.6, -0.8]], dtype=D), rtol=1e-12, atol=0)
    assert torch.equal(project_uap(v, 6.0, "l2"), v)  # inside: unchanged (ART's true projection)
    assert torch.equal(project_uap(v, 3.5, "linf"), torch.tensor([[3.0, -3.5]], dtype=D))
    w = torch.tensor([[0.5, -2.0], [1.0, -1.0]])  # (C, L) = (2, 2), float32 kept
    out = project_uap(w, 1.0, "linf")
    assert out.dtype == torch.float32 and torch.equal(out, torch.tensor([[0.5, -1.0], [1.0, -1.0]]))
    torch.testing.assert_close(project_uap(w, 1.25, "l2"), w / 2.0)  # ‖w‖₂ = 2.5 over both channels
    # the radius keeps the perturbation's precision: 0.1 is not rounded to float32's 0.100000001490116
    assert project_uap(torch.tensor([0.5, -0.5], dtype=D), 0.1, "linf").tolist() == [0.1, -0.1]
    assert float(project_uap(torch.tensor([3.0, 4.0], dtype=D), 0.1, "l2").norm()) == pytest.approx(0.1, rel=1e-15)


def test_mean_norm_and_its_channel_rule_by_hand() -> None:
    x = torch.tensor([[[3.0, 4.0], [0.0, 12.0]], [[0.0, 1.0], [0.0, 0.0]]], dtype=D)
    assert mean_norm(x, "l2") == pytest.approx((13.0 + 1.0) / 2, rel=1e-15)  # ‖(3, 4, 0, 12)‖₂ = 13
    assert mean_norm(x, "linf") == 6.5
    assert mean_norm(x, "l2", channels="first") == 3.0 and mean_norm(x, "linf", channels="first") == 2.5
    with raises(ConfigError, "norm_channels must be 'all' or 'first', got 'last'."):
        mean_norm(x, "l2", channels="last")


def test_resolve_xi_stores_the_budget_and_rejects_zero_inputs() -> None:
    x = x_([3.0, 4.0], [0.0, 1.0])  # mean ‖x‖₂ = 3, mean ‖x‖∞ = 2.5
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.0), norm="l2", zeta=0.5)
    assert uap.resolve_xi(x) == 1.5 and uap.xi == 1.5 and uap._mean_norm == 3.0
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.0), norm="linf", zeta=0.5)
    assert uap.resolve_xi(x) == 1.25 and uap._mean_norm == 2.5
    fixed = UniversalPerturbation(two_class([1.0, 1.0], 0.0), norm="l2", zeta=0.5, eps=0.3)
    assert fixed.resolve_xi(x) == 0.3 and fixed.xi == 0.3 and fixed._mean_norm is None and fixed.zeta is None
    small = x_([0.5, 0.0], [0.0, 0.25])  # mean norm 0.375 < 1 is fine
    assert UniversalPerturbation(two_class([1.0, 1.0], 0.0), norm="l2", zeta=2.0).resolve_xi(small) == 0.75
    with raises(DataError, "the fitting inputs have zero mean norm, so ξ = ζ · mean ‖x‖ is 0; pass eps= instead."):
        UniversalPerturbation(two_class([1.0, 1.0], 0.0), zeta=0.5).resolve_xi(torch.zeros(2, 1, 2, dtype=D))
    with raises(DataError, "x must be a floating-point tensor, got dtype torch.int64; convert with .float()."):
        UniversalPerturbation(two_class([1.0, 1.0], 0.0), zeta=0.5).resolve_xi(torch.ones(2, 1, 2, dtype=torch.long))


# ------------------------------------------------------------------------------------------ arguments
BAD = [
    ({"norm": "l1"}, "norm must be 'linf' or 'l2' (or inf / 2), got 'l1'."),
    ({"method": "pgd"}, "method must be one of ('deepfool', 'fgsm', 'batched'), got 'pgd'."),
    ({"zeta": None}, "pass zeta= (relative strength, ξ = ζ · mean ‖x‖_p) or eps= (ξ in input units)."),
    ({"zeta": 0.0}, "zeta must be a positive finite number, got 0.0."),
    ({"eps": -1.0}, "eps must be a positive finite number, got -1.0."),
    ({"target": -1}, "target must be an integer >= 0, got -1."),
    ({"method": "deepfool", "target": 1},
     "method='deepfool' is non-targeted; use method='fgsm' (Hirano & Takemoto) or 'batched' for a targeted UAP."),
    ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0."),
    ({"fooling_goal": 0.0}, "fooling_goal (it is 1 − δ) must be > 0.0, got 0.0."),
    ({"fooling_goal": 1.5}, "fooling_goal (it is 1 − δ) must be <= 1.0, got 1.5."),
    ({"step_size": 0.0}, "step_size must be a positive finite number, got 0.0."),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0."),
    ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1, got 0."),
    ({"deepfool_iter": 0}, "deepfool_iter must be an integer >= 1, got 0."),
    ({"num_candidates": 0}, "num_candidates must be an integer >= 1, got 0."),
    ({"kappa": -1.0}, "kappa must be >= 0.0, got -1.0."),
    ({"overshoot": -0.1}, "overshoot must be >= 0.0, got -0.1."),
    ({"norm_channels": "last"}, "norm_channels must be one of ('all', 'first'), got 'last'."),
    ({"bounds": (1.0, 0.0)}, "bounds needs lo < hi, got (1.0, 0.0)."),
    ({"units": 3}, "units must be a units string such as 'normalized [0, 1]', got 3."),
    ({"mask": [1, 0]}, "mask must be a 0/1 tensor of the sample shape or None, got list."),
    ({"generator": 0}, "generator must be a torch.Generator or None, got int."),
]


@pytest.mark.parametrize(("kw", "msg"), BAD, ids=[next(iter(k)) + str(i) for i, (k, _) in enumerate(BAD)])
def test_every_bad_argument_names_itself_and_the_fix(kw: dict, msg: str) -> None:
    with raises(ConfigError, msg):
        UniversalPerturbation(two_class([1.0], 0.0), **kw)


def test_model_must_be_callable() -> None:
    with raises(ConfigError, "model must be a torch.nn.Module, got int."):
        UniversalPerturbation(3)  # type: ignore[arg-type]


def test_config_holds_the_method_defaults_and_the_limits_that_are_allowed() -> None:
    m = two_class([1.0], 0.0)
    assert [(c.max_iter, c.fooling_goal) for c in (UAPConfig(method=k) for k in ("deepfool", "fgsm", "batched"))] \
        == [(10, 0.8), (15, 1.0 - 1e-6), (10, 1.0)]
    edge = UniversalPerturbation(m, eps=0.5, zeta=0.2, method="fgsm", target=0, max_iter=1, fooling_goal=1.0,
                                 step_size=0.25, batch_size=1, eval_batch_size=1, kappa=0.0, overshoot=0.0,
                                 deepfool_iter=1, num_candidates=1, norm_channels="first", bounds=(0, 1),
                                 units="mV", norm="inf")
    assert edge.cfg.describe() == {
        "norm": "linf", "zeta": None, "eps": 0.5, "method": "fgsm", "target": 0, "max_iter": 1, "fooling_goal": 1.0,
        "step_size": 0.25, "batch_size": 1, "eval_batch_size": 1, "kappa": 0.0, "overshoot": 0.0,
        "deepfool_iter": 1, "num_candidates": 1, "norm_channels": "first", "bounds": [0.0, 1.0], "units": "mV"}
    assert edge.config() == {**edge.cfg.describe(), "masked": False}  # bounds given: no resolved_bounds
    # attribute access reads the config
    assert (edge.norm, edge.eps, edge.max_iter, edge.kappa, edge.overshoot) == ("linf", 0.5, 1, 0.0, 0.0)
    with pytest.raises(AttributeError, match="^UniversalPerturbation has no attribute 'nope'$"):
        edge.nope  # noqa: B018
    plain = UniversalPerturbation(m, mask=torch.ones(1, 1))
    assert plain.config() == {
        "norm": "l2", "zeta": 0.04, "eps": None, "method": "batched", "target": None, "max_iter": 10,
        "fooling_goal": 1.0, "step_size": None, "batch_size": 64, "eval_batch_size": 128, "kappa": 3.0,
        "overshoot": 0.02, "deepfool_iter": 10, "num_candidates": 10, "norm_channels": "all", "bounds": "auto",
        "resolved_bounds": None, "masked": True}
    assert repr(plain) == ("UniversalPerturbation(norm='l2', zeta=0.04, eps=None, method='batched', target=None, "
                           "max_iter=10, fooling_goal=1.0, step_size=None, batch_size=64, eval_batch_size=128, "
                           "kappa=3.0, overshoot=0.02, deepfool_iter=10, num_candidates=10, norm_channels='all', "
                           "bounds='auto', units=None)")


# ------------------------------------------------------------------------------------------ inputs and masks
class DS(SimpleNamespace):
    """A stand-in for an ECGDataset: ``.x``, ``.y``, ``.meta.units`` and ``.mask``."""


@pytest.mark.parametrize(("x", "msg"), [
    ([[1.0, 2.0]], "x_train must be a tensor (N, ...) or a dataset with .x, got list."),
    (torch.ones(2, 1, 2, dtype=torch.int32),
     "x_train must be a floating-point tensor, got dtype torch.int32; convert with .float()."),
    (torch.ones(2, dtype=D), "x_train must be a non-empty batch (N, ...) with ndim >= 2, got shape (2,)."),
    (torch.ones(0, 1, 2, dtype=D), "x_train must be a non-empty batch (N, ...) with ndim >= 2, got shape (0, 1, 2)."),
    (torch.tensor([[[0.0, float("nan")]]], dtype=D), "x_train contains NaN or inf; clean or drop those samples first."),
    (torch.tensor([[[0.0, float("inf")]]], dtype=D), "x_train contains NaN or inf; clean or drop those samples first."),
])
def test_bad_inputs_are_named(x: object, msg: str) -> None:
    with raises(DataError, msg):
        UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=0.5).fit(x)


def test_smallest_batches_are_accepted() -> None:
    model = two_class([1.0], -0.5)  # input (N, 1): class 1 where x > 0.5
    uap = UniversalPerturbation(model, norm="linf", eps=0.3, method="fgsm", step_size=0.3, max_iter=1)
    res = uap.fit(torch.tensor([[0.4]], dtype=D))  # one sample, ndim 2
    assert torch.equal(res.delta, torch.tensor([0.3], dtype=D)) and res.fit_rate == 1.0
    res = uap.fit(torch.tensor([[0.4], [0.1]], dtype=D))
    assert res.delta.shape == (1,) and res.fit_rate == 0.5


@pytest.mark.parametrize(("mask", "msg"), [
    ([1.0, 0.0], "x_train's mask must be a tensor of 0/1 (1 = may change), got list."),
    (torch.ones(3, 2, 5), "x_train's mask has shape (3, 2, 5), which does not broadcast to (3, 2, 4)."),
    (torch.ones(2, 2, 2, 4), "x_train's mask has shape (2, 2, 2, 4), which does not broadcast to (3, 2, 4)."),
    (torch.ones(2, 2, 4), "x_train's mask has shape (2, 2, 4), which does not broadcast to (3, 2, 4)."),
    (torch.full((3, 2, 4), 0.5), "x_train's mask must hold only 0 and 1 (1 = the coordinate may change)."),
])
def test_bad_padding_masks_are_named(mask: object, msg: str) -> None:
    x = torch.rand(3, 2, 4, generator=gen(), dtype=D)  # N = 3, C = 2: a per-sample mask is not a channel mask
    with raises(DataError if isinstance(mask, torch.Tensor) else ConfigError, msg):
        UniversalPerturbation(Lin([[0.0] * 8, [1.0] * 8], [0.0, 0.0]), eps=0.5, method="fgsm").fit(x, mask=mask)


@pytest.mark.parametrize(("mask", "msg"), [
    (torch.ones(1, 1, 4), "mask has shape (1, 1, 4), which does not broadcast to (1, 4)."),
    (torch.ones(1, 3), "mask has shape (1, 3), which does not broadcast to (1, 4)."),
    (torch.tensor([[1.0, 2.0, 0.0, 1.0]]), "mask must hold only 0 and 1 (1 = the coordinate may change)."),
])
def test_bad_perturbation_masks_are_named(mask: torch.Tensor, msg: str) -> None:
    with raises(DataError, msg):
        UniversalPerturbation(two_class([1.0] * 4, 0.0), eps=0.5, mask=mask).fit(torch.rand(2, 1, 4, dtype=D))


def test_masks_that_broadcast_are_accepted_and_reach_the_model_as_the_inputs_dtype() -> None:
    x = torch.full((3, 2, 4), 0.1, dtype=D)
    model = MaskLin([1.0] * 8, -1.0)  # s = Σ m x − 1 = −0.2 clean
    pad = torch.ones(3, 2, 4, dtype=torch.bool)
    pad[1, :, 2:] = False  # sample 1 padded after sample 2 of both channels
    uap = UniversalPerturbation(model, norm="linf", eps=0.05, method="fgsm", step_size=0.05, max_iter=1)
    res = uap.fit(x, mask=pad)
    assert set(model.seen) == {D}  # the bool mask reaches the model as float64, the inputs' dtype
    assert torch.equal(res.delta, torch.full((2, 4), 0.05, dtype=D))  # +ε_a·sign(w) on every coordinate
    adv = uap.apply(x, res, mask=pad)
    assert torch.equal(adv[1, :, 2:], x[1, :, 2:]) and torch.equal(adv[0], x[0] + 0.05)
    # a (C, 1) channel mask of the sample shape (2, 4): channel 1 never moves
    chan = UniversalPerturbation(model, norm="linf", eps=0.1, method="fgsm", step_size=0.1, max_iter=1,
                                 mask=torch.tensor([[1.0], [0.0]]))
    res = chan.fit(x)
    assert torch.equal(res.delta, torch.tensor([[0.1] * 4, [0.0] * 4], dtype=D))


def test_a_dataset_brings_its_labels_units_and_mask() -> None:
    x = torch.tensor([[[0.2, 0.9]], [[0.5, 0.5]], [[0.9, 0.95]]], dtype=D)
    model = MaskLin([1.0, 1.0], -1.2)  # clean: s = -0.1, -0.2, +0.65 → classes 0, 0, 1
    mask = torch.ones(3, 1, 2, dtype=D)
    mask[2, 0, 1] = 0.0  # sample 2 padded at its last sample: s = 0.9 − 1.2 = −0.3 → class 0
    ds = DS(x=x, y=torch.tensor([0, 1, 0]), meta=SimpleNamespace(units="normalized [0, 1]"), mask=mask)
    uap = UniversalPerturbation(model, norm="linf", eps=0.4, method="fgsm", step_size=0.4, max_iter=1)
    delta = torch.tensor([[0.2, 0.2]], dtype=D)
    ev = uap.evaluate(ds, None, delta)
    # with the mask: clean s = -0.1, -0.2, -0.3 (all 0); adv (clipped to [0, 1]) s = 0.2, 0.2, -0.2 → 1, 1, 0
    assert ev["clean_accuracy"] == pytest.approx(2 / 3) and ev["fooling_rate"] == pytest.approx(2 / 3)
    assert ev["misclassification_rate"] == pytest.approx(1 / 3)  # adv 1, 1, 0 vs labels 0, 1, 0
    assert uap.config()["resolved_bounds"] == [0.0, 1.0]
    adv = uap.apply(ds, delta)
    assert torch.equal(adv, torch.tensor([[[0.4, 1.0]], [[0.7, 0.7]], [[1.0, 0.95]]], dtype=D))
    # an explicit mask overrides the dataset's; explicit labels override its labels
    ev = uap.evaluate(ds, torch.tensor([1, 1, 1]), delta, mask=torch.ones(3, 1, 2, dtype=D))
    assert ev["clean_accuracy"] == pytest.approx(1 / 3) and ev["misclassification_rate"] == 0.0
    # a dataset without tensor labels gives prediction-based rates only; without meta, no units
    bare = DS(x=x, y=[0, 1, 0])
    ev = UniversalPerturbation(model, eps=0.4).evaluate(bare, None, delta)
    assert "clean_accuracy" not in ev and ev["fooling_rate"] == pytest.approx(2 / 3)  # unmasked: 0, 0, 1 → 1, 1, 1
    # fit on the dataset: its units bound the inputs and stay for later plain tensors
    res = uap.fit(ds)
    assert res.config["resolved_bounds"] == [0.0, 1.0]
    assert torch.equal(uap.apply(x, delta), torch.clamp(x + delta, 0, 1))
    assert torch.equal(UniversalPerturbation(model, eps=0.4).apply(x, delta), x + delta)


def test_units_argument_wins_over_the_datasets_units() -> None:
    x = torch.tensor([[[0.9, 0.95]]], dtype=D)
    ds = DS(x=x, y=torch.tensor([0]), meta=SimpleNamespace(units="mV"))
    delta = torch.tensor([[0.5, 0.5]], dtype=D)
    assert torch.equal(UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=1.0).apply(ds, delta), x + delta)
    unit = UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=1.0, units="normalized [0, 1]")
    assert torch.equal(unit.apply(ds, delta), torch.ones(1, 1, 2, dtype=D))
    fixed = UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=1.0, bounds=(0.0, 1.2))
    assert torch.equal(fixed.apply(x, delta), torch.tensor([[[1.2, 1.2]]], dtype=D))
    low = UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=1.0, bounds=(0.5, 2.0))
    assert torch.equal(low.apply(x, -delta), torch.tensor([[[0.5, 0.5]]], dtype=D))


def test_fitting_inputs_must_lie_in_the_bounds() -> None:
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.25), eps=0.5, bounds=(0.0, 1.0), method="fgsm", max_iter=1)
    uap.fit(x_([0.0, 1.0]))  # on the edges is inside
    with raises(DataError, "x_train leaves bounds (0.0, 1.0) (min -0.5, max 0.5); pass bounds=None or bounds that "
                           "contain the data."):
        uap.fit(x_([-0.5, 0.5]))
    with raises(DataError, "x_train leaves bounds (0.0, 1.0) (min 0.5, max 1.5); pass bounds=None or bounds that "
                           "contain the data."):
        uap.fit(x_([0.5, 1.5]))
    free = UniversalPerturbation(two_class([1.0, 1.0], 0.25), eps=0.5, bounds=None, method="fgsm", max_iter=1)
    assert free.fit(x_([-0.5, 1.5])).delta.shape == (1, 2)


# ------------------------------------------------------------------------------------------ the FGSM loop
def test_fgsm_loop_by_hand() -> None:
    """Hirano & Takemoto's loop on ``s = x0 − 2·x1``: every step adds ``0.2·sign(w) = (0.2, −0.2)``, raising ``s``
    by 0.6, and is kept only if it flips its input. Inputs at ``s = −0.3`` and ``−0.5`` are both fooled by the
    first accepted step (whichever comes first), the one at ``s = −5`` never is."""
    model = two_class([1.0, -2.0], 0.0)
    x = x_([-0.3, 0.0], [-0.5, 0.0], [-5.0, 0.0])
    uap = UniversalPerturbation(model, norm="linf", eps=0.3, method="fgsm", step_size=0.2, max_iter=3,
                                generator=gen(4))
    res = uap.fit(x)
    assert res.delta.dtype == D and torch.equal(res.delta, torch.tensor([[0.2, -0.2]], dtype=D))
    assert res.history == [{"pass": 1, "rate": 2 / 3, "norm": 0.2, "accepted": 1},
                           {"pass": 2, "rate": 2 / 3, "norm": 0.2, "accepted": 0},
                           {"pass": 3, "rate": 2 / 3, "norm": 0.2, "accepted": 0}]
    assert (res.xi, res.norm, res.zeta, res.mean_norm, res.method, res.target) == (
        0.3, "linf", None, None, "fgsm", None)
    assert res.fit_rate == 2 / 3 and res.converged is False
    # gradients: pass 1 tries a near input (kept) and the far one (rejected); forwards: clean + start rate (3 + 3),
    # pass 1's 3 checks (the forward a gradient needs is the check) + 1 per FGSM candidate + its rate (3). Passes
    # 2-3 cost nothing: v has not changed since every input was found fooled or its step rejected, so the
    # one-at-a-time loop would repeat exactly that
    assert res.grad_evals == 2 and res.queries == 6 + (3 + 2 + 3)
    assert res.seconds > 0 and res.config == uap.config() and res.config["method"] == "fgsm"
    assert uap._shape == (1, 2) and uap.xi == 0.3
    # the goal stops the loop: 2/3 of the inputs fooled is enough for fooling_goal = 2/3
    stop = UniversalPerturbation(model, norm="linf", eps=0.3, method="fgsm", step_size=0.2, max_iter=3,
                                 fooling_goal=2 / 3).fit(x)
    assert len(stop.history) == 1 and stop.converged is True and stop.fit_rate == 2 / 3
    # seed 0 visits far, near, near: the far input alone (chunk of 1, rejected), then both near ones from the same v
    # (chunk of 2: both steps flip, the first is kept), then the second near one again from the new v (now fooled)
    assert stop.grad_evals == 1 + 2 and stop.queries == 6 + 2 + 2 * 2 + 1 + 3


def test_fgsm_default_step_is_the_papers_fraction_of_the_mean_linf_norm() -> None:
    model = two_class([1.0, -2.0, 0.0], 0.0)
    x = x_([-0.3, 0.0, 100.0], [-0.3, 0.0, -100.0])  # mean ‖x‖∞ = 100: ε_a = 0.0012 · 100 = 0.12
    res = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", max_iter=1).fit(x)
    torch.testing.assert_close(res.delta, torch.tensor([[0.12, -0.12, 0.0]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0 and res.converged is True  # s = −0.3 + 0.36 > 0 for both


def test_targeted_fgsm_by_hand() -> None:
    """Three classes with logits ``(0, x0, x1)``, target 2: the step ``v − ε·sign(∇CE(·, 2)) = v + (−ε, +ε)``."""
    model = Lin([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.0, 0.0, 0.0])
    x = x_([-0.1, -0.2], [0.5, 0.0], [0.0, 2.0])  # classes 0, 1, 2 (the last is already the target)
    uap = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", target=2, step_size=0.3, max_iter=3)
    res = uap.fit(x)
    assert torch.equal(res.delta, torch.tensor([[-0.3, 0.3]], dtype=D))
    assert res.history == [{"pass": 1, "rate": 1.0, "norm": 0.3, "accepted": 1}]
    assert res.target == 2 and res.fit_rate == 1.0 and res.converged is True
    # seed 0 visits C (already the target at the start: skipped), A (its step is kept), then B from the new v (done)
    assert res.grad_evals == 1 and res.queries == 6 + 2 + 1 + 3
    ev = uap.evaluate(x, torch.tensor([0, 1, 2]), res)
    assert ev["target"] == 2 and ev["targeted_success_rate"] == 1.0 and ev["n_not_target"] == 2
    # every input already in the target class: nothing to do, no pass
    done = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", target=2, step_size=0.3).fit(x[2:])
    assert done.history == [] and done.fit_rate == 1.0 and done.converged is True
    assert done.grad_evals == 0 and done.queries == 2 and torch.equal(done.delta, torch.zeros(1, 2, dtype=D))
    with raises(ConfigError, "target=3 is not a class of a model with 3 logits."):
        UniversalPerturbation(model, eps=1.0, method="fgsm", target=3).fit(x)


# ------------------------------------------------------------------------------------------ the DeepFool loop
def test_deepfool_one_iteration_is_accepted_when_it_crosses() -> None:
    """``deepfool_iter=1``: the step is checked after the loop (Moosavi-Dezfooli et al. 2016, Algorithm 2)."""
    model = two_class([3.0, 4.0], -1.0)
    x = x_([-1.0, 0.0])  # s = −4: distance 0.8 along w/‖w‖ = (0.6, 0.8)
    uap = UniversalPerturbation(model, norm="l2", eps=10.0, method="deepfool", deepfool_iter=1, max_iter=2)
    res = uap.fit(x)
    step = (4.0 + 1e-4) / 25.0 * 1.02
    torch.testing.assert_close(res.delta, torch.tensor([[3.0 * step, 4.0 * step]], dtype=D), rtol=1e-12, atol=0)
    assert res.history == [{"pass": 1, "rate": 1.0, "norm": pytest.approx(5.0 * step, rel=1e-12), "accepted": 1}]
    # DeepFool: 1 forward for the candidates, 2 rows (label, candidate) back-propagated, 1 forward to check
    assert res.grad_evals == 2 and res.queries == 2 + 1 + 4 + 1


def test_deepfool_takes_the_nearest_boundary_among_the_candidates() -> None:
    """Label 0 (logit 0.5); class 2 has the higher logit (−0.5, ‖w₂ − w₀‖ = 1, distance 1.0), class 1 the lower
    (−1, ‖w₁ − w₀‖ = 10, distance 0.15): DeepFool steps to class 1, unless only the top candidate is allowed."""
    model = Lin([[0.0, 0.0], [10.0, 0.0], [0.0, 1.0]], [0.5, -1.0, 0.0])
    x = x_([0.0, -0.5])
    res = UniversalPerturbation(model, norm="l2", eps=10.0, method="deepfool", max_iter=1).fit(x)
    torch.testing.assert_close(res.delta, torch.tensor([[1.5001 / 10.0 * 1.02, 0.0]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0
    # 3 rows back-propagated in 2 iterations (the 2nd returns); forwards: clean, start rate, the check of the
    # input, DeepFool's candidates (1) and its 2 × 3 rows, the pass's rate
    assert res.grad_evals == 2 * 3 and res.queries == 2 + 1 + (1 + 6) + 1
    top = UniversalPerturbation(model, norm="l2", eps=10.0, method="deepfool", max_iter=1, num_candidates=1).fit(x)
    torch.testing.assert_close(top.delta, torch.tensor([[0.0, 1.0001 * 1.02]], dtype=D), rtol=1e-12, atol=0)
    assert top.grad_evals == 2 * 2


class Concave(nn.Module):
    """Logits ``[0, s]`` with ``s = 0.5 − exp(−x)`` (input ``(N, 1)``): the linear step undershoots."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 0.5 - torch.exp(-x.flatten(1).sum(1))
        return torch.stack([torch.zeros_like(s), s], 1)


def test_deepfool_iterates_from_the_overshot_point_until_the_label_changes() -> None:
    x = torch.zeros(1, 1, dtype=D)  # s = −0.5
    r_tot, os = 0.0, 0.02
    for _ in range(10):  # DeepFool on f(x) = 0.5 − e^{−x}, f' = e^{−x}, evaluated at x0 + (1 + η)·Σr
        z = (1 + os) * r_tot
        f = 0.5 - math.exp(-z)
        if f > 0:
            break
        r_tot += (abs(f) + 1e-4) / math.exp(-z)
    assert 0.69 < (1 + os) * r_tot < 0.70  # three steps, just past log 2
    res = UniversalPerturbation(Concave(), norm="l2", eps=5.0, method="deepfool", max_iter=1).fit(x)
    assert float(res.delta) == pytest.approx((1 + os) * r_tot, rel=1e-9) and res.fit_rate == 1.0
    assert res.grad_evals == 2 * 4
    # one DeepFool iteration stops short of the boundary: the step is not taken
    one = UniversalPerturbation(Concave(), norm="l2", eps=5.0, method="deepfool", max_iter=2, deepfool_iter=1).fit(x)
    assert torch.equal(one.delta, torch.zeros(1, dtype=D)) and one.fit_rate == 0.0
    assert [h["accepted"] for h in one.history] == [0, 0] and one.converged is False
    assert one.grad_evals == 2 * 2 and one.queries == 2 + 2 * (1 + 1 + 2 + 1 + 1)


def test_deepfool_sees_the_clipped_input() -> None:
    """``s = x0 − x1 + x2 − 1.3`` at ``x = (1, 0, 0)`` in bounds (0, 1): x0 and x1 sit on the bounds, so after the
    first step only x2 can still move (the clip has zero gradient there); the UAP fools the clipped input."""
    model = two_class([1.0, -1.0, 1.0], -1.3)
    x = x_([1.0, 0.0, 0.0])
    r1 = (0.3 + 1e-4) / 3.0  # first step along w = (1, −1, 1)
    s2 = -0.3 + 1.02 * r1  # after clipping, only x2 moved
    r2 = abs(s2) + 1e-4  # second step along (0, 0, 1)
    want = torch.tensor([[1.02 * r1, -1.02 * r1, 1.02 * (r1 + r2)]], dtype=D)
    uap = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1, bounds=(0.0, 1.0))
    res = uap.fit(x)
    torch.testing.assert_close(res.delta, want, rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0
    adv = uap.apply(x, res)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0 and adv[0, 0, 0] == 1.0 and adv[0, 0, 1] == 0.0


@pytest.mark.parametrize(("overshoot", "accepted"), [(1.0, 0), (2.0, 1)])
def test_deepfools_final_check_clips_too(overshoot: float, accepted: int) -> None:
    """One iteration, then the check at ``clip(x + (1 + η)·r)``: with η = 1 only x2 moves (to 0.2, s = −0.1: not
    fooled, though the unclipped point is); with η = 2 x2 reaches 0.3001 (s > 0) while clipping either bound alone,
    or to the upper bound, would say otherwise."""
    model = two_class([1.0, -1.0, 1.0], -1.3)
    x = x_([1.0, 0.0, 0.0])
    uap = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1, deepfool_iter=1,
                                overshoot=overshoot, bounds=(0.0, 1.0))
    res = uap.fit(x)
    assert res.history[0]["accepted"] == accepted
    r = (1 + overshoot) * (0.3 + 1e-4) / 3.0
    want = torch.tensor([[r, -r, r]], dtype=D) if accepted else torch.zeros(1, 3, dtype=D)
    torch.testing.assert_close(res.delta, want, rtol=1e-12, atol=0)


def test_deepfool_and_the_loop_use_the_padding_mask() -> None:
    """The model ignores x1 where the padding mask is 0 (``s = x0 − 1`` there; ``s = x0 + x1 − 1`` if it did not)."""
    model = MaskLin([1.0, 1.0], -1.0)
    x = x_([0.2, -5.0])
    pad = torch.tensor([[[1.0, 0.0]]], dtype=D)
    res = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1).fit(x, mask=pad)
    torch.testing.assert_close(res.delta, torch.tensor([[0.8001 * 1.02, 0.0]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0 and set(model.seen) == {D}
    one = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1, deepfool_iter=1,
                                overshoot=0.0).fit(x, mask=pad)
    torch.testing.assert_close(one.delta, torch.tensor([[0.8001, 0.0]], dtype=D), rtol=1e-12, atol=0)
    fg = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", step_size=0.9, max_iter=1).fit(x, mask=pad)
    assert torch.equal(fg.delta, torch.tensor([[0.9, 0.0]], dtype=D)) and fg.fit_rate == 1.0  # no gradient in x1


# ------------------------------------------------------------------------------------------ the batched solver
def _cos_alpha(a0: float, k: int, total: int) -> float:
    return a0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / total)))


def test_batched_solver_by_hand_linf() -> None:
    """``s = x0 − 2·x1``: the margin gradient is ``+w`` for both inputs, so every step is ``α_k·(1, −1)`` with the
    cosine schedule ``α_k = α0·(0.1 + 0.45·(1 + cos(πk/T)))``, T = passes × steps per pass. A pass's rate is read
    off the forwards its gradients needed, i.e. at the perturbation *before* each step."""
    model = two_class([1.0, -2.0], 0.0)
    x = x_([-0.6, 0.0], [-2.0, 0.0])
    uap = UniversalPerturbation(model, norm="linf", eps=1.0, step_size=0.1, max_iter=5, fooling_goal=0.5)
    res = uap.fit(x)
    v = [sum(_cos_alpha(0.1, k, 5) for k in range(p + 1)) for p in range(4)]
    # s of the near input before the step of pass p: −0.6 + 3·v[p−1]: −0.6, −0.3, −0.026, +0.18 → first seen
    # fooled in pass 4; the goal (0.5) stops there and the perturbation after that pass is returned
    assert [h["pass"] for h in res.history] == [1, 2, 3, 4]
    assert [h["rate"] for h in res.history] == [0.0, 0.0, 0.0, 0.5]
    assert [h["norm"] for h in res.history] == pytest.approx(v, rel=1e-12)
    torch.testing.assert_close(res.delta, torch.tensor([[v[3], -v[3]]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 0.5 and res.converged is True and res.method == "batched"
    # clean predictions, 4 passes of 2 rows (one forward + backward each) and one exact re-scoring at the end
    assert res.grad_evals == 4 * 2 and res.queries == 2 + 4 * 2 + 2


def test_batched_solver_keeps_the_latest_best_pass_and_its_default_steps() -> None:
    model = two_class([1.0, -2.0], 0.0)
    x = x_([-5.0, 0.0], [-6.0, 0.0])  # never fooled: every pass ties at rate 0, the last (most steps) is kept
    res = UniversalPerturbation(model, norm="linf", eps=1.0, max_iter=3).fit(x)  # α0 = ξ/10 = 0.1
    v = [sum(_cos_alpha(0.1, k, 3) for k in range(p + 1)) for p in range(3)]
    assert [h["norm"] for h in res.history] == pytest.approx(v, rel=1e-12)
    torch.testing.assert_close(res.delta, torch.tensor([[v[2], -v[2]]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 0.0 and res.converged is False and len(res.history) == 3
    l2 = UniversalPerturbation(model, norm="l2", eps=1.0, max_iter=1).fit(x)  # α0 = ξ/10 along w/‖w‖
    torch.testing.assert_close(l2.delta, 0.1 * torch.tensor([[1.0, -2.0]], dtype=D) / 5 ** 0.5, rtol=1e-12, atol=0)
    # mini-batches: 3 inputs in batches of 2 make 2 steps per pass (T = 2 passes × 2)
    x3 = x_([-5.0, 0.0], [-6.0, 0.0], [-7.0, 0.0])
    b = UniversalPerturbation(model, norm="linf", eps=1.0, step_size=0.1, max_iter=2, batch_size=2).fit(x3)
    assert [h["norm"] for h in b.history] == pytest.approx(
        [_cos_alpha(0.1, 0, 4) + _cos_alpha(0.1, 1, 4), sum(_cos_alpha(0.1, k, 4) for k in range(4))], rel=1e-12)
    assert b.grad_evals == 2 * 3 and b.queries == 3 + 2 * 3 + 3


def _ce_grad(w: torch.Tensor, z: torch.Tensor, c: list[int], pull: list[bool]) -> torch.Tensor:
    """Gradient of the mean cross-entropy ``CE(W z, c_i)`` over the inputs ``z`` (rows) that pull: ``Wᵀ(p − e_c)``."""
    p = torch.softmax(z @ w.T, 1) - torch.eye(w.shape[0], dtype=D)[c]
    return ((p * torch.tensor(pull, dtype=D)[:, None]) @ w).sum(0) / len(z)


def test_batched_margin_clamp_stops_fooled_inputs_pulling() -> None:
    """Logits ``(0, x0, x1)``: input A (class 1) pushes towards class 2, input B (class 0) towards class 1; each
    pulls with its cross-entropy gradient ``Wᵀ(p − e_c)``. With κ = 0, once A is fooled (margin > 0) only B pulls,
    so the perturbation turns."""
    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=D)
    model = Lin(w.tolist(), [0.0, 0.0, 0.0])
    u = UniversalPerturbation(model, norm="linf", eps=1.0)
    z = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]], dtype=D)
    torch.testing.assert_close(u._margin(z, torch.tensor([0, 2])), torch.tensor([2.0, 0.5], dtype=D))
    torch.testing.assert_close(u._margin(z, torch.tensor([1, 0])), torch.tensor([-1.0, -0.5], dtype=D))
    lse = torch.tensor([math.log(math.exp(1.0) + math.exp(2.0)), math.log(math.exp(0.5) + math.exp(-1.0))], dtype=D)
    torch.testing.assert_close(u._margin(z, torch.tensor([1, 2]), soft=True), lse - torch.tensor([3.0, 0.0], dtype=D))
    t = UniversalPerturbation(model, norm="linf", eps=1.0, target=2)
    torch.testing.assert_close(t._margin(z, torch.tensor([0, 0])), torch.tensor([-1.0, -0.5], dtype=D))
    torch.testing.assert_close(t._margin(z, torch.tensor([0, 0]), soft=True),
                               torch.tensor([2.0, 0.0], dtype=D) - torch.tensor(
                                   [math.log(math.exp(1.0) + math.exp(3.0)), math.log(math.exp(0.5) + math.exp(-1.0))],
                                   dtype=D))
    # the loss: CE (softplus of the soft margin) while the margin is below κ, constant (no gradient) from κ on
    zz = z.clone().requires_grad_(True)
    loss = UniversalPerturbation(model, norm="linf", eps=1.0, kappa=0.5)._loss(zz, torch.tensor([1, 2]))
    torch.testing.assert_close(loss.detach(), torch.nn.functional.cross_entropy(z, torch.tensor([1, 2]),
                                                                                 reduction="none"))
    (g,) = torch.autograd.grad(loss.sum(), zz)  # margins −1 (pulls) and 0.5 (= κ: held)
    torch.testing.assert_close(g[0], torch.softmax(z[0], 0) - torch.tensor([0.0, 1.0, 0.0], dtype=D))
    assert torch.equal(g[1], torch.zeros(3, dtype=D))
    x = x_([0.5, 0.3], [-0.05, -1.0])  # A: logits (0, 0.5, 0.3) class 1; B: (0, −0.05, −1) class 0
    free = UniversalPerturbation(model, norm="l2", eps=1.0, step_size=0.4, max_iter=2, kappa=100.0).fit(x)
    clamped = UniversalPerturbation(model, norm="l2", eps=1.0, step_size=0.4, max_iter=2, kappa=0.0).fit(x)
    xs, a1 = x[:, 0], _cos_alpha(0.4, 1, 2)
    g0 = _ce_grad(w, xs, [1, 0], [True, True])  # pass 1: both pull
    v1 = 0.4 * g0 / g0.norm()
    assert int((model(xs[:1] + v1)).argmax()) == 2 and int(model(xs[1:] + v1).argmax()) == 0  # A fooled, B not
    g_free, g_clamped = _ce_grad(w, xs + v1, [1, 0], [True, True]), _ce_grad(w, xs + v1, [1, 0], [False, True])
    want_free, want_clamped = v1 + a1 * g_free / g_free.norm(), v1 + a1 * g_clamped / g_clamped.norm()
    torch.testing.assert_close(free.delta[0], want_free, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(clamped.delta[0], want_clamped, rtol=1e-12, atol=1e-15)
    # both see A fooled (only) before the step of pass 2; the exact re-scoring of the result tells them apart:
    # free leaves B unfooled, clamped fools it too
    assert [h["rate"] for h in free.history] == [0.0, 0.5] == [h["rate"] for h in clamped.history]
    assert free.fit_rate == 0.5 and free.converged is False
    assert clamped.fit_rate == 1.0 and clamped.converged is True


def test_batched_targeted_by_hand() -> None:
    model = Lin([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.0, 0.0, 0.0])
    x = x_([-0.1, -0.3], [0.2, -0.3], [0.1, -0.2])  # classes 0, 1, 1; target 2: margin x1 − max(0, x0)
    res = UniversalPerturbation(model, norm="linf", eps=1.0, step_size=0.4, max_iter=1, target=2).fit(x)
    # gradient of the mean margin: A (max is class 0): (0, 1); B, C (max is class 1): (−1, 1) → sign (−1, +1)
    torch.testing.assert_close(res.delta, torch.tensor([[-0.4, 0.4]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0 and res.target == 2 and res.converged is True


# ------------------------------------------------------------------------------------------ seeds and dtype
def test_the_generator_sets_the_order_and_nothing_else_is_random() -> None:
    """1-D inputs at 0.45, 0.35, ..., −0.05 below the boundary 0.5, steps of 0.1: in one pass the perturbation grows
    by 0.1 for each input flipped in turn, so it depends on the order the generator draws."""
    model = two_class([1.0], -0.5)
    x = torch.tensor([[0.45], [0.35], [0.25], [0.15], [0.05], [-0.05]], dtype=D)
    kw = dict(norm="linf", eps=1.0, method="fgsm", step_size=0.1, max_iter=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    runs = {s: float(UniversalPerturbation(model, generator=gen(s), **kw).fit(x).delta) for s in range(6)}
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is never used
    assert len(set(runs.values())) > 1  # the order matters ...
    assert all(float(UniversalPerturbation(model, generator=gen(s), **kw).fit(x).delta) == runs[s]
               for s in range(6))  # ... and the same seed repeats it
    assert float(UniversalPerturbation(model, **kw).fit(x).delta) == runs[0]  # None: seeded with 0
    bkw = dict(norm="l2", eps=1.0, step_size=0.3, max_iter=2, batch_size=1)
    cm = Lin([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0])
    xb = x_([1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0])  # each pushes towards a different class
    torch.manual_seed(123)
    deltas = [UniversalPerturbation(cm, generator=gen(s), **bkw).fit(xb).delta for s in range(4)]
    assert torch.equal(torch.get_rng_state(), state)
    assert any(not torch.equal(deltas[0], d) for d in deltas[1:])
    assert torch.equal(UniversalPerturbation(cm, **bkw).fit(xb).delta, deltas[0])
    assert torch.equal(UniversalPerturbation(cm, generator=gen(2), **bkw).fit(xb).delta, deltas[2])


@pytest.mark.parametrize("method", ["deepfool", "fgsm", "batched"])
def test_dtype_follows_the_inputs(method: str) -> None:
    model = two_class([1.0, 1.0], -10.0)  # far from the boundary: the loops accept nothing
    for dt in (torch.float32, D):
        res = UniversalPerturbation(model.to(dt), norm="linf", eps=0.1, method=method, max_iter=1,
                                    deepfool_iter=1, step_size=0.01).fit(torch.zeros(2, 1, 2, dtype=dt))
        assert res.delta.dtype == dt and res.delta.shape == (1, 2)
    model.double()


# ------------------------------------------------------------------------------------------ evaluate, apply, controls
def test_evaluate_every_metric_by_hand() -> None:
    """Logits = coordinates − 1 (3 classes); δ adds 2 to logit 2. Clean predictions 0, 1, 2, 2; adversarial all 2."""
    model = Lin([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [-1.0, -1.0, -1.0])
    x = x_([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.6])
    y = torch.tensor([0, 0, 2, 2])
    res = UAPResult(delta=torch.tensor([[0.0, 0.0, 2.0]], dtype=D), xi=2.5, norm="l2", target=None)
    uap = UniversalPerturbation(model, norm="l2", eps=3.0)
    ev = uap.evaluate(x, y, res)
    assert ev == {
        "n": 4, "fooling_rate": 0.5, "clean_accuracy": 0.75, "clean_misclassification_rate": 0.25,
        "misclassification_rate": 0.5, "transition": [[0, 0, 1], [0, 0, 1], [0, 0, 2]],
        "adv_class_fractions": [0.0, 0.0, 1.0], "delta_norms": {"l2": 2.0, "linf": 2.0}, "xi": 2.5}
    ev = uap.evaluate(x, y, res.delta, target=2)  # a bare tensor: ξ is this object's
    assert (ev["target"], ev["targeted_success_rate"], ev["clean_target_rate"], ev["n_not_target"],
            ev["targeted_success_rate_excluding_target"], ev["xi"]) == (2, 1.0, 0.5, 2, 1.0, 3.0)
    ev = uap.evaluate(x, y, res.delta.unsqueeze(0), target=0)  # (1, *shape) is accepted
    assert ev["targeted_success_rate"] == 0.0 and ev["clean_target_rate"] == 0.25 and ev["n_not_target"] == 3
    # the result's target is the default; the argument wins
    tres = UAPResult(delta=res.delta, xi=2.5, norm="l2", target=1)
    assert uap.evaluate(x, None, tres)["target"] == 1 and uap.evaluate(x, None, tres, target=2)["target"] == 2
    tu = UniversalPerturbation(model, norm="l2", eps=3.0, target=2)
    assert tu.evaluate(x, None, res)["target"] == 2 and "target" not in uap.evaluate(x, None, res)
    # every clean prediction is the target: the excluding rate is undefined
    allt = tu.evaluate(x[2:3], None, res.delta)
    assert allt["n_not_target"] == 0 and math.isnan(allt["targeted_success_rate_excluding_target"])
    assert uap.evaluate(x, [0, 0, 2, 1], res)["clean_accuracy"] == 0.5  # labels as a list


@pytest.mark.parametrize(("kw", "exc", "msg"), [
    ({"delta": None}, ConfigError, "pass delta= (a UAPResult or a tensor of the sample shape)."),
    ({"delta": [0.0, 0.0]}, ConfigError, "delta must be a UAPResult or a tensor, got list."),
    ({"delta": torch.zeros(2, 2)}, DataError, "delta has shape (2, 2) but the samples have shape (1, 2)."),
    ({"delta": torch.zeros(2, 1, 2)}, DataError, "delta has shape (2, 1, 2) but the samples have shape (1, 2)."),
    ({"delta": torch.zeros(1, 1, 3)}, DataError, "delta has shape (1, 1, 3) but the samples have shape (1, 2)."),
    ({"delta": torch.zeros(1, 2, 1)}, DataError, "delta has shape (1, 2, 1) but the samples have shape (1, 2)."),
    ({"y": torch.tensor([0, 1, 0])}, DataError, "y must be (N=2,) integer class indices, got (3,) torch.int64."),
    ({"y": torch.tensor([[0], [1]])}, DataError, "y must be (N=2,) integer class indices, got (2, 1) torch.int64."),
    ({"y": torch.tensor([0.0, 1.0])}, DataError, "y must be (N=2,) integer class indices, got (2,) torch.float32."),
    ({"target": 2}, ConfigError, "target=2 is not a class of a model with 2 logits."),
    ({"target": -1}, ConfigError, "target=-1 is not a class of a model with 2 logits."),
])
def test_evaluate_errors_in_full(kw: dict, exc: type[Exception], msg: str) -> None:
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.25), eps=1.0)
    args = {"y": None, "delta": torch.zeros(1, 2), **kw}
    with raises(exc, msg):
        uap.evaluate(x_([0.0, 1.0], [1.0, 0.5]), args.pop("y"), args.pop("delta"), **args)


def test_evaluate_and_apply_use_mask_dtype_and_bounds() -> None:
    model = MaskLin([1.0, 1.0], -1.0)
    x = torch.tensor([[[0.5, 0.4]], [[0.5, 0.4]]], dtype=D)
    pad = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]])
    delta = torch.tensor([[0.2, 0.2]], dtype=torch.float32)  # float32 delta on float64 inputs
    uap = UniversalPerturbation(model, eps=1.0)
    ev = uap.evaluate(x, torch.tensor([0, 0]), delta, mask=pad)
    # sample 0: s = 0.9 − 1 → 1.3 − 1 (fooled); sample 1: s = 0.5 − 1 → 0.7 − 1 (not)
    assert ev["fooling_rate"] == 0.5 and ev["clean_accuracy"] == 1.0 and ev["misclassification_rate"] == 0.5
    adv = uap.apply(x, delta, mask=pad)
    assert adv.dtype == D
    torch.testing.assert_close(adv, torch.tensor([[[0.7, 0.6]], [[0.7, 0.4]]], dtype=D))
    vm = UniversalPerturbation(model, eps=1.0, mask=torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(vm.apply(x, delta), torch.tensor([[[0.5, 0.6]], [[0.5, 0.6]]], dtype=D))
    assert vm.evaluate(x, None, delta)["delta_norms"] == {"l2": pytest.approx(0.2), "linf": pytest.approx(0.2)}
    bounded = UniversalPerturbation(model, eps=1.0, bounds=(0.0, 0.65))
    torch.testing.assert_close(bounded.apply(x, delta), torch.tensor([[[0.65, 0.6]], [[0.65, 0.6]]], dtype=D))
    assert bounded.evaluate(x, None, delta)["fooling_rate"] == 1.0  # s = 1.25 − 1 > 0
    with raises(DataError, "x must be a floating-point tensor, got dtype torch.int64; convert with .float()."):
        uap.apply(torch.ones(2, 1, 2, dtype=torch.long), delta)
    with raises(DataError, "x's mask must hold only 0 and 1 (1 = the coordinate may change)."):
        uap.evaluate(x, None, delta, mask=pad * 2)


def test_evaluate_restores_the_models_mode_and_takes_plain_callables() -> None:
    lin = two_class([1.0, 1.0], -1.0).train()
    UniversalPerturbation(lin, eps=1.0).evaluate(x_([0.5, 0.4]), None, torch.zeros(1, 2, dtype=D))
    assert lin.training and all(p.requires_grad for p in lin.parameters())

    def f(z: torch.Tensor) -> torch.Tensor:
        return lin(z)

    uap = UniversalPerturbation(f, norm="linf", eps=0.2, method="fgsm", step_size=0.2, max_iter=1)
    res = uap.fit(x_([0.5, 0.4]))
    assert torch.equal(res.delta, torch.tensor([[0.2, 0.2]], dtype=D)) and res.fit_rate == 1.0
    assert uap.evaluate(x_([0.5, 0.4]), None, res)["fooling_rate"] == 1.0


def test_the_attacks_random_control_defaults_to_the_last_fit() -> None:
    model = two_class([1.0, 1.0], -10.0)
    uap = UniversalPerturbation(model, norm="l2", zeta=0.5, method="fgsm", max_iter=1, generator=gen(3))
    uap.fit(x_([3.0, 4.0], [0.0, 1.0]))  # ξ = 0.5 · 3
    ctrl = uap.random_control(kind="sign")
    assert ctrl.delta.shape == (1, 2) and ctrl.xi == 1.5 and ctrl.mean_norm == 3.0 and ctrl.zeta == 0.5
    assert float(ctrl.delta.norm()) == pytest.approx(1.5, rel=1e-6) and ctrl.method == "random_sign"
    torch.testing.assert_close(ctrl.delta.abs(), torch.full((1, 2), 1.5 / 2 ** 0.5, dtype=torch.float32))
    uni = uap.random_control(xi=0.25, generator=gen(1))
    assert uni.xi == 0.25 and float(uni.delta.norm()) <= 0.25 and uni.method == "random_uniform"
    assert torch.equal(uni.delta, uap.random_control(xi=0.25, generator=gen(1)).delta)
    assert not torch.equal(uni.delta, uap.random_control(xi=0.25, generator=gen(2)).delta)
    plain = UniversalPerturbation(model, norm="linf", eps=0.5)
    a, b = plain.random_control(shape=(1, 4)), plain.random_control(shape=(1, 4))
    assert torch.equal(a.delta, b.delta)  # no generator: seeded with 0 each time
    assert a.xi == 0.5 and float(a.delta.abs().max()) <= 0.5 and a.config == {"kind": "uniform"}


# ------------------------------------------------------------------------------------------ shapes and devices
@pytest.mark.parametrize("method", ["deepfool", "fgsm", "batched"])
def test_multichannel_samples_keep_their_shape(method: str) -> None:
    """(N, C, L) = (2, 2, 2): every accepted step keeps the sample shape (2, 2)."""
    model = two_class([1.0, 1.0, 1.0, 1.0], -1.0)
    x = torch.full((2, 2, 2), 0.2, dtype=D)  # s = −0.2
    res = UniversalPerturbation(model, norm="linf", eps=0.1, method=method, step_size=0.1, max_iter=1).fit(x)
    assert res.delta.shape == (2, 2) and res.fit_rate == 1.0
    assert res.history[0].get("accepted", 1) == 1
    l2 = UniversalPerturbation(model, norm="l2", eps=0.3, method=method, step_size=0.3, max_iter=1).fit(x)
    assert l2.history[0]["norm"] == pytest.approx(float(l2.delta.norm()), rel=1e-12)  # over both channels


class MaskLin3(Lin):
    """:class:`Lin` on ``x · mask`` (the model reads only unpadded samples)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if mask is None else x * mask)


def test_deepfools_candidates_come_from_the_masked_input() -> None:
    """Logits ``(0.5, x0, x1)`` on ``x·m``: x0 is padded, so the top rival is class 2 (x1 = 0.2), not class 1
    (x0 = 0.4 only without the mask); with one candidate DeepFool steps along x1."""
    model = MaskLin3([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.5, 0.0, 0.0])
    x = x_([0.4, 0.2])
    pad = torch.tensor([[[0.0, 1.0]]], dtype=D)
    res = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1,
                                num_candidates=1).fit(x, mask=pad)
    torch.testing.assert_close(res.delta, torch.tensor([[0.0, 0.3001 * 1.02]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0


def test_projection_and_delta_follow_the_device() -> None:
    """On the ``meta`` device (shapes only): the radius tensor and the perturbation move to the inputs' device."""
    for norm in ("l2", "linf"):
        out = project_uap(torch.empty(2, 3, device="meta", dtype=D), 1.0, norm)
        assert out.device.type == "meta" and out.shape == (2, 3) and out.dtype == D
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.0), eps=1.0)
    v = uap._delta(torch.zeros(1, 2), torch.empty(3, 1, 2, device="meta", dtype=D))
    assert v.device.type == "meta" and v.dtype == D and v.shape == (1, 2)


class Kinky(nn.Module):
    """``s = √x0 − √x1 + √|x2| + x3 − 1``: at x0 = x1 = x2 = 0 the input gradient is (+inf, −inf, nan, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        s = z[:, 0].sqrt() - z[:, 1].sqrt() + z[:, 2].abs().sqrt() + z[:, 3] - 1.0
        return torch.stack([torch.zeros_like(s), s], 1)


def test_batched_solver_ignores_non_finite_gradient_coordinates() -> None:
    x = x_([0.0, 0.0, 0.0, 0.5])
    res = UniversalPerturbation(Kinky(), norm="linf", eps=1.0, step_size=0.2, max_iter=1).fit(x)
    assert torch.equal(res.delta, torch.tensor([[0.0, 0.0, 0.0, 0.2]], dtype=D))
    small = two_class([0.1, -0.2], 0.0)  # ‖g‖ < 1: the L2 step is still α along g/‖g‖
    l2 = UniversalPerturbation(small, norm="l2", eps=1.0, max_iter=1).fit(x_([-5.0, 0.0]))
    torch.testing.assert_close(l2.delta, 0.1 * torch.tensor([[1.0, -2.0]], dtype=D) / 5 ** 0.5, rtol=1e-12, atol=0)


class Ring(nn.Module):
    """``s = x² − 1`` (input ``(N, 1)``): class 1 outside [−1, 1]; the gradient's sign is the sign of ``x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1) ** 2 - 1.0
        return torch.stack([torch.zeros_like(s), s], 1)


def test_fgsm_takes_the_gradient_at_the_perturbed_input() -> None:
    """A = 0.3 is flipped by +0.8. B = −0.15 is not flipped by −0.8 (from v = 0) but is by +0.8 from v = 0.8,
    where the gradient at ``B + v = 0.65`` points up (at B itself it points down)."""
    x = torch.tensor([[0.3], [-0.15]], dtype=D)
    res = UniversalPerturbation(Ring(), norm="linf", eps=2.0, method="fgsm", step_size=0.8, max_iter=2).fit(x)
    assert torch.equal(res.delta, torch.tensor([1.6], dtype=D)) and res.fit_rate == 1.0


def test_fgsm_checks_the_flip_on_the_padded_input() -> None:
    """``s = x0 + x1 − 1`` (a model without ``mask=``) at (0.5, 0.3), x1 padded: +0.15 on x0 gives s = −0.05 (no
    flip); the padded x1 must not move although its gradient is not zero."""
    model = two_class([1.0, 1.0], -1.0)
    x = x_([0.5, 0.3])
    pad = torch.tensor([[[1.0, 0.0]]], dtype=D)
    uap = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", step_size=0.15, max_iter=1)
    res = uap.fit(x, mask=pad)
    assert torch.equal(res.delta, torch.zeros(1, 2, dtype=D)) and res.history[0]["accepted"] == 0
    big = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", step_size=0.25, max_iter=2).fit(
        x, mask=pad)
    assert torch.equal(big.delta, torch.tensor([[0.25, 0.25]], dtype=D)) and big.fit_rate == 1.0
    assert [h["accepted"] for h in big.history] == [1]


def test_uniform_l2_control_in_few_dimensions_by_hand() -> None:
    """In d = 2 the Gaussian direction often has norm < 1: the control is still ``g/‖g‖ · ξ·u^{1/d}``."""
    from medrobust.attacks.universal import random_control

    small = 0
    for seed in range(12):
        g = gen(seed)
        direction = torch.randn((1, 2), generator=g, dtype=D)
        u = float(torch.rand((), generator=g, dtype=D)) ** 0.5
        small += float(direction.norm()) < 1
        v = random_control((1, 2), xi=0.7, norm="l2", generator=gen(seed), dtype=D)
        torch.testing.assert_close(v, direction / direction.norm() * (0.7 * u), rtol=1e-12, atol=0)
    assert small > 0


def test_random_control_without_a_budget_says_what_to_pass() -> None:
    with raises(ConfigError, "random_control needs shape= and xi= (or call fit() / resolve_xi() first)."):
        UniversalPerturbation(two_class([1.0], 0.0), zeta=0.1).random_control(shape=(1, 1))


class TrainShift(nn.Module):
    """Logits ``[0, x0 + x1 − 1]``, plus 10 in training mode (so only eval-mode predictions are sensible)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1) - 1.0 + (10.0 if self.training else 0.0)
        return torch.stack([torch.zeros_like(s), s], 1)


class MaskRequired(nn.Module):
    """``s = Σ m·x − 1``; ``forward`` requires ``mask=`` (as a padded-sequence model may)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = (x * mask).flatten(1).sum(1) - 1.0
        return torch.stack([torch.zeros_like(s), s], 1)


def test_evaluate_runs_the_model_in_eval_mode_with_its_mask() -> None:
    x = x_([0.3, 0.3], [0.6, 0.3])
    delta = torch.tensor([[0.25, 0.0]], dtype=D)
    model = TrainShift().train()
    ev = UniversalPerturbation(model, eps=1.0).evaluate(x, torch.tensor([0, 0]), delta)
    assert ev["clean_accuracy"] == 1.0 and ev["fooling_rate"] == 0.5 and model.training  # s: −0.4, −0.1 → −0.15, +0.15
    res = UniversalPerturbation(model, norm="linf", eps=0.3, method="fgsm", step_size=0.25, max_iter=1).fit(x)
    assert res.fit_rate == 1.0 and torch.equal(res.delta, torch.tensor([[0.25, 0.25]], dtype=D)) and model.training
    pad = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]], dtype=D)
    ev = UniversalPerturbation(MaskRequired(), eps=1.0).evaluate(x, None, delta, mask=pad)
    assert ev["fooling_rate"] == 0.5  # s: −0.7 → −0.45, −0.1 → +0.15


def test_deepfool_with_a_perturbation_mask_and_a_moving_label_logit() -> None:
    """Logits ``(x0, x1 − 0.5)`` at (0.3, 0.1): label 0, f = −0.7 along w = (−1, 1); with x0 frozen by the mask,
    along (0, 1)."""
    model = Lin([[1.0, 0.0], [0.0, 1.0]], [0.0, -0.5])
    x = x_([0.3, 0.1])
    res = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1).fit(x)
    r = 1.02 * 0.7001 / 2.0
    torch.testing.assert_close(res.delta, torch.tensor([[-r, r]], dtype=D), rtol=1e-12, atol=0)
    frozen = UniversalPerturbation(model, norm="l2", eps=5.0, method="deepfool", max_iter=1,
                                   mask=torch.tensor([[0.0, 1.0]])).fit(x)
    torch.testing.assert_close(frozen.delta, torch.tensor([[0.0, 1.02 * 0.7001]], dtype=D), rtol=1e-12, atol=0)
    assert frozen.fit_rate == 1.0


def test_deepfools_final_check_inside_the_bounds() -> None:
    """``s = x0 − x1 − 0.1`` at (0.5, 0.5) in (0, 1): one iteration reaches s = +0.002, inside the bounds."""
    model = two_class([1.0, -1.0], -0.1)
    res = UniversalPerturbation(model, norm="l2", eps=1.0, method="deepfool", max_iter=1, deepfool_iter=1,
                                bounds=(0.0, 1.0)).fit(x_([0.5, 0.5]))
    r = 1.02 * 0.1001 / 2.0
    torch.testing.assert_close(res.delta, torch.tensor([[r, -r]], dtype=D), rtol=1e-12, atol=0)
    assert res.fit_rate == 1.0


def test_batched_solver_uses_the_padding_mask() -> None:
    """A = (0.6, −5) has x1 padded, B = (0.3, 0.3) none: the margin gradients are (1, 0) and (1, 1), so the L2 step
    runs along (2, 1)/√5; the model that reads the mask sees A fooled by it (s = 0.6 + 0.447 − 1 > 0)."""
    x = x_([0.6, -5.0], [0.3, 0.3])
    pad = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]], dtype=D)
    sig = torch.sigmoid
    # the CE gradient of a class-0 input of logits [0, s] is sigmoid(s)·∇s: A and B weigh the same (s = −0.4) for
    # the model that reads the mask; for the one that does not, A's s = −5.4 leaves it almost no weight
    weights = {MaskLin: (sig(torch.tensor(-0.4)), sig(torch.tensor(-0.4))), Lin: (sig(torch.tensor(-5.4)),
                                                                              sig(torch.tensor(-0.4)))}
    for model in (MaskLin([1.0, 1.0], -1.0), two_class([1.0, 1.0], -1.0)):
        wa, wb = weights[type(model)]
        d = torch.tensor([[float(wa + wb), float(wb)]], dtype=D)
        res = UniversalPerturbation(model, norm="l2", eps=1.0, step_size=0.5, max_iter=1).fit(x, mask=pad)
        torch.testing.assert_close(res.delta, 0.5 * d / d.norm(), rtol=1e-6, atol=0)
        assert res.fit_rate == (1.0 if isinstance(model, MaskLin) else 0.5)
    torch.testing.assert_close(0.5 * d / d.norm(), 0.5 * torch.tensor([[1.0, 1.0]], dtype=D) / 2 ** 0.5, rtol=0.02,
                               atol=0)  # (the two models differ: (2, 1)/√5 against about (1, 1)/√2)


def test_fgsm_l2_with_a_perturbation_mask() -> None:
    model = two_class([1.0, 1.0], -1.0)
    uap = UniversalPerturbation(model, norm="l2", eps=1.0, method="fgsm", step_size=0.7, max_iter=1,
                                mask=torch.tensor([[1.0, 0.0]]))
    res = uap.fit(x_([0.2, 0.2]))  # s = −0.6 → +0.1 with x0 alone moved by 0.7
    assert torch.equal(res.delta, torch.tensor([[0.7, 0.0]], dtype=D)) and res.fit_rate == 1.0


def test_shared_padding_mask_and_perturbation_mask_in_the_batched_solver() -> None:
    """A padding mask shared by the batch (leading dimension 1) applies to every input; the perturbation mask keeps
    x1 at zero although the margin gradient pulls it (the batched step is not masked before the projection)."""
    model = two_class([1.0, 1.0], -0.8)
    x = x_([0.2, 0.2], [0.3, 0.1], [0.1, 0.3])  # s = −0.4 for all three
    shared = torch.tensor([[[1.0, 0.0]]], dtype=D)
    res = UniversalPerturbation(model, norm="linf", eps=1.0, step_size=0.5, max_iter=1).fit(x, mask=shared)
    assert torch.equal(res.delta, torch.tensor([[0.5, 0.0]], dtype=D))  # the padded x1 has no gradient
    vm = UniversalPerturbation(model, norm="linf", eps=1.0, step_size=0.5, max_iter=1, mask=torch.tensor([[1.0, 0.0]]))
    res = vm.fit(x)
    assert torch.equal(res.delta, torch.tensor([[0.5, 0.0]], dtype=D))
    assert [h["norm"] for h in res.history] == [0.5] and res.fit_rate == 1.0  # s = −0.4 + 0.5 > 0 for all


class BatchLog(nn.Module):
    """``s = x0 + x1 − 1``, recording the number of rows of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        s = x.flatten(1).sum(1) - 1.0
        return torch.stack([torch.zeros_like(s), s], 1)


def test_predictions_run_in_eval_batches_and_mask_the_perturbation() -> None:
    model = BatchLog()
    x = x_([0.5, 0.4], [0.2, 0.2], [0.1, 0.1], [0.3, 0.3], [0.0, 0.9])
    uap = UniversalPerturbation(model, eps=1.0, eval_batch_size=2)
    uap.evaluate(x, None, torch.zeros(1, 2, dtype=D))
    assert max(model.rows[1:]) == 2 and sum(model.rows[1:]) == 2 * 5  # clean and adversarial, 2 rows at most
    pad = torch.tensor([[[1.0, 0.0]]] * 5, dtype=D)  # x1 padded: the model (without mask=) sees it unchanged
    ev = UniversalPerturbation(two_class([1.0, 1.0], -1.0), eps=1.0).evaluate(
        x[:1], None, torch.tensor([[0.0, 0.5]], dtype=D), mask=pad[:1])
    assert ev["fooling_rate"] == 0.0  # s stays 0.5 + 0.4 − 1 < 0


def test_fit_reports_its_budget_and_its_time() -> None:
    import time

    model = two_class([1.0, 1.0], -10.0)
    t0 = time.perf_counter()
    res = UniversalPerturbation(model, norm="l2", zeta=0.5, method="fgsm", max_iter=1).fit(x_([3.0, 4.0], [0.0, 1.0]))
    assert 0.0 < res.seconds <= time.perf_counter() - t0
    assert (res.zeta, res.mean_norm, res.xi) == (0.5, 3.0, 1.5)


def test_each_deepfool_step_starts_from_the_perturbed_input() -> None:
    """``s = x0`` (class 1 where x0 > 0), inputs A at −0.1 and B at −0.3. A first: A's step r_A = 1.02·(0.1 + 1e-4),
    then B's from −0.3 + r_A; B first: its step fools A too. The UAP is one of those two, by the pass order."""
    model = two_class([1.0, 0.0], 0.0)
    x = x_([-0.1, 0.0], [-0.3, 0.0])
    ra = 1.02 * (0.1 + 1e-4)
    a_first = ra + 1.02 * (0.3 - ra + 1e-4)
    b_first = 1.02 * (0.3 + 1e-4)
    seen = set()
    for s in range(6):
        res = UniversalPerturbation(model, norm="l2", eps=1.0, method="deepfool", max_iter=1, generator=gen(s)).fit(x)
        d = float(res.delta[0, 0])
        assert d == pytest.approx(a_first, rel=1e-9) or d == pytest.approx(b_first, rel=1e-9)
        first = "A" if d == pytest.approx(a_first, rel=1e-9) else "B"
        assert res.history[0]["accepted"] == (2 if first == "A" else 1) and res.fit_rate == 1.0
        seen.add(first)
    assert seen == {"A", "B"}


def test_apply_names_a_bad_perturbation_mask() -> None:
    uap = UniversalPerturbation(two_class([1.0, 1.0], 0.25), eps=1.0, mask=torch.ones(1, 3))
    with raises(DataError, "mask has shape (1, 3), which does not broadcast to (1, 2)."):
        uap.apply(x_([0.1, 0.2]), torch.zeros(1, 2, dtype=D))


def test_the_logit_check_sees_each_input_with_its_own_mask() -> None:
    """With their own masks the first two inputs give logits (0, 0) and (0, 1); with the second mask for both,
    both rows would read (0, 1) and pass for probabilities."""
    x = x_([1.0, 1.0], [1.0, 1.0], [0.5, 0.2])
    pad = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[1.0, 1.0]]], dtype=D)
    res = UniversalPerturbation(MaskRequired(), norm="linf", eps=0.1, method="fgsm", step_size=0.1,
                                max_iter=1).fit(x, mask=pad)
    assert res.delta.shape == (1, 2)


def test_batched_margin_reads_the_model_with_the_padding_mask() -> None:
    """A = (1.2, −5) with x1 padded is class 1 (s = 0.2) and pulls along −(1, 0); B = (0.3, 0.3) is class 0 and
    pulls along (1, 1): the L2 step runs along (0, 1). Read without its mask A would look far past the clamp κ = 1
    and stop pulling."""
    x = x_([1.2, -5.0], [0.3, 0.3])
    pad = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]], dtype=D)
    res = UniversalPerturbation(MaskLin([1.0, 1.0], -1.0), norm="l2", eps=1.0, step_size=0.5, max_iter=1).fit(
        x, mask=pad)
    # CE gradients: A (class 1, s = 0.2) −sigmoid(−0.2)·(1, 0); B (class 0, s = −0.4) sigmoid(−0.4)·(1, 1)
    a, b = 1 / (1 + math.exp(0.2)), 1 / (1 + math.exp(0.4))
    d = torch.tensor([[b - a, b]], dtype=D)
    torch.testing.assert_close(res.delta, 0.5 * d / d.norm(), rtol=1e-12, atol=1e-15)
    assert res.fit_rate == 0.5  # B: s = 0.6 + 0.5·(b − a + b)/‖d‖ − 1 > 0; A keeps s = 0.2 + 0.5·(b − a)/‖d‖ > 0


def test_the_loops_check_and_step_from_the_padded_input() -> None:
    """``s = x0 + x1 − 1`` (no ``mask=``); A = (0.5, 0.3), B = (0.2, 0.5) with x1 padded. FGSM (ε = 0.25): A's
    step (0.25, 0.25) leaves B at (0.45, 0.5), not fooled, so B's step is tried and taken (B at (0.7, 0.5))."""
    model = two_class([1.0, 1.0], -1.0)
    x = x_([0.5, 0.3], [0.2, 0.5])
    pad = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]], dtype=D)
    res = UniversalPerturbation(model, norm="linf", eps=0.5, method="fgsm", step_size=0.25, max_iter=2).fit(
        x, mask=pad)
    assert torch.equal(res.delta, torch.tensor([[0.5, 0.5]], dtype=D)) and res.fit_rate == 1.0
    # DeepFool from B + m·v: its step is sized on s there, not on the unmasked B + v
    ra = 1.02 * (0.2 + 1e-4) / 2
    a_first = ra + 1.02 * (0.3 - ra + 1e-4) / 2
    b_first = 1.02 * (0.3 + 1e-4) / 2
    seen = set()
    for s in range(6):
        df = UniversalPerturbation(model, norm="l2", eps=1.0, method="deepfool", max_iter=1, generator=gen(s)).fit(
            x, mask=pad)
        d = float(df.delta[0, 0])
        assert float(df.delta[0, 1]) == pytest.approx(d, rel=1e-12)
        assert d == pytest.approx(a_first, rel=1e-9) or d == pytest.approx(b_first, rel=1e-9)
        seen.add(d == pytest.approx(a_first, rel=1e-9))
    assert seen == {True, False}


def test_a_shared_padding_mask_of_any_rank_is_the_same_mask_for_every_sample() -> None:
    """A (L,) or (C, L) padding mask is shared by the batch, never cut into per-sample rows (each sample's step
    is judged with the model seeing only the first two coordinates); a 0-dim mask of 1 masks nothing."""
    model = MaskLin([1.0, 1.0, 1.0, 1.0], -0.5)                 # class 1 iff the masked sum exceeds 0.5
    x = x_([0.2, 0.2, 9.0, 9.0], [0.15, 0.2, 9.0, 9.0], [0.0, 0.1, 9.0, 9.0])
    fits = {}
    for shape in ((4,), (1, 4), (1, 1, 4), (3, 1, 4)):
        m = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=D)
        fits[shape] = UniversalPerturbation(model, norm="linf", eps=0.1, method="fgsm", step_size=0.1,
                                            max_iter=1).fit(x, mask=m.expand(*shape[:-1], 4) if len(shape) > 1 else m)
    ref = fits[(3, 1, 4)]
    assert ref.fit_rate == pytest.approx(2 / 3)                     # 0.4 + 0.2 and 0.35 + 0.2 flip; 0.1 + 0.2 does not
    for shape, r in fits.items():
        assert torch.equal(r.delta, ref.delta) and r.fit_rate == ref.fit_rate, shape
    whole = UniversalPerturbation(model, norm="linf", eps=0.1, method="fgsm", step_size=0.1, max_iter=1)
    assert torch.equal(whole.fit(x, mask=torch.tensor(1.0)).delta, whole.fit(x).delta)


# ------------------------------------------------------------------------------------------ the FGSM loop in chunks
def _hirano_one_at_a_time(model: nn.Module, x: torch.Tensor, *, xi: float, eps_a: float, passes: int, seed: int,
                          target: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Hirano & Takemoto's loop written out plainly (one input at a time, L2 ball), for the chunked solver."""
    import torch.nn.functional as F

    g = gen(seed)
    clean = model(x).argmax(1)
    v, accepted = torch.zeros(x.shape[1:], dtype=x.dtype), []
    for _ in range(passes):
        acc = 0
        for i in torch.randperm(len(x), generator=g).tolist():
            xi1 = x[i: i + 1]
            pred = int(model(xi1 + v).argmax(1))
            if (pred != int(clean[i])) if target is None else pred == target:
                continue
            z = (xi1 + v).requires_grad_(True)
            lab = clean[i: i + 1] if target is None else torch.tensor([target])
            (grad,) = torch.autograd.grad(F.cross_entropy(model(z), lab), z)
            cand = v + (1.0 if target is None else -1.0) * eps_a * grad[0].sign()
            new = int(model(xi1 + cand).argmax(1))
            if (new != int(clean[i])) if target is None else new == target:
                v, acc = cand * min(1.0, xi / float(cand.norm())), acc + 1
        accepted.append(acc)
    return v.detach(), accepted


@pytest.mark.parametrize("target", [None, 2])
def test_the_fgsm_loop_tried_in_chunks_is_the_loop_one_input_at_a_time(target: int | None) -> None:
    """60 inputs near the boundaries of a 3-class linear model, small steps: many steps are kept in the middle of
    a chunk, so a chunk that kept a later step, skipped the inputs after the kept one or reused their stale
    checks would end elsewhere. Any chunk size gives the plain loop's perturbation and per-pass counts."""
    torch.manual_seed(0)
    model = Lin(torch.randn(3, 6, dtype=D).tolist(), [0.0, 0.0, 0.0])
    x = 0.3 * torch.randn(60, 1, 6, dtype=D)
    want, acc = _hirano_one_at_a_time(model, x, xi=0.6, eps_a=0.05, passes=3, seed=5, target=target)
    assert sum(acc) >= 10 and acc[0] >= 5  # the case is not vacuous
    for b in (1, 7, 64):
        res = UniversalPerturbation(model, norm="l2", eps=0.6, method="fgsm", step_size=0.05, max_iter=3,
                                    batch_size=b, target=target, generator=gen(5)).fit(x)
        torch.testing.assert_close(res.delta, want, rtol=1e-12, atol=1e-15)
        assert [h["accepted"] for h in res.history] == acc
    one = UniversalPerturbation(model, norm="l2", eps=0.6, method="fgsm", step_size=0.05, max_iter=3,
                                batch_size=1, target=target, generator=gen(5)).fit(x)
    many = UniversalPerturbation(model, norm="l2", eps=0.6, method="fgsm", step_size=0.05, max_iter=3,
                                 batch_size=64, target=target, generator=gen(5)).fit(x)
    # chunks re-try the inputs after a kept step, so they back-propagate more rows, in fewer calls
    assert many.grad_evals > one.grad_evals


class RowLog(nn.Module):
    """``s = x0 − 0.5`` (class 1 above 0.5), recording the rows of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        s = x.flatten(1)[:, 0] - 0.5
        return torch.stack([torch.zeros_like(s), s], 1)


def _chunk_sizes(order: list[int], todo: set[int], kept: bool) -> tuple[list[int], bool]:
    """Chunk sizes of one pass over the inputs ``todo`` (in ``order``) by the documented rule; input 0 is kept
    the first time it is tried."""
    out, size, rest = [], 1, [i for i in order if i in todo]
    while rest:
        chunk = rest[:size]
        out.append(len(chunk))
        if not kept and 0 in chunk:
            kept, rest, size = True, rest[chunk.index(0) + 1:], max(1, size // 2)
        else:
            rest, size = rest[len(chunk):], min(2 * size, 2)
    return out, kept


def test_fgsm_chunks_double_after_a_chunk_with_no_kept_step_and_halve_after_one() -> None:
    """One input at 0.45 flips with the step 0.1, nine at −5 never do. Every chunk is one forward with
    gradients (the check) and one of the candidates; the chunk doubles (1, 2, capped at batch_size = 2)
    while no step is kept, halves after the kept one, and the inputs after the kept one are tried again. In
    pass 2 only the inputs tried before the kept step (at the old v) are tried again."""
    x = torch.tensor([[0.45]] + [[-5.0]] * 9, dtype=D)
    seen_sizes = set()
    for seed in range(6):
        model = RowLog()
        g = gen(seed)
        order1, order2 = torch.randperm(10, generator=g).tolist(), torch.randperm(10, generator=g).tolist()
        res = UniversalPerturbation(model, norm="linf", eps=1.0, method="fgsm", step_size=0.1, max_iter=2,
                                    batch_size=2, generator=gen(seed)).fit(x)
        pass1, _ = _chunk_sizes(order1, set(range(10)), False)
        before = set(order1[: order1.index(0)])  # tried at v = 0 only
        pass2, _ = _chunk_sizes(order2, before, True)
        # forwards: the logit check (2 rows), clean predictions and the first rate (10 each), each chunk twice,
        # the rate after pass 1 (10); after pass 2 (no step kept) the rate is known
        assert model.rows == [2, 10, 10, *[r for c in pass1 for r in (c, c)], 10, *[r for c in pass2 for r in (c, c)]]
        assert [h["accepted"] for h in res.history] == [1, 0] and res.fit_rate == 0.1
        seen_sizes.add(tuple(pass1))
    assert len(seen_sizes) > 1
