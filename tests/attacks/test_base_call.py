"""One call of the attack template end to end: the padding mask handed to the model, the clean forward's
errors, the label checks, the loss fallbacks (AutoAttack's DLR check, Croce & Hein, ICML 2020) and the
final threat-model check (Attack._finalize), each with hand-computed outputs and query counts.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from medrobust.attacks import Attack, AttackContext
from medrobust.errors import DataError

from ._base_helpers import Noop, exactly

from .test_base_context import MaskModel

F64 = torch.float64




class Emit(Attack):
    """Outputs a given batch (stored as every sample's final iterate) without checking it."""

    name = "emit"

    def __init__(self, model: Any, *, out: torch.Tensor, **threat_kwargs: Any) -> None:
        self.out = out
        super().__init__(model, **threat_kwargs)

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=False)
        out = self.out.to(ctx.x.dtype)
        ctx.record_final(act, out, ctx.forward(out, act.idx).detach(), overwrite=True)


# ------------------------------------------------------------------------------------------ the model's mask
@pytest.mark.parametrize(("xshape", "mshape", "seen"), [
    ((2, 2, 5), (2, 1, 1), (2, 1, 5)),    # per-record flag: expanded along time
    ((2, 2, 5), (1, 2, 1), (2, 2, 5)),    # per-lead flag shared by the batch
    ((2, 1, 2), (2, 1, 1), (2, 1, 2)),    # one lead, two samples
    ((2, 2, 5), (2, 1, 5), (2, 1, 5)),    # already a padding mask: handed over as it is
])
def test_the_call_mask_reaches_the_model_expanded_along_time(xshape: tuple[int, ...], mshape: tuple[int, ...],
                                                             seen: tuple[int, ...]) -> None:
    x = torch.arange(1.0, 1.0 + torch.Size(xshape).numel()).view(xshape)
    mask = (torch.arange(torch.Size(mshape).numel()).view(mshape) % 2 == 0).to(torch.float32)
    model = MaskModel()
    res = Noop(model, eps=0.1)(x, torch.tensor([0, 0]), mask=mask)
    assert len(model.masks) == 1  # the clean forward only
    got = model.masks[0]
    assert got is not None and got.shape == seen
    assert torch.equal(got, mask.expand(seen))
    s = (x * mask).flatten(1).sum(1)
    assert res.clean_pred.tolist() == torch.stack([s, -s], 1).argmax(1).tolist()
    assert res.queries_per_sample.tolist() == [1, 1]


class _Raises(torch.nn.Module):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


class ShapeTrouble(RuntimeError):
    pass


def test_a_model_that_cannot_take_the_batch_is_named_with_the_first_line_of_its_error() -> None:
    x = torch.zeros(2, 1, 4)
    y = torch.tensor([0, 1])
    with pytest.raises(DataError, match=exactly("the model _Raises cannot take a batch of shape (2, 1, 4): "
                                                "mat1 and mat2 shapes cannot be multiplied")):
        Noop(_Raises(RuntimeError("  mat1 and mat2 shapes cannot be multiplied\nsecond line  ")), eps=0.1)(x, y)
    with pytest.raises(DataError, match=exactly("the model _Raises cannot take a batch of shape (2, 1, 4): "
                                                "ShapeTrouble")):
        Noop(_Raises(ShapeTrouble("   ")), eps=0.1)(x, y)


# ------------------------------------------------------------------------------------------ labels
class Lin(torch.nn.Module):
    """``K`` logits, a fixed linear map of 3 features (class ``k`` wins for ``x = e_k``)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(3, k) * 4.0 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_soft_labels_are_checked_and_reduced_to_their_argmax() -> None:
    x = torch.eye(3)
    soft = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.4, 0.3]])
    res = Noop(Lin(3), eps=0.1)(x, soft)
    assert res.y.tolist() == [2, 0, 1] and torch.equal(res.soft_y, soft)
    assert res.success.tolist() == [True, True, True]  # predictions 0, 1, 2 against labels 2, 0, 1
    with pytest.raises(DataError, match=exactly("soft labels y have 3 columns but the model has 4 logits.")):
        Noop(Lin(4), eps=0.1)(x, soft)


def test_labels_outside_the_classes_are_named() -> None:
    x = torch.eye(3)
    atk = Noop(Lin(3), eps=0.1)
    for bad in ([0, 1, 3], [0, -1, 2]):
        with pytest.raises(DataError, match=exactly("y holds class indices outside [0, 3) for a model with 3 logits.")):
            atk(x, torch.tensor(bad))
        with pytest.raises(DataError, match=exactly("target holds class indices outside [0, 3) for a model with 3 "
                                                    "logits.")):
            atk(x, torch.tensor([0, 1, 2]), target=torch.tensor(bad))
    res = atk(x, torch.tensor([0, 1, 2]), target=torch.tensor([2, 1, 0]))
    assert res.targeted and res.success.tolist() == [False, True, False]


# ------------------------------------------------------------------------------------------ the loss
# Under mutation testing (mutmut) every call of a mutated function passes through extra wrapper frames
# ("trampolines"), which moves every warning's ``stacklevel`` target; the call-site checks run in the plain suite.
INSTRUMENTED = hasattr(Attack._resolve_loss, "__wrapped__")

DLR = ("the DLR loss needs at least 4 classes and the model has {k}; using the logit margin loss instead "
       "(Croce & Hein 2020; AutoAttack check_n_classes).")


def test_dlr_falls_back_to_the_margin_below_four_classes_with_a_warning_at_the_call_site() -> None:
    for k in (2, 3):
        atk = Noop(Lin(k), eps=0.1, loss="dlr")
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            res = atk(torch.eye(3)[:, :3], torch.zeros(3, dtype=torch.long))
        assert [str(w.message) for w in rec] == [DLR.format(k=k)]
        assert rec[0].category is UserWarning
        assert INSTRUMENTED or rec[0].filename == __file__  # the user's line, not base.py
        assert res.config["loss"] == "margin"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = Noop(Lin(4), eps=0.1, loss="dlr")(torch.eye(3), torch.zeros(3, dtype=torch.long))
        assert res.config["loss"] == "dlr"
        for loss in ("ce", "margin", "kl"):
            assert Noop(Lin(2), eps=0.1, loss=loss)(torch.eye(3), torch.zeros(3, dtype=torch.long)).config["loss"] == loss


def test_cw_is_the_margin_loss_and_callables_pass_through() -> None:
    x = torch.eye(3)
    y = torch.zeros(3, dtype=torch.long)
    atk = Noop(Lin(3), eps=0.1, loss="cw")
    assert atk.config()["loss"] == "cw" and atk(x, y).config["loss"] == "margin"

    def mine(z: torch.Tensor, y: torch.Tensor, target: Any) -> torch.Tensor:
        return z[:, 0]

    res = Noop(Lin(3), eps=0.1, loss=mine)(x, y)
    assert res.config["loss"].endswith("mine")


# ------------------------------------------------------------------------------------------ the final check
def test_final_check_repairs_exactly_the_samples_that_break_the_norm_the_mask_or_the_bounds() -> None:
    x = torch.tensor([[[0.5, 0.5, 0.5, 0.5]],
                      [[0.5, 0.5, 0.5, 0.5]],
                      [[0.875, 0.875, 0.875, 0.875]],
                      [[0.25, 0.75, 0.5, 0.5]]], dtype=F64)
    out = torch.tensor([[[0.8, 0.5, 0.5, 0.5]],      # L∞ 0.3 > ε only
                        [[0.5, 0.5, 0.5, 0.6]],      # touches the frozen coordinate only (by 0.1)
                        [[1.125, 0.875, 0.875, 0.875]],  # leaves the bounds only
                        [[0.0, 1.0, 0.6, 0.5]]],     # admissible: ‖δ‖∞ = ε exactly, at lo and at hi
                       dtype=F64)
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=F64)
    model = MaskModel()
    res = Emit(model, out=out, eps=0.25, bounds=(0.0, 1.0), mask=mask)(x, torch.zeros(4, dtype=torch.long))
    want = torch.tensor([[[0.75, 0.5, 0.5, 0.5]],
                         [[0.5, 0.5, 0.5, 0.5]],
                         [[1.0, 0.875, 0.875, 0.875]],
                         [[0.0, 1.0, 0.6, 0.5]]], dtype=F64)
    torch.testing.assert_close(res.x_adv, want, rtol=0, atol=0)
    assert res.queries_per_sample.tolist() == [2, 2, 2, 1] and res.queries == 7
    assert res.norms.tolist() == [0.25, 0.0, 0.125, 0.25]
    assert model.masks[-1] is None
    s = want.flatten(1).sum(1)
    assert res.adv_pred.tolist() == torch.stack([s, -s], 1).argmax(1).tolist()


def test_final_check_reevaluates_with_the_repaired_samples_own_padding_masks() -> None:
    x = torch.full((3, 1, 4), -0.125, dtype=F64)
    call_mask = torch.tensor([[[1.0, 1, 1, 1]], [[1.0, 1, 0, 0]], [[1.0, 0, 0, 0]]], dtype=F64)
    out = x.clone()
    out[1, 0, 0] = 3.0
    model = MaskModel()
    res = Emit(model, out=out, eps=0.5)(x, torch.ones(3, dtype=torch.long), mask=call_mask)
    assert res.x_adv[:, 0, 0].tolist() == [-0.125, 0.375, -0.125]
    assert torch.equal(model.masks[-1], call_mask[[1]])  # re-evaluated: sample 1 only, with its own mask
    assert res.queries_per_sample.tolist() == [1, 2, 1]
    assert res.adv_pred.tolist() == [1, 0, 1]  # masked sums -0.5, 0.375 - 0.125, -0.125


def test_final_check_uses_the_exact_l2_norm() -> None:
    """A float32 output whose float32 L2 norm rounds one ulp above ε while its exact norm is ε is admissible."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        d = torch.rand(1, 1, 6, generator=g)
        eps = float(d.flatten(1).double().norm(dim=1).float())
        if float(d.flatten(1).norm(dim=1)) > eps:
            break
    else:
        pytest.fail("no float32 vector with a rounded-up norm among 200 draws")
    model = MaskModel()
    res = Emit(model, out=d, eps=eps, norm="l2")(torch.zeros(1, 1, 6), torch.ones(1, dtype=torch.long))
    assert torch.equal(res.x_adv, d) and res.queries_per_sample.tolist() == [1]


class _Float32Out(Attack):
    name = "float32_out"

    def _run(self, ctx: AttackContext) -> None:
        ctx.x_out = ctx.x_out.float()


def test_the_output_keeps_the_input_dtype() -> None:
    x = torch.full((2, 1, 3), 0.1, dtype=F64)
    res = _Float32Out(MaskModel(), eps=0.1)(x, torch.zeros(2, dtype=torch.long))
    assert res.x_adv.dtype == F64 and torch.equal(res.x_adv, x.float().double())
