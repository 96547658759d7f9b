"""The settings of the hirano2021 ``uap`` step and the checks of a UAP plan (Hirano, Minagi & Takemoto, BMC Med.
Imaging 21:9, 2021): every default, every value passed through, and every refusal as the exact one-line message
naming the plan file and block (so a user knows which key of which file to fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.reproduce import load_plan
from medrobust.reproduce.hirano_uap import CLAIM_KEYS, uap_step_config

W = "plan.yaml: budgets.cpu.uap"


def _cfg(as_retrained: bool = False, **settings: Any) -> dict[str, Any]:
    return uap_step_config({"zetas": [0.04], **settings}, checkpoint=Path("/m/ck"), dataset={"name": "toy"},
                           out=Path("/o/uap"), retrained=as_retrained, where=W)


def test_defaults_are_the_papers_settings() -> None:
    cfg = _cfg()
    assert cfg == {"checkpoint": "/m/ck", "dataset": {"name": "toy"}, "zetas": [0.04], "norms": ["l2"],
                   "methods": ["fgsm"], "targeted": True, "targeted_norms": ["l2", "linf"], "controls": ["uniform"],
                   "fit_limit": None, "eval_limit": None, "passes": {"fgsm": 15}, "step_size": {},
                   "batch_size": 64, "eval_batch_size": 256, "bounds": None, "norm_channels": "first",
                   "examples": 4, "seed": 0, "out": "/o/uap"}
    assert _cfg(methods=["fgsm", "batched"])["passes"] == {"fgsm": 15, "batched": 10}


def test_every_value_is_passed_through() -> None:
    cfg = _cfg(zetas=[0.02, 0.08], norms=["linf"], methods=["batched"], targeted=False, targeted_norms=["linf"],
               controls=["sign", "uniform"], fit_limit=1, eval_limit=5, passes={"batched": 1},
               step_size={"batched": 0.5}, batch_size=1, eval_batch_size=1, bounds=(0, 1), norm_channels="all",
               examples=0, seed=7)
    assert cfg == {"checkpoint": "/m/ck", "dataset": {"name": "toy"}, "zetas": [0.02, 0.08], "norms": ["linf"],
                   "methods": ["batched"], "targeted": False, "targeted_norms": ["linf"],
                   "controls": ["sign", "uniform"], "fit_limit": 1, "eval_limit": 5, "passes": {"batched": 1},
                   "step_size": {"batched": 0.5}, "batch_size": 1, "eval_batch_size": 1, "bounds": [0, 1],
                   "norm_channels": "all", "examples": 0, "seed": 7, "out": "/o/uap"}
    big = _cfg(batch_size=9, eval_batch_size=33, examples=9, bounds="auto")
    assert (big["batch_size"], big["eval_batch_size"], big["examples"], big["bounds"]) == (9, 33, 9, "auto")


def test_the_retrained_block_applies_only_to_retrained_models() -> None:
    settings = {"norms": ["l2", "linf"], "retrained": {"norms": ["l2"], "targeted": False}}
    assert _cfg(**settings)["norms"] == ["l2", "linf"] and _cfg(**settings)["targeted"] is True
    again = _cfg(True, **settings)
    assert again["norms"] == ["l2"] and again["targeted"] is False


@pytest.mark.parametrize("settings,message", [
    ({"zetas": []}, "zetas must be a non-empty list of relative strengths such as [0.02, 0.04], got []."),
    ({"zetas": 0.04}, "zetas must be a non-empty list of relative strengths such as [0.02, 0.04], got 0.04."),
    ({"zetas": [0.0]}, "zetas must be > 0.0, got 0.0."),
    ({"norms": ["l1"]}, "norms must be a non-empty list of ['l2', 'linf'], got ['l1']."),
    ({"norms": []}, "norms must be a non-empty list of ['l2', 'linf'], got []."),
    ({"methods": {"fgsm": 1}}, "methods must be a non-empty list of ['fgsm', 'batched'], got {'fgsm': 1}."),
    ({"targeted_norms": ["l3"]}, "targeted_norms must be a non-empty list of ['l2', 'linf'], got ['l3']."),
    ({"controls": ["gauss"]}, "controls must be a non-empty list of ['uniform', 'sign'], got ['gauss']."),
    ({"passes": {"pgd": 3}}, "passes must map methods ['fgsm', 'batched'] to pass counts, got {'pgd': 3}."),
    ({"passes": [3]}, "passes must map methods ['fgsm', 'batched'] to pass counts, got [3]."),
    ({"passes": {"fgsm": 0}}, "passes.fgsm must be an integer >= 1, got 0."),
    ({"step_size": {"pgd": 1}}, "step_size must map methods ['fgsm', 'batched'] to step sizes, got {'pgd': 1}."),
    ({"step_size": {"fgsm": 0.0}}, "step_size.fgsm must be > 0.0, got 0.0."),
    ({"bounds": "clip"}, "bounds must be null (the paper's code never clips), 'auto' or [lo, hi], got 'clip'."),
    ({"bounds": [0, 1, 2]}, "bounds must be null (the paper's code never clips), 'auto' or [lo, hi], got [0, 1, 2]."),
    ({"norm_channels": "mean"}, "norm_channels must be 'first' (the authors' code) or 'all', got 'mean'."),
    ({"targeted": "yes"}, "targeted must be true or false, got 'yes'."),
    ({"fit_limit": 0}, "fit_limit must be an integer >= 1, got 0."),
    ({"eval_limit": 0}, "eval_limit must be an integer >= 1, got 0."),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0."),
    ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1, got 0."),
    ({"examples": -1}, "examples must be an integer >= 0, got -1."),
    ({"seed": -1}, "seed must be an integer >= 0, got -1."),
    ({"zeta": 0.1}, "unknown keys ['zeta'] (allowed: " + str(sorted({"zetas", "norms", "methods", "targeted",
     "targeted_norms", "controls", "fit_limit", "eval_limit", "passes", "batch_size", "eval_batch_size", "bounds",
     "norm_channels", "step_size", "examples", "seed", "retrained"})) + ")."),
    ({"retrained": {"retrained": {}}}, "uap.retrained must be a mapping of uap keys other than 'retrained', got "
                                       "{'retrained': {}}."),
    ({"retrained": [1]}, "uap.retrained must be a mapping of uap keys other than 'retrained', got [1]."),
])
def test_refusals_are_one_line_naming_the_file_block_and_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(**settings)
    assert str(info.value) == f"{W}: {message}"


def test_a_non_mapping_block_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        uap_step_config([0.04], checkpoint="c", dataset={}, out=Path("o"), retrained=False, where=W)  # type: ignore[arg-type]
    assert str(info.value) == f"{W}: uap must be a mapping, got list."


# ----------------------------------------------------------------------------------------------- the plan
def _load(tmp_path: Path, edit: Any) -> Path:
    plan = yaml.safe_load(Path(load_plan("hirano2021")["source"]).read_text())
    edit(plan)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def _refused(tmp_path: Path, edit: Any) -> tuple[str, Path]:
    path = _load(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_plan(str(path))
    return str(info.value), path


def test_plan_errors_name_the_block_they_come_from(tmp_path: Path) -> None:
    msg, path = _refused(tmp_path, lambda p: p["uap"].update(seed=-1))
    assert msg == f"{path}: uap: seed must be an integer >= 0, got -1."
    # a top-level value only the non-retrained models see is the top-level block's error
    msg, path = _refused(tmp_path, lambda p: p["uap"].update(norms=["l1"], retrained={"targeted": False,
                                                                                        "norms": ["l2"]}))
    assert msg == f"{path}: uap: norms must be a non-empty list of ['l2', 'linf'], got ['l1']."
    # a budget's value that only the non-retrained models see (the retrained block overrides it)
    msg, path = _refused(tmp_path, lambda p: p["budgets"]["smoke"]["uap"].update(
        norms=["l1"], retrained={"targeted": False, "methods": ["fgsm"], "norms": ["l2"]}))
    assert msg == f"{path}: budgets.smoke.uap: norms must be a non-empty list of ['l2', 'linf'], got ['l1']."
    # a value only the retrained models see
    def vgg16_retrained(p: dict[str, Any]) -> None:  # a copy: the plan's YAML anchor shares the block
        block = p["budgets"]["cpu"]["per_model"]["vgg16"]
        block["uap"] = {**block["uap"], "retrained": {"norms": ["l1"]}}

    msg, path = _refused(tmp_path, vgg16_retrained)
    assert msg == f"{path}: budgets.cpu.per_model.vgg16.uap: norms must be a non-empty list of ['l2', 'linf'], got ['l1']."


@pytest.mark.parametrize("claim,message", [
    ("x", "every claim must be a mapping, got 'x'."),
    ({"id": "x", "claim": "c", "metric": "random", "eps": 1},
     f"claim 'x': unknown keys ['eps'] (allowed: {sorted(CLAIM_KEYS)}); missing keys ['paper']."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "random", "eps": 1},
     f"claim 'x': unknown keys ['eps'] (allowed: {sorted(CLAIM_KEYS)})."),
    ({"claim": "c", "paper": "p", "metric": "random"}, "claim None: missing keys ['id']."),
    ({"id": "x", "paper": "p", "metric": "random"}, "claim 'x': missing keys ['claim']."),
    ({"id": "x", "claim": "c", "paper": "p"}, "claim 'x': missing keys ['metric']."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "worst_case"},
     "claim 'x': metric must be one of ['nontargeted', 'targeted', 'random', 'architecture', 'retraining', "
     "'targeted_one'], got 'worst_case'."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "random", "models": ["resnet18", "zz"]},
     "claim 'x' names unknown models ['zz']."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "targeted_one", "models": ["vgg16"]},
     "claim 'x': metric 'targeted_one' needs one model in `models` and a `target` class index."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "targeted_one", "models": ["vgg16", "vgg19"], "target": 1},
     "claim 'x': metric 'targeted_one' needs one model in `models` and a `target` class index."),
    ({"id": "x", "claim": "c", "paper": "p", "metric": "targeted_one", "target": 1},
     "claim 'x': metric 'targeted_one' needs one model in `models` and a `target` class index."),
])
def test_bad_claims_are_refused_in_one_exact_line(tmp_path: Path, claim: Any, message: str) -> None:
    msg, path = _refused(tmp_path, lambda p: p["claims"].append(claim))
    assert msg == f"{path}: {message}"


def test_a_plan_without_claims_loads(tmp_path: Path) -> None:
    plan = load_plan(str(_load(tmp_path, lambda p: p.pop("claims"))))
    assert "claims" not in plan and plan["uap"]["zetas"] == [0.02, 0.04]


def test_good_claims_load(tmp_path: Path) -> None:
    good = [{"id": "one", "claim": "c", "paper": "p", "metric": "targeted_one", "models": ["vgg16"], "target": 0},
            {"id": "all", "claim": "c", "paper": "p", "metric": "random", "models": ["resnet18", "vgg16"]}]
    plan = load_plan(str(_load(tmp_path, lambda p: p["claims"].extend(good))))
    assert [c["id"] for c in plan["claims"]][-2:] == ["one", "all"]
