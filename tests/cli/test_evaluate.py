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
    ("graph-on-cpu", "fast_path='cuda_graph' needs CUDA inputs, got inputs on cpu"),
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
    elif case == "graph-on-cpu":
        argv = [*base, "--fast-path", "cuda_graph"]
    else:
        argv = ["evaluate", "--checkpoint", str(ckpt), *DATA, "--attacks", "fgsm", "--out", str(tmp_path / "o")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and "Traceback" not in err and err.startswith("medrobust: error:")
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- nothing overwritten silently
FAST = ["--attacks", "fgsm", "--eps", "0.1", "--limit", "6", "--examples", "0", "--no-large-eps-check",
        "--no-progress"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("medrobust: error:"), err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_evaluate_refuses_a_foreign_folder_and_overwrite_removes_only_its_files(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "card.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    argv = ["evaluate", "--checkpoint", str(ckpt), *DATA, *FAST, "--out", str(out)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "is not empty (card.json, notes.txt; not created by `medrobust evaluate`)" in err and "--overwrite" in err
    assert (out / "card.json").read_text() == '{"mine": true}'
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "card.json").read_text())["format"] == "medrobust-result-card/1"
    assert (out / "notes.txt").read_text() == "keep me"
    capsys.readouterr()
    # a finished run of the same settings resumes (nothing recomputed, one summary)
    assert main(argv) == 0
    assert capsys.readouterr().out.count("clean accuracy") == 1


@pytest.mark.parametrize("change,what", [
    ("weights", "the model weights differ"),
    ("data", "the data fingerprint differs"),
    ("eps", "the protocol settings differ"),
])
def test_resume_says_which_input_differs(change: str, what: str, ckpt: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    argv = ["evaluate", "--checkpoint", str(ckpt), *DATA, *FAST, "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    if change == "weights":                          # the same checkpoint retrained: other weights, same path
        import torch

        from medrobust.models import load_checkpoint, save_checkpoint

        model = load_checkpoint(ckpt)
        card = dict(model.card)
        with torch.no_grad():
            next(model.parameters()).mul_(1.01)
        other = tmp_path / "ckpt2"
        save_checkpoint(model, other, classes=card["classes"], fs=card["fs"], input_shape=card["input_shape"],
                        units=card.get("units", ""), data=card.get("data"))
        argv[2] = str(other)
    elif change == "data":
        argv[argv.index("n_per_class=8")] = "n_per_class=9"
    else:
        argv[argv.index("0.1")] = "0.2"
    code = main(argv)
    err = _one_line_error(capsys)
    assert code == 2 and what in err and "different settings" in err
    others = {"the model weights differ", "the data fingerprint differs", "the protocol settings differ"} - {what}
    assert not any(o in err for o in others), err


def test_attack_twice_is_refused_and_overwrite_replaces_the_previous_files(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adv"
    base = ["attack", "--checkpoint", str(ckpt), *DATA, "--eps", "0.1", "--limit", "6", "--out", str(out),
            "--no-progress"]
    assert main([*base, "--attack", "pgd", "--attack-option", "steps=2"]) == 0
    first = sorted(p.name for p in (out / "wfdb").iterdir())
    assert len(first) == 2 * 6 + 1 and all(n.startswith("pgd_") for n in first if n != "RECORDS")
    (out / "mine.txt").write_text("keep me")
    capsys.readouterr()
    assert main([*base, "--attack", "fgsm"]) == 2
    assert "is not empty" in _one_line_error(capsys)
    assert json.loads((out / "attack.json").read_text())["attack"]["name"] == "pgd"
    assert main([*base, "--attack", "fgsm", "--wfdb-limit", "3", "--overwrite"]) == 0
    left = sorted(p.name for p in (out / "wfdb").iterdir())
    assert left == ["RECORDS", "fgsm_000.dat", "fgsm_000.hea", "fgsm_001.dat", "fgsm_001.hea", "fgsm_002.dat",
                    "fgsm_002.hea"]
    assert (out / "wfdb" / "RECORDS").read_text().split() == ["fgsm_000", "fgsm_001", "fgsm_002"]
    assert json.loads((out / "attack.json").read_text())["attack"]["name"] == "fgsm"
    assert (out / "mine.txt").read_text() == "keep me"
    # without WFDB output the previous records go too
    assert main([*base, "--attack", "fgsm", "--no-wfdb", "--overwrite"]) == 0
    assert not (out / "wfdb").exists()


def test_report_on_an_incomplete_card_or_truncated_examples(run_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    card = json.loads((bad / "card.json").read_text())
    del card["results"]
    (bad / "card.json").write_text(json.dumps(card))
    assert main(["report", str(bad), "--no-progress"]) == 2
    assert "lacks results" in _one_line_error(capsys)
    shutil.copy(run_dir / "card.json", bad / "card.json")
    from medrobust.evaluation.card import npz_bytes

    data = npz_bytes({"x": np.zeros((2, 1, 187), np.float32), "x_adv": np.zeros((1, 1, 2, 1, 187), np.float32)})
    (bad / "examples.npz").write_bytes(data[: len(data) // 2])
    assert main(["report", str(bad), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "examples.npz" in err and "corrupt or truncated" in err


def test_evaluate_refuses_labels_outside_the_models_classes(ckpt: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from medrobust.cli import evaluate as cli_eval

    real = cli_eval.load_model_and_data

    def with_label_9(ds_cfg: Any, checkpoint: Any, **kw: Any) -> Any:
        model, ds, card = real(ds_cfg, checkpoint, **kw)
        ds.y[:] = 9
        return model, ds, card

    monkeypatch.setattr(cli_eval, "load_model_and_data", with_label_9)
    assert main(["evaluate", "--checkpoint", str(ckpt), *DATA, *FAST, "--out", str(tmp_path / "o")]) == 2
    err = _one_line_error(capsys)
    assert "dataset 'synthetic' has labels 9 outside the model's 5 classes ['N', 'S', 'V', 'F', 'Q']" in err
    assert not (tmp_path / "o" / "state.json").exists()      # refused before any work unit


def test_unverified_weights_refused_then_flagged_with_trust_unverified(
        ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint whose card lost its weights hash is refused (exit 2, one line); with --trust-unverified
    evaluate and attack run and say so: the result card carries the ``unverified-weights`` flag."""
    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt, bad)
    card = json.loads((bad / "card.json").read_text())
    card.pop("weights_sha256")
    (bad / "card.json").write_text(json.dumps(card))
    args = ["evaluate", "--checkpoint", str(bad), *DATA, "--attacks", "fgsm", "--eps", "0.05", "--limit", "6",
            "--examples", "0", "--no-large-eps-check", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-unverified" in err[0] and "Traceback" not in err[0]
    assert main([*args, "--trust-unverified"]) == 0
    result = json.loads((tmp_path / "run" / "card.json").read_text())
    assert "unverified-weights" in json.dumps(result["flags"])
    assert main(["attack", "--checkpoint", str(bad), *DATA, "--attack", "fgsm", "--eps", "0.05", "--limit", "4",
                 "--no-progress", "--out", str(tmp_path / "adv")]) == 2
    assert main(["attack", "--checkpoint", str(bad), *DATA, "--attack", "fgsm", "--eps", "0.05", "--limit", "4",
                 "--no-progress", "--trust-unverified", "--out", str(tmp_path / "adv")]) == 0


@pytest.mark.parametrize(("dataset", "key"), [('{name: synthetic, limit: "ten"}', "limit"),
                                               ('{name: synthetic, options: "format=native"}', "options"),
                                               ("{name: synthetic, limt: 5}", "limt")])
def test_evaluate_yaml_values_are_checked_before_any_work(dataset: str, key: str, ckpt: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "e.yaml"
    cfg.write_text(f"checkpoint: {ckpt}\ndataset: {dataset}\n")
    assert main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and str(cfg) in err[0]
    assert not (tmp_path / "o" / "card.json").exists()


def test_precision_from_yaml_reaches_the_card(ckpt: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "e.yaml"
    cfg.write_text(f"checkpoint: {ckpt}\ndataset: {{name: synthetic, split: test, limit: 10, options: {{n_per_class: 8}}}}\n"
                   "protocol: {attacks: [fgsm], eps: [0.05], large_eps_check: false, n_examples: 0}\n"
                   f"out: {tmp_path / 'run'}\nprecision: bf16\nfast_path: 'off'\n")
    assert main(["evaluate", "--config", str(cfg), "--no-progress"]) == 0
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["precision"]["requested"] == "bf16" and card["precision"]["check"]["n"] == 10
