"""Perturbation metrics equal hand computations; µV conversion; smoothness separates smooth from rough."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.perturbation import (
    high_frequency_fraction,
    lp_norms,
    perturbation_metrics,
    snr_db,
    summarize,
    total_variation,
    unit_scale,
)


def test_norms_snr_tv_by_hand() -> None:
    x = np.array([[[1.0, -2.0, 2.0, 0.0]]])
    d = np.array([[[0.1, 0.0, -0.2, 0.2]]])
    l2, linf = lp_norms(x, x + d)
    assert l2[0] == pytest.approx(math.sqrt(0.01 + 0.04 + 0.04))
    assert linf[0] == pytest.approx(0.2)
    assert snr_db(x, x + d)[0] == pytest.approx(10 * math.log10(9.0 / 0.09))
    assert total_variation(d)[0] == pytest.approx(0.1 + 0.2 + 0.4)
    assert snr_db(x, x)[0] == math.inf


def test_microvolts_only_for_physical_units() -> None:
    assert unit_scale("mV") == 1000.0 and unit_scale("uV") == 1.0
    assert unit_scale("normalized [0, 1]") is None
    x = np.zeros((2, 1, 5))
    xa = x.copy()
    xa[0, 0, 2] = 0.01          # 10 µV
    xa[1, 0, 1] = -0.05         # 50 µV
    pm = perturbation_metrics(x + 1.0, xa + 1.0, fs=360.0)
    s = summarize(pm, units="mV")
    assert s["linf_uv"]["max"] == pytest.approx(50.0) and s["linf_uv"]["median"] == pytest.approx(30.0)
    assert summarize(pm, units="normalized [0, 1]")["linf_uv"] is None


def test_high_frequency_fraction_of_sinusoids() -> None:
    fs, n = 360.0, 360
    t = np.arange(n) / fs
    low, high = np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 50 * t)
    hf = high_frequency_fraction(np.stack([low, high, 3 * low + high])[:, None, :], fs=fs, cutoff_hz=40.0)
    assert hf[0] == pytest.approx(0.0, abs=1e-12)
    assert hf[1] == pytest.approx(1.0)
    assert hf[2] == pytest.approx(1.0 / 10.0)        # energies 9 : 1
    assert math.isnan(high_frequency_fraction(np.zeros((1, 1, 8)), fs=fs)[0])
    with pytest.raises(ConfigError, match="cutoff_hz"):
        high_frequency_fraction(low[None, None], fs=fs, cutoff_hz=200.0)


def test_smoothed_noise_has_less_high_frequency_energy_and_variation() -> None:
    rng = np.random.default_rng(0)
    rough = np.sign(rng.standard_normal((4, 1, 500)))
    kernel = np.ones(25) / 25
    smooth = np.stack([[np.convolve(r[0], kernel, mode="same")] for r in rough])
    assert (high_frequency_fraction(smooth, fs=500.0) < 0.1).all()  # box-filter side lobes
    assert (high_frequency_fraction(rough, fs=500.0) > 0.5).all()
    assert (total_variation(smooth) < total_variation(rough) / 5).all()


def test_images_have_no_spectrum_and_shapes_must_match() -> None:
    x = np.zeros((3, 1, 4, 4))
    pm = perturbation_metrics(x, x + 0.1, fs=None)
    assert np.isnan(pm["hf_fraction"]).all() and pm["linf"] == pytest.approx([0.1] * 3)
    with pytest.raises(DataError, match="must match"):
        perturbation_metrics(x, x[:, :, :2], fs=None)
