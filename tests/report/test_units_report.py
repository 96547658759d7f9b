"""Clinical units in the report: the headline's numbers, µV per beat, SNR, ECG paper only in mV, padding not drawn."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from medrobust.data.base import ECGDataset
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.report import write_report
from medrobust.report.ecg_paper import PAPER_ASPECT, ecg_view, valid_samples
from medrobust.report.figures import ecg_example_figure, example_caption, robustness_curves_figure
from medrobust.report.headline import headline

REPO = Path(__file__).resolve().parents[2]
OLD_CARD = REPO / "docs" / "examples" / "mitdb_cnn1" / "card.json"


def _card(acc: list[float], *, clean: float = 0.9, eps: list[float] | None = None, mode: str = "abs",
          units: str = "normalized [0, 1]") -> dict[str, Any]:
    eps = eps or [0.01, 0.03, 0.05]
    snr = [30.2, 21.4, 15.0]
    return {
        "clean": {"accuracy": {"value": clean, "numerator": int(clean * 10), "denominator": 10}},
        "threat_model": {"eps": eps, "eps_mode": mode, "units": units, "norm": "linf", "eps_uv": None,
                         "eps_uv_per_sample": [{"median": 8.6, "min": 4.0, "max": 18.0},
                                               {"median": 43.0, "min": 20.0, "max": 90.0},
                                               {"median": 71.7, "min": 33.3, "max": 150.0}]},
        "results": [{"eps": e, "robust_accuracy": {"value": a}, "perturbation": {"snr_db": {"median": s}}}
                    for e, a, s in zip(eps, acc, snr)],
        "minimal_eps": {"eps_max": eps[-1], "n_clean_correct": 9, "n_broken_within_eps_max": 7,
                        "quantiles_of_broken": {"q10": 0.01, "median": 0.031},
                        "quantiles_of_broken_uv": {"q10": 9.0, "median": 28.0}},
        "degenerate_model": None,
    }


def test_headline_first_eps_below_half_with_uv_snr_and_minimal_eps() -> None:
    assert headline(_card([0.8, 0.4, 0.1])) == (
        "Accuracy falls below 50 % at ε = 0.03 (≈ 43 µV median over the beats, median SNR 21 dB): 40.0 % there, "
        "90.0 % clean; median minimal adversarial ε 0.031 (≈ 28 µV median over those beats) over the 7 of 9 "
        "clean-correct samples broken within ε ≤ 0.05.")


def test_headline_without_a_crossing_names_the_largest_eps() -> None:
    # exactly 50 % is not below 50 %
    text = headline(_card([0.8, 0.6, 0.5]))
    assert text.startswith("Accuracy stays at or above 50 % up to the strongest radius, ε = 0.05 (≈ 72 µV median "
                           "over the beats, median SNR 15 dB): 50.0 % there, 90.0 % clean;")


def test_headline_in_mv_clean_below_threshold_snr_mode_and_degenerate() -> None:
    mv = _card([0.8, 0.2, 0.1], units="mV")
    mv["threat_model"].update(eps_uv=[10.0, 30.0, 50.0], eps_uv_per_sample=None)
    mv["minimal_eps"]["quantiles_of_broken_uv"] = None
    assert headline(mv).startswith("Accuracy falls below 50 % at ε = 0.03 (= 30 µV, median SNR 21 dB)")
    assert "median minimal adversarial ε 0.031 (= 31 µV) over" in headline(mv)
    assert headline(_card([0.3, 0.2, 0.1], clean=0.4)).startswith("Clean accuracy is already below 50 % (40.0 %);")
    # target-SNR radii: 30 dB is the weakest; the first below 50 % going 30 → 20 → 10 dB is 20 dB
    snr = _card([0.1, 0.3, 0.8], eps=[10.0, 20.0, 30.0], mode="snr_db")
    snr["threat_model"]["eps_uv_per_sample"] = None
    snr["minimal_eps"] = None
    assert headline(snr) == "Accuracy falls below 50 % at a target SNR of 20 dB: 30.0 % there, 90.0 % clean."
    deg = _card([0.8, 0.4, 0.1])
    deg["degenerate_model"] = {"headline": "one class"}
    assert headline(deg).startswith("Degenerate model, so not a measure of robustness: accuracy falls below 50 %")


def test_ecg_paper_only_for_mv_or_convertible() -> None:
    assert ecg_view("mV", 360.0) .paper and ecg_view("mV", 360.0).scale == 1.0
    adc = ecg_view("adc", 300.0)   # 1000 counts per mV
    assert adc.paper and adc.unit == "mV" and adc.scale == pytest.approx(1e-3)
    beat = ecg_view("normalized [0, 1]", 125.0, uv_scale=2500.0, uv_offset=-400.0)
    assert beat.paper and (beat.scale, beat.offset) == (pytest.approx(2.5), pytest.approx(-0.4))
    assert "converted back to mV with its recorded scale (value × 2500 µV − 400 µV)" in beat.note
    for plain in (ecg_view("normalized [0, 1]", 125.0), ecg_view("max-abs scaled [-1, 1]", 500.0),
                  ecg_view("normalized [0, 1]", 125.0, uv_scale=float("nan"))):
        assert not plain.paper and plain.scale == 1.0 and "not mV" in plain.note


def _examples(x: np.ndarray, xa: np.ndarray, *, units: str, fs: float, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": x[None], "x_adv": xa[None, None, None], "ids": np.array(["r1"]), "labels": np.array(["pgd"]),
            "eps": np.array([0.05]), "adv_pred": np.array([[[1]]]), "y": np.array([0]), "clean_pred": np.array([0]),
            "classes": np.array(["N", "V"]), "fs": np.array(fs), "units": np.array(units),
            "leads": np.array(["MLII"][: x.shape[0]] if x.shape[0] == 1 else [f"l{j}" for j in range(x.shape[0])]),
            "success": np.array([[[True]]]), "index": np.array([7]), **extra}


def _kachuee_beat() -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(187)
    x = np.zeros((1, 187), dtype=np.float32)
    x[0, :120] = 0.2 + 0.7 * np.exp(-((t[:120] - 30) / 4.0) ** 2)  # the beat, then zero padding
    xa = x + 0.05 * np.sign(np.sin(t / 3.0)).astype(np.float32)   # the attack also moved the padding
    return x, xa


def _drawn(fig: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    ax = fig.axes[0]
    return [(np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)) for ln in ax.lines]


def test_kachuee_beat_in_mv_without_its_zero_tail() -> None:
    x, xa = _kachuee_beat()
    ex = _examples(x, xa, units="normalized [0, 1]", fs=125.0, uv_scale=np.array([2000.0]),
                   uv_offset=np.array([-500.0]))
    fig = ecg_example_figure({}, ex, 0)
    lines = _drawn(fig)
    assert len(lines) == 3
    for t, v in lines:
        assert np.isfinite(v).sum() == 120 and t[np.isfinite(v)].max() == pytest.approx(119 / 125.0)
    t, clean = lines[0]
    ok = np.isfinite(clean)
    assert clean[ok] == pytest.approx(x[0, :120] * 2.0 - 0.5, abs=1e-6)   # mV = value · 2000 µV − 500 µV
    ax = fig.axes[0]
    assert sum(isinstance(c, LineCollection) for c in ax.collections) == 2   # the paper's two grids
    assert ax.get_aspect() == pytest.approx(PAPER_ASPECT) and "mV" in ax.get_ylabel()
    assert "converted back to mV" in example_caption(ex, 0)


def test_normalised_beat_without_scale_on_plain_axes() -> None:
    x, xa = _kachuee_beat()
    ex = _examples(x, xa, units="normalized [0, 1]", fs=125.0)
    fig = ecg_example_figure({}, ex, 0)
    ax = fig.axes[0]
    assert not ax.collections and ax.get_aspect() == "auto"
    assert "normalized [0, 1]" in ax.get_ylabel() and "mV" not in ax.get_ylabel()
    assert "not mV, so no ECG paper" in example_caption(ex, 0) and "mV)" not in example_caption(ex, 0)
    t, clean = _drawn(fig)[0]
    assert clean[np.isfinite(clean)] == pytest.approx(x[0, :120], abs=1e-6)


def test_masked_padding_is_not_drawn() -> None:
    fs, n = 500.0, 1500
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (2, n)).astype(np.float32)      # junk in the padding too: only the mask can tell
    mask = np.ones((1, n), dtype=np.float32)
    mask[:, :400] = 0.0       # left padding (CPSC 2018 style)
    mask[:, 900:950] = 0.0    # and a gap
    ex = _examples(x, x + 0.01, units="mV", fs=fs, mask=mask[None])
    fig = ecg_example_figure({}, ex, 0)
    for ax in fig.axes[:2]:
        for ln in ax.lines:
            t, v = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
            drawn = np.round(t[np.isfinite(v)] * fs).astype(int)
            assert drawn.min() == 400 and not np.isin(drawn, np.arange(900, 950)).any()
            assert len(drawn) == n - 400 - 50
    assert valid_samples(x, "mV", mask[None]).sum() == n - 450
    assert valid_samples(x, "mV").all()   # no mask, physical units: everything is signal


def test_curves_sequential_lines_distinguishable_with_snr_and_uv_axis() -> None:
    card = _card([0.8, 0.4, 0.1])
    card["curves"] = {"eps": [0.0, 0.01, 0.03, 0.05], "kind": "cumulative (robust after this attack and those "
                      "before it)", "ensemble": {"accuracy": [0.9, 0.8, 0.4, 0.1], "auc": 0.4},
                      "attacks": {"pgd": {"accuracy": [0.9, 0.85, 0.5, 0.2], "auc": 0.5},
                                  "sap": {"accuracy": [0.9, 0.8, 0.4, 0.1], "auc": 0.4}}}   # = the ensemble
    card["minimal_eps"] = None
    fig = robustness_curves_figure(card)
    ax = fig.axes[0]
    styles = {ln.get_label(): (str(ln.get_linestyle()), ln.get_marker(), ln.get_linewidth()) for ln in ax.lines}
    ens = next(v for k, v in styles.items() if k.startswith("ensemble"))
    attacks = [v for k, v in styles.items() if not k.startswith("ensemble")]
    assert len(attacks) == 2 and len(set(attacks)) == 2
    assert all(a[:2] != ens[:2] for a in attacks) and all(a[2] < ens[2] for a in attacks)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("pgd") for s in legend) and any(s.startswith("sap") for s in legend)
    notes = sorted(t.get_text() for t in ax.texts if t.get_text().endswith("dB"))
    assert notes == ["15 dB", "21 dB", "30 dB"]
    (top,) = ax.child_axes
    assert "µV" in top.get_xlabel() and "median beat" in top.get_xlabel()


def test_old_card_still_renders(tmp_path: Path) -> None:
    card = json.loads(OLD_CARD.read_text())
    assert "eps_uv_per_sample" not in card["threat_model"]   # written before the per-beat keys existed
    shutil.copy(OLD_CARD, tmp_path / "card.json")
    md, html = write_report(tmp_path, progress=False)
    text = md.read_text()
    assert "> **Accuracy falls below 50 % at ε = 0.03 (median SNR 22 dB): 7.6 % there, 98.2 % clean;" in text
    assert "µV per beat" not in text and "µV" not in text.split("## Clean")[0]
    assert 'class="headline"' in html.read_text()


@pytest.fixture(scope="module")
def scaled_report(helpers: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    beats = helpers.synthetic_beats(4)
    scale = np.linspace(800.0, 2400.0, len(beats))
    ds = ECGDataset(beats.x, beats.y, replace(beats.meta, uv_scale=scale, uv_offset=-scale / 4))
    out = tmp_path_factory.mktemp("units-report") / "run"
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05, 0.2), mode="sequential", minimal_eps=True, refine_steps=1,
                         n_examples=1, large_eps_check=False)
    card = evaluate(helpers.NearestMean().eval(), ds, cfg, out_dir=out, progress=False)
    md, _ = write_report(out, progress=False, max_ecg_examples=1)
    return card, md.read_text()


def test_report_tables_give_per_beat_uv_from_the_card(scaled_report: Any) -> None:
    card, md = scaled_report
    per = card["threat_model"]["eps_uv_per_sample"][1]
    assert f"| 0.2 | {per['median']:.0f} [{per['min']:.0f}–{per['max']:.0f}] |" in md
    p = card["results"][1]["perturbation"]["linf_uv_per_sample"]
    assert f"{p['median']:.0f} / {p['max']:.0f}" in md
    assert "L∞ (µV per beat, median / max)" in md and "ε (µV, median [min–max] over the beats)" in md
    assert md.count("> **") == 1 and "µV median over the beats" in md.split("\n\n")[1]
    assert "converted back to mV" in md          # the ECG example, drawn in mV from its beat's scale
    snr = card["results"][0]["perturbation"]["snr_db"]["median"]
    assert f"| {snr:.1f} |" in md


def test_card_copy_without_new_keys_renders_the_same_headline_minus_uv(scaled_report: Any) -> None:
    card, _ = scaled_report
    old = copy.deepcopy(card)
    for k in ("eps_uv_per_sample", "uv_scale_per_sample"):
        old["threat_model"].pop(k)
    old["minimal_eps"].pop("quantiles_of_broken_uv")
    assert "µV" in headline(card) and "µV" not in headline(old)


def test_unscaled_beats_get_plain_axes_captions_and_no_uv(ecg_run: Path) -> None:
    # synthetic beats in "normalized [0, 1]" without a recorded scale: nothing in µV, no ECG paper claimed
    md = (ecg_run / "report.md").read_text()
    captions = [line for line in md.splitlines() if line.startswith("*Record") or line.startswith("*PGD versus SAP")]
    assert len(captions) == 3
    assert all("plain axes in the data's units (normalized [0, 1]), not mv" in c.lower() for c in captions)
    assert "10 mm/mV" not in md and "ε (µV" not in md and "µV per beat" not in md and "µV median" not in md
    assert md.count("> **") == 1


def test_sap_vs_pgd_panel_in_mv_without_the_padding() -> None:
    from medrobust.report.figures import sap_vs_pgd_caption, sap_vs_pgd_figure

    x, xa = _kachuee_beat()
    ex = _examples(x, xa, units="normalized [0, 1]", fs=125.0, uv_scale=np.array([1500.0]),
                   uv_offset=np.array([0.0]))
    ex.update(labels=np.array(["pgd", "sap"]), x_adv=np.stack([xa, x + 0.02])[:, None, None],
              adv_pred=np.array([[[1]], [[1]]]), success=np.array([[[True]], [[True]]]))
    card = {"protocol": {"members": [{"label": "pgd", "name": "pgd"}, {"label": "sap", "name": "sap"}],
                         "hf_cutoff_hz": 40.0}}
    fig = sap_vs_pgd_figure(card, ex)
    for ax in fig.axes[:2]:
        assert sum(isinstance(c, LineCollection) for c in ax.collections) == 2 and "mV" in ax.get_ylabel()
        for ln in ax.lines:
            t, v = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
            assert np.isfinite(v).sum() == 120 and t[np.isfinite(v)].max() == pytest.approx(119 / 125.0)
        assert np.asarray(ax.lines[0].get_ydata(), float)[:120] == pytest.approx(x[0, :120] * 1.5, abs=1e-6)
    assert "converted back to mV" in sap_vs_pgd_caption(card, ex)


def test_uv_axis_uses_the_median_beat_scale() -> None:
    card = _card([0.8, 0.4, 0.1])
    card["curves"] = {"eps": [0.0, 0.01, 0.03, 0.05], "kind": "standalone", "ensemble": {"accuracy": [0.9, 0.8, 0.4,
                      0.1], "auc": 0.4}, "attacks": {"pgd": {"accuracy": [0.9, 0.8, 0.4, 0.1], "auc": 0.4}}}
    card["minimal_eps"] = None
    fig = robustness_curves_figure(card)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()   # the secondary axis takes its limits when drawn
    ax = fig.axes[0]
    (top,) = ax.child_axes
    lo, hi = ax.get_xlim()
    factor = 71.7 / 0.05   # eps_uv_per_sample[-1].median / largest ε = the median beat's µV per unit
    assert top.get_xlim() == (pytest.approx(lo * factor), pytest.approx(hi * factor))
    assert f"scale {factor:.0f} µV per unit" in top.get_xlabel()
