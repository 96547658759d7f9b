"""The band technique of Han et al. (Nature Medicine 2020) on synthetic signals and hand-made models.

Everything here is checked against values computed by hand or by an independent step-by-step
re-implementation in NumPy (``np.convolve`` for the SAP filter): the perturb-and-resmooth trials
``x + clamp(S(x_adv + σ·n − x), ±ε)`` with the padding put back and the bounds applied, the uniform
samples ``clip(x + S(lo + u·(hi − lo) − x), lo, hi)``, the split points of the concatenation check
and the fractions they report. Models are linear or mean-sign classifiers whose decision is known.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.attacks import Band, adversarial_band, concatenation_check, uniform_band_check
from medrobust.attacks.band import _band_mask, _finish
from medrobust.attacks.sap_filter import sap_kernel
from medrobust.errors import ConfigError, DataError

F64 = torch.float64


# --------------------------------------------------------------------------------------------- models
class Recorder(nn.Module):
    """Base: records every batch (and mask) it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def record(self, x: torch.Tensor) -> None:
        self.seen.append(x.detach().clone())

    @property
    def batches(self) -> list[int]:
        return [len(z) for z in self.seen]


class Linear(Recorder):
    """Logits ``(0, w·x + b)``: class 1 iff ``w·x + b > 0``. Only takes ``(N, C, L)`` of ``w``'s shape."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record(x)
        assert x.shape[1:] == self.w.shape, f"input {tuple(x.shape)} for weights {tuple(self.w.shape)}"
        s = (x * self.w.to(x.dtype)).flatten(1).sum(1) + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


class Constant(Recorder):
    """Always class ``c`` of 3."""

    def __init__(self, c: int = 1) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record(x)
        out = torch.zeros(len(x), 3, dtype=x.dtype)
        out[:, self.c] = 1.0
        return out


class MaskedMean(Recorder):
    """Class 1 iff the mean over the real (mask = 1) samples is > 0; without a mask, over all samples."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.record(x)
        self.masks.append(None if mask is None else mask.clone())
        m = torch.ones_like(x) if mask is None else mask.expand_as(x)
        s = (x * m).flatten(1).sum(1) / m.flatten(1).sum(1)
        return torch.stack([-s, s], 1)


def _msg(text: str) -> str:
    return "^" + re.escape(text) + "$"


def np_smooth(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'Same'-length zero-padded convolution along the last axis (NumPy, independent of the library)."""
    flat = a.reshape(-1, a.shape[-1])
    return np.stack([np.convolve(r, k, mode="same") for r in flat]).reshape(a.shape)


def reference_trials(x: torch.Tensor, x_adv: torch.Tensor, *, eps: float, std: float, kernel: torch.Tensor,
                     trials: int, batch_size: int, seed: int, mask: torch.Tensor | None = None,
                     bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Han et al.'s perturb-and-resmooth trials step by step: noise drawn batch by batch from one generator."""
    g = torch.Generator().manual_seed(seed)
    xn, xa, k = x.double().numpy(), x_adv.double().numpy(), kernel.double().numpy()
    m = None if mask is None else mask.double().numpy()
    if m is not None:
        xa = xn + (xa - xn) * m
    out = []
    for done in range(0, trials, batch_size):
        n = min(batch_size, trials - done)
        noise = torch.randn((n, *x.shape), generator=g, dtype=F64).numpy() * std
        d = np.clip(np_smooth(xa + noise - xn, k), -eps, eps)
        z = xn + d
        if m is not None:
            z = xn + (z - xn) * m
        if bounds is not None:
            z = np.clip(z, *bounds)
        out.append(z)
    return np.concatenate(out)


def hand_band(signals: torch.Tensor, *, x: torch.Tensor | None = None, kernel: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, adv_class: int = 1, true_label: int | None = 0,
              eps: float = 1.0) -> Band:
    return Band(x=torch.zeros_like(signals[0]) if x is None else x, x_adv=signals[0], lower=signals.amin(0),
                upper=signals.amax(0), signals=signals, adv_class=adv_class, true_label=true_label,
                trials=len(signals) - 1, kept=len(signals) - 1, eps=eps, noise_std=eps / 2,
                kernel=sap_kernel() if kernel is None else kernel, mask=mask)


# ------------------------------------------------------------------------------------- adversarial_band
def test_trials_follow_the_perturb_and_resmooth_recipe_batch_by_batch() -> None:
    """Every trial is ``x + clamp(S(x_adv + σ n − x), ±ε)`` with the noise drawn batch by batch
    (7 trials in batches of 3: 3 + 3 + 1) from the given generator; a model that always answers the
    adversarial class keeps them all, in order, after ``x_adv``."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, generator=g, dtype=F64)
    x_adv = x + 0.3 * torch.randn(2, 32, generator=g, dtype=F64)
    model = Constant(1)
    band = adversarial_band(model, x, x_adv, eps=0.25, trials=7, batch_size=3, noise_std=0.2,
                            generator=torch.Generator().manual_seed(11))
    ref = reference_trials(x, x_adv, eps=0.25, std=0.2, kernel=sap_kernel(), trials=7, batch_size=3, seed=11)
    assert model.batches == [1, 3, 3, 1]
    assert band.adv_class == 1 and band.kept == 7 and band.trials == 7 and band.kept_fraction == 1.0
    assert band.signals.shape == (8, 2, 32) and band.signals.dtype == F64
    assert torch.equal(band.signals[0], x_adv) and torch.equal(band.x, x) and torch.equal(band.x_adv, x_adv)
    np.testing.assert_allclose(band.signals[1:].numpy(), ref, rtol=0, atol=1e-12)
    assert float((band.signals[1:] - x).abs().max()) <= 0.25 + 1e-15  # the clamp is active somewhere
    assert float((band.signals[1:] - x).abs().max()) == pytest.approx(0.25)
    assert torch.equal(band.lower, band.signals.amin(0)) and torch.equal(band.upper, band.signals.amax(0))
    assert torch.equal(model.seen[0][0], x_adv)
    assert torch.equal(torch.cat(model.seen[1:]), band.signals[1:])
    assert band.noise_std == 0.2 and band.eps == 0.25 and band.true_label is None
    assert band.config == {"fs": None, "reference_fs": None, "kernel_taps": 19}


def test_trials_with_an_identity_kernel_are_x_adv_plus_clamped_noise() -> None:
    """Kernel ``[1]`` (no smoothing): trial = ``x + clamp(x_adv − x + σ n, ±ε)``, n ~ N(0, 1) drawn from the
    generator."""
    x = torch.linspace(-1.0, 1.0, 20, dtype=F64).view(1, 20)
    x_adv = x + 0.5
    band = adversarial_band(Constant(1), x, x_adv, eps=0.75, trials=4, noise_std=0.125, kernel=torch.ones(1),
                            generator=torch.Generator().manual_seed(2))
    n = torch.randn((4, 1, 20), generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.allclose(band.signals[1:], x + (0.5 + 0.125 * n).clamp(-0.75, 0.75), rtol=0, atol=1e-15)
    assert band.kernel.tolist() == [1.0] and band.config["kernel_taps"] == 1


def test_only_trials_in_the_adversarial_class_are_kept_linear_model() -> None:
    """Linear model, class 1 iff Σ w·z > 0 with w = ±1 on the two halves: ``x_adv`` is barely adversarial,
    so the trials split; the kept ones are exactly the reference trials with w·z > 0."""
    w = torch.cat([torch.ones(1, 16), -torch.ones(1, 16)], 1).double()
    x = torch.zeros(1, 32, dtype=F64)
    x_adv = x + 0.01 * w  # w·x_adv = 0.32 > 0
    model = Linear(w)
    band = adversarial_band(model, x, x_adv, eps=0.5, trials=64, batch_size=16, noise_std=0.2,
                            generator=torch.Generator().manual_seed(7))
    ref = torch.from_numpy(reference_trials(x, x_adv, eps=0.5, std=0.2, kernel=sap_kernel(), trials=64,
                                            batch_size=16, seed=7))
    adv = (ref * w).flatten(1).sum(1) > 0
    assert 10 < int(adv.sum()) < 54  # the trials really split
    assert band.adv_class == 1 and band.kept == int(adv.sum()) and band.kept_fraction == int(adv.sum()) / 64
    assert torch.allclose(band.signals[1:], ref[adv], rtol=0, atol=1e-12)
    assert model.batches == [1, 16, 16, 16, 16]
    s = band.summary()
    assert s["kept"] == band.kept and s["trials"] == 64


def test_trials_are_clamped_to_the_bounds_and_x_adv_is_not() -> None:
    """Negligible noise, identity kernel: each trial is ``clip(x + clamp(x_adv − x, ±ε), lo, hi)`` by hand."""
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=F64)
    x_adv = torch.tensor([[0.1, 0.9, 0.45, 0.55]], dtype=F64)
    band = adversarial_band(Constant(2), x, x_adv, eps=0.3, trials=3, noise_std=1e-12, kernel=torch.ones(1),
                            bounds=(0.3, 0.8))
    # offsets -0.4, 0.4, -0.05, 0.05 → clamp ±0.3 → 0.2, 0.8, 0.45, 0.55 → bounds [0.3, 0.8]
    expect = torch.tensor([[0.3, 0.8, 0.45, 0.55]], dtype=F64)
    assert band.adv_class == 2 and band.kept == 3 and band.bounds == (0.3, 0.8)
    assert torch.allclose(band.signals[1:], expect.expand(3, 1, 4), rtol=0, atol=1e-9)
    assert torch.equal(band.signals[0], x_adv)
    assert torch.allclose(band.lower, torch.tensor([[0.1, 0.8, 0.45, 0.55]], dtype=F64), rtol=0, atol=1e-9)
    assert torch.allclose(band.upper, torch.tensor([[0.3, 0.9, 0.45, 0.55]], dtype=F64), rtol=0, atol=1e-9)


def test_the_padding_stays_at_x_in_x_adv_and_every_trial() -> None:
    """Non-zero ``x``: the mask puts ``x`` back in the padding of ``x_adv`` and of every trial; the real
    part of each trial is ``x_adv`` + (negligible) noise."""
    x = torch.full((2, 10), 0.25, dtype=F64)
    x_adv = torch.full((2, 10), 0.5, dtype=F64)
    mask = torch.tensor([1.0] * 6 + [0.0] * 4)
    band = adversarial_band(Constant(1), x, x_adv, eps=1.0, trials=5, noise_std=1e-12, kernel=torch.ones(1),
                            mask=mask)
    expect = torch.where(mask.bool(), 0.5, 0.25).to(F64).expand(2, 10)
    assert torch.equal(band.x_adv, expect) and torch.equal(band.signals[0], expect)
    assert torch.allclose(band.signals[1:], expect.expand(5, 2, 10), rtol=0, atol=1e-9)
    assert bool((band.signals[:, :, 6:] == 0.25).all()) and bool((band.width[:, 6:] == 0).all())
    assert band.mask is not None and band.mask.shape == (2, 10) and band.mask.dtype == F64


def test_the_mask_goes_to_a_model_that_takes_one() -> None:
    """The padding of ``x`` holds −100: with the mask the model sees the real part (mean > 0, class 1), without
    it the class would be 0. Both the class of ``x_adv`` and every trial are decided with the mask."""
    x = torch.cat([torch.zeros(1, 8), torch.full((1, 4), -100.0)], 1).double()
    x_adv = x.clone()
    x_adv[:, :8] = 1.0
    mask = torch.tensor([[1.0] * 8 + [0.0] * 4])
    model = MaskedMean()
    band = adversarial_band(model, x, x_adv, eps=2.0, trials=6, batch_size=4, noise_std=0.01, kernel=torch.ones(1),
                            mask=mask, generator=torch.Generator().manual_seed(1))
    assert band.adv_class == 1 and band.kept == 6
    assert len(model.masks) == 3 and all(m is not None and torch.equal(m[0], band.mask) for m in model.masks)
    assert torch.equal(band.signals[1:, :, 8:], x[:, 8:].expand(6, 1, 4))


def test_generator_same_seed_same_band_different_seed_different_default_is_seed_0() -> None:
    x = torch.zeros(1, 24, dtype=F64)
    x_adv = torch.full((1, 24), 0.1, dtype=F64)

    def run(gen: torch.Generator | None) -> torch.Tensor:
        return adversarial_band(Constant(1), x, x_adv, eps=0.5, trials=3, generator=gen).signals

    a = run(torch.Generator().manual_seed(5))
    torch.randn(100)  # the global RNG plays no part
    b = run(torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, run(torch.Generator().manual_seed(6)))
    torch.manual_seed(123)
    assert torch.equal(run(None), run(torch.Generator().manual_seed(0)))
    assert not torch.equal(run(None), run(torch.Generator().manual_seed(1)))


def test_defaults_1000_trials_in_batches_of_250_noise_eps_over_2_han_kernel() -> None:
    x = torch.zeros(1, 20, dtype=F64)
    model = Constant(1)
    band = adversarial_band(model, x, x + 0.01, eps=0.5)
    assert band.trials == 1000 and band.kept == 1000 and model.batches == [1, 250, 250, 250, 250]
    assert band.noise_std == 0.25
    assert torch.equal(band.kernel, sap_kernel())
    ref = reference_trials(x, x + 0.01, eps=0.5, std=0.25, kernel=sap_kernel(), trials=1000, batch_size=250, seed=0)
    np.testing.assert_allclose(band.signals[1:].numpy(), ref, rtol=0, atol=1e-12)


def test_kernel_in_seconds_and_dtype_follow_the_arguments() -> None:
    x = torch.zeros(1, 30)
    band = adversarial_band(Constant(1), x, x + 0.01, eps=0.1, trials=2, fs=125.0, reference_fs=300.0, y=0)
    assert band.kernel.dtype == torch.float32 and band.signals.dtype == torch.float32
    assert torch.allclose(band.kernel, sap_kernel(fs=125.0, reference_fs=300.0).float())
    assert band.config == {"fs": 125.0, "reference_fs": 300.0, "kernel_taps": 7}
    assert band.true_label == 0
    k = adversarial_band(Constant(1), x, x + 0.01, eps=0.1, trials=2, kernel=torch.tensor([0.25, 0.5, 0.25], dtype=F64))
    assert k.kernel.dtype == torch.float32 and k.kernel.tolist() == [0.25, 0.5, 0.25]


def test_trials_1_and_batch_size_1_are_accepted() -> None:
    model = Constant(1)
    band = adversarial_band(model, torch.zeros(1, 4), torch.ones(1, 4), eps=0.5, trials=1, batch_size=1)
    assert band.trials == 1 and band.kept == 1 and model.batches == [1, 1]
    model = Constant(1)
    band = adversarial_band(model, torch.zeros(1, 4), torch.ones(1, 4), eps=0.5, trials=3, batch_size=1)
    assert band.kept == 3 and model.batches == [1, 1, 1, 1]


# ----------------------------------------------------------------------------------- signal shapes
@pytest.mark.parametrize("shape,expect", [((2, 10), (2, 10)), ((1, 2, 10), (2, 10)), ((10,), (1, 10)),
                                          ((1, 10), (1, 10)), ((3, 2), (3, 2))])
def test_accepted_signal_shapes(shape: tuple[int, ...], expect: tuple[int, int]) -> None:
    x = torch.zeros(shape, dtype=F64)
    band = adversarial_band(Constant(1), x, x + 0.5, eps=0.25, trials=2, kernel=torch.ones(1), noise_std=1e-12)
    assert band.x.shape == expect and band.x_adv.shape == expect and band.signals.shape == (3, *expect)
    assert torch.allclose(band.signals[1:], torch.full((2, *expect), 0.25, dtype=F64), rtol=0, atol=1e-9)


def test_the_first_of_a_1_c_l_signal_is_used() -> None:
    x = torch.arange(20, dtype=F64).view(1, 2, 10)
    band = adversarial_band(Constant(1), x, x + 1.0, eps=0.5, trials=1, kernel=torch.ones(1), noise_std=1e-12)
    assert torch.equal(band.x, x[0]) and torch.equal(band.x_adv, x[0] + 1.0)


@pytest.mark.parametrize("x,x_adv,msg", [
    (torch.zeros(1, 10, dtype=torch.int64), torch.zeros(1, 10),
     "x must be a floating-point tensor (C, L), got Tensor."),
    ([[0.0] * 10], torch.zeros(1, 10), "x must be a floating-point tensor (C, L), got list."),
    (torch.zeros(1, 10), torch.zeros(1, 10, dtype=torch.bool),
     "x_adv must be a floating-point tensor (C, L), got Tensor."),
    (torch.zeros(2, 2, 10), torch.zeros(2, 10), "x must be one signal (C, L) (or (1, C, L)), got shape (2, 2, 10)."),
    (torch.zeros(2, 10), torch.zeros(2, 2, 10),
     "x_adv must be one signal (C, L) (or (1, C, L)), got shape (2, 2, 10)."),
    (torch.zeros(1), torch.zeros(1), "x must be one signal (C, L) (or (1, C, L)), got shape (1, 1)."),
    (torch.zeros(2, 1), torch.zeros(2, 1), "x must be one signal (C, L) (or (1, C, L)), got shape (2, 1)."),
    (torch.zeros(1, 1, 1, 4), torch.zeros(1, 4),
     "x must be one signal (C, L) (or (1, C, L)), got shape (1, 1, 1, 4)."),
    (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), "x contains NaN or inf."),
    (torch.zeros(1, 2), torch.tensor([[0.0, float("inf")]]), "x_adv contains NaN or inf."),
    (torch.zeros(1, 10), torch.zeros(1, 11), "x (1, 10) and x_adv (1, 11) must have the same shape."),
])
def test_bad_signals_get_a_one_line_data_error(x: Any, x_adv: Any, msg: str) -> None:
    with pytest.raises(DataError, match=_msg(msg)):
        adversarial_band(Constant(1), x, x_adv, eps=0.1)


@pytest.mark.parametrize("kw,msg", [
    ({"eps": 0.0}, "eps must be a positive finite number, got 0.0."),
    ({"eps": None}, "eps is required."),
    ({"eps": 0.1, "trials": 0}, "trials must be an integer >= 1, got 0."),
    ({"eps": 0.1, "batch_size": 0}, "batch_size must be an integer >= 1, got 0."),
    ({"eps": 0.1, "noise_std": -1.0}, "noise_std must be a positive finite number, got -1.0."),
])
def test_bad_arguments_get_a_one_line_config_error(kw: dict[str, Any], msg: str) -> None:
    with pytest.raises(ConfigError, match=_msg(msg)):
        adversarial_band(Constant(1), torch.zeros(1, 10), torch.zeros(1, 10), **kw)


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("shape", [(10,), (1, 10), (2, 10), (1, 2, 10), (1, 1, 10)])
def test_mask_shapes_broadcast_to_the_signal(shape: tuple[int, ...]) -> None:
    row = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    mask = row.expand(shape)
    m = _band_mask(mask, torch.zeros(2, 10, dtype=F64))
    assert m is not None and m.shape == (2, 10) and m.dtype == F64
    assert torch.equal(m, row.to(F64).expand(2, 10))
    m[0, 0] = 5.0  # a copy, never a view of the caller's mask
    assert bool(mask.flatten()[0])
    assert _band_mask(None, torch.zeros(2, 10)) is None


def test_mask_as_a_list_and_per_lead_masks() -> None:
    m = _band_mask([[1, 0, 1], [0, 1, 1]], torch.zeros(2, 3, dtype=torch.float32))
    assert m is not None and m.dtype == torch.float32 and m.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]


def test_mask_follows_the_signal_device() -> None:
    """The ``meta`` device (no data) shows where the mask is put."""
    m = _band_mask(torch.ones(10), torch.empty(2, 10, dtype=F64, device="meta"))
    assert m is not None and m.device.type == "meta" and m.dtype == F64 and m.shape == (2, 10)


@pytest.mark.parametrize("shape", [(3, 2, 10), (2, 1, 10), (2, 9), (11,)])
def test_mask_that_does_not_broadcast(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match=_msg(f"mask of shape {shape} does not broadcast to the signal (2, 10).")):
        adversarial_band(Constant(1), torch.zeros(2, 10), torch.zeros(2, 10), eps=0.1, mask=torch.ones(shape))


def test_finish_puts_x_back_in_the_padding_then_clamps() -> None:
    x = torch.tensor([[0.5, 0.5, 0.5]], dtype=F64)
    z = torch.tensor([[[0.875, 0.125, 0.75]], [[-0.5, 1.5, 0.625]]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    expect = torch.tensor([[[0.875, 0.125, 0.5]], [[-0.5, 1.5, 0.5]]], dtype=F64)
    assert torch.equal(_finish(z, x, mask, None), expect)
    expect = torch.tensor([[[0.75, 0.25, 0.75]], [[0.25, 0.75, 0.625]]], dtype=F64)
    assert torch.equal(_finish(z, x, None, (0.25, 0.75)), expect)
    expect = torch.tensor([[[0.875, 0.125, 0.5]], [[0.0, 1.0, 0.5]]], dtype=F64)
    assert torch.equal(_finish(z, x, mask, (0.0, 1.0)), expect)
    assert _finish(z, x, None, None) is z


# ---------------------------------------------------------------------------------------- summary
def test_summary_by_hand() -> None:
    sig = torch.tensor([[[0.0, 1.0]], [[0.5, 3.0]], [[0.25, 2.0]]], dtype=F64)
    band = hand_band(sig, eps=0.5)
    band.config = {"fs": None, "kernel_taps": 19}
    assert band.summary() == {"adv_class": 1, "true_label": 0, "trials": 2, "kept": 2, "kept_fraction": 1.0,
                              "eps": 0.5, "noise_std": 0.25, "mean_width": 1.25, "max_width": 2.0, "fs": None,
                              "kernel_taps": 19}
    band.kept, band.trials = 1, 4
    assert band.summary()["kept_fraction"] == 0.25
    band.trials = 0
    assert math.isnan(band.kept_fraction)


# ----------------------------------------------------------------------------------- uniform check
def _random_band(seed: int = 0, c: int = 2, length: int = 32, kernel: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> Band:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(c, length, generator=g, dtype=F64)
    sig = x + 0.5 * torch.randn(5, c, length, generator=g, dtype=F64)
    if mask is not None:
        sig = x + (sig - x) * mask
    return hand_band(sig, x=x, kernel=kernel, mask=mask)


def reference_uniform(band: Band, samples: int, seed: int) -> np.ndarray:
    """``clip(x + S(lo + u (hi − lo) − x), lo, hi)``, u ~ U(0, 1) float64 from the generator (NumPy)."""
    u = torch.rand((samples, *band.x.shape), generator=torch.Generator().manual_seed(seed), dtype=F64).numpy()
    lo, hi, x = band.lower.numpy(), band.upper.numpy(), band.x.numpy()
    s = lo + u * (hi - lo)
    return np.clip(x + np_smooth(s - x, band.kernel.numpy()), lo, hi)


def test_uniform_samples_are_resmoothed_and_projected_into_the_band() -> None:
    band = _random_band()
    model = Constant(1)
    out = uniform_band_check(model, band, samples=20, generator=torch.Generator().manual_seed(4))
    z = torch.cat(model.seen)
    np.testing.assert_allclose(z.numpy(), reference_uniform(band, 20, 4), rtol=0, atol=1e-12)
    assert z.dtype == F64 and out["inside_band"] is True
    assert out == {"samples": 20, "fraction_adv_class": 1.0, "predictions": {1: 20}, "inside_band": True,
                   "fraction_misclassified": 1.0}
    assert bool((z == band.lower).any()) and bool((z == band.upper).any())  # the projection is active


def test_uniform_generator_same_seed_same_samples_default_is_seed_0() -> None:
    band = _random_band(1)

    def run(gen: torch.Generator | None) -> torch.Tensor:
        model = Constant(1)
        uniform_band_check(model, band, samples=3, generator=gen)
        return torch.cat(model.seen)

    a = run(torch.Generator().manual_seed(8))
    torch.rand(50)
    assert torch.equal(a, run(torch.Generator().manual_seed(8)))
    assert not torch.equal(a, run(torch.Generator().manual_seed(9)))
    torch.manual_seed(77)
    assert torch.equal(run(None), run(torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(run(None).numpy(), reference_uniform(band, 3, 0), rtol=0, atol=1e-12)


def test_uniform_fractions_by_hand_identity_kernel() -> None:
    """Identity kernel: the sample is ``lo + u (hi − lo)``. Lead 0, time 0 ranges over [−1, 3] and the linear
    model answers class 1 iff that value is > 0, i.e. iff u > 1/4."""
    lo = torch.zeros(1, 1, 6, dtype=F64)
    sig = torch.cat([lo, lo + 1.0], 0)
    sig[0, 0, 0], sig[1, 0, 0] = -1.0, 3.0
    band = hand_band(sig, kernel=torch.ones(1), true_label=0)
    w = torch.zeros(1, 6, dtype=F64)
    w[0, 0] = 1.0
    model = Linear(w)
    out = uniform_band_check(model, band, samples=40, generator=torch.Generator().manual_seed(3))
    u = torch.rand((40, 1, 6), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(torch.cat(model.seen), sig[0] + u * (sig[1] - sig[0]))
    n1 = int((u[:, 0, 0] > 0.25).sum())
    assert 0 < n1 < 40
    assert out["fraction_adv_class"] == n1 / 40 and out["fraction_misclassified"] == n1 / 40
    assert out["predictions"] == {0: 40 - n1, 1: n1}
    out = uniform_band_check(Linear(w), band, samples=40, y=1, generator=torch.Generator().manual_seed(3))
    assert out["fraction_misclassified"] == (40 - n1) / 40 and out["fraction_adv_class"] == n1 / 40
    band.true_label = None
    out = uniform_band_check(Linear(w), band, samples=40, generator=torch.Generator().manual_seed(3))
    assert "fraction_misclassified" not in out and out["fraction_adv_class"] == n1 / 40


def test_uniform_float32_band_stays_float32() -> None:
    band = _random_band(2)
    band32 = hand_band(band.signals.float(), x=band.x.float(), kernel=band.kernel.float())
    model = Constant(1)
    uniform_band_check(model, band32, samples=4, generator=torch.Generator().manual_seed(0))
    z = torch.cat(model.seen)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.numpy(), reference_uniform(band, 4, 0), rtol=0, atol=1e-5)


def test_uniform_with_a_mask_keeps_the_padding_and_passes_the_mask() -> None:
    mask = torch.tensor([[1.0] * 24 + [0.0] * 8], dtype=F64).expand(2, 32).clone()
    band = _random_band(3, mask=mask)
    band.x[:, 24:] = -100.0  # the padding of every signal is x
    band.signals[:, :, 24:] = -100.0
    band.x_adv, band.lower, band.upper = band.signals[0], band.signals.amin(0), band.signals.amax(0)
    model = MaskedMean()
    out = uniform_band_check(model, band, samples=10, generator=torch.Generator().manual_seed(5))
    z = torch.cat(model.seen)
    np.testing.assert_allclose(z.numpy(), reference_uniform(band, 10, 5), rtol=0, atol=1e-12)
    assert bool((z[:, :, 24:] == -100.0).all()) and out["inside_band"] is True
    assert all(m is not None and torch.equal(m[0], mask) for m in model.masks)
    with torch.no_grad():
        expect = (z[:, :, :24].flatten(1).mean(1) > 0).double().mean()
    assert out["fraction_adv_class"] == float(expect)


def test_uniform_mask_is_reapplied_after_the_projection() -> None:
    """A band whose padding is wider than ``x`` (built by hand): the padding of every sample is still ``x``,
    and ``inside_band`` honestly reports that ``x`` lies outside that band there."""
    x = torch.zeros(1, 8, dtype=F64)
    x[0, 6:] = 0.5
    sig = torch.stack([torch.full((1, 8), 1.0, dtype=F64), torch.full((1, 8), 2.0, dtype=F64)])
    mask = torch.tensor([[1.0] * 6 + [0.0] * 2], dtype=F64)
    band = hand_band(sig, x=x, kernel=torch.ones(1), mask=mask)
    model = Constant(1)
    out = uniform_band_check(model, band, samples=6, generator=torch.Generator().manual_seed(0))
    z = torch.cat(model.seen)
    u = torch.rand((6, 1, 8), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(z[:, :, :6], 1.0 + u[:, :, :6])
    assert bool((z[:, :, 6:] == 0.5).all())
    assert out["inside_band"] is False


def test_uniform_defaults_and_arguments() -> None:
    band = _random_band(4, length=20)
    model = Constant(1)
    out = uniform_band_check(model, band)
    assert out["samples"] == 100 and model.batches == [100]
    model = Constant(1)
    out = uniform_band_check(model, band, samples=300)
    assert model.batches == [250, 50] and out["predictions"] == {1: 300}
    model = Constant(0)
    out = uniform_band_check(model, band, samples=1, batch_size=1)
    assert out["samples"] == 1 and out["fraction_adv_class"] == 0.0 and out["fraction_misclassified"] == 0.0
    with pytest.raises(ConfigError, match=_msg("samples must be an integer >= 1, got 0.")):
        uniform_band_check(Constant(1), band, samples=0)


# ----------------------------------------------------------------------------- concatenation check
def _pair_band(offset: list[float], *, lead1: float = 0.0, c_first: float = 1.0, eps: float = 1.0) -> Band:
    """``j`` = ``c_first`` everywhere, ``k = j + offset`` (lead 0) and ``j + offset + lead1`` (lead 1)."""
    length = len(offset)
    j = torch.full((2, length), c_first, dtype=F64)
    k = j.clone()
    k[0] += torch.tensor(offset, dtype=F64)
    k[1] += torch.tensor(offset, dtype=F64) + lead1
    return hand_band(torch.stack([j + 0.5, j, k]), eps=eps)


def test_concatenation_split_points_evenly_spaced_within_tolerance() -> None:
    """``j`` and ``k`` differ by t/128 at t = 0..9, by exactly tol = 16/128 at t = 10, by 1 elsewhere: the
    candidate splits are t = 1..9 (t = 0 is excluded, t = 10 is not < tol); 5 of them, evenly spaced
    (indices 0, 2, 4, 6, 8 of the candidates), give t = 1, 3, 5, 7, 9 and two concatenations each."""
    offset = [t / 128 for t in range(10)] + [16 / 128, 1.0, 1.0]
    band = _pair_band(offset)
    j, k = band.signals[1], band.signals[2]
    model = Constant(1)
    out = concatenation_check(model, band, tol=16 / 128)
    expect = []
    for t in (1, 3, 5, 7, 9):
        expect += [torch.cat([j[:, :t], k[:, t:]], -1), torch.cat([k[:, :t], j[:, t:]], -1)]
    assert torch.equal(torch.cat(model.seen), torch.stack(expect))
    assert out == {"pairs": 1, "pairs_without_split": 0, "concatenations": 10, "tol": 0.125, "max_jump": 9 / 128,
                   "fraction_adv_class": 1.0, "fraction_misclassified": 1.0}
    out = concatenation_check(Constant(1), band, tol=16 / 128, max_splits=1)
    assert out["concatenations"] == 2 and out["max_jump"] == 1 / 128  # the first candidate
    out = concatenation_check(Constant(1), band, tol=16 / 128, max_splits=9)
    assert out["concatenations"] == 18
    out = concatenation_check(Constant(1), band, tol=16 / 128, max_splits=10)
    assert out["concatenations"] == 18


def test_concatenation_needs_every_lead_within_tolerance() -> None:
    """Lead 1 is 0.5 further apart everywhere: no time is a split point at tol 1/8, all are at tol 1."""
    band = _pair_band([0.0] * 6, lead1=0.5)
    out = concatenation_check(Constant(1), band, tol=0.125)
    assert out["pairs_without_split"] == 1 and out["concatenations"] == 0
    out = concatenation_check(Constant(1), band, tol=1.0, max_splits=10)
    assert out["concatenations"] == 10 and out["max_jump"] == 0.5


def test_concatenation_fractions_and_label() -> None:
    """The linear model reads the last sample of lead 0 (k: 2, j: 1): against 1.5, ``j[:t] ‖ k[t:]`` is class 1
    and ``k[:t] ‖ j[t:]`` class 0 (half adversarial); against 0.5 all are class 1, which is adversarial for
    ``adv_class`` 1 and misclassified for the true label 0 but not for ``y = 1``."""
    offset = [0.0, 0.0, 0.0, 1.0]
    band = _pair_band(offset)
    w = torch.zeros(2, 4, dtype=F64)
    w[0, 3] = 1.0
    out = concatenation_check(Linear(w, -1.5), band, tol=0.5)  # t = 1, 2
    assert out["concatenations"] == 4 and out["fraction_adv_class"] == 0.5 and out["fraction_misclassified"] == 0.5
    # every signal's last sample above 1.5: all four concatenations in class 1
    out = concatenation_check(Linear(w, -0.5), band, tol=0.5)
    assert out["fraction_adv_class"] == 1.0 and out["fraction_misclassified"] == 1.0
    out = concatenation_check(Linear(w, -0.5), band, tol=0.5, y=1)
    assert out["fraction_misclassified"] == 0.0
    band.adv_class = 0
    out = concatenation_check(Linear(w, -0.5), band, tol=0.5)
    assert out["fraction_adv_class"] == 0.0
    band.true_label = None
    out = concatenation_check(Linear(w, -0.5), band, tol=0.5)
    assert "fraction_misclassified" not in out


def test_concatenation_pairs_counts_and_the_first_n_signals() -> None:
    """s1 coincides with no other; s2..s5 all coincide at t = 3 only: 10 pairs, 4 without a split, 6 × 2
    concatenations. With n_signals = 3 only s1..s3 count: 3 pairs, 2 without a split."""
    base = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
    sig = [torch.zeros(1, 6, dtype=F64), (base + 100.0).view(1, 6)]
    for i in range(4):
        s = base * (i + 2)
        s[3] = 0.0
        sig.append(s.view(1, 6))
    band = hand_band(torch.stack(sig), eps=2.0)
    model = Constant(1)
    out = concatenation_check(model, band)
    assert out["tol"] == 0.1  # default ε/20
    assert (out["pairs"], out["pairs_without_split"], out["concatenations"]) == (10, 4, 12)
    assert model.batches == [12]
    out = concatenation_check(Constant(1), band, n_signals=3)
    assert (out["pairs"], out["pairs_without_split"], out["concatenations"]) == (3, 2, 2)
    out = concatenation_check(Constant(1), band, n_signals=1)
    assert (out["pairs"], out["pairs_without_split"], out["concatenations"]) == (0, 0, 0)


def test_concatenation_default_n_signals_10_and_no_split_gives_nan() -> None:
    sig = torch.arange(13, dtype=F64).view(13, 1, 1).expand(13, 1, 5).clone()  # 12 trials, all apart
    band = hand_band(sig)
    out = concatenation_check(Constant(1), band)
    assert set(out) == {"pairs", "pairs_without_split", "concatenations", "tol", "max_jump", "fraction_adv_class",
                        "fraction_misclassified"}
    assert (out["pairs"], out["pairs_without_split"], out["concatenations"], out["max_jump"]) == (45, 45, 0, 0.0)
    assert math.isnan(out["fraction_adv_class"]) and math.isnan(out["fraction_misclassified"])
    band.true_label = None
    out = concatenation_check(Constant(1), band)
    assert "fraction_misclassified" not in out and math.isnan(out["fraction_adv_class"])
    assert out["pairs"] == 45


def test_concatenation_default_batches_of_250() -> None:
    """10 trials equal at t = 1..5 only: 45 pairs × 5 splits × 2 = 450 concatenations, classified 250 + 200."""
    sig = torch.arange(11, dtype=F64).view(11, 1, 1).expand(11, 1, 8).clone()
    sig[:, :, 1:6] = 0.0
    model = Constant(1)
    out = concatenation_check(model, hand_band(sig))
    assert out["concatenations"] == 450 and model.batches == [250, 200]


def test_concatenation_splits_only_inside_the_mask_and_passes_the_mask() -> None:
    """Padding (t >= 8) holds x = −100 in every signal (so the trials coincide there); inside the mask they
    coincide only at t = 3. The model decides on the real part only when given the mask."""
    x = torch.zeros(1, 12, dtype=F64)
    x[0, 8:] = -100.0
    sig = torch.stack([x.clone() for _ in range(3)])
    sig[0, 0, :8], sig[1, 0, :8], sig[2, 0, :8] = 3.0, 1.0, 2.0
    sig[1, 0, 3] = sig[2, 0, 3] = 1.5
    mask = torch.tensor([[1.0] * 8 + [0.0] * 4], dtype=F64)
    band = hand_band(sig, x=x, mask=mask)
    model = MaskedMean()
    out = concatenation_check(model, band, tol=0.25)
    assert out["concatenations"] == 2 and out["max_jump"] == 0.0
    j, k = sig[1], sig[2]
    assert torch.equal(model.seen[0], torch.stack([torch.cat([j[:, :3], k[:, 3:]], -1),
                                                   torch.cat([k[:, :3], j[:, 3:]], -1)]))
    assert model.masks[0] is not None and torch.equal(model.masks[0][0], mask)
    assert out["fraction_adv_class"] == 1.0 and out["fraction_misclassified"] == 1.0


def test_concatenation_bad_arguments() -> None:
    band = _pair_band([0.0, 0.0, 1.0])
    for kw, msg in [({"n_signals": 0}, "n_signals must be an integer >= 1, got 0."),
                    ({"max_splits": 0}, "max_splits must be an integer >= 1, got 0."),
                    ({"tol": 0.0}, "tol must be a positive finite number, got 0.0."),
                    ({"tol": float("inf")}, "tol must be a positive finite number, got inf.")]:
        with pytest.raises(ConfigError, match=_msg(msg)):
            concatenation_check(Constant(1), band, **kw)


@pytest.mark.parametrize("kwargs,message", [
    ({"bounds": (1.0, 0.0)}, "bounds needs lo < hi, got (1.0, 0.0)."),
    ({"bounds": 5}, "bounds must be None, 'auto' or a pair (lo, hi), got 5."),
    ({"bounds": (0.0,)}, "bounds must be None, 'auto' or a pair (lo, hi), got (0.0,)."),
    ({"bounds": "auto"}, "bounds must be None or a pair (lo, hi) here, got 'auto' (the band knows no data units); "
                         "pass e.g. bounds=(0.0, 1.0)."),
    ({"kernel": [1.0, 2.0, 1.0]}, "kernel must be a 1-D tensor with an odd number of taps, got list; "
                                  "e.g. medrobust.attacks.sap_filter.sap_kernel(fs=...)."),
    ({"kernel": torch.ones(4)}, "kernel must be a 1-D tensor with an odd number of taps, got (4,); "
                                "e.g. medrobust.attacks.sap_filter.sap_kernel(fs=...)."),
    ({"kernel": torch.ones(1, 3)}, "kernel must be a 1-D tensor with an odd number of taps, got (1, 3); "
                                   "e.g. medrobust.attacks.sap_filter.sap_kernel(fs=...)."),
])
def test_bad_bounds_and_kernels_get_one_line_errors(kwargs: dict, message: str) -> None:
    x = torch.zeros(1, 8, dtype=torch.float64)
    with pytest.raises(ConfigError) as info:
        adversarial_band(Constant(), x, x + 0.01, eps=0.1, trials=1, **kwargs)
    assert str(info.value) == message


def test_list_bounds_become_a_checked_pair() -> None:
    x = torch.zeros(1, 8, dtype=torch.float64)
    band = adversarial_band(Constant(), x, x + 0.01, eps=0.1, trials=1, bounds=[0, 1])
    assert band.bounds == (0.0, 1.0) and isinstance(band.bounds, tuple)
