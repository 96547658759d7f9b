"""CLI: commands run end to end; bad input exits 2 with one clear line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.cli.main import main


def test_help_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert main(["models"]) == 0
    assert "cnn1" in capsys.readouterr().out.split()


def test_data_build_mitdb(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "build", "mitdb", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path),
                 "--option", "records=['100', '101']"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test  n=" in out and "fs=125" in out
    assert len(list(tmp_path.glob("mitdb-*.npz"))) == 1


def test_train_from_yaml_with_flag_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "dataset: {name: synthetic, options: {n_per_class: 30}}\n"
        "model: {name: mlp1}\n"
        "train: {epochs: 5, batch_size: 32}\n"
        f"out: {tmp_path / 'run'}\n"
        "evaluate_test: true\n"
    )
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["train"]["epochs"] == 2 and summary["config"]["model"]["name"] == "mlp1"
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("argv,match", [
    (["train", "--model", "cnn9", "--option", "n_per_class=5"], "unknown model name 'cnn9'"),
    (["train", "--dataset", "mitbih"], "unknown dataset 'mitbih'"),
    (["data", "info", "mitdb", "--data-dir", "/nonexistent/place"], "dataset folder not found"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["demo", "--eps", "0.1,-2"], "every ε must be > 0"),
    (["demo", "--threads", "0"], "--threads 0: must be >= 1"),
    (["train", "--option", "nokeyvalue"], "expected KEY=VALUE"),
])
def test_bad_input_exits_2_with_one_line(argv, match, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main([*argv, "--out", str(tmp_path / "o")] if argv[0] in ("train", "demo") else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert match in err and "Traceback" not in err and err.startswith("medrobust: error:")


def test_bad_yaml_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("modle: {name: cnn1}\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown key(s) ['modle']" in capsys.readouterr().err


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    assert "not a writable folder" in capsys.readouterr().err


def test_demo_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-per-class", "40", "--epochs", "2", "--eps", "0.05,0.3",
                 "--pgd-steps", "5", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(a["attack"], a["eps"]) for a in res["attacks"]] == [
        (name, eps) for eps in (0.05, 0.3) for name in ("fgsm", "pgd", "sap")]
    for a in res["attacks"]:
        assert a["max_linf"] <= a["eps"] + 1e-6
    pgd_big = [a for a in res["attacks"] if a["attack"] == "pgd" and a["eps"] == 0.3][0]
    assert pgd_big["robust_accuracy"] <= res["clean_accuracy"]
    # the worst case over the ensemble is never better than any member
    for k, eps in enumerate((0.05, 0.3)):
        members = [a["robust_accuracy"] for a in res["attacks"] if a["eps"] == eps]
        assert res["worst_case_robust_accuracy"][k] <= min(members) + 1e-12
    printed = capsys.readouterr().out
    assert "PGD-5 robust acc" in printed
    # the demo ends with the evaluation protocol and its report
    html = out / "evaluation" / "report.html"
    assert html.is_file() and f"report: {html}" in printed and "worst case" in printed
    card = json.loads((out / "evaluation" / "card.json").read_text())
    assert card["environment"]["torch_version"] and card["results"]
