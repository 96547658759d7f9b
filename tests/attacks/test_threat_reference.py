"""ThreatModel and its helpers against hand-computed values (float64, tiny tensors).

The ε-ball threat model and its projection follow Madry et al., "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018: the L∞ projection clips every coordinate to
``[-ε, ε]``, the L2 projection rescales a perturbation radially onto the sphere only when it lies
outside the ball, and the steepest-ascent direction of the dual norm is ``sign(g)`` (L∞) or
``g / ‖g‖₂`` (L2). Relative radii (peak-to-peak, SNR in dB) follow Ma & Liang, Comput. Biol. Med.
2022. Error messages are matched whole (anchored, case-sensitive) because they are the user
interface of bad input.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from medrobust.attacks import ThreatModel
from medrobust.attacks.threat import add_toward, lp_norm, project, steepest_direction
from medrobust.errors import ConfigError, DataError

F64 = torch.float64


def _t(values, dtype=F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _msg(text: str) -> str:
    """An anchored regular expression matching exactly ``text``."""
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------------------------
# lp_norm


def test_lp_norm_hand_values_shape_and_dtype() -> None:
    d = _t([[[3.0, -4.0]], [[-1.0, 0.5]]])  # (2, 1, 2)
    linf = lp_norm(d, "linf")
    assert linf.shape == (2,) and linf.dtype == F64
    assert linf.tolist() == [4.0, 1.0]
    l2 = lp_norm(d, "l2")
    assert l2.shape == (2,) and l2.dtype == F64
    assert l2.tolist() == [5.0, math.sqrt(1.25)]  # a 3-norm would give 4.497... and 1.040...
    l2e = lp_norm(d, "l2", exact=True)
    assert l2e.shape == (2,) and l2e.tolist() == [5.0, math.sqrt(1.25)]


def test_lp_norm_single_and_zero_coordinates() -> None:
    one = _t([[-2.0], [0.5], [3.0]])  # one coordinate per sample: |δ|
    assert lp_norm(one, "linf").tolist() == [2.0, 0.5, 3.0]
    empty = torch.zeros(3, 0, dtype=F64)  # no coordinate at all: the norm is 0, not an error
    out = lp_norm(empty, "linf")
    assert out.shape == (3,) and out.dtype == F64 and out.tolist() == [0.0, 0.0, 0.0]


def test_lp_norm_exact_accumulates_in_float64_but_returns_input_dtype() -> None:
    # 1e20 squared overflows float32 (max 3.4e38); the float64 accumulation does not, and
    # sqrt(2)·1e20 is representable in float32 again.
    d = torch.tensor([[1e20, 1e20], [3.0, 4.0]], dtype=torch.float32)
    exact = lp_norm(d, "l2", exact=True)
    assert exact.dtype == torch.float32
    assert exact[0].item() == torch.tensor(math.sqrt(2.0) * 1e20, dtype=torch.float32).item()
    assert exact[1].item() == 5.0
    # the default is the fast path in the input's dtype (documented: exact is for reporting)
    fast = lp_norm(d, "l2")
    assert fast.dtype == torch.float32 and math.isinf(fast[0].item()) and fast[1].item() == 5.0


# --------------------------------------------------------------------------------------------
# project (Madry et al. 2018: Π onto the ε-ball)


def test_linf_projection_clips_each_coordinate() -> None:
    d = _t([[[2.0, -3.0, 0.5, -0.25]], [[0.1, -0.1, 0.0, 5.0]]])
    e = _t([1.0, 0.05])
    p = project(d, e, "linf")
    assert p.dtype == F64 and p.shape == d.shape
    assert p.tolist() == [[[1.0, -1.0, 0.5, -0.25]], [[0.05, -0.05, 0.0, 0.05]]]


def test_l2_projection_rescales_radially_only_outside() -> None:
    # sample 0: ‖δ‖ = 0.5 > ε = 0.1 (a norm below 1), sample 1: ‖δ‖ = 5 > ε = 1,
    # sample 2: ‖δ‖ = 5 < 10 -> unchanged. Each sample uses its own norm.
    d = _t([[0.3, 0.4], [3.0, -4.0], [-3.0, 4.0]])
    e = _t([0.1, 1.0, 10.0])
    p = project(d, e, "l2")
    assert p.shape == d.shape and p.dtype == F64
    torch.testing.assert_close(p[0], _t([0.06, 0.08]), rtol=1e-14, atol=0)
    torch.testing.assert_close(p[1], _t([0.6, -0.8]), rtol=1e-14, atol=0)
    assert p[2].tolist() == [-3.0, 4.0]
    # the direction is kept and the result lies strictly inside the ball
    n = p.norm(dim=1)
    assert bool((n[:2] < e[:2]).all()) and bool((n[:2] > e[:2] * (1 - 1e-14)).all())


def test_l2_projection_shrinks_by_exactly_eight_rounding_units() -> None:
    # float32: factor = (ε·(1 − 8·2⁻²³)) / ‖δ‖ = 1 − 2⁻²⁰ exactly, so the result is exact
    d = torch.tensor([[3.0, 4.0]])
    p = project(d, torch.tensor([5.0]), "l2")
    assert p.dtype == torch.float32
    assert p.tolist() == [[3.0 - 3.0 * 2.0**-20, 4.0 - 2.0**-18]]
    assert float(p.double().norm()) < 5.0


def test_l2_projection_onto_unbounded_ball_is_identity() -> None:
    d = _t([[math.inf, 0.0], [1e300, 1e300]])
    p = project(d, _t([math.inf, math.inf]), "l2")
    assert p.tolist() == d.tolist()


# --------------------------------------------------------------------------------------------
# add_toward


def test_add_toward_is_plain_addition_when_exact() -> None:
    x = _t([1.0, -2.0, 0.0, 3.0])
    delta = _t([0.5, 0.25, -0.125, 0.0])
    out = add_toward(x, delta)
    assert out.tolist() == [1.5, -1.75, -0.125, 3.0]


def test_add_toward_moves_a_rounded_sum_one_ulp_back() -> None:
    # float32: 1 + 3·2⁻²⁴ rounds (to even) to 1 + 2⁻²², i.e. |out − x| = 4·2⁻²⁴ > |δ|
    x = torch.tensor([1.0])
    delta = torch.tensor([3.0 * 2.0**-24])
    assert ((x + delta) - x).item() > delta.item()
    out = add_toward(x, delta)
    assert out.item() == 1.0 + 2.0**-23
    assert (out - x).abs().item() <= delta.item()


# --------------------------------------------------------------------------------------------
# steepest_direction


def test_steepest_direction_linf_is_sign() -> None:
    g = _t([[[0.003, -20.0, 0.0]], [[-1e-9, 4.0, 2.0]]])
    s = steepest_direction(g, "linf")
    assert s.tolist() == [[[1.0, -1.0, 0.0]], [[-1.0, 1.0, 1.0]]]


def test_steepest_direction_l2_is_unit_gradient() -> None:
    g = _t([[0.03, -0.04], [30.0, 40.0], [0.0, 0.0]])
    s = steepest_direction(g, "l2")
    torch.testing.assert_close(s, _t([[0.6, -0.8], [0.6, 0.8], [0.0, 0.0]]), rtol=1e-15, atol=0)
    assert s.shape == g.shape and s.dtype == F64
    assert not bool(torch.isnan(s).any())  # a zero gradient gives a zero direction, not NaN


# --------------------------------------------------------------------------------------------
# __post_init__: canonical values stored


@pytest.mark.parametrize(("alias", "canonical"), [("Linf", "linf"), (math.inf, "linf"), ("L2", "l2"), (2, "l2")])
def test_norm_alias_is_stored_canonical(alias, canonical) -> None:
    assert ThreatModel(eps=0.1, norm=alias).norm == canonical


def test_eps_stored_as_float_or_detached_float64_tensor() -> None:
    tm = ThreatModel(eps=1)
    assert type(tm.eps) is float and tm.eps == 1.0
    src = torch.tensor([0.5, 0.25], dtype=torch.float32, requires_grad=True)
    tm = ThreatModel(eps=src)
    assert isinstance(tm.eps, torch.Tensor) and tm.eps.dtype == F64 and not tm.eps.requires_grad
    assert tm.eps.tolist() == [0.5, 0.25]
    tm = ThreatModel(eps=torch.tensor([3, 4]))  # integer tensors are converted too
    assert tm.eps.dtype == F64 and tm.eps.tolist() == [3.0, 4.0]


def test_bounds_stored_as_converted_pair() -> None:
    tm = ThreatModel(eps=0.1, bounds=[0, 1])
    assert isinstance(tm.bounds, tuple) and tm.bounds == (0.0, 1.0)
    assert type(tm.bounds[0]) is float and type(tm.bounds[1]) is float
    lo = torch.tensor([-1.0, -2.0], requires_grad=True)
    tm = ThreatModel(eps=0.1, bounds=(lo, torch.tensor([1, 2])))
    assert tm.bounds[0].dtype == F64 and tm.bounds[1].dtype == F64 and not tm.bounds[0].requires_grad
    assert tm.bounds[1].tolist() == [1.0, 2.0]


def test_mask_stored_detached() -> None:
    m = torch.ones(1, 2, 1, requires_grad=True)
    tm = ThreatModel(eps=0.1, mask=m)
    assert isinstance(tm.mask, torch.Tensor) and not tm.mask.requires_grad and tm.mask.shape == (1, 2, 1)


def test_bounds_order_checked_in_float64() -> None:
    # these pairs are ordered in float64 but not after rounding to float32
    ThreatModel(eps=0.1, bounds=(0.1, 0.1 + 1e-12))  # float32(0.1) rounds up
    ThreatModel(eps=0.1, bounds=(0.7 - 1e-12, 0.7))  # float32(0.7) rounds down


def test_snr_db_allows_non_positive_eps() -> None:
    assert ThreatModel(eps=0.0, eps_mode="snr_db").eps == 0.0
    tm = ThreatModel(eps=torch.tensor([-3.0, 0.0]), eps_mode="snr_db")
    assert tm.eps.tolist() == [-3.0, 0.0]


# --------------------------------------------------------------------------------------------
# __post_init__ / _as_float_tensor: exact error messages


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": None}, "eps is required: pass eps=<radius> (or threat=ThreatModel(eps=...))."),
        ({"eps": 0.1, "eps_mode": "rel"}, "eps_mode must be one of ('abs', 'ptp', 'snr_db'), got 'rel'."),
        ({"eps": "0.1"}, "eps must be a float or a tensor, got str."),
        ({"eps": True}, "eps must be a float or a tensor, got bool."),
        ({"eps": torch.tensor([True])}, "eps must be a real number tensor, got dtype torch.bool."),
        ({"eps": torch.tensor([1 + 1j])}, "eps must be a real number tensor, got dtype torch.complex64."),
        ({"eps": torch.ones(2, 1)}, "a tensor eps must be per-sample with shape (N,), got (2, 1)."),
        ({"eps": torch.tensor([0.1, math.nan])}, "eps contains NaN or inf; pass finite radii."),
        ({"eps": torch.tensor([0.1, -0.5])}, "eps must be > 0 for every sample, got min -0.5."),
        ({"eps": torch.tensor([0.0]), "eps_mode": "ptp"}, "eps must be > 0 for every sample, got min 0.0."),
        ({"eps": math.inf}, "eps must be finite, got inf."),
        ({"eps": -1}, "eps must be > 0, got -1.0. Pass a positive radius in input units."),
        ({"eps": 0.1, "bounds": 1.0}, "bounds must be None or a pair (lo, hi), got 1.0."),
        ({"eps": 0.1, "bounds": (0.0, 1.0, 2.0)}, "bounds must be None or a pair (lo, hi), got (0.0, 1.0, 2.0)."),
        ({"eps": 0.1, "bounds": ("0", 1.0)}, "bounds[0] must be a float or a tensor, got str."),
        ({"eps": 0.1, "bounds": (0.0, None)}, "bounds[1] must be a float or a tensor, got NoneType."),
        ({"eps": 0.1, "bounds": (1.0, 1.0)}, "bounds need lo < hi everywhere, got (1.0, 1.0)."),
        ({"eps": 0.1, "bounds": (torch.zeros(2), torch.ones(3))},
         "bounds lo and hi have shapes that do not broadcast."),
        ({"eps": 0.1, "mask": [1, 0]}, "mask must be a tensor (bool or 0/1), got list."),
    ],
)
def test_constructor_error_messages(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=_msg(message)):
        ThreatModel(**kwargs)


def test_bounds_equal_somewhere_is_refused() -> None:
    lo, hi = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    with pytest.raises(ConfigError, match=r"^bounds need lo < hi everywhere, got "):
        ThreatModel(eps=0.1, bounds=(lo, hi))


# --------------------------------------------------------------------------------------------
# describe


def test_describe_small_values() -> None:
    tm = ThreatModel(eps=torch.tensor([0.5] * 16), norm="L2", eps_mode="ptp",
                     bounds=(torch.tensor([-1.0, -2.0]), 3), mask=torch.ones(1, 2, 1))
    assert tm.describe() == {
        "norm": "l2",
        "eps": [0.5] * 16,
        "eps_mode": "ptp",
        "bounds": [[-1.0, -2.0], 3.0],
        "mask": "tensor(1, 2, 1)",
    }


def test_describe_large_tensors_and_defaults() -> None:
    tm = ThreatModel(eps=torch.full((17,), 0.5), bounds=(torch.zeros(17), torch.ones(17)))
    assert tm.describe() == {
        "norm": "linf",
        "eps": "tensor(17,)",
        "eps_mode": "abs",
        "bounds": ["tensor(17,)", "tensor(17,)"],
        "mask": None,
    }
    assert ThreatModel(eps=0.25, eps_mode="snr_db").describe() == {
        "norm": "linf", "eps": 0.25, "eps_mode": "snr_db", "bounds": None, "mask": None,
    }


# --------------------------------------------------------------------------------------------
# combined_mask


def test_combined_mask_product_dtype_and_view() -> None:
    x = torch.zeros(2, 2, 3, dtype=F64)
    tm = ThreatModel(eps=0.1, mask=torch.tensor([True, False]).view(2, 1))
    call = torch.tensor([[[0, 1, 1]], [[1, 1, 0]]], dtype=torch.bool)  # (N, 1, L), bool
    m = tm.combined_mask(x, call)
    assert m.dtype == F64 and m.shape == (2, 2, 3)
    assert m.tolist() == [[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]
    # the threat model's own mask alone: viewed with leading ones, in x's dtype
    only = tm.combined_mask(x)
    assert only.dtype == F64 and only.shape == (1, 2, 1) and only.flatten().tolist() == [1.0, 0.0]
    # a per-call mask alone
    plain = ThreatModel(eps=0.1)
    assert plain.combined_mask(x) is None
    alone = plain.combined_mask(x, torch.tensor([0, 1, 0]))
    assert alone.dtype == F64 and alone.shape == (1, 1, 3) and alone.flatten().tolist() == [0.0, 1.0, 0.0]


def test_combined_mask_zero_times_one_is_zero() -> None:
    x = torch.zeros(1, 2, 1, dtype=F64)
    tm = ThreatModel(eps=0.1, mask=torch.tensor([1.0, 0.0]).view(2, 1))
    m = tm.combined_mask(x, torch.tensor([0.0, 1.0]).view(2, 1))
    assert m.flatten().tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("tm_mask", "mask", "x_shape", "error", "message"),
    [
        (None, [1, 0], (2, 2, 3), ConfigError, "mask must be a tensor (bool or 0/1), got list."),
        (torch.ones(1, 1, 1, 3), None, (2, 2, 3), DataError,
         "ThreatModel.mask has 4 dims but the batch has 3; it must broadcast to (2, 2, 3)."),
        (None, torch.ones(1, 1, 1, 3), (2, 2, 3), DataError,
         "mask has 4 dims but the batch has 3; it must broadcast to (2, 2, 3)."),
        (torch.ones(4, 1), None, (2, 2, 3), DataError,
         "ThreatModel.mask of shape (1, 4, 1) does not broadcast to the batch (2, 2, 3); "
         "use e.g. (1, leads, 1) for leads or (N, 1, samples) for padded records."),
        (None, torch.ones(3, 1, 1), (1, 2, 5), DataError,
         "mask has first dimension 3; it must be 1 or the batch size 1."),
        (torch.full((1, 3), 0.5), None, (2, 2, 3), DataError,
         "ThreatModel.mask must contain only 0/1 (or bool) values."),
    ],
)
def test_combined_mask_error_messages(tm_mask, mask, x_shape, error, message) -> None:
    tm = ThreatModel(eps=0.1, mask=tm_mask)
    with pytest.raises(error, match=_msg(message)):
        tm.combined_mask(torch.zeros(x_shape), mask)


# --------------------------------------------------------------------------------------------
# bounds_for / check_inside


def test_bounds_for_scalars_keep_x_dtype_and_stay_0_dim() -> None:
    x = torch.zeros(2, 1, 4, dtype=F64)
    lo, hi = ThreatModel(eps=0.1, bounds=(0.1, 0.9)).bounds_for(x)
    assert lo.dtype == F64 and hi.dtype == F64 and lo.shape == () and hi.shape == ()
    assert lo.item() == 0.1 and hi.item() == 0.9  # no float32 rounding on the way
    x16 = torch.zeros(2, 1, 4, dtype=torch.float16)
    lo, hi = ThreatModel(eps=0.1, bounds=(torch.tensor(-1.0), torch.tensor(1.0))).bounds_for(x16)
    assert lo.dtype == torch.float16 and hi.dtype == torch.float16
    assert ThreatModel(eps=0.1).bounds_for(x) is None


def test_bounds_for_layouts() -> None:
    x = torch.zeros(2, 3, 4, dtype=F64)
    # one value per channel (length C) -> (1, C, 1)
    lo, hi = ThreatModel(eps=0.1, bounds=(_t([-1.0, -2.0, -3.0]), 5.0)).bounds_for(x)
    assert lo.shape == (1, 3, 1) and lo.flatten().tolist() == [-1.0, -2.0, -3.0] and hi.shape == ()
    # one value per time sample (length L != C) -> trailing layout (1, 1, L)
    lo, _ = ThreatModel(eps=0.1, bounds=(_t([-1.0, -2.0, -3.0, -4.0]), 5.0)).bounds_for(x)
    assert lo.shape == (1, 1, 4) and lo.flatten().tolist() == [-1.0, -2.0, -3.0, -4.0]
    # a (1, C)-shaped tensor is a trailing layout, not a per-channel one, even when C == L
    xs = torch.zeros(2, 3, 3, dtype=F64)
    lo, _ = ThreatModel(eps=0.1, bounds=(_t([[0.0, 1.0, 2.0]]), 5.0)).bounds_for(xs)
    assert lo.shape == (1, 1, 3) and lo[0, 0].tolist() == [0.0, 1.0, 2.0]
    # a full per-sample bound (C, L) -> (1, C, L)
    full = torch.arange(12, dtype=F64).view(3, 4) - 20.0
    lo, _ = ThreatModel(eps=0.1, bounds=(full, 5.0)).bounds_for(x)
    assert lo.shape == (1, 3, 4) and torch.equal(lo[0], full)
    # already with the leading 1
    lo, _ = ThreatModel(eps=0.1, bounds=(full.view(1, 3, 4), 5.0)).bounds_for(x)
    assert lo.shape == (1, 3, 4)
    # 2-D batches (N, features): one value per feature
    x2 = torch.zeros(2, 3, dtype=F64)
    lo, _ = ThreatModel(eps=0.1, bounds=(_t([-1.0, -2.0, -3.0]), 5.0)).bounds_for(x2)
    assert lo.shape == (1, 3) and lo.flatten().tolist() == [-1.0, -2.0, -3.0]


_BOUNDS_TAIL = " does not broadcast to one sample of shape (3, 4); use scalars or one value per channel (3)."


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ((torch.zeros(5), 1.0),
         "bounds lo of shape (5,)" + _BOUNDS_TAIL),
        ((0.0, torch.ones(5)),
         "bounds hi of shape (5,)" + _BOUNDS_TAIL),
        ((torch.zeros(2, 3, 4) - 1, 1.0),  # a batch-shaped bound is not a per-sample bound
         "bounds lo of shape (2, 3, 4)" + _BOUNDS_TAIL),
        ((torch.zeros(1, 1, 3, 4) - 1, 1.0),  # more dims than the batch
         "bounds lo of shape (1, 1, 3, 4)" + _BOUNDS_TAIL),
    ],
)
def test_bounds_for_error_messages(bounds, message) -> None:
    with pytest.raises(ConfigError, match=_msg(message)):
        ThreatModel(eps=0.1, bounds=bounds).bounds_for(torch.zeros(2, 3, 4))


def test_outputs_follow_x_device() -> None:
    # the meta device stands in for an accelerator: results must live where x lives
    x = torch.empty(2, 3, 4, device="meta")
    lo, hi = ThreatModel(eps=0.1, bounds=(0.0, 1.0)).bounds_for(x)
    assert lo.device.type == "meta" and hi.device.type == "meta"
    assert ThreatModel(eps=0.1).resolve_eps(x).device.type == "meta"
    assert ThreatModel(eps=torch.tensor([0.1, 0.2])).resolve_eps(x).device.type == "meta"


def test_check_inside() -> None:
    tm = ThreatModel(eps=0.1, bounds=(0.0, 1.0))
    tm.check_inside(_t([[[0.0, 1.0]]]))  # the closed box: endpoints are inside
    ThreatModel(eps=0.1).check_inside(_t([[[-5.0, 5.0]]]))
    message = ("the input batch leaves the bounds (min -0.5, max 0.75); "
               "pass bounds=None for unbounded signals or bounds that contain the data.")
    with pytest.raises(DataError, match=_msg(message)):
        tm.check_inside(_t([[[-0.5, 0.75]]]))
    with pytest.raises(DataError, match=r"^the input batch leaves the bounds \(min 0, max 1\.5\)"):
        tm.check_inside(_t([[[0.0, 1.5]]]))


# --------------------------------------------------------------------------------------------
# resolve_eps


def test_abs_eps_float64_then_x_dtype() -> None:
    x = torch.zeros(3, 1, 2, dtype=F64)
    e = ThreatModel(eps=0.1).resolve_eps(x)
    assert e.dtype == F64 and e.shape == (3,) and e.tolist() == [0.1] * 3  # not float32(0.1)
    e32 = ThreatModel(eps=0.1).resolve_eps(x.float())
    assert e32.dtype == torch.float32 and e32.tolist() == [torch.tensor(0.1).item()] * 3


@pytest.mark.parametrize("eps", [torch.tensor(0.2, dtype=F64), torch.tensor([0.2], dtype=F64)])
def test_single_tensor_eps_expanded_to_batch(eps) -> None:
    x = torch.zeros(3, 1, 2, dtype=F64)
    e = ThreatModel(eps=eps).resolve_eps(x)
    assert e.shape == (3,) and e.dtype == F64 and e.tolist() == [0.2] * 3


def test_per_sample_eps_count_mismatch() -> None:
    with pytest.raises(DataError, match=_msg("eps has 2 per-sample values but the batch has 3 samples.")):
        ThreatModel(eps=torch.tensor([0.1, 0.2])).resolve_eps(torch.zeros(3, 1, 2))


def test_ptp_masked_peak_excluded_and_l2_scaling() -> None:
    # sample 0: masked coordinates [0, 1, 3] -> values (0, 1, 0.5), the 9.0 is excluded: ptp 1
    # sample 1: values (-2, 0, 2) with -7 excluded: ptp 4
    x = _t([[[0.0, 1.0, 9.0, 0.5]], [[-2.0, 0.0, -7.0, 2.0]]])
    mask = torch.tensor([[[True, True, False, True]]])  # any mask dtype; counts computed in float64
    tm = ThreatModel(eps=0.1, eps_mode="ptp")
    e = tm.resolve_eps(x, mask)
    assert e.dtype == F64 and e.tolist() == [0.1 * 1.0, 0.1 * 4.0]
    l2 = ThreatModel(eps=0.1, norm="l2", eps_mode="ptp").resolve_eps(x, mask)
    assert l2.tolist() == [0.1 * 1.0 * math.sqrt(3.0), 0.1 * 4.0 * math.sqrt(3.0)]
    # without a mask every coordinate counts
    assert tm.resolve_eps(x).tolist() == [0.1 * 9.0, 0.1 * 9.0]


def test_ptp_constant_sample_refused() -> None:
    x = _t([[[0.0, 1.0]], [[2.0, 2.0]]])
    message = "eps_mode='ptp' needs non-constant samples (peak-to-peak amplitude 0 found)."
    with pytest.raises(DataError, match=_msg(message)):
        ThreatModel(eps=0.1, eps_mode="ptp").resolve_eps(x)
    # constant over the mask only
    with pytest.raises(DataError, match=_msg(message)):
        ThreatModel(eps=0.1, eps_mode="ptp").resolve_eps(_t([[[1.0, 1.0, 3.0]]]), _t([[[1.0, 1.0, 0.0]]]))


def test_empty_mask_refused() -> None:
    message = "the mask leaves no coordinate to perturb for some samples; check the mask."
    mask = _t([[[1.0, 1.0]], [[0.0, 0.0]]])
    for mode in ("ptp", "snr_db"):
        with pytest.raises(DataError, match=_msg(message)):
            ThreatModel(eps=0.1, eps_mode=mode).resolve_eps(_t([[[0.0, 1.0]], [[1.0, 2.0]]]), mask)


def test_snr_power_over_mask() -> None:
    # sample 0: masked values (1, -1, 1) -> mean square 1; the 10.0 is excluded
    # sample 1: masked values (0.5, 0.5, -0.5) -> mean square 0.25 (power < 1 is allowed)
    x = _t([[[1.0, -1.0, 10.0, 1.0]], [[0.5, 0.5, 3.0, -0.5]]])
    mask = _t([[[1.0, 1.0, 0.0, 1.0]]])
    tm = ThreatModel(eps=20.0, eps_mode="snr_db")
    e = tm.resolve_eps(x, mask)
    assert e.dtype == F64 and e.shape == (2,)
    torch.testing.assert_close(e, _t([0.1, 0.05]), rtol=1e-15, atol=0)
    l2 = ThreatModel(eps=20.0, norm="l2", eps_mode="snr_db").resolve_eps(x, mask)
    torch.testing.assert_close(l2, _t([0.1, 0.05]) * math.sqrt(3.0), rtol=1e-15, atol=0)
    # 0 dB: the radius is the RMS itself; float32 x gives a float32 radius
    e0 = ThreatModel(eps=0.0, eps_mode="snr_db").resolve_eps(x.float(), mask.float())
    assert e0.dtype == torch.float32 and e0.tolist() == [1.0, 0.5]


def test_snr_all_zero_sample_refused() -> None:
    message = "eps_mode='snr_db' needs samples with non-zero power (an all-zero sample was found)."
    with pytest.raises(DataError, match=_msg(message)):
        ThreatModel(eps=10.0, eps_mode="snr_db").resolve_eps(_t([[[1.0, 2.0]], [[0.0, 0.0]]]))
    with pytest.raises(DataError, match=_msg(message)):  # zero over the mask only
        ThreatModel(eps=10.0, eps_mode="snr_db").resolve_eps(_t([[[0.0, 2.0]]]), _t([[[1.0, 0.0]]]))


# --------------------------------------------------------------------------------------------
# constrain


def test_constrain_masks_projects_and_clips() -> None:
    x = _t([[[0.5, 0.5, 0.5]]])
    delta = _t([[[2.0, -2.0, 2.0]]])
    mask = _t([[[1.0, 1.0, 0.0]]])
    eps = _t([0.25])
    tm = ThreatModel(eps=0.25, bounds=(0.0, 0.625))
    out = tm.constrain(x, delta, eps, mask, tm.bounds_for(x))
    # masked (δ = 0 at the last coordinate), L∞-clipped to ±0.25, then clipped to [0, 0.625]
    assert out.tolist() == [[[0.625, 0.25, 0.5]]]
    # without bounds the L∞ clip alone
    assert tm.constrain(x, delta, eps, mask, None).tolist() == [[[0.75, 0.25, 0.5]]]
    # lower bound active, no mask
    low = ThreatModel(eps=0.25, bounds=(0.375, 1.0))
    out = low.constrain(x, -delta, eps, None, low.bounds_for(x))
    assert out.tolist() == [[[0.375, 0.75, 0.375]]]


def test_constrain_l2_ball_and_masked_zero_stays() -> None:
    x = torch.zeros(1, 1, 3, dtype=F64)
    delta = _t([[[3.0, 4.0, 7.0]]])
    mask = _t([[[1.0, 1.0, 0.0]]])
    tm = ThreatModel(eps=1.0, norm="l2")
    out = tm.constrain(x, delta, _t([1.0]), mask, None)
    torch.testing.assert_close(out, _t([[[0.6, 0.8, 0.0]]]), rtol=1e-14, atol=0)
    assert out[0, 0, 2].item() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (a CPU-only machine has one device)")
def test_combined_mask_moves_to_x_device() -> None:
    # a mask given on the CPU is applied to a batch on the accelerator: it must follow x
    x = torch.zeros(2, 2, 3, device="cuda")
    tm = ThreatModel(eps=0.1, mask=torch.tensor([1.0, 0.0]).view(2, 1))
    m = tm.combined_mask(x, torch.tensor([1, 1, 0]))
    assert m.device == x.device and m.dtype == x.dtype
    assert m.cpu().flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
