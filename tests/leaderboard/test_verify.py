"""``medrobust leaderboard add --verify``: a seeded re-run of a sample of the card's evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medrobust import zoo
from medrobust.errors import ConfigError
from medrobust.evaluation.card import read_npz
from medrobust.leaderboard import add, load_task, verify_card
from tests.leaderboard._lb import claim_survived


def _verify(env: Any, folder: Path, n: int = 12) -> dict:
    task = load_task(env.task)
    return verify_card(folder / "card.json", task, task.threat("linf"), zoo.load("synth-test/tiny-a", root=env.zoo),
                       n=n)


def test_genuine_card_verifies_sample_by_sample(env: Any) -> None:
    r = _verify(env, env.cards["tiny-a"], n=12)
    assert r["ok"] and r["n"] == 12 and r["mismatches"] == [], r["message"]
    ps = read_npz(env.cards["tiny-a"] / "per_sample.npz")
    assert set(r["indices"]) <= set(ps["index"].tolist()) and len(set(r["indices"])) == 12
    # the sample is stratified over the card's labels (every class of the 24 is re-run)
    pos = np.searchsorted(ps["index"], r["indices"])
    assert set(ps["y"][pos].tolist()) == set(ps["y"].tolist())


def test_edited_numerator_is_caught(env: Any, card_copy: Any) -> None:
    folder = card_copy()
    card = json.loads((folder / "card.json").read_text())
    ra = card["results"][1]["robust_accuracy"]
    ra["numerator"] += 1                       # a consistent edit: validation alone accepts it
    ra["value"] = ra["numerator"] / ra["denominator"]
    (folder / "card.json").write_text(json.dumps(card))
    r = _verify(env, folder)
    assert not r["ok"]
    got = int(ra["numerator"]) - 1
    assert r["message"] == f"results[1].robust_accuracy.numerator {got + 1} != {got} robust in per_sample.npz"


def test_edited_card_and_per_sample_file_are_caught_by_the_rerun(env: Any, card_copy: Any, tmp_path: Path) -> None:
    folder = card_copy()
    index = claim_survived(folder, 1)          # claim a broken sample survived the attack
    r = _verify(env, folder, n=24)             # every evaluated sample: the edited one is re-run
    assert not r["ok"]
    assert r["mismatches"] == [{"index": index, "what": "robust at eps=0.1", "card": True,
                                "rerun": False}]
    # through add(): the entry is refused and not written
    with pytest.raises(ConfigError, match=r"--verify failed: 1 outcome\(s\) differ"):
        add(folder, board=tmp_path / "board", task=env.task, zoo_root=env.zoo, verify=True, verify_samples=24)
    assert not (tmp_path / "board" / "entries").exists()


def test_verified_entry_records_the_rerun(env: Any, tmp_path: Path) -> None:
    e = add(env.cards["tiny-b"], board=tmp_path / "board", task=env.task, zoo_root=env.zoo, verify=True,
            verify_samples=8)
    assert e["id"] == "tiny-b" and e["verified"]["ok"] and e["verified"]["n"] == 8


def test_missing_per_sample_file_is_a_clear_error(env: Any, card_copy: Any) -> None:
    from medrobust.errors import DataError

    folder = card_copy()
    (folder / "per_sample.npz").unlink()
    with pytest.raises(DataError, match="--verify needs .*per_sample.npz"):
        _verify(env, folder)


def test_zoo_add_with_board_is_one_command(env: Any, tmp_path: Path, capsys: Any) -> None:
    from medrobust.cli.main import main

    zroot, board = tmp_path / "zoo", tmp_path / "board"
    rc = main(["zoo", "add", str(env.ckpts["tiny-b"]), "--id", "synth-test/one", "--eval-card",
               str(env.cards["tiny-b"] / "card.json"), "--root", str(zroot), "--board", str(board), "--task",
               str(env.task), "--verify", "--budget", "8 epochs"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "board entry synth-test/one (linf)" in out and "verified on 24 samples" in out
    e = json.loads((board / "entries" / "synth-test" / "one.json").read_text())
    assert e["model"]["zoo_id"] == "synth-test/one" and e["model"]["budget"] == "8 epochs"
    assert (board / e["card"]).resolve() == (zroot / "synth-test" / "one" / "eval" / "card.json").resolve()
    rc = main(["zoo", "add", str(env.ckpts["tiny-b"]), "--id", "synth-test/two", "--root", str(zroot), "--board",
               str(board)])
    assert rc == 2 and "--board needs --eval-card" in capsys.readouterr().err
    assert not (zroot / "synth-test" / "two").exists()
