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
        "fooling_goal": 1.0, "step_size": None, "batch_size": 64, "eval_batch_size": 1024, "kappa": 1.0,
        "overshoot": 0.02, "deepfool_iter": 10, "num_candidates": 10, "norm_channels": "all", "bounds": "auto",
        "resolved_bounds": None, "masked": True}
    assert repr(plain) == ("UniversalPerturbation(norm='l2', zeta=0.04, eps=None, method='batched', target=None, "
                           "max_iter=10, fooling_goal=1.0, step_size=None, batch_size=64, eval_batch_size=1024, "
                           "kappa=1.0, overshoot=0.02, deepfool_iter=10, num_candidates=10, norm_channels='all', "
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
