"""A task's L2 UAP row: its card is validated against that row, written beside the L∞ entry, and verified by a
re-run of the universal fit on every evaluated sample."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from medrobust import zoo
from medrobust.data import load_dataset
from medrobust.errors import ConfigError
from medrobust.evaluation import evaluate
from medrobust.leaderboard import add, load_task, verify_card

from tests.leaderboard._lb import LIMIT, N_PER_CLASS, PROTOCOL, claim_survived, write_task

UAP_ROW = {"id": "l2-uap", "title": "L2 UAP (test)", "status": "open", "units": "normalized [0, 1]",
           "protocol": {"attacks": [{"name": "uap", "passes": 5, "batch_size": 8}], "eps": [0.5, 2.0], "norm": "l2",
                        "mode": "sequential", "minimal_eps": False, "seed": 0}}


@pytest.fixture(scope="module")
def uap_env(env: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The TEST task with an open l2-uap row, and tiny-a's evaluation under that row."""
    base = tmp_path_factory.mktemp("uap")
    task = write_task(base / "synth-test.yaml", threats=[
        {"id": "linf", "title": "L∞ (test)", "status": "open", "units": "normalized [0, 1]", "protocol": PROTOCOL},
        UAP_ROW])
    row = load_task(task).threat("l2-uap")
    model = zoo.load("synth-test/tiny-a", root=env.zoo)
    ds = load_dataset("synthetic", split="test", n_per_class=N_PER_CLASS)
    evaluate(model, ds, replace(row.protocol, n_examples=0), out_dir=base / "eval", limit=LIMIT,
             model_card=model.card, progress=False)
    return task, base / "eval"


def test_uap_entry_sits_beside_the_linf_entry(env: Any, uap_env: tuple[Path, Path], tmp_path: Path) -> None:
    task, folder = uap_env
    board = tmp_path / "board"
    linf = add(env.cards["tiny-a"], board=board, task=task, zoo_root=env.zoo)
    uap = add(folder, board=board, task=task, zoo_root=env.zoo, verify=True, verify_samples=8)
    assert (linf["threat"], uap["threat"]) == ("linf", "l2-uap")
    files = sorted(p.name for p in (board / "entries" / "synth-test").iterdir())
    assert files == ["tiny-a.json", "tiny-a.l2-uap.json"]                 # neither overwrote the other
    assert json.loads((board / "entries" / "synth-test" / "tiny-a.json").read_text())["threat"] == "linf"
    assert uap["verified"]["ok"] and uap["verified"]["n"] == 8, uap["verified"]["message"]
    assert [r["eps"] for r in uap["robust"]] == [0.5, 2.0]


def test_uap_card_is_refused_by_the_linf_row(env: Any, uap_env: tuple[Path, Path], tmp_path: Path) -> None:
    task, folder = uap_env
    with pytest.raises(ConfigError, match="protocol.attacks: the card has"):
        add(folder, board=tmp_path / "b", task=task, threat="linf", zoo_root=env.zoo)


def test_edited_uap_outcome_is_caught_by_the_rerun(env: Any, uap_env: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    task, src = uap_env
    folder = tmp_path / "eval"
    shutil.copytree(src, folder)
    index = claim_survived(folder, 1)
    t = load_task(task)
    r = verify_card(folder / "card.json", t, t.threat("l2-uap"), zoo.load("synth-test/tiny-a", root=env.zoo),
                    n=LIMIT)
    assert not r["ok"]
    assert r["mismatches"] == [{"index": index, "what": "robust at eps=2.0", "card": True,
                                "rerun": False}]
