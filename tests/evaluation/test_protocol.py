"""The evaluation protocol: ensemble worst case, minimal-ε bisection, restarts, standard protocols, bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.errors import CheckpointError, ConfigError
from medrobust.evaluation import (
    AttackSpec,
    ProtocolConfig,
    check_compatible,
    evaluate,
    metrics_from_confusion,
    standard_protocol,
)
from medrobust.evaluation.card import read_npz

# Deterministic members (no random start), so a sample's outcome does not depend on the batch it is in.
PGD = {"name": "pgd", "steps": 8, "random_start": False}
SAP = {"name": "sap", "steps": 4, "smooth_steps": 8}
FAST = {"large_eps_check": False, "n_examples": 0, "batch_size": 32}


def _robust(run: Path) -> np.ndarray:
    ps = read_npz(run / "per_sample.npz")
    return ps["adv_pred"] == ps["y"][None, :]          # (E, N)


def test_ensemble_worst_case_never_better_than_any_member(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    eps = (0.03, 0.08)
    weak = {"name": "pgd", "steps": 1, "rel_step_size": 0.3, "random_start": False, "label": "pgd-weak"}
    members = [weak, "fgsm", SAP]
    card = evaluate(tiny_model, beats, ProtocolConfig(attacks=members, eps=eps, mode="sequential", **FAST),
                    out_dir=tmp_path / "ens", progress=False)
    ens = _robust(tmp_path / "ens")
    alone = []
    for i, m in enumerate(members):
        c = evaluate(tiny_model, beats, ProtocolConfig(attacks=[m], eps=eps, **FAST), out_dir=tmp_path / f"m{i}",
                     progress=False)
        alone.append(_robust(tmp_path / f"m{i}"))
        for r_ens, r_m in zip(card["results"], c["results"]):
            assert r_ens["robust_accuracy"]["numerator"] <= r_m["robust_accuracy"]["numerator"]
        assert (ens <= alone[-1]).all(), f"a sample robust in the ensemble was broken by {m} alone"
    # Pointwise it is exactly the worst case of the members run alone, and more than its first member.
    assert (ens == np.logical_and.reduce(alone)).all()
    assert sum(a["broken_first"] for r in card["results"] for a in r["attacks"][1:]) > 0
    assert (ens < alone[0]).any()
    # numerators and denominators add up
    for r in card["results"]:
        ra, asr = r["robust_accuracy"], r["attack_success_rate"]
        assert ra["denominator"] == len(beats) and asr["denominator"] == card["clean"]["accuracy"]["numerator"]
        assert ra["numerator"] + asr["numerator"] == card["clean"]["accuracy"]["numerator"]
        assert r["metrics"] == metrics_from_confusion(np.asarray(r["metrics"]["confusion"]), beats.meta.classes)


def test_individual_mode_gives_standalone_curves(tiny_model: nn.Module, beats: Any) -> None:
    tiny_model.train()
    card = evaluate(tiny_model, beats, ProtocolConfig(attacks=[PGD, "fgsm"], eps=(0.05,), mode="individual", **FAST),
                    progress=False)
    assert tiny_model.training and all(p.requires_grad for p in tiny_model.parameters())  # restored
    r = card["results"][0]
    alone = [a["robust_accuracy_alone"]["numerator"] for a in r["attacks"]]
    assert r["robust_accuracy"]["numerator"] <= min(alone)
    assert card["curves"]["kind"] == "standalone"
    assert card["curves"]["attacks"]["pgd"]["accuracy"][0] == card["clean"]["accuracy"]["value"]


def test_minimal_eps_curve_agrees_with_fixed_eps_runs(tiny_model: nn.Module, beats: Any) -> None:
    eps = (0.02, 0.05, 0.1)
    cfg = ProtocolConfig(attacks=[PGD, "fgsm"], eps=eps, minimal_eps=True, refine_steps=3, **FAST)
    card = evaluate(tiny_model, beats, cfg, progress=False)
    me = card["minimal_eps"]
    n = len(beats)
    diffs = [a["difference"] for a in me["agreement_with_sweep"]]
    # Agreement holds exactly where success is monotone in ε; allow a sample of slack per radius.
    assert max(abs(d) for d in diffs) <= max(1, round(0.03 * n)), diffs
    assert sum(d == 0 for d in diffs) >= 2
    acc = me["curve"]["accuracy"]
    assert acc[0] == pytest.approx(card["clean"]["accuracy"]["value"])
    assert all(a >= b for a, b in zip(acc, acc[1:])), "robust accuracy must not increase with ε"
    assert acc[-1] < acc[0], "the attacks must break some samples"
    assert me["max_bracket_width"] <= (0.1 - 0.05) / 2**3 + 1e-12


def test_restarts_only_add_successes(tiny_model: nn.Module, beats: Any) -> None:
    one = {"name": "pgd", "steps": 2, "random_start": True}
    base = ProtocolConfig(attacks=[AttackSpec.parse(one)], eps=(0.05,), **FAST)
    more = replace(base, attacks=(AttackSpec.parse({**one, "restarts": 4}),))
    r1 = evaluate(tiny_model, beats, base, progress=False)["results"][0]
    r4 = evaluate(tiny_model, beats, more, progress=False)["results"][0]
    assert r4["robust_accuracy"]["numerator"] <= r1["robust_accuracy"]["numerator"]
    assert r4["attacks"][0]["grad_evals"] > r1["attacks"][0]["grad_evals"]


def test_standard_protocols_are_fixed_per_data_type() -> None:
    std = standard_protocol("normalized [0, 1]", 125.0)
    assert std.name == "standard-ecg-normalized" and std.eps == (0.01, 0.03, 0.05, 0.1, 0.2, 0.3)
    assert std.bounds == (0.0, 1.0) and [a.label for a in std.attacks][:4] == ["apgd-ce", "apgd-dlr", "pgd-adamax",
                                                                                "sap"]
    assert standard_protocol("mV", 500.0).name == "standard-ecg-mv"
    assert standard_protocol("intensity [0, 1]", 0.0).name == "standard-image"
    assert standard_protocol("normalized [0, 1]", 125.0, minimal_eps=True).minimal_eps
    with pytest.raises(ConfigError, match="fixed"):
        standard_protocol("mV", 500.0, eps=(0.5,))
    with pytest.raises(ConfigError, match="no standard protocol"):
        standard_protocol("furlongs", 100.0)


def test_bad_input(tiny_model: nn.Module, beats: Any) -> None:
    card = dict(tiny_model.card)
    with pytest.raises(CheckpointError, match="predicts classes"):
        check_compatible({**card, "classes": ["N", "S", "V"]}, beats)
    with pytest.raises(CheckpointError, match="expects inputs of shape"):
        check_compatible({**card, "input_shape": [1, 360]}, beats)
    with pytest.raises(ConfigError, match="unknown attack 'pgdd'"):
        evaluate(tiny_model, beats, ProtocolConfig(attacks=["pgdd"], eps=(0.1,)), progress=False)
    with pytest.raises(ConfigError, match="threat model"):
        AttackSpec("pgd", {"eps": 0.3})
    with pytest.raises(ConfigError, match="unknown argument"):
        evaluate(tiny_model, beats, ProtocolConfig(attacks=[{"name": "pgd", "stepz": 3}], eps=(0.1,)), progress=False)
    with pytest.raises(ConfigError, match="unique"):
        ProtocolConfig(attacks=["pgd", "pgd"], eps=(0.1,))
    with pytest.raises(ConfigError, match="duplicates"):
        ProtocolConfig(attacks=["pgd"], eps=(0.1, 0.1))
    # optional members that are not registered are skipped and recorded
    c = evaluate(tiny_model, beats.subset(range(8)),
                 ProtocolConfig(attacks=["fgsm", {"name": "nosuchattack", "optional": True}], eps=(0.1,), **FAST),
                 progress=False)
    assert c["protocol"]["skipped_optional"] == ["nosuchattack"]


class TinyConv2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_image_shaped_data(tmp_path: Path) -> None:
    model = TinyConv2d().eval()
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    meta = DatasetMeta(name="toy-images", fs=0.0, classes=("a", "b", "c"), units="intensity [0, 1]",
                       ids=np.array([f"img{i}" for i in range(24)]), leads=("gray",))
    ds = ECGDataset(x, y, meta)
    card = evaluate(model, ds, ProtocolConfig(attacks=[PGD], eps=(0.05, 0.2), n_examples=3, large_eps_check=False),
                    out_dir=tmp_path / "img", progress=False)
    assert card["clean"]["accuracy"]["value"] == 1.0
    assert card["threat_model"]["bounds"] == [0.0, 1.0]
    r = card["results"][-1]
    assert r["perturbation"]["linf"]["max"] <= 0.2 + 1e-6 and r["perturbation"]["hf_fraction"]["mean"] is None
    ex = read_npz(tmp_path / "img" / "examples.npz")
    assert ex["x_adv"].shape == (1, 2, 3, 1, 8, 8)


def test_limit_takes_a_stratified_seeded_subset() -> None:
    from medrobust.evaluation import select_indices

    y = np.repeat(np.arange(5), [900, 50, 30, 15, 5])          # ordered by class, as a test split by record
    idx = select_indices(len(y), 100, 3, labels=y)
    assert len(idx) == 100 and (np.diff(idx) > 0).all()
    assert np.bincount(y[idx]).tolist() == [89, 5, 3, 2, 1]      # proportional; the rarest class still present
    assert not np.array_equal(idx, np.arange(100))
    assert np.array_equal(idx, select_indices(len(y), 100, 3, labels=y))
    assert not np.array_equal(idx, select_indices(len(y), 100, 4, labels=y))
    assert np.bincount(y[select_indices(len(y), 3, 0, labels=y)], minlength=5).tolist() == [3, 0, 0, 0, 0]
    assert np.array_equal(select_indices(10, None, 0, labels=np.zeros(10)), np.arange(10))
    with pytest.raises(ConfigError, match="positive integer"):
        select_indices(10, 0, 0, labels=np.zeros(10))


def test_evaluate_with_limit_records_the_stratified_selection(tiny_model: nn.Module, beats: Any,
                                                              tmp_path: Path) -> None:
    from medrobust.report import write_report

    card = evaluate(tiny_model, beats, ProtocolConfig(attacks=["fgsm"], eps=(0.05,), **FAST), limit=10,
                    out_dir=tmp_path, progress=False)
    ev = card["data"]["evaluated"]
    assert ev["n"] == 10 and ev["selection"]["stratified"] is True and ev["class_counts"] == [2, 2, 2, 2, 2]
    write_report(tmp_path, progress=False)
    assert "10 of 60 samples (stratified)" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError, match="either indices or limit"):
        evaluate(tiny_model, beats, ProtocolConfig(attacks=["fgsm"], eps=(0.05,), **FAST), limit=4, indices=[0, 1],
                 progress=False)


def test_former_protocol_names_are_still_importable() -> None:
    import medrobust.evaluation.protocol as P

    for name in ("MODES", "THREAT_KEYS", "PROTOCOL_VERSION", "AttackSpec", "ProtocolConfig", "STANDARD_PROTOCOLS",
                 "data_type", "standard_protocol", "bounds_from_units", "derive_seed", "select_indices",
                 "check_compatible", "build_attack", "run_ensemble", "evaluate"):
        assert hasattr(P, name), name
    # the thin wrappers answer through medrobust.units.Units
    assert P.bounds_from_units("max-abs scaled [-1, 1]") == (-1.0, 1.0)
    assert P.bounds_from_units("mV") is None
    assert P.data_type("max-abs scaled [-1, 1]", 500.0) == "ecg-maxabs"
    assert P.data_type("normalized [0, 1]", 0.0) == "image"


def test_randomised_members_give_the_same_per_sample_outcome_for_any_batch_size(
        tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    """Each sample's random start and probes are keyed by its dataset index, never by its batch: the same
    randomised ensemble (PGD with random start and restarts, SPSA) at batch sizes 5 and 32 gives identical
    per-sample predictions. Fails if the protocol drops ``sample_ids`` or seeds units by batch number."""
    members = [{"name": "pgd", "steps": 3, "random_start": True, "restarts": 2},
               {"name": "spsa", "steps": 3, "nb_samples": 8}]
    runs = []
    for bs in (5, 32):
        cfg = ProtocolConfig(attacks=members, eps=(0.03, 0.08), mode="sequential", large_eps_check=False,
                             n_examples=0, batch_size=bs)
        evaluate(tiny_model, beats, cfg, out_dir=tmp_path / f"bs{bs}", progress=False)
        runs.append(read_npz(tmp_path / f"bs{bs}" / "per_sample.npz")["adv_pred"])
    assert (runs[0] == runs[1]).all()
    assert (runs[0] != read_npz(tmp_path / "bs5" / "per_sample.npz")["y"][None, :]).any()  # something broke
