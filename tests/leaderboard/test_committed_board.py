"""Every entry committed to ``leaderboard/`` still validates against its task and the shipped zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust import zoo
from medrobust.leaderboard import load_task, read_entries, validate

BOARD = Path(__file__).resolve().parents[2] / "leaderboard"
ENTRIES = sorted((BOARD / "entries").glob("*/*.json"))


@pytest.mark.parametrize("path", ENTRIES, ids=[f"{p.parent.name}/{p.stem}" for p in ENTRIES])
def test_committed_entry_revalidates(path: Path) -> None:
    entry = json.loads(path.read_text())
    card_path = (BOARD / entry["card"]).resolve()
    card = json.loads(card_path.read_text())
    task = load_task(entry["task"])
    assert entry["task_version"] == task.version and entry["protocol_version"] == task.protocol_version
    z = zoo.get(entry["model"]["zoo_id"])            # board entries of the repository are zoo models
    v = validate(card, task, weights_sha256=z.weights_sha256, threat=entry["threat"])
    assert v.ok, v.problems
    assert entry["clean"]["numerator"] == card["clean"]["accuracy"]["numerator"]
    assert [r["numerator"] for r in entry["robust"]] == [r["robust_accuracy"]["numerator"] for r in card["results"]]


def test_committed_board_reads() -> None:
    assert len(read_entries(BOARD)) == len(ENTRIES)      # every card unchanged since it was validated
