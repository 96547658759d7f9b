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
    assert "challenge_score" not in summary["test"] and "challenge_score" not in summary["val"]  # CinC 2017 only
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


# ---------------------------------------------------------------- issue 21: hostile-user cases, one line each
def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("medrobust: error:") and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("option, match", [
    ("records=[]", "records=[] is not allowed: records must be a non-empty list"),
    ("bogus_key=1", "dataset 'mitdb': unknown option bogus_key=1; allowed:"),
    ("records=[", "--option 'records=[': the value '[' is not a valid YAML value"),
    ("fs=ten", "fs='ten' is not allowed: fs must be a number or null"),
])
def test_data_info_bad_option_exits_2(option: str, match: str, shared_data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "info", "mitdb", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path),
                 "--option", option])
    assert code == 2 and match in _one_line_error(capsys)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_data_info_scalar_records_is_one_record(shared_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "info", "mitdb", "--data-dir", str(shared_data), "--cache-dir", str(tmp_path),
                 "--option", "records=100"])
    out = capsys.readouterr().out
    assert code == 0
    # record 100 has 2239 N, 33 S, 1 V beats (annotations); the three splits add up to them
    sizes = [int(line.split("n=")[1].split()[0]) for line in out.splitlines() if " n=" in line]
    assert len(sizes) == 3 and sum(sizes) == 2273


def test_data_cache_dir_for_a_dataset_without_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "info", "synthetic", "--cache-dir", str(tmp_path)]) == 2
    assert "--cache-dir: dataset 'synthetic' keeps no cache" in _one_line_error(capsys)


@pytest.mark.parametrize("yaml_text, match", [
    ('train: {epochs: "two"}\n', "train: epochs='two' is not allowed: epochs must be an integer"),
    ('dataset: {name: synthetic, options: "format=native"}\n',
     "dataset: options='format=native' is not allowed: options must be a mapping"),
    ("dataset: synthetic\n", "dataset must be a mapping (key: value)"),
    ("train: {epochs: 0}\n", "epochs must be >= 1, got 0"),
    ("dataset: {name: synthetic, options: {n_per_class: five}}\n", "n_per_class='five' is not allowed"),
    ("train: {epochs: 2\n", "is not valid YAML (line 2"),
    ("dataset: {name: synthetic, split: test}\n", "dataset: unknown key(s) ['split']"),
    ("model: {name: mlp1, kwargs: [1]}\n", "model: kwargs=[1] is not allowed"),
])
def test_train_yaml_values_checked_before_work(yaml_text: str, match: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert match in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()  # nothing created before the config was valid


def test_non_utf8_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "is not UTF-8 text" in _one_line_error(capsys)


_TRAIN = ["train", "--option", "n_per_class=8", "--model", "mlp1", "--epochs", "1", "--no-progress"]


def test_train_refuses_foreign_and_earlier_output_unless_overwrite(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*_TRAIN, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"--out {out} is not empty (notes.txt; not created by `medrobust train`)" in err and "--overwrite" in err
    assert main([*_TRAIN, "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes only what train writes
    first = (out / "checkpoint" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*_TRAIN, "--out", str(out)]) == 2  # an earlier train's checkpoint is not replaced silently
    assert "the output of an earlier `medrobust train`" in _one_line_error(capsys)
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == first
    assert main([*_TRAIN, "--out", str(out), "--overwrite", "--seed", "3"]) == 0
    assert (out / "checkpoint" / "model.safetensors").read_bytes() != first


def test_train_init_from_unverified_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_TRAIN, "--out", str(tmp_path / "a")]) == 0
    ck = tmp_path / "a" / "checkpoint"
    card = json.loads((ck / "card.json").read_text())
    del card["weights_sha256"]
    (ck / "card.json").write_text(json.dumps(card))
    capsys.readouterr()
    assert main([*_TRAIN, "--init-from", str(ck), "--out", str(tmp_path / "b")]) == 2
    err = _one_line_error(capsys)
    assert "refusing to load unverified weights" in err and "--trust-unverified" in err
    assert main([*_TRAIN, "--init-from", str(ck), "--trust-unverified", "--out", str(tmp_path / "c")]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "UNVERIFIED" in ln]
    assert len(warned) == 1 and warned[0].startswith("medrobust: warning: loading UNVERIFIED weights")
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["init_from"]["weights_verified"] is False and summary["config"]["trust_unverified"] is True
    assert len(summary["init_from"]["weights_sha256"]) == 64


# ---------------------------------------------------------------- claim_out_dir (used by train, evaluate, attack)
def test_claim_out_dir_rules(tmp_path: Path) -> None:
    from medrobust.cli._util import MARKER_NAME, claim_out_dir
    from medrobust.errors import ConfigError

    produced = ("adversarial.npz", "attack.json", "wfdb")
    out = claim_out_dir(tmp_path / "new" / "run", command="attack", produced=produced)
    assert json.loads((out / MARKER_NAME).read_text()) == {"command": "attack", "produced": list(produced)}
    # this command's folder without earlier output: accepted again
    assert claim_out_dir(out, command="attack", produced=produced) == out
    (out / "attack.json").write_text("{}")
    (out / "wfdb").mkdir()
    (out / "wfdb" / "pgd_0.hea").write_text("stale")
    (out / "keep.txt").write_text("user file")
    with pytest.raises(ConfigError, match="the output of an earlier `medrobust attack`"):
        claim_out_dir(out, command="attack", produced=produced)
    assert claim_out_dir(out, command="attack", produced=produced, resume=True) == out  # resumable commands
    assert (out / "attack.json").exists()
    with pytest.raises(ConfigError, match="written by `medrobust attack`"):
        claim_out_dir(out, command="evaluate", produced=("card.json",))
    claim_out_dir(out, command="attack", produced=produced, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, "keep.txt"])  # stale WFDB gone too
    # a foreign folder (no marker) holding a file the command would write: refused, even with resume
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "card.json").write_text('{"someone": "else"}')
    with pytest.raises(ConfigError, match="not created by `medrobust evaluate`"):
        claim_out_dir(foreign, command="evaluate", produced=("card.json", "state.json"), resume=True)
    assert (foreign / "card.json").read_text() == '{"someone": "else"}'
    # adopt: a run written before markers existed is recognised by its state file
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "state.json").write_text("{}")
    claim_out_dir(legacy, command="evaluate", produced=("state.json",), resume=True, adopt=("state.json",))
    assert json.loads((legacy / MARKER_NAME).read_text())["command"] == "evaluate"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        claim_out_dir(tmp_path / "afile", command="train")
    with pytest.raises(ValueError, match="plain relative names"):
        claim_out_dir(tmp_path / "x", command="train", produced=("../up",))


def test_train_recipe_fills_defaults_that_yaml_and_flags_override(tmp_path: Path) -> None:
    """``--recipe ma2020`` gives Ma & Liang's settings (Adamax, batch 128, 50 epochs, last epoch, tiled
    oversampling; MLP1 adversarial training mixing clean and adversarial losses 1:1, PGD 10 × 0.01 at ε 0.1);
    a flag or a YAML key still wins, and a defence the recipe lacks is refused in one line."""
    from medrobust.cli.main import build_parser
    from medrobust.cli.train import resolve_config

    parse = build_parser().parse_args
    c = resolve_config(parse(["train", "--recipe", "ma2020", "--defense", "pgd_at", "--model", "mlp1",
                              "--epochs", "2"]))
    assert c["model"]["name"] == "mlp1" and c["recipe"] == "ma2020"
    assert {k: c["train"][k] for k in ("epochs", "batch_size", "optimizer", "class_balance", "select")} == {
        "epochs": 2, "batch_size": 128, "optimizer": "adamax", "class_balance": "oversample", "select": "last"}
    assert (c["defense"]["eps"], c["defense"]["steps"], c["defense"]["step_size"]) == (0.1, 10, 0.01)
    assert (c["defense"]["clean_weight"], c["defense"]["adv_weight"]) == (1.0, 1.0)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("recipe: ma2020\ndefense: {name: nsr, beta: 0.5}\ntrain: {batch_size: 64}\n")
    c = resolve_config(parse(["train", "--config", str(cfg)]))
    assert c["model"]["name"] == "cnn1" and c["train"]["batch_size"] == 64 and c["train"]["epochs"] == 50
    assert c["defense"]["beta"] == 0.5 and c["train"]["reinit_dead_units"] is True
    assert main(["train", "--recipe", "ma2020", "--defense", "adt", "--out", str(tmp_path / "o")]) == 2


def test_every_option_has_help_and_computing_commands_take_threads(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from medrobust.cli.main import COMPUTING, build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [(name, a.option_strings[0]) for name, p in sub.choices.items() for a in p._actions
               if a.option_strings and not a.help]
    assert missing == []
    for name in COMPUTING:
        assert any("--threads" in a.option_strings for a in sub.choices[name]._actions), name
    assert "(default: linf)" in sub.choices["attack"].format_help()  # defaults shown
    assert main(["report", "--threads", "0", "nowhere"]) == 2
    assert "--threads 0: must be >= 1" in capsys.readouterr().err


def test_train_on_cinc2017_reports_the_challenge_score(shared_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from medrobust.data.cinc2017 import challenge_score

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"dataset: {{name: cinc2017, root: {shared_data}, options: {{limit: 160, fs: 50, seconds: 10, "
        f"cache_dir: {tmp_path / 'cache'}}}}}\n"
        "model: {name: resnet1d, kwargs: {widths: [4, 8], blocks: 1, kernel_size: 3}}\n"
        "train: {epochs: 1, batch_size: 32, lr_schedule: cosine, random_crop: 0.8, class_balance: oversample}\n"
        f"out: {tmp_path / 'run'}\n"
        "evaluate_test: true\n"
    )
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for split in ("val", "test"):
        assert split in summary and "challenge_score" in summary[split]
    test = summary["test"]
    expected = challenge_score(test["confusion"])
    assert test["challenge_score"] == expected["score"]
    assert test["challenge_f1"] == {"N": expected["F1_N"], "A": expected["F1_A"], "O": expected["F1_O"],
                                    "~": expected["F1_~"]}
    assert sum(map(sum, test["confusion"])) == test["n"]
    assert summary["config"]["train"]["random_crop"] == 0.8 and summary["config"]["train"]["lr_schedule"] == "cosine"
    assert f"test: CinC 2017 challenge score (mean F1 of N, A, O) {test['challenge_score']:.4f}" in capsys.readouterr().out
