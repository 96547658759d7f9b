"""``medrobust reproduce ma2022 --budget smoke`` end to end, its CPSC 2018 half on synthetic 12-lead records in the
CPSC 2018 layout (27 records, more than the 10-record sample of this checkout) and its MIT-BIH half on real records:
every step finishes, every model is evaluated and checked for gradient masking, and the README tabulates both
claims. A pipeline check: the numbers mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust import reproduce
from medrobust.data.synthetic_12lead import write_synthetic_cpsc2018


@pytest.mark.slow
def test_ma2022_smoke_runs_on_synthetic_12_lead_records(shared_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROBUST_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_synthetic_cpsc2018(root / "cpsc2018", records_per_class=3, seed=0)
    (root / "mitdb").symlink_to(shared_data / "mitdb")
    out = tmp_path / "repro"
    readme = reproduce.run("ma2022", budget="smoke", out=out, data_dir=root, progress=False)
    status = reproduce.status("ma2022", budget="smoke", out=out)
    assert len(status) == 22 and all(s["done"] for s in status)
    for mid in ("ce", "nsr", "jacobian", "pgd_at"):
        card = json.loads((out / "smoke" / "eval" / mid / "card.json").read_text())
        data = card["data"]
        assert (data["name"], data["fs"], len(data["leads"])) == ("cpsc2018", 125.0, 8)
        assert (data["options"]["n_records"], data["options"]["length"]) == (27, 8448)   # every record, padded
        [res] = card["results"]
        assert res["eps"] == 0.01 and res["robust_accuracy"]["denominator"] == 4
        assert [a["label"] for a in res["attacks"]] == ["pgd100", "sap"]
    for mid in ("nsr", "jacobian", "pgd_at", "mitdb_nsr", "mitdb_jacobian", "mitdb_pgd_at"):
        assert (out / "smoke" / "masking" / mid / "masking.json").is_file()
    text = readme.read_text()
    assert "| CPSC 2018: NSR raises accuracy under 100-step PGD and SAP" in text
    assert "| MIT-BIH: NSR raises accuracy under 100-step PGD and SAP" in text
    assert text.count("medrobust evaluate --config") >= 8 and "pipeline check only" in text
