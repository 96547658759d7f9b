"""Reproduction plans: keys checked, steps ordered (a model after the one it starts from), budgets applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.reproduce import available, load_plan, resolve_steps


def test_shipped_plans_load_and_cover_every_budget() -> None:
    assert "ma2020" in available()
    plan = load_plan("ma2020")
    assert set(plan["budgets"]) == {"smoke", "cpu", "paper"} and plan["recipe"] == "ma2020"


def test_steps_order_init_and_budget_overrides(tmp_path: Path) -> None:
    plan = load_plan("ma2020")
    cpu = resolve_steps(plan, budget="cpu", out=tmp_path, data_dir="/data")
    names = [s.name for s in cpu]
    assert names[0] == "train ce" and names.index("train nsr") < names.index("evaluate ce")
    assert all(n.startswith("train") for n in names[:5]) and all(n.startswith("evaluate") for n in names[5:])
    nsr = next(s for s in cpu if s.name == "train nsr")
    assert nsr.config["init_from"] == str(tmp_path / "models" / "ce" / "checkpoint") and nsr.after == ("ce",)
    assert nsr.config["train"] == {"epochs": 2, "max_batches_per_epoch": 300, "progress": False} and nsr.config["recipe"] == "ma2020"
    assert nsr.config["dataset"]["root"] == "/data"
    ce = next(s for s in cpu if s.name == "train ce")
    assert "init_from" not in ce.config and ce.config["train"]["epochs"] == 20
    ev = next(s for s in cpu if s.name == "evaluate nsr")
    spsa = next(a for a in ev.config["protocol"]["attacks"] if a["name"] == "spsa")
    assert (spsa["nb_samples"], spsa["steps"]) == (32, 10) and ev.config["dataset"]["limit"] == 2000
    assert ev.config["dataset"]["split"] == "test" and ev.config["protocol"]["mode"] == "sequential"
    assert ev.config["protocol"]["eps"] == [0.01, 0.05, 0.1]
    smoke = resolve_steps(plan, budget="smoke", out=tmp_path)
    assert smoke[-1].config["protocol"]["mode"] == "individual"      # the plan's default unless a budget says
    paper = resolve_steps(plan, budget="paper", out=tmp_path)
    assert not any("init_from" in s.config for s in paper if s.kind == "train")  # the paper trains from scratch
    assert next(a for a in paper[-1].config["protocol"]["attacks"] if a["name"] == "spsa")["nb_samples"] == 2048


def _plan_file(tmp_path: Path, **change: object) -> str:
    plan = yaml.safe_load((Path(load_plan("ma2020")["source"])).read_text())
    plan.update(change)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.mark.parametrize("change,match", [
    ({"extra": 1}, r"unknown keys \['extra'\]"),
    ({"models": {"a": {"model": "cnn1", "defense": "ce", "init": "b"}}}, "init='b' names no model"),
    ({"models": {"a": {"model": "cnn1"}}}, r"missing keys \['defense'\]"),
    ({"budgets": {"huge": {"note": "x"}}}, "unknown budget 'huge'"),
    ({"budgets": {"smoke": {"note": "x", "epochs": 3}}}, r"budgets.smoke: unknown keys \['epochs'\]"),
    ({"claims": [{"id": "c", "claim": "x", "paper": "y", "eps": 0.1, "models": ["zz"]}]}, "unknown models"),
])
def test_bad_plans_are_refused_naming_the_key(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_plan(_plan_file(tmp_path, **change))


def test_unknown_names_budgets_labels_and_cycles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown reproduction 'nope'; available: .*ma2020"):
        load_plan("nope")
    path = _plan_file(tmp_path, budgets={"smoke": {"note": "x", "attack_options": {"pgd": {"steps": 1}}}})
    with pytest.raises(ConfigError, match=r"unknown attack labels \['pgd'\]"):
        resolve_steps(load_plan(path), budget="smoke", out=tmp_path)
    with pytest.raises(ConfigError, match="has no budget 'cpu'"):
        resolve_steps(load_plan(path), budget="cpu", out=tmp_path)
    cyc = _plan_file(tmp_path, models={"a": {"model": "cnn1", "defense": "ce", "init": "b"},
                                       "b": {"model": "cnn1", "defense": "ce", "init": "a"}}, claims=[])
    with pytest.raises(ConfigError, match="cycle"):
        resolve_steps(load_plan(cyc), budget="cpu", out=tmp_path)


def test_han2020_claims_read_the_success_rate_of_one_attack(tmp_path: Path) -> None:
    plan = load_plan("han2020")
    assert [c["metric"] for c in plan["claims"]] == ["success_rate sap", "success_rate pgd"]
    ev = next(s for s in resolve_steps(plan, budget="cpu", out=tmp_path) if s.kind == "evaluate")
    sap = next(a for a in ev.config["protocol"]["attacks"] if a["name"] == "sap")
    assert (sap["steps"], sap["smooth_steps"], sap["step_size"], sap["output"]) == (20, 40, 0.001, "final")
    assert 0.01 in ev.config["protocol"]["eps"] and ev.config["dataset"]["limit"] is None  # every held-out record
    bad = yaml.safe_load(Path(plan["source"]).read_text())
    bad["claims"][0]["metric"] = "success_rate fgsm"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"metric must be .*one of \['pgd', 'sap'\], got 'success_rate fgsm'"):
        load_plan(str(path))
