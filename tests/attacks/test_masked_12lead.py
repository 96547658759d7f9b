"""Variable-length 12-lead CPSC 2018 records with a padding mask: attacks and the masked-pooling model.

Real records (``cpsc2018_sample``: 10 records of 6-60 s) resampled to 125 Hz and left-padded to 32.768 s
(4,096 samples), with Ma & Liang's 12-lead ResNet-18 (thin: width 1/8) and its masked average pooling.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import get_attack
from medrobust.models import build_model

from .conftest import DATA, _need, small_kwargs


class MaskSpy(nn.Module):
    """Forwards to the model and records, for every call, whether a mask came with the batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_mask: list[bool] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.with_mask.append(mask is not None)
        return self.model(x, mask=mask)


@pytest.fixture(scope="module")
def cpsc(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    from medrobust.data import load_dataset

    root = _need(DATA / "cpsc2018_sample")
    ds = load_dataset("cpsc2018", root=root, split="all", fs=125.0, seconds=32.768, truncate_seconds=32.768,
                      drop_multilabel=True, cache_dir=tmp_path_factory.mktemp("cpsc-cache"))
    x, mask = ds.x[:6].contiguous(), ds.mask[:6].contiguous()
    assert mask is not None and x.shape == (6, 12, 4096)
    assert bool((mask.sum((1, 2)) < 4096).sum() >= 4)  # most records are padded
    torch.manual_seed(0)
    model = build_model("resnet18_12lead", in_channels=12, num_classes=9, width_scale=1 / 8).eval()
    return x, mask, model


def test_masked_pooling_ignores_the_padding(cpsc) -> None:
    x, mask, model = cpsc
    junk = x + (1 - mask) * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(junk, x)
    with torch.no_grad():
        torch.testing.assert_close(model(junk, mask=mask), model(x, mask=mask), rtol=0, atol=0)
        unmasked = model(junk) - model(x)
    assert float(unmasked.abs().max()) > 1e-3  # without the mask the padding does change the logits


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "sap"])
def test_attacks_leave_the_padding_untouched_and_pass_the_mask(name: str, cpsc) -> None:
    x, mask, model = cpsc
    spy = MaskSpy(model)
    with torch.no_grad():
        y = model(x, mask=mask).argmax(1)
    kw = small_kwargs(name)
    if name == "sap":
        kw["fs"] = 125.0
    res = get_attack(name, spy, eps=0.05, generator=torch.Generator().manual_seed(0), **kw)(x, y, mask=mask)
    pad = (mask == 0).expand_as(x)
    assert torch.equal(res.x_adv[pad], x[pad])  # padded samples exactly untouched
    assert bool(((res.x_adv - x).abs() > 0)[~pad].any())  # the signal was attacked
    assert len(spy.with_mask) >= 2 and all(spy.with_mask)  # every forward got the padding mask
    with torch.no_grad():  # reported predictions are those of the masked model
        assert torch.equal(model(res.x_adv, mask=mask).argmax(1), res.adv_pred)
