"""µV per sample for data scaled per sample (min-max scaled beats): summaries, threat model, minimal ε, a run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from medrobust.data.base import ECGDataset
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.evaluation.card import read_npz
from medrobust.evaluation.perturbation import summarize
from medrobust.evaluation.results import minimal_section, sample_uv_scale
from medrobust.errors import DataError

NORM = "normalized [0, 1]"


def test_summary_converts_each_beat_with_its_own_scale() -> None:
    per = {"l2": np.array([0.3, 0.5, 0.4]), "linf": np.array([0.1, 0.2, 0.05])}
    s = summarize(per, units=NORM, uv_scale=np.array([1000.0, 3000.0, np.nan]))
    # beat 0: 0.1 · 1000 = 100 µV, beat 1: 0.2 · 3000 = 600 µV, beat 2 has no scale (flat window): skipped
    assert s["linf_uv_per_sample"] == pytest.approx({"mean": 350.0, "median": 350.0, "max": 600.0})
    assert s["l2_uv_per_sample"] == pytest.approx({"mean": 900.0, "median": 900.0, "max": 1500.0})
    assert s["linf_uv"] is None and s["l2_uv"] is None  # no one factor for the whole dataset
    assert s["n"] == 3


def test_summary_without_a_per_sample_scale_or_in_physical_units() -> None:
    per = {"l2": np.array([0.3]), "linf": np.array([0.1])}
    assert "linf_uv_per_sample" not in summarize(per, units=NORM)
    mv = summarize(per, units="mV", uv_scale=np.array([7.0]))  # the units' factor wins
    assert "linf_uv_per_sample" not in mv and mv["linf_uv"]["max"] == pytest.approx(100.0)
    with pytest.raises(DataError, match="uv_scale must hold one µV scale per sample"):
        summarize(per, units=NORM, uv_scale=np.array([1.0, 2.0]))


def test_sample_uv_scale_indexes_the_evaluated_rows() -> None:
    meta = SimpleNamespace(units=NORM, fs=125.0, uv_scale=np.array([10.0, 20.0, 30.0, 40.0]))
    assert sample_uv_scale(meta, np.array([3, 0])).tolist() == [40.0, 10.0]
    assert sample_uv_scale(SimpleNamespace(units="mV", fs=360.0, uv_scale=meta.uv_scale), np.array([0])) is None
    assert sample_uv_scale(SimpleNamespace(units=NORM, fs=125.0, uv_scale=None), np.array([0])) is None


def _res(n_eps: int) -> dict[str, Any]:
    return {"per_eps": [{"robust_accuracy": {"numerator": 0, "denominator": 4, "value": 0.0}}] * n_eps}


def test_minimal_eps_quantiles_per_beat() -> None:
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.1, 0.2), minimal_eps=True)
    hi = np.array([0.05, 0.15, np.inf, 0.0, 0.2])
    lo = np.array([0.0, 0.1, 0.2, 0.0, 0.15])
    correct = np.array([True, True, True, False, True])
    scale = np.array([2000.0, 1000.0, 5000.0, 9000.0, 500.0])
    sec = minimal_section(lo, hi, correct, cfg, _res(2), uv_scale=scale)
    # broken clean-correct beats: 0.05·2000 = 100, 0.15·1000 = 150, 0.2·500 = 100 µV
    assert sec["quantiles_of_broken_uv"]["median"] == pytest.approx(100.0)
    assert sec["quantiles_of_broken_uv"]["q90"] == pytest.approx(np.quantile([100, 150, 100], 0.9))
    assert sec["quantiles_of_broken"]["median"] == pytest.approx(0.15)
    assert minimal_section(lo, hi, correct, cfg, _res(2))["quantiles_of_broken_uv"] is None


@pytest.fixture(scope="module")
def scaled_run(helpers: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, np.ndarray]:
    beats = helpers.synthetic_beats(6)
    scale = np.linspace(500.0, 3000.0, len(beats))  # each beat its own µV per unit
    ds = ECGDataset(beats.x, beats.y, replace(beats.meta, uv_scale=scale, uv_offset=-scale / 3))
    out = tmp_path_factory.mktemp("units") / "run"
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05, 0.2), mode="individual", minimal_eps=False, n_examples=2,
                         large_eps_check=False)
    idx = np.array([29, 3, 17, 8, 0, 11, 22, 5, 14, 26])
    card = evaluate(helpers.NearestMean().eval(), ds, cfg, out_dir=out, indices=idx, progress=False)
    return card, out, scale[idx]


def test_card_reports_each_eps_in_uv_over_the_evaluated_beats(scaled_run: Any) -> None:
    card, _, scale = scaled_run
    tm = card["threat_model"]
    assert tm["eps_uv"] is None
    for e, got in zip(tm["eps"], tm["eps_uv_per_sample"]):
        assert got == pytest.approx({"median": e * np.median(scale), "min": e * scale.min(), "max": e * scale.max()})
    assert tm["uv_scale_per_sample"]["median"] == pytest.approx(np.median(scale))
    assert tm["uv_scale_per_sample"]["n"] == len(scale)


def test_card_perturbation_norms_per_beat(scaled_run: Any) -> None:
    card, out, scale = scaled_run
    status = read_npz(out / "per_sample.npz")["status"]  # (E, M, N)
    for e, r in enumerate(card["results"]):
        succ = status[e, 0] == 1
        p = r["attacks"][0]["perturbation"]
        assert p["n"] == int(succ.sum()) > 0
        # FGSM moves every sample by exactly ε in L∞ (bounds [0, 1] clip some samples, not the largest step)
        assert p["linf"]["max"] == pytest.approx(r["eps"], rel=1e-5)
        got = p["linf_uv_per_sample"]
        assert got["max"] == pytest.approx(r["eps"] * scale[succ].max(), rel=1e-5)
        assert got["median"] == pytest.approx(r["eps"] * np.median(scale[succ]), rel=1e-5)
        assert r["perturbation"]["linf_uv_per_sample"]["max"] == pytest.approx(r["eps"] * scale[succ].max(), rel=1e-5)


def test_examples_carry_the_scale_of_their_beats(scaled_run: Any) -> None:
    card, out, scale = scaled_run
    ex = read_npz(out / "examples.npz")
    full = np.linspace(500.0, 3000.0, 30)
    assert np.allclose(ex["uv_scale"], full[ex["index"]]) and np.allclose(ex["uv_offset"], -full[ex["index"]] / 3)
    assert "mask" not in ex


def test_examples_carry_the_dataset_mask(helpers: Any, tmp_path: Path) -> None:
    import torch

    beats = helpers.synthetic_beats(2)
    mask = torch.ones(len(beats), 1, beats.x.shape[-1])
    mask[:, :, :20] = 0.0  # left padding
    mask[3, :, :40] = 0.0
    ds = ECGDataset(beats.x, beats.y, beats.meta, mask)
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05,), minimal_eps=False, n_examples=3, large_eps_check=False)
    idx = np.array([3, 1, 5, 7, 9])
    evaluate(helpers.NearestMean().eval(), ds, cfg, out_dir=tmp_path / "run", indices=idx, progress=False)
    ex = read_npz(tmp_path / "run" / "examples.npz")
    assert len(ex["index"]) > 0 and "uv_scale" not in ex
    assert np.array_equal(ex["mask"], mask[torch.as_tensor(ex["index"])].numpy())


def test_threat_section_per_sample_only_for_absolute_radii_and_scaled_data() -> None:
    from medrobust.evaluation.results import _threat_section

    meta = SimpleNamespace(units=NORM, fs=125.0, uv_scale=np.array([1000.0, 4000.0, np.nan, 2000.0]))
    rec = SimpleNamespace(config=ProtocolConfig(attacks=["fgsm"], eps=(0.01, 0.1)), meta=meta,
                          idx=np.array([0, 1, 2, 3]), bounds=(0.0, 1.0), has_mask=False)
    tm = _threat_section(rec)
    # the flat-window beat (nan scale) is left out: 1000, 2000, 4000 µV per unit
    assert tm["eps_uv_per_sample"][1] == pytest.approx({"median": 200.0, "min": 100.0, "max": 400.0})
    assert tm["uv_scale_per_sample"]["n"] == 3 and tm["eps_uv"] is None
    rec.config = ProtocolConfig(attacks=["fgsm"], eps=(0.01, 0.1), eps_mode="ptp")
    ptp = _threat_section(rec)
    assert ptp["eps_uv_per_sample"] is None and ptp["uv_scale_per_sample"]["median"] == pytest.approx(2000.0)
    rec.meta = SimpleNamespace(units="mV", fs=360.0, uv_scale=meta.uv_scale)
    rec.config = ProtocolConfig(attacks=["fgsm"], eps=(0.01, 0.1))
    mv = _threat_section(rec)
    assert mv["eps_uv"] == pytest.approx([10.0, 100.0]) and mv["eps_uv_per_sample"] is None


def test_attack_summary_reports_each_beats_own_uv(helpers: Any, tmp_path: Path) -> None:
    from medrobust.evaluation.export import AttackRequest, attack_dataset
    from medrobust.evaluation.spec import AttackSpec

    beats = helpers.synthetic_beats(6)
    scale = np.linspace(500.0, 3000.0, len(beats))
    ds = ECGDataset(beats.x, beats.y, replace(beats.meta, uv_scale=scale, uv_offset=-scale / 3))
    req = AttackRequest(spec=AttackSpec.parse("fgsm"), eps=0.2, wfdb=False)
    summary = attack_dataset(helpers.NearestMean().eval(), ds, req, out_dir=tmp_path / "atk", progress=False)
    adv = np.load(tmp_path / "atk" / "adversarial.npz")
    succ = adv["success"].astype(bool)
    idx = adv["index"]
    got = summary["perturbation"]["linf_uv_per_sample"]
    assert succ.sum() > 0 and got["max"] == pytest.approx(0.2 * scale[idx[succ]].max(), rel=1e-5)
    assert got["median"] == pytest.approx(0.2 * np.median(scale[idx[succ]]), rel=1e-5)
    # the npz carries each attacked beat's own µV map (the expert study draws the strips in mV with it)
    assert np.allclose(adv["uv_scale"], scale[idx]) and np.allclose(adv["uv_offset"], -scale[idx] / 3)
