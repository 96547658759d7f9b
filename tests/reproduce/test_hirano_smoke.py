"""``medrobust reproduce hirano2021 --budget smoke`` end to end on the real PneumoniaMNIST and BreastMNIST files
(torchvision architectures: run by ``make test-images``), then resumed after losing one UAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchvision")

from medrobust import reproduce  # noqa: E402
from medrobust.cli.main import main as cli_main  # noqa: E402


@pytest.mark.images
def test_smoke_reproduction_writes_every_uap_the_readme_and_resumes(shared_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "repro"
    code = cli_main(["reproduce", "hirano2021", "--budget", "smoke", "--data-dir", str(shared_data), "--out", str(out)])
    assert code == 0
    smoke = out / "smoke"
    summary = json.loads((smoke / "uap" / "resnet18" / "uap.json").read_text())
    assert (summary["n_fit"], summary["n_test"], summary["classes"]) == (24, 24, ["normal", "pneumonia"])
    assert [u["key"] for u in summary["units"]] == [
        "fgsm_l2_z0.04_nontargeted", "fgsm_l2_z0.04_target0", "fgsm_l2_z0.04_target1",
        "batched_l2_z0.04_nontargeted", "batched_l2_z0.04_target0", "batched_l2_z0.04_target1",
        "random-uniform_l2_z0.04"]
    for u in summary["units"]:
        delta = np.load(smoke / "uap" / "resnet18" / "units" / f"{u['key']}.npz")["delta"]
        assert delta.shape == (1, 28, 28) and np.linalg.norm(delta) <= u["xi"] * (1 + 1e-5)
        assert u["test"]["n"] == 24 and sum(map(sum, u["test"]["transition"])) == 24
    retrained = json.loads((smoke / "uap" / "resnet18_retrained" / "uap.json").read_text())
    assert [u["key"] for u in retrained["units"]] == ["fgsm_l2_z0.04_nontargeted", "random-uniform_l2_z0.04"]
    breast = json.loads((smoke / "uap" / "breast_resnet18" / "uap.json").read_text())
    assert breast["classes"] == ["malignant", "normal, benign"] and breast["n_test_split"] == 156
    card = json.loads((smoke / "models" / "resnet18_retrained" / "summary.json").read_text())
    assert card["defense"]["name"] == "uap_retraining" and card["init_from"]["checkpoint"].endswith("resnet18/checkpoint")
    text = (out / "README.md").read_text()
    assert text.count("| paper claim | paper | ours") == 1 and "pipeline check only" in text
    assert "| resnet18 → resnet18_retrained | fgsm l2 ζ 4% |" in text and "inception_v3: not run here" in text
    for f in ("uap/resnet18/figures/uaps.png", "uap/resnet18/figures/examples.png", "figures/fooling_rate_vs_zeta.png"):
        assert (smoke / f).stat().st_size > 1000
    assert all(r["done"] for r in reproduce.status("hirano2021", budget="smoke", out=out))

    # lose one UAP's record (a run killed while fitting it): the rerun keeps every step and fits only that UAP
    units = smoke / "uap" / "resnet18" / "units"
    kept = {p.name: p.stat().st_mtime_ns for p in units.glob("*.json") if p.name != "fgsm_l2_z0.04_target1.json"}
    (units / "fgsm_l2_z0.04_target1.json").unlink()
    (smoke / "uap" / "resnet18" / "uap.json").unlink()
    capsys.readouterr()
    reproduce.run("hirano2021", budget="smoke", out=out, data_dir=shared_data)
    log = capsys.readouterr().out
    assert log.count("done earlier, kept") == 5 and "uap resnet18 (" in log
    assert {p.name: p.stat().st_mtime_ns for p in units.glob("*.json") if p.name in kept} == kept
    again = json.loads((smoke / "uap" / "resnet18" / "uap.json").read_text())
    assert [u["key"] for u in again["units"]] == [u["key"] for u in summary["units"]]
    assert again["units"][2]["delta_norms"] == summary["units"][2]["delta_norms"]     # seeded: the same UAP again
