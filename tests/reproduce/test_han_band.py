"""The reproduction's ``band`` step (Han et al. 2020's band, uniform and concatenation experiments, exported pairs)
on a model whose decision is known: class 1 iff the mean of the signal exceeds 0.5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.errors import ConfigError
from medrobust.reproduce.han_band import band_step_config, run_band_step
from medrobust.reproduce.plan import load_plan, resolve_steps


class MeanThreshold(nn.Module):
    """Logits (0, 400·(mean − 0.5)): class 1 iff the mean exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 400 * (x.mean(dim=(1, 2)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], 1)


def _data() -> ECGDataset:
    # 6 records of class 1 just above the threshold, 4 of class 0 far below (ε = 0.01 cannot flip those), and
    # 2 class-0 records the model gets wrong.
    level = [0.503] * 6 + [0.2] * 4 + [0.9] * 2
    y = [1] * 6 + [0] * 6
    x = torch.stack([torch.full((1, 64), v, dtype=torch.float32) for v in level])
    meta = DatasetMeta(name="toy", fs=100.0, classes=("lo", "hi"), units="mV", ids=np.asarray([f"r{i}" for i in range(12)]))
    return ECGDataset(x, torch.as_tensor(y), meta)


def _config(tmp_path: Path, **band: int) -> dict:
    attacks = [{"name": "sap", "steps": 5, "smooth_steps": 5, "step_size": 0.004, "output": "final"},
               {"name": "pgd", "label": "p", "steps": 5, "step_size": 0.004, "random_start": False, "restarts": 1}]
    return band_step_config({"eps": 0.01, "pairs": 8, "examples": 2, "trials": 20, "uniform_samples": 10,
                             "concat_signals": 3, **band}, attacks=attacks, checkpoint=tmp_path / "c",
                            dataset={"name": "toy"}, out=tmp_path / "band", where="w")


def test_band_step_attacks_the_correct_records_exports_the_pairs_and_runs_the_band_experiments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _data()
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data", lambda d, c, **k: (MeanThreshold(), ds, {}))
    summary = run_band_step(_config(tmp_path))
    assert (summary["n_test"], summary["n_correct"], summary["n_attacked"]) == (12, 10, 8)
    # the stratified 8 of the 10 correct records: 5 of class 1 (near the threshold), 3 of class 0 (unreachable)
    assert summary["sap_success"] == summary["pgd_success"] == 5
    pairs = np.load(tmp_path / "band" / "pairs_sap.npz")
    assert pairs["x"].shape == pairs["x_adv"].shape == (8, 1, 64) and str(pairs["attack"]) == "sap"
    assert set(pairs["ids"]) <= {f"r{i}" for i in range(10)}             # never the misclassified r10, r11
    assert (pairs["clean_pred"] == pairs["y"]).all() and float(pairs["fs"]) == 100.0 and str(pairs["units"]) == "mV"
    flipped = pairs["adv_pred"] != pairs["y"]
    assert flipped.sum() == 5 and (pairs["y"] == 1).sum() == 5 and (pairs["y"][flipped] == 1).all()
    assert np.abs(pairs["x_adv"] - pairs["x"]).max() <= 0.01 + 1e-6
    pgd = np.load(tmp_path / "band" / "pairs_pgd.npz")
    assert str(pgd["attack"]) == "pgd" and (pgd["ids"] == pairs["ids"]).all()
    assert list(pairs["leads"]) == list(ds.meta.leads)
    band = summary["band"]
    assert band["n_examples"] == 2 and [r["trials"] for r in band["examples"]] == [20, 20]
    assert 0 <= band["examples_with_new_adversarials"] <= 2 and 0.0 <= band["kept_fraction"] <= 1.0
    assert band["kept_fraction"] == pytest.approx(np.mean([r["kept"] / 20 for r in band["examples"]]))
    on_disk = json.loads((tmp_path / "band" / "band.json").read_text())
    assert on_disk["sap_success_rate"] == pytest.approx(5 / 8) and on_disk["config"]["trials"] == 20


def test_no_correct_record_is_reported_not_crashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _data()
    wrong = ECGDataset(ds.x, 1 - ds.y, ds.meta)
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data", lambda d, c, **k: (MeanThreshold(), wrong, {}))
    summary = run_band_step(_config(tmp_path))
    assert summary["n_correct"] == 2 and summary["n_attacked"] == 2          # r10, r11 are now the correct ones


def test_config_needs_eps_and_the_plans_sap_and_pgd(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^w: unknown keys \['x'\] \(allowed: .*\); missing keys \['eps'\]\.$"):
        band_step_config({"x": 1}, attacks=[], checkpoint=tmp_path, dataset={}, out=tmp_path, where="w")
    with pytest.raises(ConfigError, match=r"^w: the band step needs the plan's evaluation to list \['pgd'\]\.$"):
        band_step_config({"eps": 1}, attacks=[{"name": "sap"}], checkpoint=tmp_path, dataset={}, out=tmp_path,
                         where="w")
    cfg = _config(tmp_path)
    assert cfg["pgd"] == {"steps": 5, "step_size": 0.004, "random_start": False}     # label and restarts dropped
    assert (cfg["pairs"], cfg["batch_size"], cfg["dataset"]) == (8, 16, {"name": "toy", "split": "test"})


def test_han2020_plan_has_a_band_step_with_the_budgets_attacks(tmp_path: Path) -> None:
    steps = resolve_steps(load_plan("han2020"), budget="cpu", out=tmp_path)
    band = next(s for s in steps if s.kind == "band")
    assert band.model_id == "resnet" and band.config["eps"] == 0.01  # the cpu budget's model and band.config["trials"] == 1000
    assert band.config["sap"] == {"steps": 20, "smooth_steps": 40, "step_size": 0.001, "output": "final"}
    assert "limit" not in band.config["dataset"] and band.out == tmp_path / "band" / "resnet"


def test_readme_sets_each_band_experiment_beside_the_papers_number(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from medrobust.reproduce.readme import write_readme

    ds = _data()
    monkeypatch.setattr("medrobust.cli.evaluate.load_model_and_data", lambda d, c, **k: (MeanThreshold(), ds, {}))
    (tmp_path / "cpu" / "eval").mkdir(parents=True)
    cfg = _config(tmp_path)
    cfg["out"] = str(tmp_path / "cpu" / "band" / "resnet")
    r = run_band_step(cfg)
    text = write_readme(load_plan("han2020"), tmp_path).read_text()
    assert "### Han et al.'s experiments on SAP examples: `resnet` at ε = 0.01 mV" in text
    assert "| SAP misclassifies (stratified subset of the correctly classified records) | 74 % | 0.625 [" in text
    b = r["band"]
    assert (f"| Gaussian-noise re-smoothed trials still adversarial (mean over 2 SAP examples, 20 trials each) | "
            f"87.6 % | {b['kept_fraction']:.3f} | `cpu/band/resnet/band.json` |") in text
    assert f"| uniform samples inside the band misclassified | all | {b['uniform_misclassified']:.3f} |" in text
