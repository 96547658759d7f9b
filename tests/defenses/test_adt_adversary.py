"""ADT's adversary (Shao et al., arXiv 2203.09487, 2022; SAP of Han et al., Nature Medicine 2020) and the data it
adapts to: the kernel rate comes from the data only when the data has one, a given reference rate reaches SAP, the
train-mode view and the adversary hand the padding mask to masked-pooling models in the input's dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.attacks import SAP
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses.adt import ADT, _TrainModeView
from medrobust.errors import ConfigError

L = 64


class MaskedNet(nn.Module):
    """Linear 3-class logits of a masked input; records the mode, mask and its dtype of every call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(L, 3)
        self.calls: list[tuple[bool, torch.Tensor | None]] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((self.training, None if mask is None else mask.detach().clone()))
        return self.fc((x if mask is None else x * mask).flatten(1))


def _data(fs: float) -> ECGDataset:
    x = 0.5 + 0.4 * torch.sin(torch.linspace(0, 6.28, L)).repeat(6, 1, 1)
    meta = DatasetMeta(name="sine", fs=fs, classes=("a", "b", "c"), units="normalized [0, 1]",
                       ids=np.arange(6).astype(str))
    return ECGDataset(x, torch.arange(6) % 3, meta)


def _adt(**kw: object) -> ADT:
    return ADT(MaskedNet(), teacher=MaskedNet(), **{"eps": 0.05, "step_size": 0.01, **kw})  # type: ignore[arg-type]


def test_train_mode_view_forces_train_mode_and_passes_the_mask() -> None:
    net = MaskedNet()
    net.eval()
    mask = torch.ones(2, 1, L)
    mask[:, :, :5] = 0
    _TrainModeView(net)(torch.rand(2, 1, L), mask)
    assert net.calls[0][0] is True and net.calls[0][1] is not None and torch.equal(net.calls[0][1], mask)


@pytest.mark.parametrize("fs, expected", [(0.0, None), (1.0, 1.0), (250.0, 250.0)])
def test_kernel_rate_comes_from_the_data_when_it_has_one(fs: float, expected: float | None) -> None:
    """With reference_fs, the SAP kernels are defined in seconds at the data's rate; data without a rate
    (fs = 0) keeps them in samples, and the adversary is then built without a reference rate."""
    adt = _adt(reference_fs=200.0)
    adt.setup(_data(fs))
    assert adt.fs == expected
    atk = adt.adversary(adt.model)
    assert type(atk) is SAP and atk.fs == expected
    assert atk.reference_fs == (None if expected is None else 200.0)  # the given rate, not SAP's default 300 Hz


def test_the_adversary_hands_the_mask_to_the_model_in_the_input_dtype() -> None:
    adt = _adt(pgd_steps=1, smooth_steps=1)
    adt.setup(_data(0.0))
    x = torch.rand(3, 1, L) * 0.8 + 0.1
    mask = torch.ones(3, 1, L, dtype=torch.bool)
    mask[:, :, 40:] = False
    q = torch.softmax(torch.randn(3, 3), 1)
    net = adt.model
    net.calls.clear()
    x_adv = adt._adversarial(net, x, q, mask)
    masks = [m for _, m in net.calls]
    assert masks and all(m is not None and m.dtype == x.dtype for m in masks)
    assert torch.equal(x_adv[..., 40:], x[..., 40:])


def test_needs_at_least_one_step_exact_message() -> None:
    with pytest.raises(ConfigError, match=r"^ADT needs pgd_steps \+ smooth_steps >= 1\.$"):
        _adt(pgd_steps=0, smooth_steps=0)


def test_any_positive_reference_rate_is_accepted() -> None:
    assert _adt(reference_fs=0.5).reference_fs == 0.5


def test_the_plain_pgd_adversary_starts_at_x_and_runs_every_step() -> None:
    """Without smoothed steps the adversary is PGD from x itself (Shao et al.'s adversary has no random start;
    PGD's own default would start at random) with no early stop."""
    from medrobust.attacks import PGD

    adt = _adt(pgd_steps=2, smooth_steps=0)
    adt.setup(_data(0.0))
    atk = adt.adversary(adt.model)
    assert type(atk) is PGD and atk.random_start is False and atk.early_stop is False and atk.steps == 2
