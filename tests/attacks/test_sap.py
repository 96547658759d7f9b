"""SAP: the 19-tap operator of Han et al. and the smoothness of its perturbations."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import PGD, SAP
from medrobust.attacks.smoothing import frequency_response, sap_kernel, smooth, smoothing_matrix
from medrobust.errors import ConfigError

from .conftest import SmallECGNet

# methods-ecg.md §2.6
HAN_K = [0.00355, 0.00429, 0.01114, 0.01347, 0.02683, 0.03198, 0.05846, 0.10636, 0.15126,
         0.18533, 0.15126, 0.10636, 0.05846, 0.03198, 0.02683, 0.01347, 0.01114, 0.00429, 0.00355]


def test_kernel_equals_the_average_of_25_gaussians() -> None:
    k = sap_kernel()
    assert k.numel() == 19
    torch.testing.assert_close(k, torch.tensor(HAN_K, dtype=torch.float64), atol=6e-6, rtol=0)
    assert abs(float(k.sum()) - 1.0) < 1e-12  # unit DC gain
    assert torch.equal(k, k.flip(0)) and bool((k >= 0).all())


def test_operator_equals_mean_of_the_25_same_convolutions() -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 2, 64, generator=g, dtype=torch.float64)
    ref = torch.zeros_like(theta)
    for s in (5, 7, 11, 15, 19):
        t = torch.arange(-(s // 2), s // 2 + 1, dtype=torch.float64)
        for sg in (1.0, 3.0, 5.0, 7.0, 10.0):
            ker = torch.exp(-(t**2) / (2 * sg * sg))
            ker = ker / ker.sum()
            ref += torch.nn.functional.conv1d(theta.reshape(-1, 1, 64), ker.view(1, 1, -1), padding=s // 2).reshape(
                theta.shape)
    ref /= 25
    k = sap_kernel()
    torch.testing.assert_close(smooth(theta, k), ref)
    torch.testing.assert_close(smooth(theta, k, matrix=smoothing_matrix(k, 64, dtype=theta.dtype, device="cpu")), ref)


def test_smoothing_never_grows_the_norms() -> None:
    g = torch.Generator().manual_seed(1)
    theta = (torch.rand(16, 3, 200, generator=g, dtype=torch.float64) * 2 - 1)
    out = smooth(theta, sap_kernel())
    assert bool((out.abs().flatten(1).amax(1) <= theta.abs().flatten(1).amax(1) + 1e-15).all())
    assert bool((out.flatten(1).norm(dim=1) <= theta.flatten(1).norm(dim=1) + 1e-12).all())


def test_cutoff_in_samples_matches_the_spec() -> None:
    """|H(f)| = 0.5 at about 21.8 Hz for 300 Hz data and 9.1 Hz at 125 Hz (methods-ecg.md §2.6)."""
    k = sap_kernel()
    f = torch.linspace(0, 60, 6001)
    for fs, f_half in ((300.0, 21.8), (125.0, 9.1), (500.0, 36.4)):
        h = frequency_response(k, fs, f * fs / 300.0)
        cut = float((f * fs / 300.0)[(h < 0.5).nonzero()[0]])
        assert abs(cut - f_half) < 0.2, (fs, cut)


@pytest.mark.parametrize("fs", [125.0, 300.0, 360.0, 500.0])
def test_kernels_in_seconds_keep_the_cutoff(fs: float) -> None:
    k = sap_kernel(fs=fs, reference_fs=300.0)
    f = torch.linspace(0, 60, 6001)
    h = frequency_response(k, fs, f)
    cut = float(f[(h < 0.5).nonzero()[0]])
    assert abs(cut - 21.8) / 21.8 < 0.12, cut
    assert abs(float(k.sum()) - 1.0) < 1e-12


def test_kernel_argument_errors() -> None:
    with pytest.raises(ConfigError, match="both fs and reference_fs"):
        sap_kernel(fs=500.0)
    with pytest.raises(ConfigError, match="odd"):
        sap_kernel(sizes=(4,))


def _hf_fraction(delta: torch.Tensor, fs: float, f0: float = 25.0) -> torch.Tensor:
    spec = torch.fft.rfft(delta.double(), dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(delta.shape[-1], d=1.0 / fs)
    return spec[..., freqs > f0].sum() / spec.sum().clamp_min(1e-30)


def test_sap_has_far_less_energy_above_25hz_than_pgd(ecg12_x: torch.Tensor) -> None:
    """12-lead CinC 2021 records at 500 Hz, kernels defined in seconds (reference 300 Hz)."""
    torch.manual_seed(0)
    model = SmallECGNet(12)
    x = ecg12_x
    with torch.no_grad():
        y = model(x).argmax(1)
    pgd = PGD(model, eps=0.05, steps=6, random_start=False, early_stop=False, rel_step_size=0.25)(x, y)
    sap = SAP(model, eps=0.05, steps=3, fs=500.0, reference_fs=300.0)(x, y)
    hf_pgd = _hf_fraction(pgd.x_adv - x, 500.0)
    hf_sap = _hf_fraction(sap.x_adv - x, 500.0)
    assert float(hf_pgd) > 0.3  # sign steps are broadband
    assert float(hf_sap) < 0.05 * float(hf_pgd), (float(hf_sap), float(hf_pgd))
    assert float((sap.x_adv - x).abs().max()) > 0.01  # not trivially zero


def test_sap_grad_budget_and_zero_warm_start(beats_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():
        y = model(beats_x).argmax(1)
    res = SAP(model, eps=0.05, steps=4)(beats_x, y)  # Han: T PGD + 2T smoothed steps, no early stop
    assert bool((res.grad_evals_per_sample == 12).all())
    res = SAP(model, eps=0.05, steps=0, smooth_steps=5, warm_start="zero")(beats_x, y)
    assert bool((res.grad_evals_per_sample == 5).all())
