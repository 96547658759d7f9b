"""The ``uap`` step of the hirano2021 reproduction (Hirano, Minagi & Takemoto, BMC Med. Imaging 21:9, 2021):
metrics on hand-made predictions, unit list, config errors, and resumability on a model whose decision is known
(class 1 iff the image's mean intensity exceeds 0.5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.attacks import UniversalPerturbation as SOLVER
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.errors import ConfigError, DataError
from medrobust.reproduce import hirano_uap
from medrobust.reproduce.hirano_uap import fooled_flow, run_uap_step, uap_metrics, uap_step_config, unit_specs


# ----------------------------------------------------------------------------------------------- metrics
def test_uap_metrics_match_a_hand_computed_case() -> None:
    clean = torch.tensor([1, 1, 0, 0, 0, 2, 0])
    adv = torch.tensor([2, 1, 1, 1, 1, 2, 0])
    y = torch.tensor([0, 0, 0, 0, 1, 0, 1])
    m = uap_metrics(clean=clean, adv=adv, y=y, k=3)
    assert (m["n"], m["fooled"], m["fooling_rate"]) == (7, 4, 4 / 7)                 # changed at 0, 2, 3, 4
    assert (m["misclassified"], m["misclassification_rate"]) == (6, 6 / 7)          # adv = y only at 4
    assert (m["clean_correct"], m["clean_accuracy"]) == (2, 2 / 7)                  # clean = y at 2, 3
    t0, t1, t2 = m["targets"]
    assert [t["target"] for t in m["targets"]] == [0, 1, 2]
    # target 0: adv = 0 only at 6, which is already 0 clean; 3 inputs (0, 1, 5) are not 0 clean
    assert (t0["hit"], t0["success_rate"], t0["n_not_target"], t0["hit_not_target"]) == (1, 1 / 7, 3, 0)
    assert t0["success_rate_not_target"] == 0.0 and t0["clean_rate"] == 4 / 7
    # target 1: adv = 1 at 1..4; not 1 clean: 2..6 (5 inputs), of which adv = 1 at 2, 3, 4
    assert (t1["hit"], t1["success_rate"], t1["n_not_target"], t1["hit_not_target"]) == (4, 4 / 7, 5, 3)
    assert t1["success_rate_not_target"] == 3 / 5 and t1["clean_rate"] == 2 / 7
    # target 2: adv = 2 at 0 and 5; not 2 clean: all but 5 (6 inputs), of which adv = 2 at 0
    assert (t2["hit"], t2["success_rate"], t2["n_not_target"], t2["hit_not_target"]) == (2, 2 / 7, 6, 1)
    assert t2["success_rate_not_target"] == 1 / 6 and t2["clean_rate"] == 1 / 7
    assert m["transition"] == [[1, 3, 0], [0, 1, 1], [0, 0, 1]]                   # rows clean, columns adversarial


def test_uap_metrics_misclassification_is_against_the_label_not_the_prediction() -> None:
    # nothing changes (fooling rate 0) but two of four labels disagree with the prediction
    m = uap_metrics(clean=torch.tensor([0, 1, 1, 0]), adv=torch.tensor([0, 1, 1, 0]), y=torch.tensor([0, 0, 1, 1]), k=2)
    assert (m["fooled"], m["misclassified"], m["clean_correct"]) == (0, 2, 2)
    assert m["misclassification_rate"] == 0.5 and m["clean_accuracy"] == 0.5 and m["fooling_rate"] == 0.0


def test_uap_metrics_success_excluding_the_target_is_none_when_every_input_is_already_there() -> None:
    m = uap_metrics(clean=torch.tensor([1, 1, 1]), adv=torch.tensor([1, 0, 1]), y=torch.tensor([1, 1, 0]), k=2)
    t0, t1 = m["targets"]
    assert t1["n_not_target"] == 0 and t1["success_rate_not_target"] is None and t1["success_rate"] == 2 / 3
    assert t0["n_not_target"] == 3 and t0["hit_not_target"] == 1 and t0["success_rate_not_target"] == 1 / 3
    assert t1["clean_rate"] == 1.0 and t0["clean_rate"] == 0.0


@pytest.mark.parametrize("clean,adv,y,k,match", [
    ([], [], [], 2, "one non-zero length"),
    ([0, 1], [0], [0, 1], 2, "one non-zero length"),
    ([0, 1], [0, 1], [0], 2, "one non-zero length"),
    ([0, 2], [0, 1], [0, 1], 2, r"clean predictions must be class indices in \[0, 2\)"),
    ([0, 1], [0, -1], [0, 1], 2, r"adv predictions must be class indices"),
])
def test_uap_metrics_refuse_bad_predictions(clean: list[int], adv: list[int], y: list[int], k: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        uap_metrics(clean=torch.tensor(clean, dtype=torch.long), adv=torch.tensor(adv, dtype=torch.long),
                    y=torch.tensor(y, dtype=torch.long), k=k)


def test_fooled_flow_counts_where_the_fooled_inputs_went_and_the_one_way_ceiling() -> None:
    # clean 0 -> adv 1 twice, clean 1 -> adv 0 five times, clean 2 -> adv 0 once; 10 inputs, 8 fooled
    f = fooled_flow([[1, 2, 0], [5, 0, 0], [1, 0, 1]])
    assert f["into"] == [6, 2, 0] and f["fooled"] == 8 and f["dominant"] == 0
    assert f["share"] == 6 / 8 and f["ceiling"] == 7 / 10       # 3 inputs predicted 0 clean: at most 7 of 10
    # the resnet18_112 shape: every fooled pneumonia went to normal; 168 of 624 were normal clean
    two = fooled_flow([[168, 0], [321, 135]])
    assert two["into"] == [321, 0] and two["share"] == 1.0 and two["ceiling"] == 456 / 624
    # the dominant class is the destination, not the larger clean class
    up = fooled_flow([[2, 3], [0, 95]])
    assert up["dominant"] == 1 and up["ceiling"] == 5 / 100 and up["into"] == [0, 3]
    # counts as read back from uap.json, or as a NumPy / torch integer table
    assert fooled_flow(np.array([[2, 3], [0, 95]], dtype=np.int32)) == up
    assert fooled_flow(torch.tensor([[2, 3], [0, 95]]).tolist()) == up


def test_fooled_flow_with_nothing_fooled_or_a_tie() -> None:
    none = fooled_flow([[4, 0], [0, 6]])
    assert none["fooled"] == 0 and none["share"] is None and none["dominant"] == 0 and none["ceiling"] == 0.6
    tie = fooled_flow([[3, 2], [2, 3]])
    assert tie["dominant"] == 0 and tie["share"] == 0.5 and tie["ceiling"] == 0.5


@pytest.mark.parametrize("bad", [[[1, 2]], [[1]], [[0, 0], [0, 0]], [[1, -1], [0, 1]], [1, 2], [[1, 2], [3]],
                                 [[1, 2, 3], [4, 5, 6]], [[1, 2], [3, 4], [5, 6]], [[1.5, 0], [0, 1]],
                                 [["1", "0"], ["0", "1"]]])
def test_fooled_flow_refuses_a_matrix_that_is_not_a_count_table(bad: Any) -> None:
    with pytest.raises(DataError, match="square k x k"):
        fooled_flow(bad)


# ----------------------------------------------------------------------------------------------- config
def _cfg(tmp_path: Path, as_retrained: bool = False, **settings: Any) -> dict[str, Any]:
    base = {"zetas": [0.02, 0.04], "norms": ["l2", "linf"], "methods": ["fgsm", "batched"], "targeted": True,
            "controls": ["uniform"], "fit_limit": 16, "eval_limit": 12, "passes": {"fgsm": 2, "batched": 3},
            "bounds": None, "norm_channels": "first", "examples": 2, "retrained": {"targeted": False,
                                                                                    "methods": ["fgsm"]}}
    base.update(settings)
    return uap_step_config(base, checkpoint=tmp_path / "ck", dataset={"name": "toy", "split": "val", "limit": 3},
                           out=tmp_path / "uap", retrained=as_retrained, where="plan.yaml: budgets.cpu.uap")


def test_step_config_fills_defaults_and_applies_the_retrained_block(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg["dataset"] == {"name": "toy"}                        # split and limit are the step's own business
    assert cfg["passes"] == {"fgsm": 2, "batched": 3} and cfg["targeted"] is True
    assert cfg["targeted_norms"] == ["l2", "linf"] and cfg["step_size"] == {} and cfg["seed"] == 0
    assert (cfg["batch_size"], cfg["eval_batch_size"]) == (64, 256)
    again = _cfg(tmp_path, as_retrained=True)
    assert again["targeted"] is False and again["methods"] == ["fgsm"] and again["passes"] == {"fgsm": 2}
    paper = uap_step_config({"zetas": [0.04]}, checkpoint="c", dataset={}, out=tmp_path, retrained=False, where="w")
    assert paper["passes"] == {"fgsm": 15} and paper["methods"] == ["fgsm"] and paper["norms"] == ["l2"]
    assert paper["norm_channels"] == "first" and paper["bounds"] is None and paper["controls"] == ["uniform"]
    assert uap_step_config({"zetas": [0.04], "methods": ["batched"]}, checkpoint="c", dataset={}, out=tmp_path,
                           retrained=False, where="w")["passes"] == {"batched": 10}


@pytest.mark.parametrize("change,match", [
    ({"zeta": 0.1}, r"budgets.cpu.uap: unknown keys \['zeta'\]"),
    ({"zetas": []}, "zetas must be a non-empty list"),
    ({"zetas": [0.0]}, "zetas"),
    ({"norms": ["l1"]}, r"norms must be a non-empty list of \['l2', 'linf'\]"),
    ({"methods": ["deepfool"]}, "methods must be"),
    ({"controls": ["gauss"]}, "controls must be"),
    ({"targeted_norms": ["l3"]}, "targeted_norms must be"),
    ({"passes": {"pgd": 3}}, "passes must map methods"),
    ({"step_size": {"fgsm": -1.0}}, "step_size.fgsm"),
    ({"bounds": "clip"}, "bounds must be null"),
    ({"norm_channels": "mean"}, "norm_channels must be 'first'"),
    ({"retrained": {"retrained": {}}}, "uap.retrained must be a mapping of uap keys"),
    ({"fit_limit": 0}, "fit_limit"),
    ({"targeted": "yes"}, "targeted"),
])
def test_step_config_errors_name_the_key(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, **change)


def test_unit_specs_list_every_uap_once_then_the_controls(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, zetas=[0.04], norms=["l2", "linf"], targeted_norms=["l2"], controls=["uniform", "sign"])
    keys = [u["key"] for u in unit_specs(cfg, 3)]
    assert keys == ["fgsm_l2_z0.04_nontargeted", "fgsm_l2_z0.04_target0", "fgsm_l2_z0.04_target1",
                    "fgsm_l2_z0.04_target2", "fgsm_linf_z0.04_nontargeted",
                    "batched_l2_z0.04_nontargeted", "batched_l2_z0.04_target0", "batched_l2_z0.04_target1",
                    "batched_l2_z0.04_target2", "batched_linf_z0.04_nontargeted",
                    "random-uniform_l2_z0.04", "random-uniform_linf_z0.04", "random-sign_l2_z0.04",
                    "random-sign_linf_z0.04"]
    units = {u["key"]: u for u in unit_specs(cfg, 3)}
    assert units["fgsm_l2_z0.04_target2"]["target"] == 2 and units["fgsm_l2_z0.04_target2"]["passes"] == 2
    assert units["batched_linf_z0.04_nontargeted"]["passes"] == 3 and units["random-sign_l2_z0.04"]["passes"] is None
    assert [u["key"] for u in unit_specs(_cfg(tmp_path, zetas=[0.02], norms=["l2"], methods=["fgsm"],
                                                       targeted=False), 2)] == ["fgsm_l2_z0.02_nontargeted",
                                                                                "random-uniform_l2_z0.02"]


# ----------------------------------------------------------------------------------------------- the step
class MeanThreshold(nn.Module):
    """Logits (0, 400·(mean − 0.5)): class 1 iff the image's mean intensity exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 400 * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], 1)


def _images(levels: list[float], labels: list[int], split: str) -> ECGDataset:
    x = torch.stack([torch.full((1, 4, 4), v, dtype=torch.float32) for v in levels])
    meta = DatasetMeta(name="toy", fs=0.0, classes=("lo", "hi"), units="intensity [0, 1]",
                       ids=np.asarray([f"{split}/{i}" for i in range(len(levels))]), split=split)
    return ECGDataset(x, torch.as_tensor(labels), meta)


TRAIN = _images([0.4999] * 4 + [0.5001] * 4 + [0.1] * 4, [0] * 4 + [1] * 4 + [0] * 4, "train")
TEST = _images([0.495] * 3 + [0.9] * 3, [0, 0, 1, 1, 1, 0], "test")


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data",
                        lambda d, c, **k: (MeanThreshold(), TRAIN if d["split"] == "train" else TEST, {}))


def _small(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return _cfg(tmp_path, **{"zetas": [0.04], "norms": ["l2"], "methods": ["fgsm"], "controls": ["uniform"],
                             "fit_limit": None, "eval_limit": None, "examples": 2, **settings})


def test_step_writes_every_unit_with_metrics_from_its_perturbation(tmp_path: Path, toy: None) -> None:
    summary = run_uap_step(_small(tmp_path))
    out = tmp_path / "uap"
    assert [u["key"] for u in summary["units"]] == ["fgsm_l2_z0.04_nontargeted", "fgsm_l2_z0.04_target0",
                                                   "fgsm_l2_z0.04_target1", "random-uniform_l2_z0.04"]
    assert (summary["n_fit"], summary["n_test"], summary["k"], summary["classes"]) == (12, 6, 2, ["lo", "hi"])
    assert summary["clean_accuracy"] == {"train": 1.0, "test": 4 / 6}
    mean_l2 = float(TRAIN.x.flatten(1).norm(dim=1).mean())
    for u in summary["units"]:
        assert u["xi"] == pytest.approx(0.04 * mean_l2)                     # ξ = ζ · mean ‖x‖₂ of the fitting set
        delta = np.load(out / "units" / f"{u['key']}.npz")["delta"]
        assert delta.shape == (1, 4, 4) and np.linalg.norm(delta) <= u["xi"] * (1 + 1e-5)
        assert json.loads((out / "units" / f"{u['key']}.json").read_text())["key"] == u["key"]
        model, x = MeanThreshold(), TEST.x
        with torch.no_grad():
            clean, adv = model(x).argmax(1), model(x + torch.from_numpy(delta)).argmax(1)
        assert u["test"] == uap_metrics(clean=clean, adv=adv, y=TEST.y, k=2)  # no clip: bounds null
    nt, _, to_hi, rnd = summary["units"]
    # the 0.4999 / 0.5001 training images sit 1e-4 from the threshold, under one FGSM step (0.0012 · mean ‖x‖∞),
    # so the paper's loop flips the class-0 ones (non-targeted) and sends all 8 to class 1 (targeted)
    assert nt["train"]["fooled"] >= 4 and to_hi["train"]["targets"][1]["hit"] >= 8
    assert rnd["method"] == "random_uniform" and rnd["fit"]["fit_rate"] is None
    assert (out / "uap.json").is_file() and (out / "figures" / "uaps.png").stat().st_size > 1000
    assert (out / "figures" / "examples.png").is_file()


def test_rerun_skips_finished_units_and_a_killed_run_resumes_with_the_missing_one(
        tmp_path: Path, toy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _small(tmp_path)
    first = run_uap_step(cfg)
    fits: list[str] = []
    real = hirano_uap._fit_unit
    monkeypatch.setattr(hirano_uap, "_fit_unit", lambda model, unit, *a, **k: (fits.append(unit["key"]),
                                                                                real(model, unit, *a, **k))[1])
    assert run_uap_step(cfg)["units"] == first["units"] and fits == []          # every unit kept
    units = tmp_path / "uap" / "units"
    # killed after the npz of one unit and before its JSON (and before uap.json): only that unit is fitted again
    (units / "fgsm_l2_z0.04_target0.json").unlink()
    (tmp_path / "uap" / "uap.json").unlink()
    (units / "fgsm_l2_z0.04_target1.json").write_text("{trunc")                 # a half-written file is refitted too
    again = run_uap_step(cfg)
    assert fits == ["fgsm_l2_z0.04_target0", "fgsm_l2_z0.04_target1"] and len(again["units"]) == 4
    assert again["units"][0] == first["units"][0]
    fits.clear()
    run_uap_step({**cfg, "passes": {"fgsm": 3}})              # another pass count: the fitted UAPs again, not the control
    assert fits == ["fgsm_l2_z0.04_nontargeted", "fgsm_l2_z0.04_target0", "fgsm_l2_z0.04_target1"]
    fits.clear()
    run_uap_step({**cfg, "fit_limit": 10})                    # another fitting set: every unit again
    assert fits == ["fgsm_l2_z0.04_nontargeted", "fgsm_l2_z0.04_target0", "fgsm_l2_z0.04_target1",
                    "random-uniform_l2_z0.04"]


def test_bounds_auto_clips_the_perturbed_inputs(tmp_path: Path, toy: None) -> None:
    # a 0.9 image plus a positive UAP would leave [0, 1]; with bounds 'auto' ([0, 1] for intensities) it cannot
    summary = run_uap_step(_small(tmp_path, bounds="auto", targeted=False))
    delta = torch.from_numpy(np.load(tmp_path / "uap" / "units" / "fgsm_l2_z0.04_nontargeted.npz")["delta"])
    model = MeanThreshold()
    with torch.no_grad():
        clean = model(TEST.x).argmax(1)
        adv = model((TEST.x + delta).clamp(0, 1)).argmax(1)
    assert summary["units"][0]["test"] == uap_metrics(clean=clean, adv=adv, y=TEST.y, k=2)
    assert summary["config"]["bounds"] == "auto"


def test_main_reruns_one_step_and_reports_errors_in_one_line(tmp_path: Path, toy: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "uap-toy.yaml"
    path.write_text(yaml.safe_dump(_small(tmp_path, targeted=False)))
    assert hirano_uap.main([str(path)]) == 0
    assert "2 UAPs; clean test accuracy 0.667" in capsys.readouterr().out
    assert hirano_uap.main([str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_runner_counts_a_uap_step_done_only_with_its_current_settings(tmp_path: Path, toy: None) -> None:
    import yaml

    from medrobust.reproduce.plan import Step
    from medrobust.reproduce.runner import _done

    cfg = _small(tmp_path, targeted=False)
    step = Step("uap", "toy", cfg, tmp_path / "uap", ("toy",))
    assert not _done(step, tmp_path / "c.yaml")
    run_uap_step(cfg)
    assert _done(step, tmp_path / "c.yaml")
    assert not _done(Step("uap", "toy", {**cfg, "eval_limit": 3}, tmp_path / "uap"), tmp_path / "c.yaml")
    written = tmp_path / "uap-toy.yaml"                     # the step's YAML as the run wrote it rules (--status)
    written.write_text(yaml.safe_dump(cfg))
    assert _done(Step("uap", "toy", {**cfg, "dataset": {"name": "toy", "root": "/elsewhere"}}, tmp_path / "uap"), written)
    written.write_text(yaml.safe_dump({**cfg, "eval_limit": 3}))
    assert not _done(step, written)
    (tmp_path / "uap" / "uap.json").write_text("{")
    assert not _done(step, tmp_path / "c.yaml")


# ----------------------------------------------------------------------------------------------- contracts
class Recorded:
    """Stands in for ``UniversalPerturbation``: records the keyword arguments and the fitting images, then fits
    with the real solver."""

    calls: list[dict[str, Any]] = []

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        self.kwargs = dict(kwargs)
        Recorded.calls.append(self.kwargs)
        self.real = SOLVER(model, **kwargs)

    def fit(self, x: torch.Tensor) -> Any:
        self.kwargs["x_fit"] = x.clone()
        return self.real.fit(x)


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import medrobust.attacks

    Recorded.calls = []
    monkeypatch.setattr(medrobust.attacks, "UniversalPerturbation", Recorded)
    return Recorded.calls


def _seed(seed: int, key: str) -> int:
    import zlib

    return seed * 1_000_003 + zlib.crc32(key.encode())


DISTINCT = _images([0.30 + 0.01 * i for i in range(12)], [0] * 4 + [1] * 4 + [0] * 4, "train")  # no two alike


def test_every_setting_reaches_the_solver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          recorded: list[dict[str, Any]]) -> None:
    from medrobust.evaluation.inputs import select_indices

    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data",
                        lambda d, c, **k: (MeanThreshold(), DISTINCT if d["split"] == "train" else TEST, {}))
    cfg = _small(tmp_path, methods=["batched"], norms=["linf"], targeted_norms=["linf"], passes={"batched": 2},
                 step_size={"batched": 0.003}, batch_size=5, eval_batch_size=7, norm_channels="all", bounds=[0, 1],
                 seed=3, fit_limit=6)
    summary = run_uap_step(cfg)
    keys = ["batched_linf_z0.04_nontargeted", "batched_linf_z0.04_target0", "batched_linf_z0.04_target1"]
    assert len(recorded) == 3
    fit_idx = select_indices(12, 6, seed=3, labels=DISTINCT.y.numpy())            # stratified with the step's seed
    assert not np.array_equal(fit_idx, select_indices(12, 6, seed=0, labels=DISTINCT.y.numpy()))
    for call, key, target in zip(recorded, keys, [None, 0, 1]):
        gen, x_fit = call.pop("generator"), call.pop("x_fit")
        assert call == {"norm": "linf", "zeta": 0.04, "method": "batched", "target": target, "max_iter": 2,
                        "step_size": 0.003, "batch_size": 5, "eval_batch_size": 7, "norm_channels": "all",
                        "bounds": (0, 1), "units": "intensity [0, 1]"}
        assert type(call["bounds"]) is tuple and gen.initial_seed() == _seed(3, key)
        assert torch.equal(x_fit, DISTINCT.x[torch.as_tensor(fit_idx)])
    assert summary["n_fit"] == 6 and summary["n_test"] == 6
    fit = summary["units"][0]["fit"]
    assert "config" not in fit and "shape" not in fit and fit["method"] == "batched" and fit["xi"] > 0
    recorded.clear()
    run_uap_step(_small(tmp_path / "b", targeted=False, passes={"fgsm": 1}))     # the paper's: no clipping, no step
    ((call),) = recorded
    assert call["bounds"] is None and call["step_size"] is None and call["max_iter"] == 1
    assert call["norm_channels"] == "first" and call["generator"].initial_seed() == _seed(0, "fgsm_l2_z0.04_nontargeted")


def test_the_test_subset_is_stratified_with_the_steps_seed(tmp_path: Path, toy: None) -> None:
    from medrobust.evaluation.inputs import select_indices

    summary = run_uap_step(_small(tmp_path, targeted=False, eval_limit=3, seed=3))
    idx = torch.as_tensor(select_indices(6, 3, seed=3, labels=TEST.y.numpy()))
    assert not torch.equal(TEST.x[idx], TEST.x[torch.as_tensor(select_indices(6, 3, seed=0, labels=TEST.y.numpy()))])
    delta = torch.from_numpy(np.load(tmp_path / "uap" / "units" / "random-uniform_l2_z0.04.npz")["delta"])
    model = MeanThreshold()
    with torch.no_grad():
        clean, adv = model(TEST.x[idx]).argmax(1), model(TEST.x[idx] + delta).argmax(1)
    assert summary["n_test"] == 3 and summary["n_test_split"] == 6
    assert summary["units"][-1]["test"] == uap_metrics(clean=clean, adv=adv, y=TEST.y[idx], k=2)


def _two_channel(levels: list[tuple[float, float]], split: str) -> ECGDataset:
    x = torch.stack([torch.stack([torch.full((4, 4), a), torch.full((4, 4), b)]) for a, b in levels]).float()
    meta = DatasetMeta(name="toy2", fs=0.0, classes=("lo", "hi"), units="intensity [0, 1]",
                       ids=np.asarray([f"{split}/{i}" for i in range(len(levels))]), split=split)
    return ECGDataset(x, torch.as_tensor([0, 1] * (len(levels) // 2)), meta)


def test_random_controls_are_seeded_per_unit_and_sized_on_the_first_channel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medrobust.attacks.universal import mean_norm, random_control

    train = _two_channel([(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.4, 0.6)], "train")
    test = _two_channel([(0.5, 0.5), (0.6, 0.4)], "test")
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data",
                        lambda d, c, **k: (MeanThreshold(), train if d["split"] == "train" else test, {}))
    summary = run_uap_step(_small(tmp_path, norms=["l2", "linf"], targeted=False, controls=["uniform", "sign"],
                                  zetas=[0.5], seed=4, passes={"fgsm": 1}))
    controls = [u for u in summary["units"] if u["method"].startswith("random")]
    assert [u["key"] for u in controls] == ["random-uniform_l2_z0.5", "random-uniform_linf_z0.5",
                                            "random-sign_l2_z0.5", "random-sign_linf_z0.5"]
    for u in controls:
        xi = 0.5 * mean_norm(train.x, u["norm"], channels="first")           # channel 0 only, as the authors' code
        assert u["xi"] == pytest.approx(xi) and xi != pytest.approx(0.5 * mean_norm(train.x, u["norm"]))
        expected = random_control((2, 4, 4), xi=xi, norm=u["norm"], kind=u["method"][7:],
                                  generator=torch.Generator().manual_seed(_seed(4, u["key"])))
        got = np.load(tmp_path / "uap" / "units" / f"{u['key']}.npz")["delta"]
        assert np.array_equal(got, expected.numpy())
        assert u["fit"] == {"xi": u["xi"], "fit_rate": None, "seconds": 0.0, "history": [], "grad_evals": 0,
                            "queries": 0}


def test_unit_record_archive_and_summary_hold_every_field(tmp_path: Path, toy: None) -> None:
    cfg = _small(tmp_path)
    summary = run_uap_step(cfg)
    assert set(summary) == {"checkpoint", "classes", "k", "n_fit", "n_train", "n_test", "n_test_split",
                            "clean_accuracy", "units", "config"}
    assert (summary["checkpoint"], summary["n_train"], summary["n_test_split"]) == (str(tmp_path / "ck"), 12, 6)
    assert summary["config"] == cfg
    for u, target in zip(summary["units"], [None, 0, 1, None]):
        assert set(u) == {"key", "method", "norm", "zeta", "target", "xi", "delta_norms", "fit", "train", "test",
                          "settings"}
        spec = {k: u[k] for k in ("key", "method", "norm", "zeta", "target")}
        passes = None if u["method"].startswith("random") else 2
        assert u["settings"] == {**spec, "passes": passes, "step_size": None, "fit_limit": None, "eval_limit": None,
                                 "bounds": None, "norm_channels": "first", "seed": 0, "batch_size": 64,
                                 "checkpoint": str(tmp_path / "ck")}
        z = np.load(tmp_path / "uap" / "units" / f"{u['key']}.npz")
        d = z["delta"].astype(np.float64).ravel()
        assert u["delta_norms"] == {"l2": pytest.approx(np.linalg.norm(d)), "linf": pytest.approx(np.abs(d).max())}
        assert float(z["xi"]) == u["xi"] and str(z["norm"]) == "l2" and float(z["zeta"]) == 0.04
        assert str(z["method"]) == u["method"] and int(z["target"]) == (-1 if target is None else target)
        assert u["target"] == target


class OutsideUnit(nn.Module):
    """Class 1 iff some pixel leaves [0, 1]: logits (0, 400 · max(max x − 1, −min x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 400 * torch.maximum(x.amax(dim=(1, 2, 3)) - 1, -x.amin(dim=(1, 2, 3)))
        return torch.stack([torch.zeros_like(z), z], 1)


def test_bounds_clip_the_clean_and_the_perturbed_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def images(n: int, split: str) -> ECGDataset:
        x = torch.full((n, 1, 4, 4), 0.001)
        if split == "test":
            x[0, 0, 0, 0] = 1.2              # one test image a little outside [0, 1] (the solver refuses such training data)
        meta = DatasetMeta(name="toy", fs=0.0, classes=("in", "out"), units="intensity [0, 1]",
                           ids=np.asarray([f"{split}/{i}" for i in range(n)]), split=split)
        return ECGDataset(x, torch.zeros(n, dtype=torch.long), meta)

    train, test = images(8, "train"), images(4, "test")
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data",
                        lambda d, c, **k: (OutsideUnit(), train if d["split"] == "train" else test, {}))
    import medrobust.reproduce.hirano_figures as figures

    drawn: list[Any] = []
    real = figures.uap_figures
    monkeypatch.setattr(figures, "uap_figures", lambda *a: (drawn.append(a[5]), real(*a))[1])
    settings = {"targeted": False, "zetas": [5.0], "passes": {"fgsm": 1}}   # ξ = 0.02: a pixel of 0.001 can go below 0
    clipped = run_uap_step(_small(tmp_path / "a", bounds="auto", **settings))   # [0, 1] from the units
    assert drawn == [(0.0, 1.0)]                                          # the examples are drawn clipped too
    assert clipped["clean_accuracy"] == {"train": 1.0, "test": 1.0}      # 1.2 is clipped to 1: still "in"
    for u in clipped["units"]:
        assert u["train"]["fooled"] == 0 and u["test"]["fooled"] == 0   # nothing can leave [0, 1] once clipped
    free = run_uap_step(_small(tmp_path / "b", **settings))
    assert free["clean_accuracy"] == {"train": 1.0, "test": 3 / 4}
    rnd = free["units"][-1]
    assert rnd["method"] == "random_uniform" and rnd["train"]["fooled"] == 8 and rnd["test"]["fooled"] == 3


def test_model_and_splits_come_from_the_steps_checkpoint_and_source(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def load(d: dict[str, Any], c: str, **k: Any) -> tuple[Any, ...]:
        calls.append((d, c, k))
        return MeanThreshold(), TRAIN if d["split"] == "train" else TEST, {}

    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data", load)
    cfg = {**_small(tmp_path, targeted=False), "source": {"fs": 0.0, "classes": ["lo", "hi"]}}
    run_uap_step(cfg)
    assert calls == [({"name": "toy", "split": "train"}, str(tmp_path / "ck"), {"source": cfg["source"]}),
                     ({"name": "toy", "split": "test"}, str(tmp_path / "ck"), {"source": cfg["source"]})]


def test_main_without_a_config_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert hirano_uap.main([]) == 2
    assert capsys.readouterr().err.strip() == ("usage: python -m medrobust.reproduce.hirano_uap CONFIG.yaml "
                                               "(a reproduction's configs/uap-<model>.yaml)")
