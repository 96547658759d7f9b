"""``medrobust reproduce ma2020 --budget smoke`` end to end on real MIT-BIH records, killed with SIGKILL and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrobust import reproduce


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


@pytest.mark.slow
def test_smoke_reproduction_survives_sigkill_and_tabulates_every_claim(shared_data: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "repro"
    env = {**os.environ, "MEDROBUST_CACHE": str(tmp_path / "cache")}
    monkeypatch.setenv("MEDROBUST_CACHE", env["MEDROBUST_CACHE"])
    cmd = [sys.executable, "-m", "medrobust.cli.main", "reproduce", "ma2020", "--budget", "smoke",
           "--data-dir", str(shared_data), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ce, nsr = out / "smoke" / "models" / "ce", out / "smoke" / "models" / "nsr"
    deadline = time.monotonic() + 600
    while not (ce / "summary.json").exists() or not nsr.exists():  # CE finished, NSR's training in flight
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "reproduce exited early"
        assert time.monotonic() < deadline, "the first training did not finish in 10 minutes"
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no cleanup, possibly half-written files of the NSR step
    proc.wait()
    ce_weights = _digest(ce / "checkpoint")
    assert not (out / "README.md").exists()

    readme = reproduce.run("ma2020", budget="smoke", out=out, data_dir=shared_data, progress=False)

    assert _digest(ce / "checkpoint") == ce_weights  # the finished step was kept, not retrained
    assert [r["done"] for r in reproduce.status("ma2020", budget="smoke", out=out)] == [True] * 13
    for mid in ("ce", "nsr", "jacobian", "pgd_at"):
        card = json.loads((out / "smoke" / "eval" / mid / "card.json").read_text())
        [res] = card["results"]
        assert res["eps"] == 0.05 and res["robust_accuracy"]["denominator"] == 16
        assert [a["label"] for a in res["attacks"]] == ["pgd100", "sap", "spsa"]
        summary = json.loads((out / "smoke" / "models" / mid / "summary.json").read_text())
        assert summary["config"]["recipe"] == "ma2020" and summary["defense"]["name"] == mid
        assert (summary["init_from"] is None) == (mid == "ce")
    text = readme.read_text()
    assert text.count("medrobust evaluate --config") == 7 and "| claim | paper | ours" in text
    assert "pipeline check only" in text and text.count("fine-tuned from ce") == 3
    for mid in ("nsr", "jacobian", "pgd_at"):                  # every defended model's gradient-masking check
        check = json.loads((out / "smoke" / "masking" / mid / "masking.json").read_text())
        assert (check["n"], check["eps"], check["large_eps"], check["black_box"]) == (16, 0.05, 0.5, "square")
        assert check["bounds"] == [0.0, 1.0] and check["config"]["checkpoint"].endswith(f"models/{mid}/checkpoint")
        assert f"| {mid} | 16 | 0.05 | {check['pgd_accuracy']:.3f} | square 20: " in text
    assert not (out / "smoke" / "masking" / "ce").exists() and "### Gradient-masking check" in text
