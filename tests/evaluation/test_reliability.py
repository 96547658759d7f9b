"""Degenerate (collapsed) models, unverified weights, labels outside the model's classes, max-abs bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.errors import DataError
from medrobust.evaluation import ProtocolConfig, evaluate
from medrobust.evaluation import flags as F

FAST = {"large_eps_check": False, "n_examples": 0}
PGD = {"name": "pgd", "steps": 3, "random_start": False}


def _codes(card: dict[str, Any]) -> list[str]:
    return [f["code"] for f in card["flags"]]


def test_constant_predictor_is_reported_as_degenerate(helpers: Any, beats: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from medrobust.cli.evaluate import print_summary
    from medrobust.report import write_report

    model = helpers.Constant(k=0).eval()
    card = evaluate(model, beats, ProtocolConfig(attacks=[PGD], eps=(0.05, 0.1), **FAST), out_dir=tmp_path,
                    progress=False)
    d = card["degenerate_model"]
    assert d["predicts_one_class"] is True and d["predicted_class"] == "N"
    assert d["headline"] == "degenerate model: predicts one class (N)"
    assert d["balanced_accuracy"] == pytest.approx(0.2) and d["chance"] == pytest.approx(0.2)
    assert "degenerate-model" in _codes(card)
    # its robust accuracy stays at the class frequency: exactly what must not pass for robustness
    assert {r["robust_accuracy"]["value"] for r in card["results"]} == {0.2}
    print_summary(card, tmp_path)
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("eps"))
    assert "degenerate model: predicts one class (N)" in lines[header - 1]
    assert "(degenerate model)" in lines[header] and "robustness AUC" not in out
    write_report(tmp_path, progress=False)
    html = (tmp_path / "report.html").read_text()
    body = html[html.index("<h1>"):]
    assert body.index("degenerate model: predicts one class (N)") < body.index("<h2>Reliability flags")
    assert "not a measure of robustness" in html


def test_normal_model_is_not_degenerate(tiny_model: nn.Module, beats: Any) -> None:
    card = evaluate(tiny_model, beats, ProtocolConfig(attacks=[PGD], eps=(0.05,), **FAST),
                    model_card=tiny_model.card, progress=False)
    assert card["degenerate_model"] is None and _codes(card) == []


def test_degenerate_rules() -> None:
    classes = ["a", "b", "c", "d"]
    y = np.repeat(np.arange(4), 10)
    assert F.degenerate_model(y, y, classes) is None
    # two classes predicted, balanced accuracy (1 + 0 + 0.2 + 0) / 4 = 0.3 = 1/4 + 0.05: within the margin
    p = np.zeros(40, dtype=int)
    p[20:22] = 2
    d = F.degenerate_model(y, p, classes)
    assert d is not None and d["near_chance"] and not d["predicts_one_class"]
    assert d["balanced_accuracy"] == pytest.approx(0.3) and d["chance"] == 0.25
    assert d["headline"].startswith("degenerate model: clean class-balanced accuracy 0.300")
    p[22] = 2                                                   # 0.325: a poor but working model
    assert F.degenerate_model(y, p, classes) is None
    # one class in the evaluated labels: predicting it is not a collapse
    assert F.degenerate_model(np.zeros(5, int), np.zeros(5, int), classes) is None
    assert F.degenerate_model(y, np.full(40, 3), classes)["headline"] == "degenerate model: predicts one class (d)"


@pytest.mark.parametrize("card,where", [
    ({"training": {"degenerate": True}}, "training.degenerate"),
    ({"training": {"validation": {"degenerate": 1}}}, "training.validation.degenerate"),
    ({"metrics": {"degenerate": "constant predictor"}}, "metrics.degenerate"),
    ({"training": {"degenerate": False}, "metrics": {"degenerate": 0}}, None),
    ({"degenerate": True}, None),           # only the training / metrics sections count
    (None, None),
])
def test_training_collapse_from_the_model_card(card: Any, where: str | None) -> None:
    y = np.repeat(np.arange(3), 4)
    d = F.degenerate_model(y, y, ["a", "b", "c"], model_card=card)
    if where is None:
        assert d is None
    else:
        assert d["training_collapse"] == where and where in d["headline"]
        assert F.degenerate_model_flag(y, y, ["a", "b", "c"], model_card=card).code == "degenerate-model"


def test_unverified_weights_flag(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    from medrobust.report import write_report

    small = beats.subset(range(0, 60, 6))
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05,), **FAST)
    card = evaluate(tiny_model, small, cfg, model_card={**tiny_model.card, "weights_verified": False},
                    out_dir=tmp_path, progress=False)
    assert _codes(card) == ["unverified-weights"]
    write_report(tmp_path, progress=False)
    md = (tmp_path / "report.md").read_text()
    assert "**unverified-weights**" in md and "NOT verified" in md
    for mc in ({**tiny_model.card, "weights_verified": True}, {k: v for k, v in tiny_model.card.items()
                                                               if k != "weights_verified"}):
        assert "unverified-weights" not in _codes(evaluate(tiny_model, small, cfg, model_card=mc, progress=False))


def test_labels_outside_the_models_classes_are_refused_before_any_attack(tiny_model: nn.Module,
                                                                         beats: Any) -> None:
    y = beats.y.clone()
    y[3] = 9
    bad = ECGDataset(beats.x, y, beats.meta)
    with pytest.raises(DataError, match=r"dataset 'synthetic' has labels 9 outside the model's 5 classes "
                                        r"\['N', 'S', 'V', 'F', 'Q'\]"):
        evaluate(tiny_model, bad, ProtocolConfig(attacks=["fgsm"], eps=(0.05,), **FAST), progress=False)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(2 * 50, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_max_abs_scaled_data_is_bounded_to_minus_one_one(tmp_path: Path) -> None:
    from medrobust.evaluation.card import read_npz

    model = _Linear().eval()
    signs = torch.where(torch.rand(12, 2, 50, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    x = 0.995 * signs                       # at the edge of [-1, 1]: any outward step must be clipped
    with torch.no_grad():
        y = model(x).argmax(1)
    meta = DatasetMeta(name="toy-maxabs", fs=100.0, classes=("a", "b", "c"), units="max-abs scaled [-1, 1]",
                       ids=np.arange(12).astype(str), leads=("I", "II"))
    card = evaluate(model, ECGDataset(x, y, meta),
                    ProtocolConfig(attacks=[PGD], eps=(0.1,), n_examples=3, large_eps_check=False), out_dir=tmp_path,
                    progress=False)
    assert card["threat_model"]["bounds"] == [-1.0, 1.0] and card["threat_model"]["eps_uv"] is None
    ex = read_npz(tmp_path / "examples.npz")
    assert ex["x_adv"].min() >= -1.0 and ex["x_adv"].max() <= 1.0
    assert np.isclose(np.abs(ex["x_adv"]), 1.0).any(), "the ε-ball reaches beyond ±1 here: clipping must show"
