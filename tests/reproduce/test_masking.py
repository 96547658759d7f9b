"""The reproduction's gradient-masking step: its config checked, its command-line entry point, its README rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.errors import ConfigError
from medrobust.reproduce.masking import main, masking_step_config
from medrobust.reproduce.plan import load_plan
from medrobust.reproduce.readme import write_readme


def test_config_defaults_and_values(tmp_path: Path) -> None:
    cfg = masking_step_config({"eps": 1, "large_eps": 10}, checkpoint=tmp_path / "c", dataset={"name": "mitdb"},
                              out=tmp_path / "o", where="w")
    assert cfg == {"checkpoint": str(tmp_path / "c"), "dataset": {"name": "mitdb", "split": "test"}, "samples": 256,
                   "eps": 1.0, "large_eps": 10.0, "steps": 50, "black_box": "square", "black_box_steps": 1000,
                   "out": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match=r"^w: unknown keys \['x'\] \(allowed: .*\); missing keys \['eps', 'large_eps'\]\.$"):
        masking_step_config({"x": 1}, checkpoint=tmp_path, dataset={}, out=tmp_path, where="w")


def test_entry_point_refuses_a_missing_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'none.yaml'}: no such file; pass a reproduction's "
                                       "configs/masking-<model>.yaml.\n")
    assert main([]) == 2 and "usage: python -m medrobust.reproduce.masking" in capsys.readouterr().err


def test_readme_lists_each_check_with_its_verdict(tmp_path: Path) -> None:
    plan = load_plan("ma2020")
    (tmp_path / "cpu" / "eval").mkdir(parents=True)
    report = {"n": 256, "eps": 0.05, "large_eps": 0.5, "pgd_accuracy": 0.61, "black_box": "square",
              "black_box_steps": 1000, "black_box_accuracy": 0.7, "large_eps_accuracy": 0.0, "flags": []}
    for mid, flags in (("nsr", []), ("pgd_at", ["black-box square is stronger than PGD"])):
        (tmp_path / "cpu" / "masking" / mid).mkdir(parents=True)
        (tmp_path / "cpu" / "masking" / mid / "masking.json").write_text(json.dumps({**report, "flags": flags}))
    text = write_readme(plan, tmp_path).read_text()
    assert ("| nsr | 256 | 0.05 | 0.610 | square 1000: 0.700 | 0.5: 0.000 | no sign of masking | "
            "`cpu/masking/nsr/masking.json` |") in text
    assert "| pgd_at | 256 | 0.05 | 0.610 | square 1000: 0.700 | 0.5: 0.000 | black-box square is stronger than PGD |" in text
    assert "| jacobian |" not in text.split("### Gradient-masking check")[1]
