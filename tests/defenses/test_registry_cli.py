"""Registry errors and the `medrobust train --defense` CLI (flags and YAML); cards record hyper-parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.cli.main import main
from medrobust.defenses import NSRTrainer, defense_options, get_defense
from medrobust.errors import ConfigError
from medrobust.models import build_model, read_card
from medrobust.train import TrainConfig


def test_get_defense_presets_and_errors() -> None:
    t = get_defense("mse_margin", build_model("mlp1"), TrainConfig(epochs=1))
    assert isinstance(t, NSRTrainer) and t.beta == 0.0 and t.margin_weight == 1.0 and t.name == "mse_margin"
    assert get_defense("mse", build_model("mlp1")).margin_weight == 0.0
    with pytest.raises(ConfigError, match="unknown defence 'nsr3'"):
        get_defense("nsr3", build_model("mlp1"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['betta'\]"):
        get_defense("nsr", build_model("mlp1"), betta=0.1)
    with pytest.raises(ConfigError, match="beta must be"):
        get_defense("nsr", build_model("mlp1"), beta=-1.0)
    assert "eps" in defense_options("pgd_at") and "generator" not in defense_options("pgd_at")


def test_cli_defense_flags_write_hyperparameters_to_the_card(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--option", "n_per_class=20", "--model", "mlp1", "--epochs", "1", "--no-progress",
                 "--defense", "nsr", "--defense-option", "beta=0.25", "--out", str(out)])
    assert code == 0
    card = read_card(out / "checkpoint")
    assert card["training"]["trainer"] == "nsr"
    assert card["training"]["hyperparameters"]["beta"] == 0.25 and card["training"]["hyperparameters"]["e"] == 0.01
    summary = json.loads((out / "summary.json").read_text())
    assert summary["defense"]["name"] == "nsr" and summary["config"]["defense"]["beta"] == 0.25


def test_cli_defense_from_yaml_and_init_from(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["train", "--option", "n_per_class=20", "--model", "mlp1", "--epochs", "1", "--no-progress",
                 "--out", str(first)]) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "dataset: {name: synthetic, options: {n_per_class: 20}}\n"
        "model: {name: mlp1}\n"
        "train: {epochs: 1, progress: false}\n"
        "defense: {name: smoothing, sigma: 0.02}\n"
        f"init_from: {first / 'checkpoint'}\n"
        f"out: {tmp_path / 'second'}\n"
    )
    assert main(["train", "--config", str(cfg)]) == 0
    card = read_card(tmp_path / "second" / "checkpoint")
    assert card["training"]["trainer"] == "smoothing" and card["training"]["hyperparameters"]["sigma"] == 0.02


@pytest.mark.parametrize("argv,match", [
    (["--defense", "nsr3"], "unknown defence 'nsr3'"),
    (["--defense", "nsr", "--defense-option", "gamma=2"], "unknown option(s) ['gamma']"),
    (["--defense", "pgd_at", "--defense-option", "eps=-1"], "eps must be > 0"),
    (["--init-from", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
])
def test_cli_bad_defense_input_exits_2(argv, match, tmp_path: Path, capsys) -> None:
    code = main(["train", "--option", "n_per_class=5", "--epochs", "1", "--no-progress", *argv,
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err


def test_list_defenses(capsys) -> None:
    assert main(["train", "--list-defenses"]) == 0
    out = capsys.readouterr().out
    assert "nsr" in out and "pgd_at" in out and "beta" in out
