"""``medrobust evaluate`` / ``attack`` / ``report``: end to end on a tiny checkpoint, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb

from medrobust.cli.main import main

DATA = ["--dataset", "synthetic", "--option", "n_per_class=8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    return helpers.tiny_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def run_dir(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-eval") / "run"
    code = main(["evaluate", "--checkpoint", str(ckpt), *DATA, "--attacks", "pgd,sap",
                 "--attack-option", "pgd.steps=5", "--attack-option", "sap.steps=2", "--eps", "0.05,0.1",
                 "--limit", "30", "--mode", "individual", "--examples", "0", "--out", str(out), "--report",
                 "--no-progress"])
    assert code == 0
    return out


def test_evaluate_writes_card_and_report(run_dir: Path, ckpt: Path) -> None:
    card = json.loads((run_dir / "card.json").read_text())
    assert card["data"]["evaluated"]["n"] == 30 and card["data"]["evaluated"]["n_total_split"] == 40
    assert card["data"]["evaluated"]["selection"]["limit"] == 30
    assert [m["label"] for m in card["protocol"]["members"]] == ["pgd", "sap"]
    assert card["protocol"]["members"][0]["kwargs"] == {"steps": 5}
    assert card["command"].startswith("medrobust evaluate --checkpoint")
    assert card["model"]["checkpoint"] == str(ckpt)
    assert (run_dir / "report.html").stat().st_size > 10_000
    md = (run_dir / "report.md").read_text()
    assert "## Reliability flags" in md and "figures/curves.png" in md and (run_dir / "figures" / "curves.png").is_file()


def test_report_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir), "--no-progress"]) == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    assert (run_dir / "report.html").is_file()


def test_evaluate_from_yaml_with_flag_override(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"checkpoint: {ckpt}\n"
        "dataset: {name: synthetic, split: test, limit: 12, options: {n_per_class: 8}}\n"
        "protocol:\n  attacks: [fgsm, {name: pgd, steps: 3, restarts: 2}]\n  eps: [0.02, 0.2]\n"
        "  large_eps_check: false\n  n_examples: 0\n"
        f"out: {tmp_path / 'yaml-run'}\n"
    )
    assert main(["evaluate", "--config", str(cfg), "--eps", "0.1", "--no-progress"]) == 0
    card = json.loads((tmp_path / "yaml-run" / "card.json").read_text())
    assert card["threat_model"]["eps"] == [0.1]
    assert card["protocol"]["members"][1]["restarts"] == 2 and card["large_eps_check"] is None
    assert "robust acc" in capsys.readouterr().out


def test_attack_saves_npz_and_wfdb(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adv"
    assert main(["attack", "--checkpoint", str(ckpt), *DATA, "--attack", "pgd", "--attack-option", "steps=5",
                 "--eps", "0.1", "--limit", "10", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "attack.json").read_text())
    with np.load(out / "adversarial.npz", allow_pickle=False) as z:
        assert z["x_adv"].shape == (10, 1, 187)
        assert np.abs(z["delta"]).max() <= 0.1 + 1e-6
        assert int(z["success"].sum()) == summary["attack_success_rate"]["numerator"] > 0
        first_adv, first_clean = z["x_adv"][0, 0], z["x"][0, 0]
    records = (out / "wfdb" / "RECORDS").read_text().split()
    assert len(records) == 10
    rec = wfdb.rdrecord(str(out / "wfdb" / records[0]))
    step = 1.0 / np.asarray(rec.adc_gain)
    assert np.abs(rec.p_signal[:, 0] - first_adv).max() <= step[0] / 2 + 1e-6
    assert np.abs(rec.p_signal[:, 1] - first_clean).max() <= step[1] / 2 + 1e-6
    assert any(c.startswith("medrobust adversarial example: attack=pgd") for c in rec.comments)
    assert "robust accuracy" in capsys.readouterr().out


def test_targeted_attack(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "tgt"
    assert main(["attack", "--checkpoint", str(ckpt), *DATA, "--attack", "pgd", "--attack-option", "steps=10",
                 "--eps", "0.3", "--target", "V", "--limit", "10", "--no-wfdb", "--out", str(out),
                 "--no-progress"]) == 0
    t = json.loads((out / "attack.json").read_text())["targeted_success_rate"]
    with np.load(out / "adversarial.npz", allow_pickle=False) as z:
        v = list(z["classes"]).index("V")
        assert t["denominator"] == int((z["y"] != v).sum())       # beats already labelled V are not attacked
        assert t["numerator"] == int(((z["adv_pred"] == v) & (z["y"] != v)).sum()) > 0
        assert not (out / "wfdb").exists()


@pytest.fixture()
def foreign_ckpt(ckpt: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "ckpt-3-classes"
    shutil.copytree(ckpt, bad)
    card = json.loads((bad / "card.json").read_text())
    card["classes"] = ["N", "S", "V", "F", "X"]
    (bad / "card.json").write_text(json.dumps(card))
    return bad


@pytest.mark.parametrize("case,match", [
    ("classes", "predicts classes"),
    ("length", "expects inputs of shape"),
    ("attack", "unknown attack 'pgdx'"),
    ("unwritable", "not a writable folder"),
    ("corrupt", "is corrupt"),
    ("standard", "fixed settings"),
    ("no-card", "no result card"),
    ("no-eps", "needs --attacks and --eps"),
])
def test_bad_input_exits_2_with_one_line(case: str, match: str, ckpt: Path, foreign_ckpt: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--checkpoint", str(ckpt), *DATA, "--attacks", "fgsm", "--eps", "0.1", "--limit", "4",
            "--examples", "0", "--no-large-eps-check", "--no-progress", "--out", str(tmp_path / "o")]
    if case == "classes":
        argv = [*base, "--checkpoint", str(foreign_ckpt)]
    elif case == "length":
        argv = [*base, "--option", "format=native"]
    elif case == "attack":
        argv = [*base, "--attacks", "pgd,pgdx"]
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        argv = [*base, "--out", str(tmp_path / "file" / "sub")]
    elif case == "corrupt":
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "state.json").write_text('{"format": "medrobust-eval-state/1", "uni')
        argv = base
    elif case == "standard":
        argv = ["evaluate", "--checkpoint", str(ckpt), *DATA, "--protocol", "standard", "--attack-option",
                "pgd.steps=3", "--out", str(tmp_path / "o")]
    elif case == "no-card":
        argv = ["report", str(tmp_path)]
    else:
        argv = ["evaluate", "--checkpoint", str(ckpt), *DATA, "--attacks", "fgsm", "--out", str(tmp_path / "o")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and "Traceback" not in err and err.startswith("medrobust: error:")
    assert len(err.strip().splitlines()) == 1
