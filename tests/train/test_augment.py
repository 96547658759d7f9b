"""Random crops and learning-rate schedules: the pure functions, and the trainer applying them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig, Trainer
from medrobust.train.augment import cosine_factor, crop_length, lr_factor, random_crop


def _rows(n: int, leads: int, samples: int) -> torch.Tensor:
    """Row ``i``, lead ``c``, sample ``t`` holds ``1000 i + 100 c + t``: every value names its place."""
    return (1000.0 * torch.arange(n).view(n, 1, 1) + 100.0 * torch.arange(leads).view(1, leads, 1)
            + torch.arange(samples).view(1, 1, samples))


def test_random_crop_cuts_one_window_per_row_from_x_and_mask_alike() -> None:
    x = _rows(500, 2, 10)
    mask = x + 0.5
    out, out_mask = random_crop(x, mask, length=7, generator=torch.Generator().manual_seed(0))
    assert out.shape == (500, 2, 7) and out_mask.shape == (500, 2, 7)
    start = out[:, 0, 0] - 1000.0 * torch.arange(500)
    expected = x.gather(-1, (start.long().view(-1, 1, 1) + torch.arange(7)).expand(500, 2, 7))
    assert torch.equal(out, expected)
    assert torch.equal(out_mask, expected + 0.5)
    assert sorted(set(start.long().tolist())) == [0, 1, 2, 3]  # every offset 0 … samples − length, no other


def test_random_crop_follows_its_generator() -> None:
    x = _rows(64, 1, 50)
    a, _ = random_crop(x, None, length=20, generator=torch.Generator().manual_seed(3))
    b, none = random_crop(x, None, length=20, generator=torch.Generator().manual_seed(3))
    c, _ = random_crop(x, None, length=20, generator=torch.Generator().manual_seed(4))
    assert none is None and torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_of_one_sample() -> None:
    x = _rows(200, 1, 3)
    out, _ = random_crop(x, None, length=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (200, 1, 1) and sorted(set((out[:, 0, 0] % 1000).long().tolist())) == [0, 1, 2]


def test_random_crop_of_the_whole_length_is_the_identity() -> None:
    x = _rows(3, 2, 9)
    out, _ = random_crop(x, None, length=9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


@pytest.mark.parametrize("shape,length,match", [
    ((2, 1, 5, 5), 3, r"random_crop needs signals \(batch, leads, samples\); got a batch of shape \(2, 1, 5, 5\)"),
    ((2, 1, 8), 9, "random_crop: a window of 9 samples does not fit signals of 8."),
    ((2, 1, 8), 0, "random_crop: a window of 0 samples does not fit signals of 8."),
])
def test_random_crop_refusals(shape, length, match) -> None:
    with pytest.raises(ConfigError, match=match):
        random_crop(torch.zeros(shape), None, length=length, generator=torch.Generator())


@pytest.mark.parametrize("samples,keep,expected", [(3000, 0.9, 2700), (10, 0.26, 3), (10, 0.24, 2),
                                                   (10, 0.01, 1), (7, 1.0, 7)])
def test_crop_length(samples: int, keep: float, expected: int) -> None:
    assert crop_length(samples, keep) == expected


def test_cosine_factor_is_sgdr_without_restarts() -> None:
    assert cosine_factor(0, 8) == 1.0
    assert cosine_factor(4, 8) == pytest.approx(0.5)
    assert cosine_factor(8, 8) == pytest.approx(0.0, abs=1e-12)
    assert cosine_factor(1, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_factor(3, 4) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))


def test_lr_factor() -> None:
    assert lr_factor("constant", 5, 6) == 1.0
    assert lr_factor("cosine", 2, 6) == cosine_factor(2, 6)
    with pytest.raises(ConfigError, match=r"lr_schedule must be one of \('constant', 'cosine'\), got 'step'."):
        lr_factor("step", 0, 3)


# -- the trainer -----------------------------------------------------------------------------------------

C, L, K = 1, 40, 2


def _signals(n: int = 16, *, image: bool = False) -> ECGDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % K
    x = torch.randn((n, C, L), generator=g) + y.view(-1, 1, 1).float()
    mask = (torch.arange(L).view(1, 1, L) >= 4).float().expand(n, C, L).clone()
    if image:
        x, mask = x.view(n, 1, 5, 8), None
    meta = DatasetMeta(name="tiny", fs=0.0 if image else 100.0, classes=("a", "b"), units="mV",
                       ids=np.arange(n).astype(str), leads=("I",))
    return ECGDataset(x, y, meta, mask)


class _Recorder(Trainer):
    """Records the learning rate of every epoch and the length, values and mask of every training batch."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.lrs: list[float] = []
        self.batches: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def on_epoch_start(self, epoch: int) -> None:
        self.lrs.append(self.optimizer.param_groups[0]["lr"])

    def compute_loss(self, x, y, mask=None):
        self.batches.append((x.clone(), None if mask is None else mask.clone()))
        return super().compute_loss(x, y, mask)


def _fit(config: TrainConfig, data: ECGDataset | None = None) -> _Recorder:
    data = data or _signals()
    torch.manual_seed(0)
    trainer = _Recorder(build_model("resnet1d", in_channels=C, num_classes=K, widths=[4], blocks=1,
                                    kernel_size=3), config)
    trainer.fit(data, data)
    return trainer


def test_cosine_schedule_sets_every_epochs_learning_rate() -> None:
    t = _fit(TrainConfig(epochs=4, batch_size=8, lr=0.01, lr_schedule="cosine", patience=None, progress=False))
    assert t.lrs == pytest.approx([0.01 * cosine_factor(e, 4) for e in range(4)])
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * cosine_factor(3, 4))


class _TwoRates(_Recorder):
    """An optimiser with two parameter groups at different rates (as a user's trainer may build)."""

    def _make_optimizer(self):
        params = list(self.model.parameters())
        return torch.optim.Adam([{"params": params[:1], "lr": 0.1}, {"params": params[1:]}], lr=self.config.lr)


def test_cosine_schedule_scales_each_groups_own_rate() -> None:
    torch.manual_seed(0)
    data = _signals()
    t = _TwoRates(build_model("resnet1d", in_channels=C, num_classes=K, widths=[4], blocks=1, kernel_size=3),
                  TrainConfig(epochs=3, batch_size=8, lr=0.01, lr_schedule="cosine", patience=None, progress=False))
    t.fit(data, data)
    assert [g["lr"] for g in t.optimizer.param_groups] == pytest.approx([0.1 * cosine_factor(2, 3),
                                                                        0.01 * cosine_factor(2, 3)])


def test_constant_schedule_keeps_the_learning_rate() -> None:
    t = _fit(TrainConfig(epochs=3, batch_size=8, lr=0.02, patience=None, progress=False))
    assert t.lrs == [0.02, 0.02, 0.02]


def test_random_crop_in_training_only_and_with_its_mask() -> None:
    data = _signals()
    t = _fit(TrainConfig(epochs=2, batch_size=8, random_crop=0.75, patience=None, progress=False), data)
    assert [x.shape[-1] for x, _ in t.batches] == [30] * 4
    for x, mask in t.batches:
        rows = [next(i for i in range(len(data)) for s in range(11) if torch.equal(data.x[i, :, s:s + 30], r))
                for r in x]
        starts = [next(s for s in range(11) if torch.equal(data.x[i, :, s:s + 30], r)) for i, r in zip(rows, x)]
        assert torch.equal(mask, torch.stack([data.mask[i, :, s:s + 30] for i, s in zip(rows, starts)]))
    plain = _fit(TrainConfig(epochs=1, batch_size=8, patience=None, progress=False), data)
    assert [x.shape[-1] for x, _ in plain.batches] == [L, L]


def test_random_crop_is_seeded_per_epoch() -> None:
    cfg = TrainConfig(epochs=2, batch_size=16, random_crop=0.5, patience=None, progress=False, seed=1)
    a, b = _fit(cfg), _fit(cfg)
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a.batches, b.batches))
    assert not torch.equal(a.batches[0][0], a.batches[1][0])  # epoch 2 crops elsewhere (same order: one batch)
    other = _fit(TrainConfig(epochs=1, batch_size=16, random_crop=0.5, patience=None, progress=False, seed=2))
    assert not torch.equal(other.batches[0][0].sort(0).values, a.batches[0][0].sort(0).values)


class _FixedLength(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(C * L, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_random_crop_refuses_a_fixed_length_model_before_training() -> None:
    trainer = Trainer(_FixedLength(), TrainConfig(epochs=1, random_crop=0.5, progress=False))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"random_crop=0.5: _FixedLength does not accept signals shorter than its "
                                          r"training length \(.*\); use a length-agnostic model such as resnet1d"):
        trainer.fit(_signals(), _signals())
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.model.training


def test_random_crop_refuses_images() -> None:
    images = _signals(image=True)
    trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(40, K)),
                      TrainConfig(epochs=1, random_crop=0.5, progress=False))
    with pytest.raises(ConfigError, match=r"random_crop crops signals \(leads, samples\); the training inputs are "
                                          r"\(1, 5, 8\). Set random_crop to None."):
        trainer.fit(images, images)


@pytest.mark.parametrize("field,value,match", [
    ("lr_schedule", "step", r"lr_schedule must be one of \('constant', 'cosine'\), got 'step'."),
    ("random_crop", 0.0, r"random_crop must be None or a fraction in \(0, 1\], got 0.0."),
    ("random_crop", 1.5, r"random_crop must be None or a fraction in \(0, 1\], got 1.5."),
    ("random_crop", "0.5", r"random_crop must be None or a fraction in \(0, 1\], got '0.5'."),
    ("random_crop", True, r"random_crop must be None or a fraction in \(0, 1\], got True."),
])
def test_bad_schedule_or_crop(field: str, value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value}).validate()
    TrainConfig(random_crop=1.0, lr_schedule="cosine").validate()


class _Killed(Exception):
    pass


def test_a_resumed_cosine_cropped_training_is_the_uninterrupted_one(tmp_path) -> None:
    data = _signals(24)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.01, lr_schedule="cosine", random_crop=0.7, patience=None,
                      progress=False, seed=5)

    def make(out, kill_at=None):
        torch.manual_seed(0)
        t = Trainer(build_model("resnet1d", in_channels=C, num_classes=K, widths=[4], blocks=1, kernel_size=3), cfg,
                    out_dir=out)
        if kill_at is not None:
            def dying(epoch: int) -> None:
                if epoch == kill_at:
                    raise _Killed
            t.on_epoch_start = dying
        return t

    whole = make(tmp_path / "whole")
    whole.fit(data, data)
    with pytest.raises(_Killed):
        make(tmp_path / "cut", kill_at=2).fit(data, data)
    again = make(tmp_path / "cut")
    again.resume = True
    again.fit(data, data)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), again.model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * cosine_factor(3, 4))
