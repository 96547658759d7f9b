"""SAP: the 19-tap operator of Han et al. and the smoothness of its perturbations."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import PGD, SAP
from medrobust.attacks.sap_filter import HAN_SIGMAS, frequency_response, sap_kernel, smooth, smoothing_matrix
from medrobust.errors import ConfigError

from .conftest import SmallECGNet

# Han et al. 2020's filter: the mean of the 25 normalised Gaussian kernels (sizes 5..19, widths 1..10)
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
    """|H(f)| = 0.5 at about 21.8 Hz for 300 Hz data and 9.1 Hz at 125 Hz (Han et al. 2020, SAP kernels)."""
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


class InputSpy(torch.nn.Module):
    """Records every batch the model sees (with its logits)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        self.inputs.append(x.detach().clone())
        self.logits.append(z.detach().clone())
        return z


def test_warm_start_is_pgd_then_smoothed_phase(centred) -> None:
    """Phase 1 is exactly T PGD steps; phase 2 starts from x + S(δ_PGD) and runs 2T smoothed steps."""
    model, x, y = centred
    T, alpha, eps = 3, 0.004, 0.01
    sap_spy, pgd_spy = InputSpy(model), InputSpy(model)
    sap = SAP(sap_spy, eps=eps, steps=T, step_size=alpha)
    sap(x, y)
    PGD(pgd_spy, eps=eps, steps=T, step_size=alpha, random_start=False, early_stop=False)(x, y)
    assert len(sap_spy.inputs) == 1 + T + 2 * T + 1  # clean, T warm-start, 2T smoothed, final evaluation
    for k in range(1, T + 1):  # the warm start forwards exactly PGD's iterates x_0 .. x_{T-1}
        torch.testing.assert_close(sap_spy.inputs[k], pgd_spy.inputs[k], rtol=0, atol=0)
    theta0 = pgd_spy.inputs[T + 1] - x  # δ_PGD, PGD's final iterate
    assert float(theta0.abs().max()) > 0.5 * eps
    expected = x + smooth(theta0, sap.kernel.double())
    torch.testing.assert_close(sap_spy.inputs[T + 1], expected, rtol=0, atol=1e-12)
    smooth_phase = torch.stack(sap_spy.inputs[T + 1:]) - x
    # every phase-2 input is a smoothed perturbation: S(θ) has no sign-step zigzag
    assert float(smooth_phase.diff(dim=-1).abs().max()) < 0.5 * float((pgd_spy.inputs[T] - x).diff(dim=-1).abs().max())


@pytest.mark.parametrize("output", ["best", "final"])
def test_output_best_and_final(output: str, centred) -> None:
    """``final``: Han's last iterate for every sample; ``best``: the latest successful iterate, else the last."""
    model, x, y = centred
    spy = InputSpy(model)
    res = SAP(spy, eps=0.02, steps=3, rel_step_size=0.5, output=output, bounds=(0, 1))(x, y)
    final = spy.inputs[-1]
    phase2 = list(zip(spy.inputs[4:], spy.logits[4:]))  # the smoothed iterates (clean + 3 warm-start forwards before)
    n_diff = 0
    for i in range(len(x)):
        hits = [xi[i] for xi, zi in phase2 if int(zi[i].argmax()) != int(y[i])]
        want = final[i] if output == "final" or not hits else hits[-1]
        torch.testing.assert_close(res.x_adv[i], want, rtol=0, atol=0)
        n_diff += int(bool(hits) and not torch.equal(hits[-1], final[i]))
    assert bool(res.success.any())
    if output == "best":
        assert n_diff >= 1  # the conventions differ on this batch: a success that the final iterate lost


def test_kernels_follow_the_data_rate_whenever_fs_is_given() -> None:
    model = SmallECGNet(1)
    sap = SAP(model, eps=0.1, fs=125.0)  # default: Han's kernels are 300 Hz kernels
    assert sap.reference_fs == 300.0
    assert sap.kernel_sizes == [3, 3, 5, 7, 7]  # 5, 7, 11, 15, 19 × 125/300 to the nearest odd size
    assert sap.kernel_sigmas == pytest.approx([s * 125 / 300 for s in HAN_SIGMAS])
    by_hand = sap_kernel(sizes=(3, 3, 5, 7, 7), sigmas=[s * 125 / 300 for s in HAN_SIGMAS])
    torch.testing.assert_close(sap.kernel, by_hand, rtol=0, atol=1e-15)
    assert sap.kernel.numel() == 7
    han = SAP(model, eps=0.1)  # fs unknown: Han's 19-tap filter in samples
    assert han.kernel_sizes == [5, 7, 11, 15, 19] and han.kernel.numel() == 19
    assert SAP(model, eps=0.1, fs=500.0).kernel_sizes == [9, 11, 19, 25, 31]
    assert SAP(model, eps=0.1, fs=300.0, reference_fs=300.0).kernel.numel() == 19
    with pytest.raises(ConfigError, match="reference_fs needs fs"):
        SAP(model, eps=0.1, reference_fs=300.0)
    with pytest.raises(ConfigError, match="output"):
        SAP(model, eps=0.1, output="last")
