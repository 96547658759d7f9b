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
    assert all(n.startswith("train") for n in names[:5]) and all(n.startswith("evaluate") for n in names[5:10])
    assert names[10:] == ["masking nsr", "masking jacobian", "masking pgd_at"]
    nsr = next(s for s in cpu if s.name == "train nsr")
    assert nsr.config["init_from"] == str(tmp_path / "models" / "ce" / "checkpoint") and nsr.after == ("ce",)
    assert nsr.config["train"] == {"epochs": 2, "max_batches_per_epoch": 300, "class_balance": "none", "progress": False} and nsr.config["recipe"] == "ma2020"
    assert nsr.config["dataset"]["root"] == "/data"
    ce = next(s for s in cpu if s.name == "train ce")
    assert "init_from" not in ce.config and ce.config["train"]["epochs"] == 10
    ev = next(s for s in cpu if s.name == "evaluate nsr")
    spsa = next(a for a in ev.config["protocol"]["attacks"] if a["name"] == "spsa")
    assert (spsa["nb_samples"], spsa["steps"]) == (32, 10) and ev.config["dataset"]["limit"] == 2000
    assert ev.config["dataset"]["split"] == "test" and ev.config["protocol"]["mode"] == "sequential"
    assert ev.config["protocol"]["eps"] == [0.01, 0.05, 0.1]
    smoke = resolve_steps(plan, budget="smoke", out=tmp_path)
    assert [s for s in smoke if s.kind == "evaluate"][-1].config["protocol"]["mode"] == "individual"      # the plan's default unless a budget says
    paper = resolve_steps(plan, budget="paper", out=tmp_path)
    assert not any("init_from" in s.config for s in paper if s.kind == "train")  # the paper trains from scratch
    last_eval = [s for s in paper if s.kind == "evaluate"][-1]
    assert next(a for a in last_eval.config["protocol"]["attacks"] if a["name"] == "spsa")["nb_samples"] == 2048


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


def test_a_model_on_another_dataset_gets_that_dataset_its_recipe_and_the_budgets_per_dataset_values(
        tmp_path: Path) -> None:
    plan = load_plan("ma2022")
    steps = {s.name: s for s in resolve_steps(plan, budget="cpu", out=tmp_path, data_dir="/d")}
    cpsc, mit = steps["train nsr"].config, steps["train mitdb_nsr"].config
    assert cpsc["dataset"] == {"name": "cpsc2018", "root": "/d", "options": {
        "leads": "8", "scale": "maxabs", "drop_multilabel": True, "pad": "left", "fs": 125,
        "test_fraction": 0.3, "val_fraction": 0.3}}
    assert mit["dataset"] == {"name": "mitdb", "root": "/d", "options": {"format": "kachuee", "scheme": "intra"}}
    assert (cpsc["recipe"], mit["recipe"]) == ("ma2022-cpsc", "ma2020")
    assert cpsc["model"] == {"name": "resnet18_12lead", "kwargs": {"width_scale": 0.25}}
    assert mit["model"] == {"name": "cnn1"}                       # the budget's model_kwargs are CPSC's only
    assert "init_from" not in cpsc and cpsc["train"]["epochs"] == 12
    assert mit["init_from"] == str(tmp_path / "models" / "mitdb_ce" / "checkpoint")
    assert mit["train"] == {"epochs": 2, "max_batches_per_epoch": 300, "class_balance": "none", "progress": False}   # per_dataset finetune
    ev_c, ev_m = steps["evaluate ce"].config, steps["evaluate mitdb_ce"].config
    assert ev_c["protocol"]["eps"] == [0.001, 0.005, 0.01, 0.05] and ev_m["protocol"]["eps"] == [0.01, 0.05, 0.1]
    assert (ev_c["dataset"]["limit"], ev_m["dataset"]["limit"]) == (None, 2000)
    pgd_c, pgd_m = ev_c["protocol"]["attacks"][0], ev_m["protocol"]["attacks"][0]
    assert (pgd_c["rel_step_size"], pgd_c["restarts"]) == (0.1, 2) and (pgd_m["rel_step_size"], pgd_m["restarts"]) == (0.025, 1)
    assert ev_m["protocol"]["mode"] == ev_c["protocol"]["mode"] == "sequential"   # protocol is budget-wide


def test_defense_options_of_a_budget_reach_the_defense_block(tmp_path: Path) -> None:
    smoke = {s.name: s.config for s in resolve_steps(load_plan("shao2022"), budget="smoke", out=tmp_path)}
    assert smoke["train nsr"]["defense"] == {"name": "nsr", "warmup_epochs": 0}
    assert smoke["train adt"]["defense"] == {"name": "adt", "pgd_steps": 1, "smooth_steps": 1}
    assert smoke["train ce"]["defense"] == {"name": "ce"}
    paper = {s.name: s.config for s in resolve_steps(load_plan("shao2022"), budget="paper", out=tmp_path)}
    assert paper["train nsr"]["defense"] == {"name": "nsr"} and paper["train nsr"]["dataset"]["options"]["units"] == "adc"


@pytest.mark.parametrize("change,match", [
    ({"models": {"a": {"model": "cnn1", "defense": "ce", "dataset": "x"}}},
     r"models.a.dataset='x' names no entry of the plan's `datasets` \(none\)"),
    ({"datasets": {"m": {"name": "mitdb"}}, "claims": [],
      "models": {"a": {"model": "cnn1", "defense": "ce"}, "b": {"model": "cnn1", "defense": "ce", "init": "a",
                                                                "dataset": "m"}}},
     "models.b starts from 'a', which is trained on another dataset"),
    ({"budgets": {"smoke": {"note": "x", "per_dataset": {"q": {}}}}},
     r"budgets.smoke.per_dataset.q names no entry of the plan's `datasets` \(none\)"),
    ({"datasets": {"m": {"name": "mitdb"}}, "budgets": {"smoke": {"note": "x", "per_dataset": {"m": {"note": "y"}}}}},
     r"budgets.smoke.per_dataset.m: unknown keys \['note'\]"),
])
def test_bad_dataset_references_are_refused_naming_the_key(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_plan(_plan_file(tmp_path, **change))


def test_every_shipped_plan_resolves_for_every_budget(tmp_path: Path) -> None:
    assert available() == ["han2020", "hirano2021", "ma2020", "ma2022", "shao2022"]
    for name in available():
        plan = load_plan(name)
        for budget in plan["budgets"]:
            steps = resolve_steps(plan, budget=budget, out=tmp_path)
            chosen = plan["budgets"][budget].get("models") or list(plan["models"])   # a budget may run a subset
            assert {s.model_id for s in steps if s.kind == "train"} == set(chosen)


def test_masking_steps_check_every_defended_model_with_the_budgets_settings(tmp_path: Path) -> None:
    from medrobust.reproduce.plan import command

    steps = resolve_steps(load_plan("ma2022"), budget="cpu", out=tmp_path)
    masking = {s.model_id: s for s in steps if s.kind == "masking"}
    assert set(masking) == {"nsr", "jacobian", "pgd_at", "mitdb_nsr", "mitdb_jacobian", "mitdb_pgd_at"}  # not CE
    assert [s.kind for s in steps][-6:] == ["masking"] * 6 and masking["nsr"].after == ("nsr",)
    cpsc, mit = masking["nsr"].config, masking["mitdb_nsr"].config
    assert (cpsc["eps"], cpsc["large_eps"], cpsc["samples"], cpsc["black_box"]) == (0.01, 0.5, 256, "square")
    assert (mit["eps"], mit["dataset"]["name"], mit["dataset"]["split"]) == (0.05, "mitdb", "test")
    assert mit["checkpoint"] == str(tmp_path / "models" / "mitdb_nsr" / "checkpoint")
    assert mit["out"] == str(tmp_path / "masking" / "mitdb_nsr") and masking["nsr"].out == tmp_path / "masking" / "nsr"
    assert command("masking", Path("c.yaml")) == "python -m medrobust.reproduce.masking c.yaml"
    assert not any(s.kind == "masking" for s in resolve_steps(load_plan("han2020"), budget="cpu", out=tmp_path))


@pytest.mark.parametrize("masking,match", [
    ({"eps": 0.05}, r"budgets.smoke.masking: missing keys \['large_eps'\]"),
    ({"eps": 0.05, "large_eps": 0.5, "directions": 3}, r"budgets.smoke.masking: unknown keys \['directions'\]"),
])
def test_bad_masking_blocks_are_refused_naming_the_key(tmp_path: Path, masking: dict, match: str) -> None:
    plan = load_plan(_plan_file(tmp_path, budgets={"smoke": {"note": "x", "masking": masking}}))
    with pytest.raises(ConfigError, match=match):
        resolve_steps(plan, budget="smoke", out=tmp_path)


def test_han2020_cpu_budget_trains_the_resnet_and_the_others_hans_cnn(tmp_path: Path) -> None:
    plan = load_plan("han2020")
    names = {b: [s.name for s in resolve_steps(plan, budget=b, out=tmp_path)] for b in ("smoke", "cpu", "paper")}
    assert names["cpu"] == ["train resnet", "evaluate resnet", "band resnet"]
    assert names["smoke"] == names["paper"] == ["train ce", "evaluate ce", "band ce"]
    train = resolve_steps(plan, budget="cpu", out=tmp_path)[0].config
    assert train["model"] == {"name": "resnet1d", "kwargs": {"widths": [16, 32, 32, 64, 64, 128, 128], "blocks": 2,
                                                             "kernel_size": 7}}
    assert train["recipe"] is None and train["defense"] == {"name": "ce"}
    assert train["dataset"]["options"] == {"seconds": 30, "test_fraction": 0.1, "val_fraction": 0.1, "fs": 100,
                                           "balance": "han"}
    assert (train["train"]["lr_schedule"], train["train"]["random_crop"], train["train"]["epochs"]) == ("cosine", 0.9, 14)
    # the same network and settings as configs/cinc2017_resnet1d.yaml (which trains it outside a reproduction)
    standalone = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "cinc2017_resnet1d.yaml").read_text())
    assert standalone["model"]["kwargs"] == train["model"]["kwargs"]
    assert {k: v for k, v in standalone["train"].items()} == {k: v for k, v in train["train"].items() if k != "progress"}
    assert {k: v for k, v in standalone["dataset"]["options"].items() if k not in ("units", "pad", "seed")} == \
        train["dataset"]["options"]
    assert [c["models"] for c in plan["claims"]] == [["ce", "resnet"]] * 2
    ev = resolve_steps(plan, budget="cpu", out=tmp_path)[1].config
    assert ev["protocol"]["eps"] == [0.01] and ev["dataset"]["limit"] is None


def test_a_budgets_architecture_replaces_every_models_network_and_only_in_that_budget(tmp_path: Path) -> None:
    """shao2022's cpu budget compares the six training methods on the han2020 cpu ResNet: every train step builds
    the budget's architecture (the plan's own kwargs dropped), the defences fine-tune from CE with the budget's
    mV settings, and the smoke and paper budgets keep Han's CNN trained from scratch."""
    plan = load_plan("shao2022")
    arch = {"name": "resnet1d", "kwargs": {"widths": [16, 32, 32, 64, 64, 128, 128], "blocks": 2, "kernel_size": 7}}
    cpu = resolve_steps(plan, budget="cpu", out=tmp_path)
    trains = {s.model_id: s.config for s in cpu if s.kind == "train"}
    assert list(trains) == ["ce", "adt", "at", "distillation", "jacobian", "nsr"]
    assert all(c["model"] == arch for c in trains.values())
    assert all(c["init_from"] == str(tmp_path / "models" / "ce" / "checkpoint") for m, c in trains.items() if m != "ce")
    assert "init_from" not in trains["ce"] and trains["ce"]["train"]["epochs"] == 14
    assert trains["adt"]["defense"] == {"name": "adt", "eps": 0.01, "step_size": 0.001, "teacher_init": "student"}
    assert trains["adt"]["train"]["max_batches_per_epoch"] == 50
    assert all(c["dataset"]["options"]["units"] == "mV" for c in trains.values())
    han = resolve_steps(load_plan("han2020"), budget="cpu", out=tmp_path)[0].config  # CE is that budget's model
    assert han["model"] == arch and {k: v for k, v in han["train"].items()} == trains["ce"]["train"]
    assert {k: v for k, v in han["dataset"]["options"].items()} == \
        {k: v for k, v in trains["ce"]["dataset"]["options"].items() if k != "units"}
    for budget in ("smoke", "paper"):
        steps = [s for s in resolve_steps(plan, budget=budget, out=tmp_path) if s.kind == "train"]
        assert len(steps) == 6 and all(s.config["model"]["name"] == "han_cnn" for s in steps)
        assert not any("init_from" in s.config for s in steps)


@pytest.mark.parametrize("arch,match", [
    ({"kwargs": {}}, r"budgets.cpu.architecture: missing keys \['model'\]"),
    ({"model": "resnet1d", "widths": [4]}, r"budgets.cpu.architecture: unknown keys \['widths'\]"),
    ("resnet1d", r"budgets.cpu.architecture must be a mapping, got str"),
])
def test_bad_architecture_blocks_are_refused_naming_the_key(tmp_path: Path, arch: object, match: str) -> None:
    plan = yaml.safe_load((Path(load_plan("ma2020")["source"])).read_text())
    plan["budgets"]["cpu"]["architecture"] = arch
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match=match):
        load_plan(str(path))


@pytest.mark.parametrize("scale", [0, -0.001, "0.001", True, None])
def test_bad_eps_scales_are_refused_naming_the_key(tmp_path: Path, scale: object) -> None:
    plan = yaml.safe_load((Path(load_plan("ma2020")["source"])).read_text())
    plan["budgets"]["cpu"]["eps_scale"] = scale
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match=r"budgets.cpu.eps_scale must be a number > 0 \(the plan's ε in this "
                                          r"budget's units, e.g. 0.001 for ADC units read as mV\), got "):
        load_plan(str(path))


def test_a_budget_without_its_own_eps_attacks_the_plans_eps_times_its_eps_scale(tmp_path: Path) -> None:
    plan = load_plan("shao2022")
    spec = plan["budgets"]["cpu"]
    given = [s.config["protocol"]["eps"] for s in resolve_steps(plan, budget="cpu", out=tmp_path) if s.kind == "evaluate"]
    del spec["eps"]
    scaled = [s.config["protocol"]["eps"] for s in resolve_steps(plan, budget="cpu", out=tmp_path) if s.kind == "evaluate"]
    assert scaled == given == [[0.005, 0.01, 0.025]] * 6
    first_eval = lambda: next(s for s in resolve_steps(plan, budget="cpu", out=tmp_path) if s.kind == "evaluate")  # noqa: E731
    spec["eps_scale"] = 0.002
    assert first_eval().config["protocol"]["eps"] == [0.01, 0.02, 0.05]
    del spec["eps_scale"]
    assert first_eval().config["protocol"]["eps"] == [5, 10, 25]
