"""``medrobust reproduce NAME --model SOURCE``: the user's own model gets the paper's evaluation, checks and claims;
nothing is trained. The evaluate YAML carries what the model file does not say (``source:``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medrobust.cli.main import main
from medrobust.reproduce import load_plan, resolve_steps
from medrobust.reproduce.plan import USER_MODEL, with_user_model

SOURCE = {"fs": 125.0, "units": "normalized [0, 1]", "classes": "N,S,V,F,Q"}


def test_the_plan_evaluates_the_users_model_and_trains_nothing(tmp_path: Path) -> None:
    plan = with_user_model(load_plan("ma2020"), "my.pt", SOURCE)
    steps = resolve_steps(plan, budget="cpu", out=tmp_path, data_dir="/d")
    assert [s.name for s in steps] == ["evaluate yours", "masking yours"]
    ev, mask = steps[0].config, steps[1].config
    assert ev["checkpoint"] == mask["checkpoint"] == "my.pt" and ev["source"] == mask["source"] == SOURCE
    assert ev["dataset"]["name"] == "mitdb" and ev["dataset"]["limit"] == 2000 and mask["eps"] == 0.05
    assert all(c["models"] == [USER_MODEL] for c in plan["claims"])
    assert load_plan("ma2020")["models"]["ce"] == {"model": "cnn1", "defense": "ce"}     # the shipped plan untouched
    han = resolve_steps(with_user_model(load_plan("han2020"), "h.onnx"), budget="cpu", out=tmp_path)
    assert [s.kind for s in han] == ["evaluate", "band"] and han[1].config["checkpoint"] == "h.onnx"


def test_model_description_flags_need_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "ma2020", "--fs", "125"]) == 2
    assert "--fs describes your model: pass it with --model SOURCE." in capsys.readouterr().err


def test_evaluate_yaml_source_block_describes_a_torchscript_model(helpers: Any, tmp_path: Path,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    from medrobust.models import load_checkpoint

    net = load_checkpoint(helpers.tiny_checkpoint(tmp_path_factory.getbasetemp())).eval()
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 187)), tmp_path / "m.pt")
    cfg = {"checkpoint": str(tmp_path / "m.pt"), "source": SOURCE,
           "dataset": {"name": "synthetic", "split": "test", "limit": 10, "options": {"n_per_class": 4}},
           "protocol": {"attacks": [{"name": "fgsm"}], "eps": [0.05], "large_eps_check": False, "n_examples": 0},
           "out": str(tmp_path / "run")}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(tmp_path / "e.yaml"), "--no-progress"]) == 0
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["model"]["card"]["classes"] == ["N", "S", "V", "F", "Q"] and card["model"]["card"]["fs"] == 125.0 and card["clean"]["accuracy"]["denominator"] == 10
    bad = {**cfg, "source": {"fps": 125}, "out": str(tmp_path / "run2")}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    assert main(["evaluate", "--config", str(tmp_path / "b.yaml"), "--no-progress"]) == 2
