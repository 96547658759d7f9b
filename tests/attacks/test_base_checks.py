"""The attack template's input checks, each error message word for word (the message names the argument
and the fix), and the small helpers behind the result JSON and the random streams (``_json_value``,
``_s64``, ``_declared_input_shape``), with values computed by hand.

Croce & Hein (ICML 2020, AutoAttack) check that the model returns logits (not probabilities) before
attacking; the same check is tested here at its boundaries.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from medrobust.attacks import Attack, AttackContext
from medrobust.attacks.base import _declared_input_shape, _json_value, _labels, _s64, check_logits, stream_keys
from medrobust.attacks.threat import ThreatModel
from medrobust.errors import ConfigError, DataError

from ._base_helpers import Noop, exactly

F64 = torch.float64




class Sum(torch.nn.Module):
    """Two logits ``[s, -s]`` with ``s`` the sum of the input (class 0 iff ``s > 0``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, -s], 1)


# ------------------------------------------------------------------------------------------ check_logits
def test_check_logits_names_what_the_model_returned() -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match=exactly(
            "the model must return a logits tensor of shape (N, K), got tuple; "
            "wrap models that return tuples or dicts so that forward returns logits only.")):
        check_logits((z, z), 2)
    with pytest.raises(ConfigError, match=r"got dict; "):
        check_logits({"logits": z}, 2)
    single = ("the model returns a single logit per sample; wrap it with "
              "medrobust.attacks.BinaryLogitWrapper(model) to get two logits [0, s].")
    for bad in (torch.zeros(2), torch.zeros(2, 1)):
        with pytest.raises(ConfigError, match=exactly(single)):
            check_logits(bad, 2)
    # a 2-D matrix with the wrong number of rows, and a 3-D output with the right number of rows
    with pytest.raises(ConfigError, match=exactly("the model must return logits of shape (N=2, K), got (3, 2).")):
        check_logits(torch.zeros(3, 2), 2)
    with pytest.raises(ConfigError, match=exactly("the model must return logits of shape (N=2, K), got (2, 2, 2).")):
        check_logits(torch.zeros(2, 2, 2), 2)
    for v in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(DataError, match=exactly("the model returned NaN or inf logits on the clean batch; "
                                                    "check the model and the input scale.")):
            check_logits(torch.tensor([[0.0, 1.0], [v, 0.0]]), 2)


PROBS = ("the model seems to return probabilities (every row is non-negative and sums to one), not logits; "
         "remove the final softmax/sigmoid (attacks on probabilities suffer vanishing gradients).")


def test_check_logits_refuses_probabilities_only_when_both_conditions_hold() -> None:
    # softmax outputs, one with an exact zero entry (non-negative, not positive)
    for p in (torch.tensor([[0.25, 0.75], [0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64)):
        with pytest.raises(ConfigError, match=exactly(PROBS)):
            check_logits(p, 2)
    # rows summing to 1 within 1e-4 (float64) still count as probabilities
    near = torch.tensor([[0.3, 0.7 + 5e-5], [0.4, 0.6 - 5e-5]], dtype=F64)
    with pytest.raises(ConfigError, match=exactly(PROBS)):
        check_logits(near, 2)
    # logits that only look half like probabilities pass through unchanged
    for z in (torch.tensor([[1.0, 2.0], [3.0, 0.0]]),           # non-negative, rows sum to 3
              torch.tensor([[0.2, 0.3], [0.1, 0.4]]),           # non-negative, rows sum to 0.5
              torch.tensor([[-1.0, 2.0], [0.5, 0.5]]),          # rows sum to 1, one negative entry
              torch.tensor([[0.3, 0.7 + 2e-4], [0.5, 0.5]], dtype=F64)):  # a row 2e-4 away from 1
        assert check_logits(z, 2) is z


# ------------------------------------------------------------------------------------------ Attack.__init__
def test_attack_init_accepts_modules_and_plain_callables_and_names_anything_else() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, -s], 1)

    res = Noop(f, eps=0.1)(torch.tensor([[1.0, 2.0], [-1.0, -3.0]]), torch.tensor([0, 1]))
    assert res.clean_pred.tolist() == [0, 1] and res.queries == 2
    model = Sum()
    assert Noop(model, eps=0.1).model is model
    for bad, tname in ((5, "int"), (None, "NoneType"), ("model.pt", "str")):
        with pytest.raises(ConfigError, match=exactly(f"model must be a torch.nn.Module (or callable), got {tname}.")):
            Noop(bad, eps=0.1)  # type: ignore[arg-type]


def test_attack_init_threat_arguments() -> None:
    model = Sum()
    atk = Noop(model, eps=0.1, norm="l2", eps_mode="ptp", bounds="auto", units="normalized [0, 1]")
    assert atk.units == "normalized [0, 1]" and atk.norm == "l2" and atk.threat.eps_mode == "ptp"
    assert atk.threat.bounds == (0.0, 1.0)
    assert inspect.signature(Attack.__init__).parameters["norm"].default == "linf"
    assert Noop(model, eps=0.1).norm == "linf"
    with pytest.raises(ConfigError, match=exactly(
            "bounds='auto' needs units= (the dataset's meta.units), e.g. units='normalized [0, 1]'.")):
        Noop(model, eps=0.1, bounds="auto")
    with pytest.raises(ConfigError, match=exactly("threat must be a ThreatModel, got dict.")):
        Noop(model, threat={"eps": 0.1})  # type: ignore[arg-type]
    tm = ThreatModel(eps=0.1)
    both = "pass either threat=ThreatModel(...) or eps/eps_mode/bounds/mask, not both."
    for extra in ({"eps": 0.1}, {"bounds": (0.0, 1.0)}, {"mask": torch.ones(1, 2)}, {"eps_mode": "ptp"}):
        with pytest.raises(ConfigError, match=exactly(both)):
            Noop(model, threat=tm, **extra)
    assert Noop(model, threat=tm, norm="l2").threat is tm  # norm is read from the threat model
    with pytest.raises(ConfigError, match=exactly("Noop needs eps (the perturbation radius), e.g. eps=0.05.")):
        Noop(model)
    with pytest.raises(ConfigError, match=exactly("generator must be a torch.Generator or None, got int.")):
        Noop(model, eps=0.1, generator=0)  # type: ignore[arg-type]


def test_attack_init_loss_names_are_case_insensitive_and_callables_kept() -> None:
    model = Sum()
    assert Noop(model, eps=0.1, loss="Margin").loss == "margin"
    assert Noop(model, eps=0.1, loss="CE").hyperparameters() == {"loss": "ce"}

    def my_loss(z: torch.Tensor, y: torch.Tensor, target: Any) -> torch.Tensor:
        return z[:, 0]

    atk = Noop(model, eps=0.1, loss=my_loss)
    assert atk.loss is my_loss
    assert atk.hyperparameters()["loss"].endswith("my_loss")


# ------------------------------------------------------------------------------------------ _validate
def test_validate_x_messages() -> None:
    atk = Noop(Sum(), eps=0.1)
    y = torch.tensor([0, 1])
    with pytest.raises(DataError, match=exactly("x must be a torch.Tensor of shape (N, ...), got list.")):
        atk([[1.0, 2.0], [3.0, 4.0]], y)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=exactly("x must be a floating-point tensor, got dtype torch.int64; "
                                                "convert with x.float().")):
        atk(torch.ones(2, 2, dtype=torch.long), y)
    for shape in ((3,), (0, 4)):
        with pytest.raises(DataError, match=exactly("x must be a non-empty batch of shape (N, ...) with ndim >= 2, "
                                                    f"got {shape}.")):
            atk(torch.ones(shape), y)
    # 2-D batches (N, features) are fine
    res = atk(torch.tensor([[1.0, 2.0], [-1.0, -3.0]]), y)
    assert res.x_adv.shape == (2, 2) and res.clean_pred.tolist() == [0, 1]
    x = torch.ones(8, 3)
    x[[0, 2, 3, 5, 6, 7], 1] = float("nan")
    with pytest.raises(DataError, match=exactly("x contains NaN or inf (samples [0, 2, 3, 5, 6] ...); clean or drop "
                                                "those samples before attacking.")):
        atk(x, torch.zeros(8, dtype=torch.long))


def test_validate_names_each_label_argument() -> None:
    atk = Noop(Sum(), eps=0.1)
    x = torch.tensor([[1.0, 2.0], [-1.0, -3.0]])
    y = torch.tensor([0, 1])
    three = torch.tensor([1, 0, 0])
    for name, call in (("y", lambda: atk(x, three)), ("target", lambda: atk(x, y, target=three)),
                       ("sample_ids", lambda: atk(x, y, sample_ids=three))):
        with pytest.raises(DataError, match=exactly(f"len(x) = 2 but len({name}) = 3; pass one label per sample.")):
            call()
    soft = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    for name in ("target", "sample_ids"):  # soft labels are accepted for y only
        with pytest.raises(DataError, match=exactly(f"{name} must be class indices (N,), got shape (2, 2); "
                                                    "multi-label targets are not supported by these attacks.")):
            atk(x, y, **{name: soft})
    res = atk(x, soft)
    assert res.y.tolist() == [0, 1] and torch.equal(res.soft_y, soft)


# ------------------------------------------------------------------------------------------ _labels
def test_labels_convert_sequences_and_name_the_unconvertible() -> None:
    x = torch.zeros(2, 3)
    out = _labels([1, 0], x, "y", soft_ok=True)
    assert out.dtype == torch.long and out.tolist() == [1, 0]
    with pytest.raises(DataError, match=exactly("y must be a tensor of class indices, got object.")):
        _labels(object(), x, "y", soft_ok=True)
    with pytest.raises(DataError, match=exactly("target must be a tensor of class indices, got dict.")):
        _labels({"a": 1}, x, "target", soft_ok=False)
    for scalar, name in ((3, "y"), (torch.tensor(1), "target"), (2.0, "sample_ids")):
        with pytest.raises(DataError, match=exactly(f"{name} must be a tensor of class indices (N,), got a scalar; "
                                                    "pass one label per sample.")):
            _labels(scalar, x, name, soft_ok=True)


SOFT_BAD = "soft labels y (N, K) must be finite probabilities whose rows sum to 1."


def test_labels_soft_rows_must_be_finite_non_negative_and_sum_to_one() -> None:
    x = torch.zeros(2, 3, dtype=F64)
    for bad in ([[float("nan"), 0.5], [0.5, 0.5]],   # NaN: every comparison with it is false
                [[float("inf"), 0.0], [0.5, 0.5]],
                [[1.5, -0.5], [0.5, 0.5]],           # sums to one with a negative entry
                [[0.5, 0.5], [0.5, 0.5 + 2e-4]]):
        with pytest.raises(DataError, match=exactly(SOFT_BAD)):
            _labels(torch.tensor(bad), x, "y", soft_ok=True)
    for good in ([[1.0, 0.0], [0.3, 0.7]], [[0.5, 0.5], [0.5, 0.5 + 5e-5]]):  # zeros allowed; within 1e-4
        out = _labels(torch.tensor(good, dtype=torch.float32), x, "y", soft_ok=True)
        assert out.dtype == F64 and out.shape == (2, 2)  # soft labels take x's dtype


def test_labels_shape_and_dtype_messages() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(DataError, match=exactly("y must be class indices (N,) or soft labels (N, K), got shape (2, 2); "
                                                "multi-label targets are not supported by these attacks.")):
        _labels(torch.ones(2, 2, dtype=torch.long), x, "y", soft_ok=True)
    with pytest.raises(DataError, match=exactly("y must be class indices (N,), got shape (2, 1, 1); "
                                                "multi-label targets are not supported by these attacks.")):
        _labels(torch.ones(2, 1, 1, dtype=torch.long), x, "y", soft_ok=False)
    for bad, dt in ((torch.tensor([True, False]), "torch.bool"), (torch.tensor([0.0, 1.0]), "torch.float32"),
                    (torch.tensor([0, 1], dtype=torch.complex64), "torch.complex64")):
        with pytest.raises(DataError, match=exactly(f"target must hold integer class indices, got dtype {dt}; "
                                                    "use target.long().")):
            _labels(bad, x, "target", soft_ok=False)
    out = _labels(torch.tensor([1, 0], dtype=torch.int32), x, "y", soft_ok=False)
    assert out.dtype == torch.long and out.tolist() == [1, 0]


def test_labels_move_to_the_batch_device() -> None:
    """The ``meta`` device (no data) shows where the labels end up: on x's device, never the default one."""
    xm = torch.empty(2, 3, dtype=F64, device="meta")
    hard = _labels(torch.tensor([1, 0], dtype=torch.int32), xm, "y", soft_ok=True)
    assert hard.device.type == "meta" and hard.dtype == torch.long
    soft = _labels(torch.tensor([[0.5, 0.5], [0.0, 1.0]]), xm, "y", soft_ok=True)
    assert soft.device.type == "meta" and soft.dtype == F64


# ------------------------------------------------------------------------------------------ _json_value
def test_json_value_tensors_up_to_16_values_are_lists() -> None:
    assert _json_value(torch.arange(16)) == list(range(16))
    assert _json_value(torch.arange(16.0).view(4, 4))[3] == [12.0, 13.0, 14.0, 15.0]
    assert _json_value(torch.arange(17)) == "tensor(17,)"
    assert _json_value(torch.zeros(3, 6)) == "tensor(3, 6)"


def test_json_value_containers_recurse() -> None:
    assert _json_value([torch.tensor(1.5), (2, torch.tensor([3, 4]))]) == [1.5, [2, [3, 4]]]
    assert _json_value((None, True, "a")) == [None, True, "a"]
    assert _json_value({1: torch.tensor([1, 2]), "b": (0.5,)}) == {"1": [1, 2], "b": [0.5]}
    assert _json_value([float("inf"), 2.5]) == [None, 2.5]  # non-finite floats are not JSON


class _Scaler:
    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return 2 * t


def test_json_value_callables_and_other_objects() -> None:
    def shift(t: torch.Tensor) -> torch.Tensor:
        return t + 1

    assert _json_value(shift) == "test_json_value_callables_and_other_objects.<locals>.shift"
    assert _json_value(_Scaler()) == "_Scaler"  # an instance has no __qualname__: its type's name
    assert _json_value(_Scaler) == "_Scaler"
    assert _json_value(torch.device("cpu")) == "device(type='cpu')"
    assert _json_value({3, 3}) == "{3}"


# ------------------------------------------------------------------------------------------ _s64 / stream keys
def test_s64_wraps_at_exactly_two_to_the_63() -> None:
    assert _s64(2**63 - 1) == 2**63 - 1
    assert _s64(2**63) == -(2**63)
    assert _s64(2**63 + 5) == -(2**63) + 5
    assert _s64(2**64 - 1) == -1
    assert _s64(0) == 0


@pytest.mark.parametrize("seed", [2**64 + 2**63 + 7, 3 * 2**64 + 2**63])
def test_stream_keys_reduce_the_seed_modulo_two_to_the_64(seed: int) -> None:
    """A seed and its residue modulo 2^64 key the same streams (also when the residue is >= 2^63)."""
    ids = torch.tensor([0, 3, 2**40])
    counters = torch.tensor([0, 1, 5])
    assert torch.equal(stream_keys(seed, ids, counters), stream_keys(seed % 2**64, ids, counters))
    assert torch.equal(stream_keys(seed, ids, counters), stream_keys(seed % 2**64 - 2**64, ids, counters))


# ------------------------------------------------------------------------------------------ declared shapes
class _Shaped(Sum):
    def __init__(self, shape: Any = None, card: Any = None) -> None:
        super().__init__()
        self.input_shape = shape
        if card is not None:
            self.card = card


def test_declared_input_shape() -> None:
    assert _declared_input_shape(_Shaped((1, 4))) == (1, 4)
    assert _declared_input_shape(_Shaped([2, "3"])) == (2, 3)
    assert _declared_input_shape(_Shaped(card={"input_shape": [1, 5]})) == (1, 5)
    assert _declared_input_shape(_Shaped()) is None
    assert _declared_input_shape(_Shaped(card="not a dict")) is None
    assert _declared_input_shape(_Shaped(torch.tensor([1, 4]))) is None  # a tensor is not a declared shape
    assert _declared_input_shape(_Shaped(("a", "b"))) is None
    x = torch.ones(2, 1, 5)
    res = Noop(_Shaped(torch.tensor([1, 4])), eps=0.1)(x, torch.tensor([0, 0]))
    assert res.x_adv.shape == (2, 1, 5)
    with pytest.raises(DataError, match=exactly("the model expects inputs of shape [1, 4] per sample but x has [1, 5]; "
                                                "load the data with the options used for training.")):
        Noop(_Shaped((1, 4)), eps=0.1)(x, torch.tensor([0, 0]))
