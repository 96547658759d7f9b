"""A full card's numbers pinned on a small seeded run (a fixed nearest-class-mean model, no training).

Any change to the protocol's arithmetic — the ensemble's sequential semantics, which member gets the
credit, cost accounting, the minimal-ε bisection, the curves and their AUC, perturbation statistics —
changes one of these numbers. They were recorded before ``evaluation/protocol.py`` was split into
modules and are reproduced exactly by the split code.
"""

from __future__ import annotations

from typing import Any

import pytest

from medrobust.evaluation import ProtocolConfig, evaluate


@pytest.fixture(scope="module")
def card(helpers: Any) -> dict[str, Any]:
    model = helpers.NearestMean().eval()
    # a weak first member (one PGD step), so that the later ones get credit in sequential mode
    cfg = ProtocolConfig(attacks=[{"name": "pgd", "steps": 1, "rel_step_size": 0.3, "random_start": False}, "fgsm",
                                  {"name": "sap", "steps": 2, "smooth_steps": 3}],
                         eps=(0.02, 0.06), mode="sequential", minimal_eps=True, refine_steps=2, n_examples=2,
                         large_eps_steps=5, batch_size=16, seed=1)
    return evaluate(model, helpers.synthetic_beats(8), cfg, progress=False)


def test_clean_and_robust_accuracy(card: dict[str, Any]) -> None:
    assert card["clean"]["accuracy"] == {"numerator": 31, "denominator": 40, "value": 0.775}
    assert [r["robust_accuracy"]["numerator"] for r in card["results"]] == [21, 7]
    assert [r["attack_success_rate"]["numerator"] for r in card["results"]] == [10, 24]
    assert card["curves"]["ensemble"]["accuracy"] == pytest.approx([0.775, 0.525, 0.175])
    assert card["curves"]["ensemble"]["auc"] == pytest.approx(0.45)
    assert card["flags"] == [] and card["degenerate_model"] is None


def test_members_in_sequential_mode(card: dict[str, Any]) -> None:
    # (label, successes, samples attacked, broke first, gradient evaluations, forward evaluations)
    got = [[(a["label"], a["success_rate"]["numerator"], a["success_rate"]["denominator"], a["broken_first"],
             a["grad_evals"], a["queries"]) for a in r["attacks"]] for r in card["results"]]
    assert got == [
        [("pgd", 2, 31, 2, 31, 93), ("fgsm", 8, 29, 8, 29, 87), ("sap", 0, 21, 0, 105, 147)],
        [("pgd", 10, 31, 10, 31, 93), ("fgsm", 14, 21, 14, 21, 63), ("sap", 0, 7, 0, 35, 49)],
    ]


def test_perturbations_minimal_eps_and_large_eps(card: dict[str, Any]) -> None:
    p0, p1 = card["results"][0]["perturbation"], card["results"][1]["perturbation"]
    assert p0["n"] == 10 and p1["n"] == 24
    assert p0["linf"]["max"] == pytest.approx(0.02, rel=1e-6) and p1["linf"]["max"] == pytest.approx(0.06, rel=1e-6)
    assert p0["l2"]["median"] == pytest.approx(0.25455836, rel=1e-5)
    assert p1["l2"]["mean"] == pytest.approx(0.52094248, rel=1e-5)
    assert p0["linf"]["mean"] == pytest.approx(0.0172, rel=1e-5)
    me = card["minimal_eps"]
    assert [a["bisection"]["numerator"] for a in me["agreement_with_sweep"]] == [21, 7]
    assert me["quantiles_of_broken"] == pytest.approx({"q10": 0.01, "q25": 0.015, "median": 0.03, "q75": 0.05,
                                                       "q90": 0.057})
    assert me["auc"] == pytest.approx(0.49275)
    assert card["large_eps_check"]["n"] == 31 and card["large_eps_check"]["still_correct"] == 0
