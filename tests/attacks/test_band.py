"""The collation / band technique (Han et al., Nature Medicine 2020) on a real MIT-BIH record."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.attacks import SAP, Band, adversarial_band, concatenation_check, uniform_band_check
from medrobust.attacks.sap_filter import sap_kernel
from medrobust.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
CKPT = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"


class Recorder(nn.Module):
    """Classifies by the sign of the mean and records every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        s = x.flatten(1).mean(1)
        return torch.stack([-s, s], 1)


def _hand_band(signals: torch.Tensor) -> Band:
    return Band(x=torch.zeros_like(signals[0]), x_adv=signals[0], lower=signals.amin(0), upper=signals.amax(0),
                signals=signals, adv_class=1, true_label=0, trials=len(signals) - 1, kept=len(signals) - 1, eps=1.0,
                noise_std=0.5, kernel=sap_kernel())


def test_concatenation_splits_at_the_found_index_within_tolerance() -> None:
    j = torch.linspace(-1.0, 1.0, 11).view(1, 11)  # j[5] == 0 == k[5]: the only coincidence at tol 0.05
    k = -j
    band = _hand_band(torch.stack([j, j, k]))
    model = Recorder()
    out = concatenation_check(model, band, tol=0.05)
    assert out["pairs"] == 1 and out["concatenations"] == 2 and out["max_jump"] < 0.05
    z = torch.cat(model.seen)
    assert torch.equal(z[0], torch.cat([j[:, :5], k[:, 5:]], -1))
    assert torch.equal(z[1], torch.cat([k[:, :5], j[:, 5:]], -1))
    # j[:5] ‖ k[5:] has mean < 0 (class 0 = the true label), k[:5] ‖ j[5:] mean > 0 (adversarial class 1)
    assert out["fraction_adv_class"] == 0.5 and out["fraction_misclassified"] == 0.5
    none = concatenation_check(Recorder(), _hand_band(torch.stack([j, j, j + 1.0])), tol=0.05)
    assert none["pairs_without_split"] == 1 and none["concatenations"] == 0


def test_uniform_samples_lie_inside_the_band() -> None:
    g = torch.Generator().manual_seed(0)
    sig = torch.randn(6, 2, 40, generator=g)
    band = _hand_band(sig)
    model = Recorder()
    out = uniform_band_check(model, band, samples=30, generator=torch.Generator().manual_seed(1))
    z = torch.cat(model.seen)
    assert z.shape == (30, 2, 40) and out["inside_band"]
    assert bool((z >= band.lower).all()) and bool((z <= band.upper).all())
    assert out["samples"] == 30 and "fraction_misclassified" in out


def test_bad_inputs() -> None:
    m = Recorder()
    with pytest.raises(DataError, match="same shape"):
        adversarial_band(m, torch.zeros(1, 10), torch.zeros(1, 11), eps=0.1)
    with pytest.raises(ConfigError, match="eps"):
        adversarial_band(m, torch.zeros(1, 10), torch.zeros(1, 10), eps=0.0)
    with pytest.raises(ConfigError, match="trials"):
        adversarial_band(m, torch.zeros(1, 10), torch.zeros(1, 10), eps=0.1, trials=0)


def test_signals_inside_the_band_stay_adversarial_on_a_real_record(shared_data: Path) -> None:
    from medrobust.data import load_dataset
    from medrobust.models import load_checkpoint

    model = load_checkpoint(CKPT)
    ds = load_dataset("mitdb", root=shared_data, split="test", records=["100"])
    x, y = ds.x[:4], ds.y[:4]  # the first four beats of record 100 (all N)
    eps, kw = 0.1, {"fs": 125.0, "reference_fs": 300.0}  # Han's kernels defined in seconds (7 taps at 125 Hz)
    sap = SAP(model, eps=eps, steps=60, bounds=(0.0, 1.0), **kw)(x, y)
    ok = (sap.success & sap.clean_correct).nonzero().squeeze(1)
    assert len(ok) >= 3
    uniform, concat = [], []
    for i in ok.tolist():
        band = adversarial_band(model, x[i], sap.x_adv[i], eps=eps, y=int(y[i]), trials=200, noise_std=0.01,
                                bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(i), **kw)
        assert band.adv_class != int(y[i]) and band.kept >= 1
        assert bool((band.lower <= band.upper).all())
        assert bool((band.signals >= band.lower).all()) and bool((band.signals <= band.upper).all())
        assert bool((band.lower <= band.x_adv).all()) and bool((band.x_adv <= band.upper).all())
        assert float((band.signals - band.x).abs().max()) <= eps + 1e-6  # every kept offset is within ±ε
        u = uniform_band_check(model, band, samples=100, generator=torch.Generator().manual_seed(100 + i))
        assert u["inside_band"]
        uniform.append(u["fraction_misclassified"])
        c = concatenation_check(model, band)
        assert c["max_jump"] < c["tol"]
        concat.append(c["fraction_misclassified"])
    # measured with these seeds: misclassified fraction 1.0 for every beat (uniform and concatenation)
    assert sum(uniform) / len(uniform) >= 0.8
    assert min(concat) >= 0.8


def test_band_keeps_only_trials_still_in_the_adversarial_class_and_the_padding() -> None:
    """Mean-sign model, ``x_adv`` barely on the adversarial side: the noisy trials split between the two
    classes; the band holds only the adversarial ones, and the padded tail stays at ``x`` in every signal."""
    x = torch.zeros(2, 60)
    x_adv = torch.full((2, 60), 0.002)
    mask = torch.ones(1, 60)
    mask[:, 50:] = 0
    model = Recorder()
    band = adversarial_band(model, x, x_adv, eps=0.5, trials=200, noise_std=0.05, kernel=torch.ones(1), mask=mask,
                            generator=torch.Generator().manual_seed(0))
    assert band.adv_class == 1 and 0 < band.kept < band.trials
    with torch.no_grad():
        assert bool((model(band.signals).argmax(1) == 1).all())
    assert bool((band.signals[:, :, 50:] == 0).all()) and bool((band.width[:, 50:] == 0).all())
