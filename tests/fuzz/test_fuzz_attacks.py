"""Property-based fuzzing of the attack entry points: any batch, labels and threat arguments give either a valid
result (inside the threat model) or one of medrobust's own errors naming the argument — never a traceback from
deep inside torch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn

from medrobust.attacks import get_attack
from medrobust.errors import MedrobustError
from tests.fuzz._fuzz import fuzz_settings

ATTACKS = {"fgsm": {}, "pgd": {"steps": 2}, "apgd": {"steps": 2}, "sap": {"steps": 1, "smooth_steps": 1},
           "spsa": {"steps": 1, "nb_samples": 4}, "square": {"steps": 2}}
NAMES = ("x", "y", "eps", "norm", "bounds", "target", "shape", "label", "logits", "mask", "class", "steps",
         "model", "dtype", "length", "sample", "batch", "input")


class Net(nn.Module):
    """A small conv net for (N, 1, 32) beats that declares its input shape (as checkpoints do)."""

    input_shape = (1, 32)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


torch.manual_seed(0)
MODEL = Net().double()


@st.composite
def batches(draw: Any) -> tuple[Any, Any]:
    n = draw(st.integers(0, 4))
    n = n if draw(st.integers(0, 3)) else max(n, 1)
    good = (n, 1, 32)
    shape = draw(st.sampled_from([good] * 6 + [(n, 32), (n, 1, 31), (n, 2, 32), (n, 1, 1, 32), (n,)]))
    kind = draw(st.sampled_from(["float64"] * 6 + ["float32", "int64", "nan", "list"]))
    x: Any = torch.rand(shape, dtype=torch.float64)
    if kind == "float32":
        x = x.float()
    elif kind == "int64":
        x = (x * 10).long()
    elif kind == "nan" and x.numel():
        x.view(-1)[0] = float("nan")
    elif kind == "list":
        x = x.tolist()
    ylen = draw(st.sampled_from([n] * 6 + [n + 1, max(0, n - 1)]))
    ykind = draw(st.sampled_from(["ok"] * 6 + ["big", "neg", "float", "2d"]))
    y: Any = torch.randint(0, 3, (ylen,))
    if ykind == "big":
        y = y + 7
    elif ykind == "neg":
        y = y - 5
    elif ykind == "float":
        y = y.double() + 0.5
    elif ykind == "2d":
        y = y.reshape(-1, 1)
    return x, y


threat = st.fixed_dictionaries({
    "eps": st.one_of(st.sampled_from([0.05, 0.2, 1.0]), st.sampled_from([0.05, 0.2]),
                     st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=3)),
    "norm": st.sampled_from(["linf", "l2"] * 3 + ["Linf", "l1", "", 2]),
    "bounds": st.sampled_from([None, (0, 1), "auto"] * 3 + [(1, 0), (0,), "x"]),
})


@pytest.mark.parametrize("name", sorted(ATTACKS))
@fuzz_settings(15)
@given(batch=batches(), kw=threat)
def test_attack_entry_points_return_a_valid_result_or_a_medrobust_error(name: str, batch: tuple[Any, Any],
                                                                        kw: dict[str, Any]) -> None:
    x, y = batch
    try:
        atk = get_attack(name, MODEL, **ATTACKS[name], **kw, units="normalized [0, 1]",
                         generator=torch.Generator().manual_seed(0))
        res = atk(x, y)
    except MedrobustError as exc:
        msg = str(exc)
        assert "\n" not in msg.strip() and any(k in msg.lower() for k in NAMES), msg
        event(f"refused: {type(exc).__name__}")
        return
    event("attacked")
    # A result: the threat model holds on the raw output.
    eps = float(kw["eps"])
    assert bool((res.norms <= eps * (1 + 1e-6) + 1e-12).all())
    lo, hi = (0.0, 1.0) if kw["bounds"] in ((0, 1), "auto") else (-float("inf"), float("inf"))
    assert float(res.x_adv.min()) >= lo and float(res.x_adv.max()) <= hi
    assert res.x_adv.shape == torch.as_tensor(x).shape
