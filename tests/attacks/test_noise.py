"""Noise baselines: exact SNR / amplitude, spectra at the right frequencies for the given fs, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.attacks import (
    GaussianNoise, PhysioNoise, UniformNoise, add_noise, get_attack, noise, physiological_noise,
)
from medrobust.attacks.noise import PHYSIO_KINDS
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.flags import is_black_box

from ._blackbox import Spy
from .conftest import SmallECGNet

KINDS = ("uniform", "gaussian", "baseline_wander", "powerline", "emg", "electrode_motion", "mixed")


def _snr(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    px = x.double().flatten(1).pow(2).mean(1)
    pn = n.double().flatten(1).pow(2).mean(1)
    return 10 * torch.log10(px / pn)


@pytest.mark.parametrize("kind", KINDS)
def test_snr_and_amplitude_are_exact(kind: str, ecg12_x: torch.Tensor) -> None:
    x = ecg12_x[:4]
    for snr in (20.0, 6.0, -3.0):
        noisy = add_noise(x, kind=kind, fs=500.0, snr_db=snr, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(_snr(x, noisy - x), torch.full((4,), snr, dtype=torch.float64), atol=1e-3, rtol=0)
    n = physiological_noise(tuple(x.shape), fs=500.0, kind="mixed", amplitude=0.05) if kind == "mixed" else \
        add_noise(x, kind=kind, fs=500.0, amplitude=0.05) - x
    rms = n.double().flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.full((4,), 0.05, dtype=torch.float64), atol=1e-6, rtol=0)


def _spectrum(n: torch.Tensor, fs: float) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.fft.rfft(n.double(), dim=-1).abs().pow(2).flatten(0, -2).mean(0)
    f = torch.fft.rfftfreq(n.shape[-1], d=1.0 / fs)
    return f, p


@pytest.mark.parametrize("fs, mains", [(360.0, 50.0), (360.0, 60.0), (500.0, 60.0), (125.0, 50.0)])
def test_powerline_peaks_at_mains_and_harmonics_below_nyquist(fs: float, mains: float) -> None:
    n = noise((3, 2, int(fs * 4)), kind="powerline", fs=fs, mains_hz=mains, harmonics=3)
    f, p = _spectrum(n, fs)
    assert float(f[p.argmax()]) == pytest.approx(mains, abs=0.25)
    for k in (2, 3):
        fk = k * mains
        near = (f - fk).abs() < 0.5
        if fk < fs / 2:
            assert float(p[near].max()) > 0.1 * float(p.max())  # harmonic present (amplitude 1/k)
    away = ((f[:, None] - mains * torch.arange(1, 4)[None]).abs() > 1.0).all(1)
    assert float(p[away].sum()) < 1e-6 * float(p.sum())


def test_band_limits_of_wander_and_emg() -> None:
    fs = 360.0
    f, p = _spectrum(noise((4, 1, 3600), kind="baseline_wander", fs=fs), fs)
    assert float(p[f <= 1.0].sum()) > 0.95 * float(p.sum())
    f, p = _spectrum(noise((4, 1, 3600), kind="emg", fs=fs), fs)
    assert float(p[(f >= 15) & (f <= 155)].sum()) > 0.9 * float(p.sum())
    f, p = _spectrum(noise((4, 1, 3600), kind="electrode_motion", fs=fs), fs)
    assert float(p[f <= 10].sum()) > 0.9 * float(p.sum())  # slow transients, not broadband


@pytest.mark.parametrize("kind", KINDS)
def test_same_generator_same_noise(kind: str) -> None:
    a = noise((2, 3, 500), kind=kind, fs=250.0, generator=torch.Generator().manual_seed(7))
    b = noise((2, 3, 500), kind=kind, fs=250.0, generator=torch.Generator().manual_seed(7))
    c = noise((2, 3, 500), kind=kind, fs=250.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # independent per sample


def test_bad_input_errors(ecg12_x: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="fs="):
        noise((2, 1, 100), kind="powerline")
    with pytest.raises(ConfigError, match="Nyquist"):
        noise((2, 1, 100), kind="powerline", fs=100.0, mains_hz=50.0)
    with pytest.raises(ConfigError, match="unknown noise kind"):
        noise((2, 1, 100), kind="pink")
    with pytest.raises(ConfigError, match="exactly one"):
        add_noise(ecg12_x, kind="gaussian", amplitude=0.1, snr_db=10.0)
    with pytest.raises(ConfigError, match="signal="):
        physiological_noise((2, 1, 100), fs=100.0, kind="emg", snr_db=10.0)
    with pytest.raises(DataError, match="non-zero power"):
        add_noise(torch.zeros(2, 1, 100), kind="gaussian", snr_db=10.0)
    with pytest.raises(ConfigError, match="fs="):
        PhysioNoise(torch.nn.Linear(2, 2), eps=0.1)
    with pytest.raises(ConfigError, match="shape"):
        noise((5,), kind="gaussian")


@pytest.mark.parametrize("kind", PHYSIO_KINDS)
def test_physio_attack_has_exact_snr(kind: str, ecg12_x: torch.Tensor) -> None:
    """L2 + eps_mode='snr_db': every δ lies on the sphere, so its SNR is exactly ε dB."""
    torch.manual_seed(0)
    model = SmallECGNet(12)
    x = ecg12_x
    with torch.no_grad():
        y = model(x).argmax(1)
    spy = Spy(model)
    res = PhysioNoise(spy, eps=15.0, eps_mode="snr_db", norm="l2", fs=500.0, kind=kind, mains_hz=60.0,
                      generator=torch.Generator().manual_seed(0))(x, y)
    torch.testing.assert_close(_snr(x, res.x_adv - x), torch.full((len(x),), 15.0, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    assert res.queries == spy.rows == 2 * len(x) and not any(spy.grad_enabled)


def test_uniform_noise_is_ma_liang_uniform_and_trials_stop_early(beats_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():
        y = model(beats_x).argmax(1)
    x = beats_x * 0.5 + 0.25  # away from the [0, 1] bounds: no clipping
    res = UniformNoise(model, eps=0.1, bounds=(0, 1), trials=1)(x, y)
    d = (res.x_adv - x).flatten()
    assert float(d.abs().max()) <= 0.1 and float(d.abs().max()) > 0.099
    assert abs(float(d.mean())) < 0.01 and abs(float(d.std()) - 0.1 / math.sqrt(3)) < 0.005  # U[−ε, ε]
    spy = Spy(model)
    r3 = UniformNoise(spy, eps=0.3, trials=5)(x, y)
    # one query per trial while not fooled, plus the clean forward
    fooled_at = r3.queries_per_sample - 1
    assert bool((fooled_at >= 1).all()) and bool((fooled_at <= 5).all())
    assert bool((fooled_at[~r3.success] == 5).all())
    assert r3.queries == spy.rows


def test_registry_and_black_box_flags() -> None:
    for name in ("uniform_noise", "gaussian_noise", "physio_noise"):
        assert is_black_box(name)
    assert isinstance(get_attack("gaussian_noise", torch.nn.Linear(2, 2), eps=0.1), GaussianNoise)


@pytest.mark.parametrize("fs", [360.0, 500.0])
def test_physio_attack_uses_the_given_fs(fs: float) -> None:
    """Powerline noise of the attack peaks at the mains frequency on the time axis of the fs it was given."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 3600, generator=torch.Generator().manual_seed(0)) * 0.01
    model = SmallECGNet(1)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = PhysioNoise(model, eps=1.0, norm="l2", fs=fs, kind="powerline", mains_hz=50.0, harmonics=1)(x, y)
    f, p = _spectrum(res.x_adv - x, fs)
    assert float(f[p.argmax()]) == pytest.approx(50.0, abs=0.25)
    assert res.config["fs"] == fs and res.config["kind"] == "powerline"


@pytest.mark.parametrize("attack", [UniformNoise, GaussianNoise, PhysioNoise])
def test_masked_coordinates_never_change_and_samples_draw_their_own_noise(attack: type, ecg12_x: torch.Tensor
                                                                           ) -> None:
    torch.manual_seed(0)
    model = SmallECGNet(12)
    x = ecg12_x[:6]
    with torch.no_grad():
        y = model(x).argmax(1)
    mask = torch.ones_like(x)
    mask[:, 3:, :] = 0  # only the first three leads may change
    atk = attack(model, eps=0.2, norm="l2", fs=500.0, trials=3)
    res = atk(x, y, mask=mask)
    assert torch.equal(res.x_adv[:, 3:], x[:, 3:]) and bool((res.x_adv[:, :3] != x[:, :3]).any())
    # the noise is masked before it is scaled, so it still lies on the sphere ‖δ‖₂ = ε
    torch.testing.assert_close(res.norms, torch.full((6,), 0.2), atol=1e-5, rtol=0)
    part = atk(x[2:], y[2:], mask=mask[2:], sample_ids=torch.arange(2, 6))
    torch.testing.assert_close(part.x_adv, res.x_adv[2:], atol=1e-6, rtol=0)
    assert torch.equal(part.queries_per_sample, res.queries_per_sample[2:])
