"""The built-in tasks: valid, pinned, and mitdb-intra v1 equal to the Ma & Liang 2020 cpu reproduction's evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.leaderboard import builtin_tasks, load_task, parse_task, task_names
from tests.leaderboard._lb import task_dict


def test_builtin_tasks_are_pinned_and_versioned() -> None:
    assert task_names() == ["breastmnist", "cinc2017", "mitdb-inter", "mitdb-intra", "pneumoniamnist"]
    for t in builtin_tasks():
        assert t.version >= 1 and t.protocol_version == 1
        assert len(t.dataset["fingerprint"]) == 64 and len(t.subset["indices_sha256"]) == 64
        assert [r.id for r in t.threats] == ["linf", "snr-smooth", "l2-uap"]
        assert t.threat("linf").status == "open" and t.threat("l2-uap").status == "open"
        uap = t.threat("l2-uap").expected()
        assert [a["name"] for a in uap["attacks"]] == ["uap"] and uap["norm"] == "l2" and not uap["minimal_eps"]
        assert "spsa" in [a["name"] for a in t.threat("linf").expected()["attacks"]]   # white-box + SPSA
    assert load_task("cinc2017").summary()["threats"][0]["eps_uv"] == pytest.approx([10.0, 20.0, 50.0, 100.0])


def test_mitdb_intra_v1_is_the_ma2020_cpu_evaluation() -> None:
    """The reproduction's evaluate steps (as `medrobust evaluate --config` reads them) carry the task's protocol,
    dataset and subset, so its cards enter the board without recomputation."""
    from medrobust.cli.evaluate import build_protocol
    from medrobust.reproduce.plan import load_plan, resolve_steps

    task = load_task("mitdb-intra")
    steps = [s for s in resolve_steps(load_plan("ma2020"), budget="cpu", out=Path("/nonexistent"))
             if s.kind == "evaluate"]
    assert len(steps) == 5
    meta = type("Meta", (), {"units": "normalized [0, 1]", "fs": 125.0})()
    for s in steps:
        cfg = s.config
        assert cfg["dataset"]["name"] == task.dataset["name"] and cfg["dataset"]["split"] == task.dataset["split"]
        assert cfg["dataset"]["options"] == task.dataset["options"]
        assert cfg["dataset"]["limit"] == task.subset["limit"]
        proto = build_protocol(cfg["protocol"], meta).to_dict()
        expected = task.threat("linf").expected()
        assert {k: proto[k] for k in expected} == expected


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 0}, "version must be an integer >= 1"),
    ({"threats": []}, "at least one row open"),
    ({"subset": {"limit": 0, "seed": 0}}, "subset.limit must be a positive integer or null"),
    ({"threats": [{"id": "x", "status": "closed"}]}, "status must be one of"),
    ({"threats": [{"id": "x", "status": "not-evaluated"}]}, "give the 'reason'"),
    ({"threats": [{"id": "x", "status": "open", "protocol": {"attacks": ["pgd"], "eps": [0.1], "speed": 1}}]},
     "unknown protocol settings"),
])
def test_bad_task_files_are_refused(change: dict[str, Any], message: str) -> None:
    d = {**task_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        parse_task(d, source="t.yaml")
    d = task_dict()
    d.pop("protocol_version")
    with pytest.raises(ConfigError, match="t.yaml: missing 'protocol_version'"):
        parse_task(d, source="t.yaml")


def test_task_files_by_name_and_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown leaderboard task 'nope'; built-in tasks: \['breastmnist'"):
        load_task("nope")
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(task_dict()))
    assert load_task(p).name == "synth-test"
    p.write_text("task: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_task(p)


def test_pin_reads_the_fingerprint_and_subset_hash(tmp_path: Path) -> None:
    from medrobust.leaderboard import pin

    d = task_dict()
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(d))
    got = pin(load_task(p))
    assert got == {"fingerprint": d["dataset"]["fingerprint"], "n_total": 40,
                   "indices_sha256": d["subset"]["indices_sha256"], "n_evaluated": 24}
    d["subset"]["seed"] = 1
    p.write_text(yaml.safe_dump(d))
    assert pin(load_task(p))["indices_sha256"] != got["indices_sha256"]


def test_json_values_compare_as_numbers_but_not_bools() -> None:
    from medrobust.leaderboard.validate import _same

    assert _same(30, 30.0) and _same({"a": [1, 2]}, {"a": [1, 2.0]}) and _same("x", "x") and _same(None, None)
    assert not _same(True, 1) and not _same(1, True) and not _same(0.1, 0.1 + 1e-9)
    assert not _same([1], [1, 2]) and not _same({"a": 1}, {"b": 1}) and not _same({"a": 1}, {"a": 1, "b": 2})
    assert not _same([1, 2], [2, 1]) and not _same("1", 1) and _same((1, 2), [1, 2])
