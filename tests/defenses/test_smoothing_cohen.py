"""Randomized smoothing step by step (Cohen, Rosenfeld & Kolter, ICML 2019): SAMPLEUNDERNOISE with an injected
generator, PREDICT's binomial test at its threshold, CERTIFY's Clopper-Pearson bound and abstention, argument
checks that name the argument, and Gaussian noise augmentation written out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses import GaussianNoiseTraining, SmoothedClassifier, certified_radius, clopper_pearson_lower
from medrobust.defenses.smoothing import CertifyResult
from medrobust.errors import ConfigError, DataError
from medrobust.train import TrainConfig

N, LEADS, S = 2, 3, 5  # batch, leads and samples all differ: a wrong axis cannot go unnoticed


class Recorder(nn.Module):
    """Linear logits ``W·flatten(x) + b`` that records every batch it sees.

    It refuses an empty batch and more than ``budget`` inputs in all: a sampling loop that runs past ``n``
    (or never ends) fails here at once instead of hanging.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, budget: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(b.clone())
        self.budget = budget
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] > 0, "the model was called on an empty batch"
        self.inputs.append(x.detach().clone())
        seen = sum(t.shape[0] for t in self.inputs)
        assert self.budget is None or seen <= self.budget, f"{seen} noisy copies, more than the budget {self.budget}"
        return x.flatten(1) @ self.w.T + self.b

    @property
    def sizes(self) -> list[int]:
        return [t.shape[0] for t in self.inputs]


def _three_class(budget: int | None = None, dtype: torch.dtype = torch.float64) -> Recorder:
    """Class 0 vs 1 decided by the sum of lead 0 (threshold 0); class 2 never wins (bias -100)."""
    w = torch.zeros(3, LEADS * S, dtype=dtype)
    w[1, :S] = 1.0
    return Recorder(w, torch.tensor([0.0, 0.0, -100.0], dtype=dtype), budget)


def _x(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = torch.zeros(N, LEADS, S, dtype=dtype)
    x[0, 0] = 0.2      # lead-0 sum 1.0: class 1, far from the boundary
    x[1, 0] = -0.02    # lead-0 sum -0.1: class 0, close to the boundary
    x[:, 1:] = torch.linspace(-1, 1, 2 * S, dtype=dtype).view(1, 2, S)  # ignored by the model
    return x


def _by_hand(x: torch.Tensor, sigma: float, n: int, batch: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """SAMPLEUNDERNOISE written out: for each sample, batches of float32 N(0, I) from one generator, scaled by σ."""
    g = torch.Generator().manual_seed(seed)
    inputs, counts = [], []
    for xi in x:
        c = torch.zeros(3, dtype=torch.long)
        left = n
        while left > 0:
            b = min(batch, left)
            eta = torch.randn((b, *xi.shape), generator=g, dtype=torch.float32).to(xi.dtype)
            inputs.append(xi.unsqueeze(0) + sigma * eta)
            lead0 = inputs[-1][:, 0].sum(1)
            c[1] += int((lead0 > 0).sum())
            c[0] += int((lead0 <= 0).sum())
            left -= b
        counts.append(c)
    return inputs, torch.stack(counts)


# ------------------------------------------------------------------------------------------- helpers
def test_clopper_pearson_with_one_success_has_a_closed_form() -> None:
    # Beta(1, n) has CDF 1 - (1 - p)^n: the one-sided bound of 1 success in 10 solves it for alpha
    assert clopper_pearson_lower(1, 10, 0.05) == pytest.approx(1 - 0.95 ** (1 / 10), rel=1e-9)
    assert clopper_pearson_lower(1, 10, 0.05) > 0.0


def test_certified_accuracy_counts_radius_at_least_the_threshold() -> None:
    res = CertifyResult(prediction=torch.tensor([1, 0, -1, 2]), radius=torch.tensor([0.5, 0.25, 0.0, 0.75],
                        dtype=torch.float64), p_lower=torch.zeros(4, dtype=torch.float64),
                        counts=torch.zeros(4, 3, dtype=torch.long), sigma=0.5, n0=1, n=1, alpha=0.1)
    y = torch.tensor([1, 0, 0, 1])  # the abstention and the wrong class never count
    assert res.abstained.tolist() == [False, False, True, False]
    assert res.certified_accuracy(y) == 0.5
    assert res.certified_accuracy(y, radius=0.25) == 0.5  # a radius equal to the threshold counts
    assert res.certified_accuracy(y, radius=0.3) == 0.25
    assert res.certified_accuracy(y, radius=0.6) == 0.0


# ------------------------------------------------------------------------------------------- SAMPLEUNDERNOISE
@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_sample_counts_are_the_classes_of_x_plus_sigma_eta(float64_default) -> None:
    """Every forward sees exactly x_i + σ·η with η the float32 N(0, I) stream of the given generator (also when
    the default dtype is float64), in batches of batch_size, n in all; the counts are (N, K) even for a class
    that never wins."""
    sigma, n, batch = 0.3, 9, 4
    model = _three_class(budget=N * n)
    x = _x()
    counts = SmoothedClassifier(model, sigma=sigma, batch_size=batch).sample_counts(
        x, n, generator=torch.Generator().manual_seed(7))
    inputs, expected = _by_hand(x, sigma, n, batch, seed=7)
    assert model.sizes == [4, 4, 1, 4, 4, 1]
    for got, want in zip(model.inputs, inputs, strict=True):
        assert got.dtype == torch.float64 and torch.equal(got, want)
    assert counts.shape == (N, 3) and torch.equal(counts, expected)
    assert counts.sum(1).tolist() == [n, n] and counts[:, 2].tolist() == [0, 0]
    assert 0 < int(counts[1, 1]) < n  # the sample near the boundary gets both classes


def test_sample_counts_of_a_two_dimensional_batch_and_a_single_draw() -> None:
    w = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    model = Recorder(w, torch.zeros(2), budget=3)
    g = SmoothedClassifier(model, sigma=0.01, batch_size=1)
    counts = g.sample_counts(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]]), 1,
                             generator=torch.Generator().manual_seed(0))
    assert counts.tolist() == [[0, 1], [1, 0], [0, 1]] and model.sizes == [1, 1, 1]


def test_bad_inputs_are_refused_with_one_line() -> None:
    g = SmoothedClassifier(_three_class(), sigma=0.1)
    gen = torch.Generator().manual_seed(0)
    shape_msg = r"^x must be a non-empty floating-point batch \(N, \.\.\.\), e\.g\. \(N, leads, samples\)\.$"
    for bad in (torch.zeros(5), torch.zeros(N, LEADS, S, dtype=torch.long), torch.zeros(0, LEADS, S),
                [[0.0] * S]):
        with pytest.raises(DataError, match=shape_msg):
            g.sample_counts(bad, 3, generator=gen)
    for v in (float("nan"), float("inf")):
        x = _x()
        x[1, 2, 3] = v
        with pytest.raises(DataError, match=r"^x contains NaN or inf; clean those samples before certifying\.$"):
            g.certify(x, n0=1, n=1)
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 1, got 0\.$"):
        g.sample_counts(_x(), 0, generator=gen)
    assert g.model.inputs == []  # nothing sampled


def test_constructor_checks_name_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"^sigma must be > 0\.0, got 0\.0\.$"):
        SmoothedClassifier(_three_class(), sigma=0.0)
    with pytest.raises(ConfigError, match=r"^batch_size must be an integer >= 1, got 0\.$"):
        SmoothedClassifier(_three_class(), sigma=0.1, batch_size=0)
    assert SmoothedClassifier(_three_class(), sigma=0.1, batch_size=1).batch_size == 1
    assert SmoothedClassifier(_three_class(), sigma=0.1).batch_size == 1000


# ------------------------------------------------------------------------------------------- PREDICT
def test_predict_is_the_binomial_test_of_the_top_two_counts_at_level_alpha() -> None:
    """PREDICT returns the top class iff the two-sided binomial p-value of (n_A, n_A + n_B) is <= α: at
    α = p it predicts, just below it abstains."""
    sigma, n = 0.2, 60
    x = _x()
    counts = SmoothedClassifier(_three_class(), sigma=sigma, batch_size=25).sample_counts(
        x, n, generator=torch.Generator().manual_seed(3))
    na, nb = sorted(counts[1].tolist(), reverse=True)[:2]
    assert nb > 0
    p = binomtest(na, na + nb, 0.5).pvalue
    assert 1e-6 < p < 1.0
    top = int(counts[1].argmax())
    g = SmoothedClassifier(_three_class(), sigma=sigma, batch_size=25)
    at = g.predict(x, n=n, alpha=p, generator=torch.Generator().manual_seed(3))
    below = g.predict(x, n=n, alpha=float(np.nextafter(p, 0.0)), generator=torch.Generator().manual_seed(3))
    assert at.tolist() == [1, top] and below.tolist() == [1, -1]
    assert at.dtype == torch.long


def test_predict_defaults_and_generator() -> None:
    """Default n = 100 draws per sample from a generator seeded with 0; a given generator is the noise source."""
    x = _x()
    model = _three_class(budget=N * 100)
    SmoothedClassifier(model, sigma=0.2).predict(x)
    inputs, _ = _by_hand(x, 0.2, 100, 1000, seed=0)
    assert model.sizes == [100, 100]
    assert all(torch.equal(a, b) for a, b in zip(model.inputs, inputs, strict=True))
    model = _three_class(budget=N * 10)
    gen = torch.Generator().manual_seed(5)
    SmoothedClassifier(model, sigma=0.2).predict(x, n=10, generator=gen)
    inputs, _ = _by_hand(x, 0.2, 10, 1000, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(model.inputs, inputs, strict=True))
    after = torch.randn(3, generator=gen)  # the generator advanced by exactly the 2 x 10 draws
    g2 = torch.Generator().manual_seed(5)
    torch.randn((10, LEADS, S), generator=g2)
    torch.randn((10, LEADS, S), generator=g2)
    assert torch.equal(after, torch.randn(3, generator=g2))


@pytest.mark.parametrize("method", ["predict", "certify"])
def test_alpha_must_lie_in_the_open_closed_unit_interval(method: str) -> None:
    model = _three_class()
    g = SmoothedClassifier(model, sigma=0.1)
    call = getattr(g, method)
    with pytest.raises(ConfigError, match=r"^alpha must be > 0\.0, got 0\.0\.$"):
        call(_x(), alpha=0.0)
    with pytest.raises(ConfigError, match=r"^alpha must be > 0\.0, got -0\.1\.$"):
        call(_x(), alpha=-0.1)
    with pytest.raises(ConfigError, match=r"^alpha must be <= 1\.0, got 1\.5\.$"):
        call(_x(), alpha=1.5)
    assert model.inputs == []


# ------------------------------------------------------------------------------------------- CERTIFY
def test_certify_defaults_record_the_settings() -> None:
    """n0 = 100 selection draws then n = 10000 estimation draws per sample, in batches of 1000, generator
    seeded with 0; the result records σ, n0, n, α, units and p̲_A = the float64 Clopper-Pearson bound."""
    x = _x()[:1]
    model = _three_class(budget=10100)
    res = SmoothedClassifier(model, sigma=0.25, units="mV").certify(x)
    assert model.sizes == [100] + [1000] * 10
    g = torch.Generator().manual_seed(0)
    first = torch.randn((100, LEADS, S), generator=g, dtype=torch.float32).to(torch.float64)
    assert torch.equal(model.inputs[0], x[0].unsqueeze(0) + 0.25 * first)
    assert int(res.counts.sum()) == 10000 and int(res.counts[0, 1]) > 9500 and int(res.counts[0, 2]) == 0
    assert (res.sigma, res.n0, res.n, res.alpha, res.units) == (0.25, 100, 10000, 0.001, "mV")
    assert res.p_lower.dtype == torch.float64 and float(res.p_lower[0]) == clopper_pearson_lower(
        int(res.counts[0, 1]), 10000, 0.001)
    assert float(res.radius[0]) == certified_radius(float(res.p_lower[0]), 0.25)
    assert res.prediction.tolist() == [1] and res.prediction.dtype == torch.long


def test_certify_uses_the_given_generator_for_selection_then_estimation() -> None:
    x = _x()
    model = _three_class(budget=N * 7 + N * 30)
    res = SmoothedClassifier(model, sigma=0.2, batch_size=1000).certify(
        x, n0=7, n=30, alpha=0.05, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    want = [xi.unsqueeze(0) + 0.2 * torch.randn((m, LEADS, S), generator=g, dtype=torch.float32).to(torch.float64)
            for m in (7, 30) for xi in x]
    assert all(torch.equal(a, b) for a, b in zip(model.inputs, want, strict=True))
    for i in range(N):
        c = int(res.counts[i].argmax()) if res.prediction[i] >= 0 else None
        if c is not None:
            assert float(res.p_lower[i]) == clopper_pearson_lower(int(res.counts[i, c]), 30, 0.05)


def test_certify_at_p_lower_exactly_one_half_certifies_radius_zero() -> None:
    """One draw, α = 0.5: p̲_A = Beta⁻¹(0.5; 1, 1) = 0.5 exactly. The module abstains only when p̲_A < 1/2, as
    Cohen et al.'s released certification code does, so this certifies with R = σ·Φ⁻¹(1/2) = 0."""
    x = _x()[:1]
    res = SmoothedClassifier(_three_class(budget=2), sigma=0.01).certify(
        x, n0=1, n=1, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert float(res.p_lower[0]) == 0.5
    assert res.prediction.tolist() == [1] and float(res.radius[0]) == 0.0


def test_certify_counts_checks_are_named_and_come_before_sampling() -> None:
    model = _three_class()
    g = SmoothedClassifier(model, sigma=0.1)
    with pytest.raises(ConfigError, match=r"^n0 must be an integer >= 1, got 0\.$"):
        g.certify(_x(), n0=0, n=5)
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 1, got 0\.$"):
        g.certify(_x(), n0=5, n=0)
    assert model.inputs == []  # nothing sampled before the error


# ------------------------------------------------------------------------------------------- training
class NoiseProbe(nn.Module):
    """Linear 3-class logits; records its inputs and the mask it was given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(LEADS * S, 3).double()
        self.inputs: list[torch.Tensor] = []
        self.masks: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        self.masks.append(mask)
        return self.fc(x.flatten(1))


def _train_x() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-1, 1, 4 * LEADS * S, dtype=torch.float64).view(4, LEADS, S)
    return x, torch.tensor([0, 1, 2, 1])


def test_noise_training_defaults_and_settings(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    cfg = TrainConfig(epochs=3, seed=4)
    t = GaussianNoiseTraining(NoiseProbe(), cfg, out_dir=tmp_path, generator=gen)
    assert t.sigma == 0.12 and t.noise_fraction == 1.0
    assert t.hyperparameters() == {"sigma": 0.12, "noise_fraction": 1.0, "noise": "gaussian, unclamped"}
    assert t.config.epochs == 3 and t.config.seed == 4 and t.out_dir == tmp_path and t.generator is gen
    assert GaussianNoiseTraining(NoiseProbe(), noise_fraction=0.0).noise_fraction == 0.0
    for kw, msg in [({"sigma": 0.0}, r"^sigma must be > 0\.0, got 0\.0\.$"),
                    ({"sigma": -1.0}, r"^sigma must be > 0\.0, got -1\.0\.$"),
                    ({"noise_fraction": -0.1}, r"^noise_fraction must be >= 0\.0, got -0\.1\.$"),
                    ({"noise_fraction": 1.5}, r"^noise_fraction must be <= 1\.0, got 1\.5\.$")]:
        with pytest.raises(ConfigError, match=msg):
            GaussianNoiseTraining(NoiseProbe(), **kw)


def test_noise_training_loss_is_weighted_ce_on_x_plus_sigma_eta() -> None:
    """Cohen et al.'s training: CE(f(x + σ·η), y) with η ~ N(0, I) from the trainer's generator, a fresh draw per
    batch (noise_fraction = 1 draws nothing else), the class weights applied."""
    x, y = _train_x()
    model = NoiseProbe()
    t = GaussianNoiseTraining(model, TrainConfig(epochs=1), generator=torch.Generator().manual_seed(2), sigma=0.3)
    t.loss_weights = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    loss1, logits1 = t.compute_loss(x, y)
    loss2, _ = t.compute_loss(x, y)
    g = torch.Generator().manual_seed(2)
    for got in model.inputs:
        eta = torch.randn(tuple(x.shape), generator=g, dtype=torch.float32).to(torch.float64)
        assert torch.equal(got, x + 0.3 * eta)
    assert not torch.equal(model.inputs[0], model.inputs[1])
    with torch.no_grad():
        want = F.cross_entropy(model.fc(model.inputs[0].flatten(1)), y, weight=t.loss_weights)
    assert float(loss1.detach()) == pytest.approx(float(want), rel=1e-12)
    assert float(want) != pytest.approx(float(F.cross_entropy(logits1.detach(), y)), rel=1e-6)
    assert loss2.requires_grad


def test_noise_fraction_selects_samples_with_a_strict_uniform_draw() -> None:
    """A sample is noised iff its uniform draw u satisfies u < noise_fraction: with the fraction equal to one
    draw, that sample stays clean, the smaller draws get noise and the larger stay clean."""
    x, y = _train_x()
    g = torch.Generator().manual_seed(3)
    eta = torch.randn(tuple(x.shape), generator=g, dtype=torch.float32).to(torch.float64)
    u = torch.rand(4, generator=g)
    order = u.argsort()
    frac = float(u[order[2]])  # two draws below, one equal, one above
    model = NoiseProbe()
    t = GaussianNoiseTraining(model, generator=torch.Generator().manual_seed(3), sigma=0.2, noise_fraction=frac)
    t.compute_loss(x, y)
    keep = (u < frac).view(-1, 1, 1)
    want = torch.where(keep, x + 0.2 * eta, x)
    assert torch.equal(model.inputs[0], want)
    assert int(keep.sum()) == 2


def test_noise_training_leaves_the_padding_clean_and_passes_the_mask() -> None:
    x, y = _train_x()
    mask = torch.ones(4, 1, S, dtype=torch.float64)
    mask[:, :, :2] = 0.0
    model = NoiseProbe()
    t = GaussianNoiseTraining(model, generator=torch.Generator().manual_seed(4), sigma=0.2)
    t.compute_loss(x, y, mask)
    got = model.inputs[0]
    assert torch.equal(got[..., :2], x[..., :2]) and bool((got[..., 2:] != x[..., 2:]).all())
    assert model.masks[0] is not None and torch.equal(model.masks[0], mask)


def _dataset(amplitude: float, units: str) -> ECGDataset:
    x = amplitude * torch.sin(torch.linspace(0, 6.28, 8 * 20)).view(8, 1, 20)
    meta = DatasetMeta(name="sine", fs=100.0, classes=("a", "b"), units=units, ids=np.arange(8).astype(str))
    return ECGDataset(x, torch.arange(8) % 2, meta)


def test_prepare_checks_sigma_against_the_data_and_records_units() -> None:
    t = GaussianNoiseTraining(NoiseProbe(), sigma=0.5)
    with pytest.raises(ConfigError, match=r"^GaussianNoiseTraining: sigma=0\.5 is at least the median peak-to-peak"):
        t.setup(_dataset(0.1, "mV"))  # peak-to-peak 0.2 < sigma
    t = GaussianNoiseTraining(NoiseProbe(), sigma=0.05)
    t.setup(_dataset(1.0, "mV"))
    assert t.hyperparameters()["units"] == "mV" and t.hyperparameters()["sigma"] == 0.05
