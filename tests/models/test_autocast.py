"""bf16 autocast wrapper: the inner layers really run in bf16, the logits come out float32, masks pass on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.inference import accepts_mask, forward
from medrobust.models.precision import Autocast, with_precision


def test_autocast_runs_the_inner_layers_in_bf16_and_returns_float32() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 3)
    seen: list[torch.dtype] = []
    lin.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.rand(4, 1, 16)
    z = with_precision(model, "bf16")(x)
    assert seen == [torch.bfloat16] and z.dtype == torch.float32
    ref = model(x)
    assert seen[-1] == torch.float32                     # outside the wrapper: float32 again
    err = (z - ref).abs().max()
    assert 0 < err < 0.05                                 # bf16 rounding, not another function
    assert next(model.parameters()).dtype == torch.float32


def test_fp32_is_the_model_itself_and_bad_values_are_refused() -> None:
    model = nn.Linear(2, 2)
    assert with_precision(model, "fp32") is model
    low = with_precision(model, "bf16")
    assert isinstance(low, Autocast) and low.model is model and low.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision must be one of"):
        with_precision(model, "fp16")


def test_the_mask_reaches_a_masked_model_and_the_declared_shape_is_kept() -> None:
    class Masked(nn.Module):
        input_shape = (1, 4)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            s = (x * (1 if mask is None else mask)).sum((1, 2))
            return torch.stack([s, -s], 1)

    w = Autocast(Masked())
    assert accepts_mask(w) and w.input_shape == (1, 4)
    x, m = torch.ones(2, 1, 4), torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]])
    assert forward(w, x, m)[:, 0].tolist() == [2.0, 1.0]
    assert w(x)[:, 0].tolist() == [4.0, 4.0]

    class Plain(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.sum((1, 2)), -x.sum((1, 2))], 1)

    assert Autocast(Plain())(x, mask=m)[:, 0].tolist() == [4.0, 4.0]   # a model without mask= never gets one


def test_the_dtype_is_the_wrappers_and_the_card_is_kept() -> None:
    lin = nn.Linear(4, 2)
    lin.card = {"classes": ["a", "b"]}
    seen: list[torch.dtype] = []
    lin.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    w = Autocast(lin, dtype=torch.float16)
    assert w.card == {"classes": ["a", "b"]} and not hasattr(Autocast(nn.Linear(4, 2)), "card")
    assert w(torch.rand(3, 4)).dtype == torch.float32 and seen == [torch.float16]
