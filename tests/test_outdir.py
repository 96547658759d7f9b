"""The one output-folder guard (medrobust.outdir.claim_out_dir) as used by evaluate (RunState) and attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.errors import ConfigError
from medrobust.evaluation.card import RunState
from medrobust.evaluation.export import prepare_attack_dir
from medrobust.outdir import MARKER_NAME, claim_out_dir


def test_each_command_refuses_the_others_folder_and_a_persons(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    RunState(ev, settings_hash="h", settings={})
    assert json.loads((ev / MARKER_NAME).read_text())["command"] == "evaluate"
    with pytest.raises(ConfigError, match="written by `medrobust evaluate`.*--overwrite"):
        prepare_attack_dir(ev, overwrite=False)
    with pytest.raises(ConfigError, match="written by `medrobust evaluate`"):
        claim_out_dir(ev, command="train")
    atk = tmp_path / "atk"
    prepare_attack_dir(atk, overwrite=False)
    (atk / "attack.json").write_text("{}")
    with pytest.raises(ConfigError, match="the output of an earlier `medrobust attack`"):
        prepare_attack_dir(atk, overwrite=False)
    with pytest.raises(ConfigError, match="written by `medrobust attack`"):
        RunState(atk, settings_hash="h", settings={})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for claim in (lambda: RunState(mine, settings_hash="h", settings={}),
                  lambda: prepare_attack_dir(mine, overwrite=False)):
        with pytest.raises(ConfigError, match=r"is not empty \(notes.txt; not created by"):
            claim()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # nothing written into a refused folder


def test_overwrite_removes_only_what_the_command_writes(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    for name in ("card.json", "state.json", "report.md", "notes.txt"):
        (ev / name).write_text("{}")
    (ev / "units").mkdir()
    (ev / "units" / "clean.npz").write_bytes(b"x")
    RunState(ev, settings_hash="h", settings={}, overwrite=True)
    assert sorted(p.name for p in ev.iterdir()) == [MARKER_NAME, "notes.txt", "units"]
    assert list((ev / "units").iterdir()) == []
    atk = tmp_path / "atk"
    (atk / "wfdb").mkdir(parents=True)
    for name in ("adversarial.npz", "attack.json", "keep.txt", "wfdb/pgd_000.hea"):
        (atk / name).write_text("x")
    prepare_attack_dir(atk, overwrite=True)
    assert sorted(p.name for p in atk.iterdir()) == [MARKER_NAME, "keep.txt"]


def test_a_killed_evaluation_resumes_its_own_folder(tmp_path: Path) -> None:
    """A run killed before its first state write leaves the marker and an empty units/: that is resumed, not refused."""
    ev = tmp_path / "ev"
    RunState(ev, settings_hash="h", settings={})
    RunState(ev, settings_hash="h", settings={})
    legacy = tmp_path / "legacy"  # written before markers existed: its state file marks it as an evaluation's
    legacy.mkdir()
    (legacy / "units").mkdir()
    RunState(legacy, settings_hash="h", settings={})


def _probe_many(path: str, n: int, start: object) -> None:
    from medrobust.outdir import ensure_writable_dir

    start.wait()  # type: ignore[attr-defined]
    for _ in range(n):
        ensure_writable_dir(path)


def test_processes_sharing_an_output_folder_check_it_at_the_same_time(tmp_path: Path) -> None:
    """The ranks of a torchrun launch all check --out at start: each probes with its own file."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_probe_many, args=(str(tmp_path / "out"), 2000, start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0] and list((tmp_path / "out").iterdir()) == []
