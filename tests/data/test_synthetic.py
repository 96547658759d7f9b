"""Synthetic beats: determinism, layout, class morphology, learnability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data import load_dataset, make_synthetic
from medrobust.data.synthetic import synth_strip
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig, seed_everything, train_model


def test_deterministic_under_seed() -> None:
    a = make_synthetic(n_per_class=20, seed=3)
    b = make_synthetic(n_per_class=20, seed=3)
    c = make_synthetic(n_per_class=20, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.meta.fingerprint == b.meta.fingerprint != c.meta.fingerprint


def test_layout_matches_real_beats() -> None:
    ds = make_synthetic(n_per_class=10, seed=0)
    assert ds.x.shape == (50, 1, 187) and ds.x.dtype == torch.float32
    assert ds.meta.fs == 125.0 and ds.meta.classes == ("N", "S", "V", "F", "Q")
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    assert ds.class_counts().tolist() == [10] * 5
    native = make_synthetic(n_per_class=4, seed=0, format="native", fs=500)
    assert native.x.shape == (20, 1, round(0.25 * 500) + round(0.45 * 500)) and native.meta.units == "mV"


def test_splits_are_independent() -> None:
    tr = load_dataset("synthetic", split="train", n_per_class=5)
    te = load_dataset("synthetic", split="test", n_per_class=5)
    assert not torch.equal(tr.x, te.x)
    assert not set(tr.meta.ids) & set(te.meta.ids)


def _qrs_width(label: str, seed: int) -> float:
    """Duration (s) the strip's target beat stays above half its R amplitude."""
    rng = np.random.default_rng(seed)
    strip, peaks = synth_strip(label, rng, fs=1000.0)
    r = peaks[1]
    seg = strip[r - 150 : r + 150] - np.median(strip)
    above = np.nonzero(seg > 0.5 * seg[150])[0]
    return len(above) / 1000.0


def test_class_morphology() -> None:
    widths = {c: np.median([_qrs_width(c, s) for s in range(15)]) for c in ("N", "V", "Q")}
    assert widths["V"] > 2.0 * widths["N"]  # wide ventricular QRS
    rng = np.random.default_rng(0)
    rr_pre = []
    for _ in range(20):
        _, p = synth_strip("S", rng, fs=1000.0)
        rr_pre.append((p[1] - p[0]) / (p[2] - p[1]))
    assert np.median(rr_pre) < 0.85  # premature atrial beat comes early


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="n_per_class"):
        make_synthetic(n_per_class=0)
    with pytest.raises(ConfigError, match="format"):
        make_synthetic(n_per_class=2, format="raw")


def test_classes_are_learnable() -> None:
    tr = load_dataset("synthetic", split="train", n_per_class=200, seed=1)
    va = load_dataset("synthetic", split="val", n_per_class=40, seed=1)
    seed_everything(0)
    model, result = train_model(build_model("cnn1"), tr, va, TrainConfig(epochs=8, batch_size=64, progress=False,
                                                                          patience=None))
    assert result.best_metrics["accuracy"] > 0.85
    assert min(result.best_metrics["sensitivity"].values()) > 0.5
