"""Every reliability flag fires on a model built to trigger it and stays silent on a normal model."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.attacks import registry
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.evaluation import flags as F

PGD = {"name": "pgd", "steps": 10, "random_start": False}


@pytest.fixture()
def random_search(helpers: Any) -> Iterator[str]:
    """Register the test's black-box attack for the duration of one test."""
    name = helpers.RandomSearch.name
    registry._ATTACKS[name] = helpers.RandomSearch
    try:
        yield name
    finally:
        registry._ATTACKS.pop(name, None)


def _codes(card: dict[str, Any]) -> set[str]:
    return {f["code"] for f in card["flags"]}


def test_normal_model_raises_no_flag(tiny_model: nn.Module, beats: Any, random_search: str) -> None:
    cfg = ProtocolConfig(attacks=[PGD, {"name": random_search, "queries": 10}], eps=(0.05, 0.1), n_examples=0,
                         large_eps_steps=20)
    card = evaluate(tiny_model, beats, cfg, progress=False)
    assert card["flags"] == []
    assert card["large_eps_check"]["still_correct"] == 0
    x, y = beats.x[:32], beats.y[:32]
    assert F.check_output_range(tiny_model, x) is None
    assert F.check_randomized(tiny_model, x) is None
    assert F.check_gradients(tiny_model, x, y) is None
    assert F.check_few_classes_dlr(5, [("apgd-dlr", "apgd", {"loss": "dlr"})]) is None


def test_quantized_model_zero_gradients_no_collapse_and_black_box_stronger(
        tiny_model: nn.Module, beats: Any, helpers: Any, random_search: str) -> None:
    model = helpers.Quantized(tiny_model).eval()
    cfg = ProtocolConfig(attacks=[PGD, {"name": random_search, "queries": 30}], eps=(0.1, 0.3), n_examples=0,
                         large_eps_steps=10)
    card = evaluate(model, beats, cfg, progress=False)
    assert {"zero-gradients", "no-collapse-large-eps", "black-box-stronger"} <= _codes(card)
    flag = next(f for f in card["flags"] if f["code"] == "zero-gradients")
    assert flag["details"]["n_zero_margin_gradient"] == flag["details"]["n_checked"] > 0
    assert flag["doc"] == "docs/flags/zero-gradients.md"
    # PGD made no progress at all: every success is the black-box attack's
    assert all(r["attacks"][0]["success_rate"]["numerator"] == 0 for r in card["results"])


def test_saturated_logits_vanishing_gradients(tiny_model: nn.Module, beats: Any, helpers: Any) -> None:
    f = F.check_gradients(helpers.Saturated(tiny_model).eval(), beats.x[:32], beats.y[:32])
    assert f is not None and f.code == "zero-gradients"
    assert f.details["n_vanishing_ce_gradient"] > 0 and f.details["n_zero_margin_gradient"] == 0


def test_randomized_forward(tiny_model: nn.Module, beats: Any, helpers: Any) -> None:
    f = F.check_randomized(helpers.AlwaysDropout(tiny_model).eval(), beats.x[:16])
    assert f is not None and f.code == "nondeterministic-forward" and f.details["max_abs_difference"] > 0


def test_probability_outputs_are_flagged_and_attacked_through_log_probabilities(
        tiny_model: nn.Module, beats: Any, helpers: Any) -> None:
    model = helpers.Softmaxed(tiny_model).eval()
    cfg = ProtocolConfig(attacks=[PGD], eps=(0.05,), n_examples=0, large_eps_check=False)
    card = evaluate(model, beats, cfg, progress=False)
    assert "probability-outputs" in _codes(card)
    assert card["model"]["wrapped"] == {"probabilities_to_logits": "softmax"}
    reference = evaluate(tiny_model, beats, cfg, progress=False)
    # log-softmax is the logits up to a per-sample constant: same predictions, same CE gradients
    assert card["clean"] == reference["clean"]
    assert card["results"][0]["robust_accuracy"] == reference["results"][0]["robust_accuracy"]


def test_few_classes_with_dlr() -> None:
    f = F.check_few_classes_dlr(3, [("pgd", "pgd", {}), ("apgd-dlr", "apgd", {"loss": "dlr"})])
    assert f is not None and f.details["attacks"] == ["apgd-dlr"]
    assert F.check_few_classes_dlr(3, [("pgd", "pgd", {}), ("apgd", "apgd", {})]) is None


def test_few_classes_dlr_in_an_evaluation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 3)).eval()
    x = torch.rand(12, 1, 40)
    with torch.no_grad():
        y = model(x).argmax(1)
    from medrobust.data.base import DatasetMeta, ECGDataset

    ds = ECGDataset(x, y, DatasetMeta(name="toy", fs=100.0, classes=("a", "b", "c"), units="normalized [0, 1]",
                                      ids=np.arange(12).astype(str)))
    with pytest.warns(UserWarning, match="DLR"):
        card = evaluate(model, ds, ProtocolConfig(attacks=[{"name": "apgd", "loss": "dlr", "steps": 5}], eps=(0.1,),
                                                  n_examples=0, large_eps_check=False), progress=False)
    assert _codes(card) == {"few-classes-dlr"}


def test_black_box_flag_from_outcomes() -> None:
    # (E=1, M=3, N=4): members pgd (white), fgsm (white), square (black)
    status = np.array([[[1, 0, 0, -1], [-1, 0, 1, -1], [-1, 1, -1, -1]]])
    f = F.black_box_stronger_flag(status, ["pgd", "fgsm", "square"], [False, False, True], [0.1])
    assert f is not None and f.details["samples"] == 1
    status[0, 2, 1] = 0
    assert F.black_box_stronger_flag(status, ["pgd", "fgsm", "square"], [False, False, True], [0.1]) is None
    assert F.no_collapse_flag(n=10, still_correct=2, num_classes=5, eps=1.0) is None
    assert F.no_collapse_flag(n=10, still_correct=3, num_classes=5, eps=1.0) is not None
