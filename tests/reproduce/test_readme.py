"""The reproduction README reads each number from its card and prints it with its Wilson interval."""

from __future__ import annotations

import json
from pathlib import Path

from medrobust.evaluation.metrics import wilson_interval
from medrobust.reproduce import load_plan
from medrobust.reproduce.readme import write_readme


TM = {"norm": "linf", "eps_mode": "abs", "units": "mV"}  # every result card has its threat model


def _r(num: int, den: int) -> dict:
    return {"numerator": num, "denominator": den, "value": num / den}


def test_success_rate_claim_and_model_rows(tmp_path: Path) -> None:
    plan = load_plan("han2020")
    ev = tmp_path / "cpu" / "eval" / "resnet"  # the cpu budget runs the ResNet
    ev.mkdir(parents=True)
    attacks = [{"label": "sap", "success_rate": _r(37, 50)}, {"label": "pgd", "success_rate": _r(45, 50)}]
    card = {"threat_model": TM, "clean": {"accuracy": _r(50, 60)}, "flags": [{"code": "degenerate-model", "title": "x"}],
            "results": [{"eps": 0.01, "robust_accuracy": _r(4, 60), "attacks": attacks}]}
    (ev / "card.json").write_text(json.dumps(card))
    models = tmp_path / "cpu" / "models" / "resnet"
    models.mkdir(parents=True)
    (models / "summary.json").write_text(json.dumps({"test": {"n": 853, "correct": 700, "accuracy": 700 / 853},
                                                     "init_from": None, "degenerate": "predicts one class"}))
    text = write_readme(plan, tmp_path).read_text()
    lo, hi = wilson_interval(37, 50)
    assert f"resnet: sap misclassifies 0.740 [{lo:.3f}, {hi:.3f}] of the 50 correctly classified" in text
    assert "| 74 % |" in text and "pgd misclassifies 0.900" in text and "(**flags: degenerate-model**)" in text
    assert f"`medrobust evaluate --config {tmp_path / 'cpu' / 'configs' / 'evaluate-resnet.yaml'}`" in text
    assert "## Budget `cpu`" in text and "## Budget `smoke`" not in text  # only budgets that ran
    lo, hi = wilson_interval(4, 60)
    assert f"| resnet | cinc2017 | ce | from scratch — **degenerate: predicts one class** | 0.821 " in text
    assert f"| 0.067 [{lo:.3f}, {hi:.3f}] |" in text  # worst case at ε 0.01 in the model table


def test_no_correct_sample_reads_as_no_samples(tmp_path: Path) -> None:
    plan = load_plan("han2020")
    ev = tmp_path / "smoke" / "eval" / "ce"
    ev.mkdir(parents=True)
    attacks = [{"label": "sap", "success_rate": _r_zero()}, {"label": "pgd", "success_rate": _r_zero()}]
    (ev / "card.json").write_text(json.dumps({"threat_model": TM, "clean": {"accuracy": {"numerator": 0, "denominator": 12, "value": 0.0}},
                                              "results": [{"eps": 0.01, "robust_accuracy": {"numerator": 0,
                                                           "denominator": 12, "value": 0.0}, "attacks": attacks}]}))
    text = write_readme(plan, tmp_path).read_text()
    assert "sap misclassifies – (no samples) of the 0 correctly classified" in text


def _r_zero() -> dict:
    return {"numerator": 0, "denominator": 0, "value": 0.0}


def test_a_budget_shows_only_the_models_it_ran(tmp_path: Path) -> None:
    plan = load_plan("han2020")  # cpu runs the ResNet only; the claims name Han's CNN (ce) and the ResNet
    ev = tmp_path / "cpu" / "eval" / "resnet"
    ev.mkdir(parents=True)
    attacks = [{"label": "sap", "success_rate": _r(7, 10)}, {"label": "pgd", "success_rate": _r(8, 10)}]
    (ev / "card.json").write_text(json.dumps({"threat_model": TM, "clean": {"accuracy": _r(10, 12)},
                                              "results": [{"eps": 0.01, "robust_accuracy": _r(2, 12), "attacks": attacks}]}))
    text = write_readme(plan, tmp_path).read_text()
    assert "resnet: sap misclassifies 0.700" in text and "| resnet | cinc2017 | ce |" in text
    assert "ce: not run" not in text and "evaluate-ce.yaml" not in text and "| ce | cinc2017 |" not in text
    plan["claims"].append({**plan["claims"][0], "id": "ce_only", "claim": "only Han's CNN", "models": ["ce"]})
    assert "only Han's CNN" not in write_readme(plan, tmp_path).read_text()  # a claim on no model it ran: left out
    smoke = tmp_path / "smoke" / "eval" / "ce"
    smoke.mkdir(parents=True)
    (smoke / "card.json").write_text((ev / "card.json").read_text())
    text = write_readme(plan, tmp_path).read_text()
    assert "only Han's CNN" in text.split("## Budget `smoke`")[1] and "ce: sap misclassifies 0.700" in text


def test_a_budgets_eps_scale_reads_the_claims_at_that_budgets_units(tmp_path: Path) -> None:
    """shao2022's claims are in ADC units (ε 5, 10, 25); its cpu budget attacks mV records, eps_scale 0.001: the
    claim at ε 10 reads the card's result at 0.01 mV, not the one at 0.025, and an ADC-unit ε is not found there."""
    plan = load_plan("shao2022")
    assert plan["budgets"]["cpu"]["eps_scale"] == 0.001
    for mid, (at10, at25) in {"ce": (3, 1), "adt": (9, 4)}.items():
        ev = tmp_path / "cpu" / "eval" / mid
        ev.mkdir(parents=True)
        results = [{"eps": e, "robust_accuracy": _r(k, 12), "attacks": []} for e, k in ((0.01, at10), (0.025, at25))]
        (ev / "card.json").write_text(json.dumps({"threat_model": TM, "clean": {"accuracy": _r(10, 12)}, "results": results}))
    row = next(line for line in write_readme(plan, tmp_path).read_text().splitlines() if "holds against SAP" in line)
    assert "ce: worst-case 0.250" in row and "adt: worst-case 0.750" in row
    row25 = next(line for line in (tmp_path / "README.md").read_text().splitlines() if "released code" in line)
    assert "ce: worst-case 0.083" in row25 and "adt: worst-case 0.333" in row25 and "at: not run at ε 0.025" in row25
    row5 = next(line for line in (tmp_path / "README.md").read_text().splitlines() if "low-ε PGD" in line)
    assert "ce: not run at ε 0.005" in row5


def test_eps_curves_start_at_clean_accuracy_and_follow_increasing_eps_with_wilson_bars() -> None:
    from medrobust.evaluation.metrics import wilson_interval
    from medrobust.reproduce.readme import eps_curves

    card = {"threat_model": TM, "clean": {"accuracy": _r(9, 10)},
            "results": [{"eps": 0.05, "robust_accuracy": _r(2, 10)}, {"eps": 0.01, "robust_accuracy": _r(6, 10)}]}
    curves = eps_curves({"ce": card, "nsr": None})
    assert list(curves) == ["ce"]  # a model without results has no curve
    assert [(e, v) for e, v, _, _ in curves["ce"]] == [(0.0, 0.9), (0.01, 0.6), (0.05, 0.2)]
    assert [p[2:] for p in curves["ce"]] == [wilson_interval(9, 10), wilson_interval(6, 10), wilson_interval(2, 10)]
    assert eps_curves({"ce": None}) == {}


def test_the_readme_shows_the_eps_figure_of_a_budget_with_results(tmp_path: Path) -> None:
    plan = load_plan("han2020")
    ev = tmp_path / "cpu" / "eval" / "resnet"
    ev.mkdir(parents=True)
    (ev / "card.json").write_text(json.dumps({"threat_model": TM, "clean": {"accuracy": _r(10, 12)}, "data": {"units": "mV"},
                                              "results": [{"eps": 0.01, "robust_accuracy": _r(2, 12), "attacks": [
                                                  {"label": "sap", "success_rate": _r(7, 10)},
                                                  {"label": "pgd", "success_rate": _r(8, 10)}]}]}))
    text = write_readme(plan, tmp_path).read_text()
    assert "![worst-case robust accuracy against ε per model, ε = 0: clean accuracy](cpu/figures/" \
           "robust_accuracy_vs_eps.png)" in text
    assert (tmp_path / "cpu" / "figures" / "robust_accuracy_vs_eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ev / "card.json").unlink()
    (tmp_path / "cpu" / "eval" / "other").mkdir()
    assert "robust_accuracy_vs_eps" not in write_readme(plan, tmp_path).read_text()  # no results: no figure
