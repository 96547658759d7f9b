"""The evaluation protocol with a universal attack (``uap``): one perturbation per radius for every sample."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from medrobust.errors import ConfigError
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.evaluation.card import read_npz

UAP = {"attacks": [{"name": "uap", "passes": 6, "batch_size": 16}], "eps": [0.5, 2.0], "norm": "l2",
       "bounds": None, "mode": "sequential", "seed": 0, "batch_size": 8, "large_eps_check": False, "n_examples": 4}


def _config(**changes: Any) -> ProtocolConfig:
    return ProtocolConfig.from_dict({**UAP, **changes})


def test_one_unit_and_one_perturbation_per_radius(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    card = evaluate(tiny_model, beats, _config(), out_dir=tmp_path / "run", progress=False)
    units = [k for k in card["timings"]["seconds_per_unit"] if k.startswith("sweep/")]
    assert sorted(units) == ["sweep/e0/b0", "sweep/e1/b0"]        # batch_size 8 does not split the 60 beats
    ex = read_npz(tmp_path / "run" / "examples.npz")
    ps = read_npz(tmp_path / "run" / "per_sample.npz")
    assert len(ex["position"]) == 4
    for e in range(2):
        delta = (ex["x_adv"][0, e] - ex["x"]).reshape(len(ex["x"]), -1)
        np.testing.assert_allclose(delta, np.broadcast_to(delta[:1], delta.shape), atol=1e-6)   # the same vector
        assert np.linalg.norm(delta[0]) <= UAP["eps"][e] * (1 + 1e-5)
        # the records show the perturbation that was evaluated: their outcomes are the sweep's
        np.testing.assert_array_equal(ex["adv_pred"][0, e], ps["adv_pred"][e][ex["position"]])
    ra = [r["robust_accuracy"]["value"] for r in card["results"]]
    assert ra[1] <= ra[0] < card["clean"]["accuracy"]["value"]        # it breaks beats, more at the larger ξ


def test_the_run_is_deterministic_and_counts_every_given_sample(tiny_model: nn.Module, beats: Any) -> None:
    """The seeded fit gives the same numbers again (what ``leaderboard add --verify`` relies on)."""
    full = evaluate(tiny_model, beats, _config(n_examples=0), progress=False)
    half = evaluate(tiny_model, beats, _config(n_examples=0), indices=np.arange(0, 60, 2), progress=False)
    assert full["results"][0]["robust_accuracy"]["denominator"] == 60
    assert half["results"][0]["robust_accuracy"]["denominator"] == 30
    full_again = evaluate(tiny_model, beats, _config(n_examples=0), progress=False)
    assert [r["robust_accuracy"] for r in full_again["results"]] == [r["robust_accuracy"] for r in full["results"]]


def test_settings_a_universal_attack_cannot_have(tiny_model: nn.Module, beats: Any) -> None:
    with pytest.raises(ConfigError, match="minimal_eps bisects per-sample radii"):
        evaluate(tiny_model, beats, _config(minimal_eps=True), progress=False)
    cfg = _config()
    spec = replace(cfg.attacks[0], restarts=2)
    with pytest.raises(ConfigError, match="restarts: 1"):
        evaluate(tiny_model, beats, replace(cfg, attacks=(spec,)), progress=False)
