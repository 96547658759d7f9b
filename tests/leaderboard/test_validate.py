"""``medrobust leaderboard add``: a real card enters the board; each kind of mismatch is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medrobust import zoo
from medrobust.errors import ConfigError
from medrobust.leaderboard import add, load_task, validate
from tests.leaderboard._lb import LIMIT, task_dict, write_task


def _edit(folder: Path, fn: Any) -> Path:
    p = folder / "card.json"
    card = json.loads(p.read_text())
    fn(card)
    p.write_text(json.dumps(card))
    return p


def _refused(card: Path, env: Any, tmp_path: Path, **kw: Any) -> str:
    kw = {"task": env.task, "zoo_id": "synth-test/tiny-a", "zoo_root": env.zoo, **kw}
    with pytest.raises(ConfigError) as exc:
        add(card, board=tmp_path / "board", **kw)
    assert not (tmp_path / "board" / "entries").exists()   # nothing written
    return str(exc.value)


def test_valid_card_becomes_an_entry_with_its_numbers(env: Any, tmp_path: Path) -> None:
    card_path = env.zoo / "synth-test" / "tiny-a" / "eval" / "card.json"
    card = json.loads(card_path.read_text())
    board = tmp_path / "board"
    e = add(card_path, board=board, task=env.task, zoo_root=env.zoo)   # zoo entry found by the weights hash
    assert e["id"] == "tiny-a" and e["task"] == "synth-test" and e["threat"] == "linf"
    assert e["model"]["zoo_id"] == "synth-test/tiny-a" and e["model"]["architecture"] == "cnn1"
    assert e["model"]["parameters"] == sum(p.numel() for p in zoo.load("synth-test/tiny-a", root=env.zoo).parameters())
    assert e["clean"]["numerator"] == card["clean"]["accuracy"]["numerator"] and e["clean"]["denominator"] == LIMIT
    assert [r["eps"] for r in e["robust"]] == [0.02, 0.1]
    for r, c in zip(e["robust"], card["results"]):
        assert r["numerator"] == c["robust_accuracy"]["numerator"]
        lo, hi = r["ci95"]
        assert 0 <= lo <= r["value"] <= hi <= 1 and hi - lo > 0.1   # a 95 % interval on 24 samples is wide
    assert e["flagged"] is False and e["verified"] is None
    stored = json.loads((board / "entries" / "synth-test" / "tiny-a.json").read_text())
    assert stored["card_sha256"] and (board / stored["card"]).resolve() == card_path.resolve()


def test_another_protocol_version_is_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c["protocol"].__setitem__("version", 2))
    msg = _refused(card, env, tmp_path)
    assert "protocol.version: the card was evaluated under protocol version 2, task linf needs version 1" in msg
    assert msg.count("\n  ") == 1   # exactly one problem line


def test_another_subset_is_refused(env: Any, tmp_path: Path) -> None:
    # the real card evaluated a stratified 24 of 40; a task asking for 20 refuses it (selection and indices)
    task = write_task(tmp_path / "synth-test.yaml", limit=20)
    card = env.cards["tiny-a"] / "card.json"
    msg = _refused(card, env, tmp_path, task=task)
    lines = msg.split("\n  ")[1:]
    assert len(lines) == 2
    assert lines[0].startswith("data.evaluated.selection: the card's subset is limit=24 seed=0, task synth-test "
                               "needs limit=20 seed=0; evaluate with --limit 20 --seed 0.")
    assert lines[1].startswith("data.evaluated.indices_sha256: the card evaluated other samples")
    # the same with another seed (same size): only the indices and the seed differ
    task = write_task(tmp_path / "synth-test.yaml", seed=3)
    lines = _refused(card, env, tmp_path, task=task).split("\n  ")[1:]
    assert [ln.split(":")[0] for ln in lines] == ["data.evaluated.selection", "data.evaluated.indices_sha256"]


def test_tampered_weights_hash_is_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c["model"]["card"].__setitem__("weights_sha256", "0" * 64))
    msg = _refused(card, env, tmp_path)
    assert "model.card.weights_sha256: the card measured weights 000000000000..., the checkpoint holds" in msg
    # the genuine card claimed for another checkpoint is refused the same way
    msg = _refused(env.cards["tiny-a"] / "card.json", env, tmp_path, zoo_id="synth-test/tiny-b")
    assert "model.card.weights_sha256" in msg
    msg = _refused(env.cards["tiny-a"] / "card.json", env, tmp_path, zoo_id=None, checkpoint=str(env.ckpts["tiny-c"]),
                   entry_id="x")
    assert "model.card.weights_sha256" in msg


def test_missing_denominator_is_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c["results"][1]["robust_accuracy"].pop("denominator"))
    msg = _refused(card, env, tmp_path)
    assert "results[1].robust_accuracy.denominator: missing or not a count (None)" in msg
    card = _edit(card_copy(), lambda c: c["clean"]["accuracy"].pop("numerator"))
    assert "clean.accuracy.numerator: missing" in _refused(card, env, tmp_path)


def test_edited_value_and_wrong_denominator_are_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    def bump_value(c: dict) -> None:
        c["results"][0]["robust_accuracy"]["value"] += 0.25
    assert "results[0].robust_accuracy.value" in _refused(_edit(card_copy(), bump_value), env, tmp_path)

    def grow(c: dict) -> None:
        r = c["clean"]["accuracy"]
        r["denominator"] += 1
        r["value"] = r["numerator"] / r["denominator"]
    msg = _refused(_edit(card_copy(), grow), env, tmp_path)
    assert f"clean.accuracy.denominator: {LIMIT + 1} is not the number of evaluated samples ({LIMIT})" in msg


def test_other_attacks_eps_and_data_are_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c["protocol"]["attacks"][0]["kwargs"].__setitem__("steps", 4))
    msg = _refused(card, env, tmp_path)
    assert "protocol.attacks: the card has" in msg and "threat row 'linf' needs" in msg
    card = _edit(card_copy(), lambda c: c["protocol"].__setitem__("eps", [0.02, 0.2]))
    assert "protocol.eps" in _refused(card, env, tmp_path)
    fp = dict(task_dict()["dataset"], fingerprint="f" * 64)
    task = write_task(tmp_path / "synth-test.yaml", dataset=fp)
    msg = _refused(env.cards["tiny-a"] / "card.json", env, tmp_path, task=task)
    assert "data.fingerprint: the card's data" in msg and "(ffffffffffff...)" in msg


def test_flagged_card_is_accepted_and_marked(env: Any, card_copy: Any, tmp_path: Path) -> None:
    flag = {"code": "zero_gradients", "message": "input gradients are zero", "details": {}}
    card = _edit(card_copy(), lambda c: c["flags"].append(flag))
    e = add(card, board=tmp_path / "board", task=env.task, zoo_id="synth-test/tiny-a", zoo_root=env.zoo)
    assert e["flagged"] is True and e["flags"] == [{"code": "zero_gradients", "message": "input gradients are zero"}]


def test_validate_matches_the_threat_row_and_lists_every_problem(env: Any) -> None:
    task = load_task(env.task)
    card = json.loads((env.cards["tiny-a"] / "card.json").read_text())
    w = card["model"]["card"]["weights_sha256"]
    v = validate(card, task, weights_sha256=w)
    assert v.ok and v.row is not None and v.row.id == "linf"
    card["protocol"]["version"] = 3
    card["data"]["name"] = "mitdb"
    v = validate(card, task, weights_sha256=None)
    fields = [p.split(":")[0] for p in v.problems]
    assert fields == ["data.name", "protocol.version", "weights"]
    v = validate(card, task, weights_sha256=w, threat="l2-uap")
    assert v.row is None and "threat row 'l2-uap' of task synth-test is not-evaluated: no UAP card" in v.problems


def test_cli_prints_one_line_per_problem(env: Any, card_copy: Any, tmp_path: Path, capsys: Any) -> None:
    from medrobust.cli.main import main

    card = _edit(card_copy(), lambda c: (c["protocol"].__setitem__("version", 2),
                                         c["results"][0]["robust_accuracy"].pop("denominator")))
    rc = main(["leaderboard", "add", str(card), "--board", str(tmp_path / "b"), "--task", str(env.task),
               "--checkpoint", str(env.ckpts["tiny-a"]), "--id", "mine"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.splitlines()[1].strip().startswith("protocol.version:")
    assert err.splitlines()[2].strip().startswith("results[0].robust_accuracy.denominator:")
    rc = main(["leaderboard", "add", str(env.cards["tiny-b"]), "--board", str(tmp_path / "b"), "--task",
               str(env.task), "--checkpoint", str(env.ckpts["tiny-b"]), "--id", "mine-b", "--defence", "noise"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("added synth-test/mine-b (linf): clean ")
    e = json.loads((tmp_path / "b" / "entries" / "synth-test" / "mine-b.json").read_text())
    assert e["model"]["defence"] == "noise" and e["model"]["zoo_id"] is None and e["model"]["parameters"] > 0


def test_cli_config_evaluate_add_round_trip(env: Any, tmp_path: Path, capsys: Any) -> None:
    """`leaderboard config` -> `evaluate --config` -> `leaderboard add`: the card the CLI writes is a valid entry."""
    from medrobust.cli.main import main

    run = tmp_path / "eval"
    assert main(["leaderboard", "config", str(env.task), "--checkpoint", str(env.ckpts["tiny-a"]), "--out",
                 str(run)]) == 0
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(capsys.readouterr().out)
    assert main(["evaluate", "--config", str(cfg), "--no-progress", "--examples", "0"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "add", str(run), "--board", str(tmp_path / "b"), "--task", str(env.task),
                 "--checkpoint", str(env.ckpts["tiny-a"]), "--id", "cli"]) == 0
    e = json.loads((tmp_path / "b" / "entries" / "synth-test" / "cli.json").read_text())
    ref = json.loads((env.cards["tiny-a"] / "card.json").read_text())
    # the same model under the same protocol: the same numbers as the Python-API card
    assert e["clean"]["numerator"] == ref["clean"]["accuracy"]["numerator"]
    assert [r["numerator"] for r in e["robust"]] == [r["robust_accuracy"]["numerator"] for r in ref["results"]]


def test_whole_split_task(env: Any, tmp_path: Path) -> None:
    """A task with ``limit: null`` (the MedMNIST tasks) takes a card of the whole split and refuses a subset."""
    from medrobust.data import load_dataset
    from medrobust.evaluation import ProtocolConfig, evaluate
    from medrobust.models import load_checkpoint
    from tests.leaderboard._lb import N_PER_CLASS, PROTOCOL

    task = write_task(tmp_path / "synth-test.yaml", limit=None)
    model = load_checkpoint(env.ckpts["tiny-a"])
    ds = load_dataset("synthetic", split="test", n_per_class=N_PER_CLASS)
    cfg = ProtocolConfig.from_dict({**PROTOCOL, "name": "custom", "n_examples": 0, "large_eps_check": False})
    evaluate(model, ds, cfg, out_dir=tmp_path / "all", model_card=model.card, progress=False)
    e = add(tmp_path / "all", board=tmp_path / "b", task=task, zoo_id="synth-test/tiny-a", zoo_root=env.zoo)
    assert e["clean"]["denominator"] == len(ds) == 40
    msg = _refused(env.cards["tiny-a"] / "card.json", env, tmp_path / "x", task=task)
    assert msg.split("\n  ")[1:] == [msg.split("\n  ")[1]]
    assert msg.split("\n  ")[1].startswith("data.evaluated.indices_sha256: the card evaluated other samples")
    assert msg.endswith("evaluate the whole split (no --limit).")


def test_results_must_follow_the_task_radii(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c["results"].pop())
    assert "results: expected one entry per ε [0.02, 0.1], got 1; re-evaluate." in _refused(card, env, tmp_path)
    card = _edit(card_copy(), lambda c: c["results"][0].__setitem__("eps", 0.03))
    assert "results[0].eps: 0.03 is not the task's ε 0.02" in _refused(card, env, tmp_path)

    def over(c: dict) -> None:
        r = c["results"][0]["robust_accuracy"]
        r["numerator"] = r["denominator"] + 1
    assert "results[0].robust_accuracy.value" in _refused(_edit(card_copy(), over), env, tmp_path)
    card = _edit(card_copy(), lambda c: c["clean"]["accuracy"].__setitem__("numerator", True))
    assert "clean.accuracy.numerator: missing or not a count (True)" in _refused(card, env, tmp_path)


def test_not_a_result_card(env: Any, tmp_path: Path) -> None:
    task = load_task(env.task)
    v = validate({"format": "medrobust-checkpoint/1"}, task, weights_sha256="x")
    assert v.problems == ["format: 'medrobust-checkpoint/1' is not a medrobust-result-card/1 result card; pass the "
                          "card.json written by medrobust evaluate."]


def test_reduced_precision_card_is_refused(env: Any, card_copy: Any, tmp_path: Path) -> None:
    card = _edit(card_copy(), lambda c: c.__setitem__("precision", {"requested": "bf16", "used": "bf16"}))
    assert "precision.used: the card was evaluated in bf16" in _refused(card, env, tmp_path)
    card = _edit(card_copy(), lambda c: c.__setitem__("precision", {"requested": "bf16", "used": "fp32"}))
    assert add(card, board=tmp_path / "b", task=env.task, zoo_root=env.zoo)["id"] == "tiny-a"


def test_the_model_is_found_in_the_zoo_or_must_be_named(env: Any, tmp_path: Path) -> None:
    card = env.cards["tiny-a"] / "card.json"
    empty = tmp_path / "empty-zoo"
    empty.mkdir()
    msg = _refused(card, env, tmp_path, zoo_id=None, zoo_root=empty)
    assert msg.split("\n  ")[1:] == ["weights: no checkpoint given to check the card's weights against; pass "
                                     "--checkpoint DIR or --zoo ID."]
    twice = tmp_path / "twice"
    zoo.add(env.ckpts["tiny-a"], entry_id="synth-test/a1", root=twice)
    zoo.add(env.ckpts["tiny-a"], entry_id="synth-test/a2", root=twice)
    with pytest.raises(ConfigError, match=r"several zoo entries \(\['synth-test/a1', 'synth-test/a2'\]\); pass --zoo"):
        add(card, board=tmp_path / "b", task=env.task, zoo_root=twice)


def test_entry_gives_radii_in_microvolts_when_the_row_says_how(env: Any, tmp_path: Path) -> None:
    d = task_dict()
    d["threats"][0]["uv_per_unit"] = 1000.0     # as if the data were in mV
    task = tmp_path / "synth-test.yaml"
    task.write_text(__import__("yaml").safe_dump(d))
    e = add(env.cards["tiny-a"], board=tmp_path / "b", task=task, zoo_root=env.zoo)
    assert [r["eps_uv"] for r in e["robust"]] == [20.0, 100.0]
    e = add(env.cards["tiny-a"], board=tmp_path / "b", task=env.task, zoo_root=env.zoo)
    assert all("eps_uv" not in r for r in e["robust"])
