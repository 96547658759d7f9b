"""The hirano2021 plan: its steps per budget, the plan keys it added (``uap``, ``per_model``, a budget's
``models``), one-line errors for bad plans, and the README tables read from hand-made ``uap.json`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.reproduce import available, load_plan, resolve_steps
from medrobust.reproduce.hirano_readme import readme_lines
from medrobust.reproduce.plan import command, with_user_model


def test_plan_loads_and_resolves_the_smoke_budget(tmp_path: Path) -> None:
    assert "hirano2021" in available()
    plan = load_plan("hirano2021")
    assert set(plan["budgets"]) == {"smoke", "cpu", "paper"}
    base = [m for m, s in plan["models"].items() if s.get("init") is None and s.get("dataset") is None]
    assert len(base) == 7 and {"vgg16", "vgg19", "resnet50", "inception_v3", "densenet121", "densenet169"} <= set(base)
    steps = resolve_steps(plan, budget="smoke", out=tmp_path, data_dir="/data")
    assert [s.name for s in steps] == ["train resnet18", "train breast_resnet18", "train resnet18_retrained",
                                       "uap resnet18", "uap resnet18_retrained", "uap breast_resnet18"]
    by = {s.name: s for s in steps}
    train = by["train resnet18"].config
    assert train["model"] == {"name": "resnet18", "kwargs": {"small_input": False}} and train["recipe"] is None
    assert train["train"]["max_batches_per_epoch"] == 3 and train["dataset"]["root"] == "/data"
    assert by["train breast_resnet18"].config["dataset"]["options"]["flag"] == "breastmnist"
    assert by["train breast_resnet18"].config["train"]["epochs"] == 1             # the budget's per_dataset block
    retrain = by["train resnet18_retrained"].config
    assert retrain["init_from"] == str(tmp_path / "models" / "resnet18" / "checkpoint")
    assert retrain["defense"]["name"] == "uap_retraining" and retrain["defense"]["pool_size"] == 1
    assert retrain["train"]["max_batches_per_epoch"] == 2
    uap = by["uap resnet18"].config
    assert uap["checkpoint"] == str(tmp_path / "models" / "resnet18" / "checkpoint")
    assert (uap["zetas"], uap["fit_limit"], uap["methods"], uap["targeted"]) == ([0.04], 24, ["fgsm", "batched"], True)
    assert uap["passes"] == {"fgsm": 1, "batched": 2} and uap["out"] == str(tmp_path / "uap" / "resnet18")
    again = by["uap resnet18_retrained"].config
    assert again["methods"] == ["fgsm"] and again["targeted"] is False and again["passes"] == {"fgsm": 1}
    assert by["uap resnet18"].after == ("resnet18",)
    assert command("uap", tmp_path / "c.yaml") == f"python -m medrobust.reproduce.hirano_uap {tmp_path / 'c.yaml'}"


def test_paper_budget_keeps_every_model_with_its_stem_and_the_paper_uap_settings(tmp_path: Path) -> None:
    plan = load_plan("hirano2021")
    steps = resolve_steps(plan, budget="paper", out=tmp_path)
    trains = {s.model_id: s.config for s in steps if s.kind == "train"}
    assert set(trains) == set(plan["models"])
    assert trains["resnet50"]["model"]["kwargs"] == {"small_input": True}
    assert trains["inception_v3"]["model"] == {"name": "inception_v3"}
    assert trains["vgg16"]["train"]["epochs"] == 50 and trains["vgg16"]["train"]["batch_size"] == 32
    uap = next(s.config for s in steps if s.name == "uap inception_v3")
    assert (uap["fit_limit"], uap["eval_limit"], uap["passes"]["fgsm"], uap["bounds"]) == (None, None, 15, None)
    assert uap["zetas"] == [0.02, 0.04] and uap["norms"] == ["l2", "linf"] and uap["norm_channels"] == "first"
    assert uap["step_size"] == {}                                   # the paper's inner step (the attack's default)
    cpu = {s.model_id: s.config for s in resolve_steps(plan, budget="cpu", out=tmp_path) if s.kind == "uap"}
    assert cpu["resnet18"]["step_size"] == {"fgsm": 0.0039} and cpu["resnet18"]["targeted"] is True
    assert cpu["vgg16"]["step_size"] == {"fgsm": 0.0039} and cpu["vgg16"]["norms"] == ["l2"]   # per_model over budget
    assert cpu["vgg16"]["fit_limit"] == 64 and cpu["breast_resnet18"]["eval_limit"] is None


def test_user_model_drops_the_budgets_model_choice(tmp_path: Path) -> None:
    plan = with_user_model(load_plan("hirano2021"), "my.onnx")
    steps = resolve_steps(plan, budget="smoke", out=tmp_path)
    assert [s.name for s in steps] == ["uap yours"] and steps[0].config["checkpoint"] == "my.onnx"


def _plan_file(tmp_path: Path, edit: Any) -> str:
    plan = yaml.safe_load(Path(load_plan("hirano2021")["source"]).read_text())
    edit(plan)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.mark.parametrize("edit,match", [
    (lambda p: p["uap"].update(zeta=1), r"p.yaml: uap: unknown keys \['zeta'\]"),
    (lambda p: p["budgets"]["smoke"]["uap"].update(norms=["l1"]), r"budgets.smoke.uap: norms must be"),
    (lambda p: p["budgets"]["smoke"].update(models=["resnet18", "nope"]), "budgets.smoke.models must be a non-empty list"),
    (lambda p: p["budgets"]["smoke"].update(models=["resnet18_retrained"]),
     r"budgets.smoke.models lists \['resnet18_retrained'\] without the model each starts from"),
    (lambda p: p["budgets"]["smoke"]["per_model"].update(nope={}), "budgets.smoke.per_model.nope names no model"),
    (lambda p: p["budgets"]["smoke"]["per_model"]["resnet18"].update(epochs=3),
     r"budgets.smoke.per_model.resnet18: unknown keys \['epochs'\]"),
    (lambda p: p["budgets"]["smoke"]["per_model"]["resnet18"].update(uap={"passes": {"pgd": 1}}),
     "budgets.smoke.per_model.resnet18.uap: passes must map"),
    (lambda p: p["claims"].append({"id": "x", "claim": "c", "paper": "p", "metric": "worst_case"}),
     "claim 'x': metric must be one of"),
    (lambda p: p["claims"].append({"id": "x", "claim": "c", "paper": "p", "metric": "random", "models": ["zz"]}),
     r"claim 'x' names unknown models \['zz'\]"),
    (lambda p: p["claims"].append({"id": "x", "claim": "c", "paper": "p", "metric": "targeted_one",
                                   "models": ["vgg16"]}), "'targeted_one' needs one model in `models` and a `target`"),
    (lambda p: p["claims"].append({"id": "x", "claim": "c", "metric": "random"}), r"missing keys \['paper'\]"),
    (lambda p: p["claims"].append({"id": "x", "claim": "c", "paper": "p", "metric": "random", "eps": 1}),
     r"unknown keys \['eps'\]"),
    (lambda p: [p.pop("uap"), *(b.pop("uap", None) for b in p["budgets"].values())], "a plan needs `evaluation`"),
])
def test_bad_plans_fail_with_one_line_naming_the_key(tmp_path: Path, edit: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_plan(_plan_file(tmp_path, edit))
    assert "\n" not in str(info.value)


def test_budget_uap_needs_the_plans_uap_block(tmp_path: Path) -> None:
    plan = yaml.safe_load(Path(load_plan("ma2020")["source"]).read_text())
    plan["budgets"]["smoke"]["uap"] = {"zetas": [0.04]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ConfigError, match="budgets.smoke.uap needs the plan's top-level `uap` block"):
        load_plan(str(path))


# ----------------------------------------------------------------------------------------------- README
def _unit(method: str, norm: str, zeta: float, target: int | None, fooled: int, hits: list[int], n: int = 10,
          train_hits: list[int] | None = None) -> dict[str, Any]:
    def split(h: list[int]) -> dict[str, Any]:
        return {"n": n, "fooled": fooled, "targets": [{"target": t, "hit": v, "n_not_target": n // 2,
                                                        "hit_not_target": max(v - n // 2, 0)} for t, v in enumerate(h)]}
    return {"method": method, "norm": norm, "zeta": zeta, "target": target, "test": split(hits),
            "train": split(train_hits or hits)}


def _write(root: Path, mid: str, units: list[dict[str, Any]], acc: float = 0.9) -> None:
    path = root / "cpu" / "uap" / mid / "uap.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"classes": ["normal", "pneumonia"], "k": 2, "units": units,
                                "clean_accuracy": {"test": acc, "train": 1.0}}))


def test_readme_claims_are_read_from_the_uap_results(tmp_path: Path) -> None:
    plan = load_plan("hirano2021")
    _write(tmp_path, "resnet18", [_unit("fgsm", "l2", 0.04, None, 9, [5, 5]), _unit("fgsm", "l2", 0.04, 0, 0, [9, 1]),
                                  _unit("fgsm", "l2", 0.04, 1, 0, [1, 9]),
                                  _unit("random_uniform", "l2", 0.04, None, 1, [5, 5])])
    _write(tmp_path, "vgg16", [_unit("fgsm", "l2", 0.04, None, 6, [5, 5]), _unit("fgsm", "l2", 0.04, 0, 0, [7, 3]),
                               _unit("fgsm", "l2", 0.04, 1, 0, [1, 9]),
                               _unit("random_uniform", "l2", 0.04, None, 2, [5, 5])])
    _write(tmp_path, "resnet18_retrained", [_unit("fgsm", "l2", 0.04, None, 3, [5, 5])], acc=0.8)
    _write(tmp_path, "inception_v3", [_unit("fgsm", "l2", 0.02, 1, 0, [2, 8], train_hits=[0, 10])])
    text = "\n".join(readme_lines(plan, tmp_path, "cpu"))
    row = {line.split(" | ")[0].lstrip("| ").split(" (")[0]: line for line in text.splitlines() if line.startswith("| ")}
    nt = [line for line in text.splitlines() if line.startswith("| almost imperceptible") and "ζ = 4%" in line][0]
    assert "**1 of 2 models above 0.80**" in nt and "resnet18: 0.900 [0.596, 0.982]" in nt
    assert "vgg16: 0.600 [" in nt and "inception_v3: not run" in nt
    targeted = [line for line in text.splitlines() if line.startswith("| targeted UAPs send more than 80 %")]
    assert len(targeted) == 2 and "(batched, l2, ζ = 4%)" in targeted[1]   # the same claim with our solver
    assert "resnet18: not run<br>vgg16: not run" in targeted[1]              # no batched targeted units here
    tg = targeted[0]
    assert "(fgsm, l2, ζ = 4%)" in tg
    assert "every target above 0.80 for 1 of 2 models; 3 of 4 (model, target) pairs" in tg
    assert "resnet18: →normal 0.900" in tg and "vgg16: →normal 0.700" in tg
    assert "**highest 0.200**" in row["random perturbations of the same norm do little"]
    assert "(random uniform, l2, ζ = 4%)" in row["random perturbations of the same norm do little"]
    assert "range 0.600–0.900 (spread 0.300)" in row["the vulnerability hardly depends on the architecture"]
    rt = row["adversarial retraining increases robustness against UAPs in only very few cases"]
    assert "fell by more than 0.10 for 1 of 1 models" in rt and "resnet18: 0.900 → 0.300" in rt
    assert "uap-resnet18_retrained.yaml" in rt and "`cpu/uap/resnet18/uap.json`" in rt
    one = row["Inception-v3, chest X-ray, targeted to PNEUMONIA"]
    assert "inception_v3: 0.800 [" in one and "(train 1.000 [" in one and "ζ = 2%" in one
    assert "| resnet18 → resnet18_retrained | fgsm l2 ζ 4% | 0.900 [0.596, 0.982] | 0.300 [" in text
    assert "| 0.900 | 0.800 |" in text                                           # clean accuracy before / after
    assert "| vgg16 | fgsm l2 ζ 4% | normal | 0.700 [" in text
    assert (tmp_path / "cpu" / "figures" / "fooling_rate_vs_zeta.png").stat().st_size > 1000


def test_readme_shows_where_fooled_inputs_went_and_the_resized_data(tmp_path: Path) -> None:
    plan = load_plan("hirano2021")
    one_way = _unit("fgsm", "l2", 0.04, None, 6, [8, 2])
    one_way["test"]["transition"] = [[2, 0], [6, 2]]                 # 6 of the 8 predicted pneumonia -> normal
    both = _unit("batched", "l2", 0.04, None, 3, [5, 5])
    both["test"]["transition"] = [[3, 1], [2, 4]]
    linf = _unit("fgsm", "linf", 0.04, None, 1, [5, 5])
    linf["test"]["transition"] = [[4, 0], [1, 5]]
    control = _unit("random_uniform", "l2", 0.04, None, 1, [5, 5])
    control["test"]["transition"] = [[4, 0], [1, 5]]
    still = _unit("batched", "l2", 0.02, None, 0, [2, 8])
    still["test"]["transition"] = [[2, 0], [0, 8]]                  # nothing fooled: no dominant class, no ceiling
    _write(tmp_path, "resnet18_112", [one_way, both, linf, control, _unit("fgsm", "l2", 0.02, None, 0, [2, 8]), still])
    summary = tmp_path / "cpu" / "models" / "resnet18_112" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"config": {"model": {"name": "resnet18", "kwargs": {"small_input": False}}},
                                   "test": {"correct": 9, "n": 10}}))
    text = "\n".join(readme_lines(plan, tmp_path, "cpu"))
    assert "### Non-targeted UAPs: where the fooled test inputs went" in text
    flow = [line for line in text.splitlines() if line.startswith(("| resnet18_112 | fgsm", "| resnet18_112 | batched",
                                                                      "| resnet18_112 | random"))]
    assert len(flow) == 3      # L2 UAPs with a transition matrix only: no L-inf, no control, not the fgsm ζ 2 % one
    assert flow[2] == "| resnet18_112 | batched l2 ζ 2% | 0.000 [0.000, 0.278] | normal 0, pneumonia 0 | – | – |"
    assert flow[0].startswith("| resnet18_112 | fgsm l2 ζ 4% | 0.600 [")
    assert flow[0].endswith("| normal 6, pneumonia 0 | 100% into normal | 0.800 |")    # 8 of 10 not predicted normal
    assert flow[1].startswith("| resnet18_112 | batched l2 ζ 4% | 0.300 [")
    assert flow[1].endswith("| normal 2, pneumonia 1 | 67% into normal | 0.600 |")
    models = [r for r in text.splitlines() if r.startswith("| resnet18_112 | pneumoniamnist")]
    assert models and models[0].startswith("| resnet18_112 | pneumoniamnist 112×112 | ce | ImageNet | 0.900 [")


def test_readme_names_the_data_and_its_size() -> None:
    from medrobust.reproduce.hirano_readme import _data_name

    assert _data_name({"name": "medmnist", "options": {"flag": "breastmnist"}}) == "breastmnist"
    assert _data_name({"name": "medmnist", "options": {"flag": "pneumoniamnist", "size": 64}}) == "pneumoniamnist 64×64"
    assert _data_name({"name": "image_folder", "options": {"size": [96, 128]}}) == "image_folder 96×128"
    assert _data_name({"name": "medmnist"}) == "medmnist"


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_every_train_step_of_every_budget_is_a_valid_training_config(tmp_path: Path, budget: str) -> None:
    import inspect

    from medrobust.defenses.uap_retraining import UAPRetraining
    from medrobust.train.trainer import TrainConfig

    accepted = set(inspect.signature(UAPRetraining.__init__).parameters)
    for step in resolve_steps(load_plan("hirano2021"), budget=budget, out=tmp_path):
        if step.kind != "train":
            continue
        TrainConfig(**step.config["train"]).validate()
        options = {k for k in step.config["defense"] if k != "name"}
        assert options <= accepted, (step.name, options - accepted)
        assert step.config["train"].get("progress") is False


def test_readme_names_each_models_stem() -> None:
    from medrobust.reproduce.hirano_readme import _stem

    def card(name: str, **kwargs: Any) -> dict[str, Any]:
        return {"config": {"model": {"name": name, "kwargs": kwargs}}}

    assert _stem(card("resnet18", small_input=False)) == "ImageNet"
    assert _stem(card("resnet50", small_input=True)) == "small-input"
    assert _stem(card("vgg16", small_input=True, batch_norm=True)) == "small-input, batch norm"
    assert _stem(card("inception_v3")) == "ImageNet (input upsampled to 75×75)"
    assert _stem(card("densenet121")) == "default for the input size" and _stem(None) == "–"
