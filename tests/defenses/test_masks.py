"""Padding masks of variable-length records reach the model through the trainer and every defence;
regularisers ignore padded samples; adversaries and noise leave the padding untouched (CPSC 2018)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses import get_defense, jacobian_norm, nsr_loss, alignment_loss
from medrobust.train import TrainConfig, Trainer

from .conftest import Linear

C, L, K = 2, 48, 3


def _padded(n: int = 24, seed: int = 0) -> ECGDataset:
    """Records of different lengths, right-aligned and zero-padded on the left, with their masks."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(12, L + 1, (n,), generator=g)
    mask = (torch.arange(L).view(1, 1, L) >= (L - lengths).view(-1, 1, 1)).float()
    x = (torch.rand((n, C, L), generator=g) * 1.6 - 0.8) * mask
    y = torch.arange(n) % K
    meta = DatasetMeta(name="padded", fs=100.0, classes=("a", "b", "c"), units="max-abs scaled [-1, 1]",
                       ids=np.arange(n).astype(str), leads=("I", "II"))
    return ECGDataset(x, y, meta, mask)


class SpyMasked(nn.Module):
    """A linear model that accepts a mask, checks it matches its rows, and records every call.

    The logits ignore the mask, so the input gradient is non-zero on the padding: an adversary or a noise
    source that forgets the mask would write into the padding, which the check below catches.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(C * L, K)
        self.calls = 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert mask is not None, "the model was called without the padding mask"
        assert mask.shape == (x.shape[0], 1, x.shape[-1])
        assert float((x.detach() * (1 - mask)).abs().max().detach()) == 0.0, "the padding was changed"
        self.calls += 1
        return self.fc(x.flatten(1))


CASES = {
    "ce": {},
    "pgd_at": {"eps": 0.1, "steps": 2, "step_size": 0.05},
    "pgd_at_correct_only": {"eps": 0.1, "steps": 2, "step_size": 0.05, "attack_correct_only": True},
    "trades": {"eps": 0.1, "steps": 2},
    "nsr": {},
    "jacobian": {},
    "smoothing": {"sigma": 0.1},
    "adt": {"eps": 0.1, "step_size": 0.05, "pgd_steps": 2, "smooth_steps": 2},
    "uap_retraining": {"eps": 0.1, "eps_mode": "abs", "norm": "linf", "pool_size": 2, "uap_max_iter": 1,
                       "generation_size": 8, "epochs_per_round": 1},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_defence_passes_masks_and_keeps_padding(case: str) -> None:
    ds = _padded()
    torch.manual_seed(0)
    model = SpyMasked()
    hp = dict(CASES[case])
    name = "pgd_at" if case.startswith("pgd_at") else case
    if name == "adt":
        hp["teacher"] = copy.deepcopy(model)
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, class_balance="none")
    trainer = get_defense(name, model, cfg, **hp)
    trainer.fit(ds, ds)  # SpyMasked raises if any forward misses the mask or sees a changed padding
    assert model.calls >= 3


def _same_padding_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, 1, L)
    mask[..., 20:] = 1.0
    x = torch.rand((6, 1, L), generator=g) * mask
    w = torch.randn((K, L), generator=g)
    w[:, :20] *= 50.0  # large weights on the padding: only a mask-aware regulariser ignores them
    w_sig = w * mask.view(1, L)
    return x, mask.expand(6, 1, L), w, w_sig, torch.tensor([0, 1, 2, 0, 1, 2])


def test_regularisers_ignore_padded_samples() -> None:
    x, mask, w, w_sig, y = _same_padding_batch()

    def reg(weight: torch.Tensor, m: torch.Tensor | None, fn) -> float:
        xx = x.clone().requires_grad_(True)
        z = Linear(weight, torch.zeros(K))(xx)
        return float(fn(xx, z, m))

    fns = {
        "nsr": lambda xx, z, m: nsr_loss(xx, z, z.argmax(1), mask=m),
        "align": lambda xx, z, m: alignment_loss(xx, z, z.argmax(1), mask=m),
        **{v: (lambda xx, z, m, v=v: jacobian_norm(xx, z, variant=v, mask=m)) for v in ("l1", "frobenius", "squared")},
        "projection": lambda xx, z, m: jacobian_norm(xx, z, variant="squared", method="projection", projections=4,
                                                     generator=torch.Generator().manual_seed(0), mask=m),
    }
    for name, fn in fns.items():
        masked_value, signal_only = reg(w, mask, fn), reg(w_sig, None, fn)
        assert masked_value == pytest.approx(signal_only, rel=1e-5), name
        assert abs(reg(w, None, fn) - signal_only) > 1e-3 * abs(signal_only) + 1e-6, name  # the padding matters


@pytest.fixture(scope="module")
def cpsc(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ECGDataset:
    from medrobust.data import load_dataset

    ds = load_dataset("cpsc2018", root=shared_data / "cpsc2018_sample", split="all", leads="8", scale="maxabs",
                      drop_multilabel=True, cache_dir=tmp_path_factory.mktemp("cpsc"))
    return ds.subset(np.array([0, 1, 6]))  # 10 s, 15.9 s and 43 s of signal in 67.6 s windows


def test_cpsc_padding_untouched_and_masked_pooling_used(cpsc: ECGDataset) -> None:
    from medrobust.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18_12lead", in_channels=8, width_scale=0.125)
    x, y, mask = cpsc.x, cpsc.y, cpsc.mask
    assert float(mask.sum()) < 0.5 * mask.numel()  # mostly padding
    t = get_defense("pgd_at", model, TrainConfig(epochs=1), eps=0.01, steps=2, step_size=0.005,
                    clean_weight=0.5, adv_weight=0.5)
    t.setup(cpsc)
    assert t.bounds == (-1.0, 1.0)  # bounds="auto" for max-abs scaled data
    x_adv = t.attack(x, y, 0.01, mask)
    delta = x_adv - x
    assert float((delta * (1 - mask)).abs().max()) == 0.0
    assert float(delta.abs().max()) > 0.004 and float(delta.abs().max()) <= 0.01 + 1e-6
    assert float(x_adv.abs().max()) <= 1.0
    model.eval()
    loss, logits = Trainer(model, TrainConfig(epochs=1)).compute_loss(x, y, mask)
    assert torch.allclose(logits, model(x, mask=mask))
    assert not torch.allclose(logits, model(x), atol=1e-4)  # masked pooling differs from plain pooling
    assert loss.item() == pytest.approx(F.cross_entropy(model(x, mask=mask), y).item(), rel=1e-5)
