"""Result cards: contents, kill-and-resume gives an identical card, corrupt or foreign state, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation import ProtocolConfig, comparable, evaluate, load_card
from medrobust.evaluation import card as cardmod

SMALL = {"large_eps_steps": 5, "n_examples": 2, "batch_size": 16}


def test_card_records_what_is_needed_to_trust_and_reproduce(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    cfg = ProtocolConfig(attacks=[{"name": "pgd", "steps": 5}], eps=(0.05,), seed=3, **SMALL)
    card = evaluate(tiny_model, beats, cfg, out_dir=tmp_path / "run", model_card=tiny_model.card,
                    checkpoint="ckpt", command="medrobust evaluate ...", progress=False)
    assert load_card(tmp_path / "run") == json.loads(json.dumps(card))
    env = card["environment"]
    assert env["torch_version"] and env["medrobust_version"] and "commit" in env["git"]
    assert card["seeds"]["protocol_seed"] == 3
    assert card["data"]["fingerprint"] == beats.meta.fingerprint and card["data"]["split"] == "test"
    assert card["data"]["class_resampled"] is False
    assert card["model"]["card"]["weights_sha256"] == tiny_model.card["weights_sha256"]
    assert card["threat_model"]["norm"] == "linf" and card["threat_model"]["bounds"] == [0.0, 1.0]
    assert card["protocol"]["members"][0]["kwargs"] == {"steps": 5}
    r = card["results"][0]
    assert set(r["robust_accuracy"]) == {"numerator", "denominator", "value"}
    assert r["attacks"][0]["grad_evals"] > 0
    assert card["timings"]["seconds_compute"] > 0 and "timings" not in comparable(card)
    assert (tmp_path / "run" / "examples.npz").is_file() and (tmp_path / "run" / "per_sample.npz").is_file()


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _units(state: Path) -> int:
    try:
        return len(json.loads(state.read_text())["units"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_and_resume_gives_identical_card(tiny_ckpt: Path, tmp_path: Path, helpers: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A run SIGKILLed mid-way and resumed gives the card of an uninterrupted run, minus its timings."""
    from medrobust.cli.main import main

    args = ["evaluate", "--checkpoint", str(tiny_ckpt), "--dataset", "synthetic", "--option", "n_per_class=6",
            "--attacks", "pgd,sap", "--attack-option", "pgd.steps=4", "--attack-option", "sap.steps=2",
            "--eps", "0.03,0.1", "--batch-size", "6", "--minimal-eps", "--refine-steps", "1", "--examples", "2",
            "--mode", "individual", "--out", "run", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medrobust.cli.main", *args]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = subprocess.Popen(cmd, cwd=tmp_path / "a", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "a" / "run" / "state.json"
    deadline = time.monotonic() + 240
    while _units(state) < 5 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_at_kill = _units(state)
    assert 5 <= done_at_kill < 19  # 19 units in all
    assert not (tmp_path / "a" / "run" / "card.json").exists()
    json.loads(state.read_text())  # never half-written
    # resume here (same command, same folder), then the uninterrupted reference in folder b
    monkeypatch.chdir(tmp_path / "a")
    assert main(args) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main(args) == 0
    a, b = load_card(tmp_path / "a" / "run"), load_card(tmp_path / "b" / "run")
    assert a["timings"]["sessions"] == 2 and a["timings"]["resumed"] is True
    assert b["timings"]["sessions"] == 1
    ca, cb = comparable(a), comparable(b)
    if ca["environment"]["git"] != cb["environment"]["git"]:
        # another process committed to this shared checkout between the two cards: not the evaluation's doing
        for c in (ca, cb):
            c["environment"].pop("git")
    assert _diff(ca, cb) == []
    assert a["minimal_eps"] is not None and len(a["results"]) == 2


def test_corrupt_or_foreign_state_is_refused(tiny_model: nn.Module, beats: Any, tmp_path: Path) -> None:
    small = beats.subset(range(10))
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05,), **SMALL)
    run = tmp_path / "run"
    evaluate(tiny_model, small, cfg, out_dir=run, progress=False)
    with pytest.raises(ConfigError, match="different settings"):
        evaluate(tiny_model, small, ProtocolConfig(attacks=["fgsm"], eps=(0.1,), **SMALL), out_dir=run,
                 progress=False)
    evaluate(tiny_model, small, ProtocolConfig(attacks=["fgsm"], eps=(0.1,), **SMALL), out_dir=run, progress=False,
             overwrite=True)
    (run / "state.json").write_text('{"format": "medrobust-eval-state/1", "units": {"clean": ')
    with pytest.raises(DataError, match="corrupt"):
        evaluate(tiny_model, small, cfg, out_dir=run, progress=False)
    (run / "state.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not a medrobust-eval-state/1"):
        evaluate(tiny_model, small, cfg, out_dir=run, progress=False)


def test_state_is_never_half_written(tiny_model: nn.Module, beats: Any, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    small = beats.subset(range(24))
    cfg = ProtocolConfig(attacks=["fgsm"], eps=(0.05, 0.1), **{**SMALL, "batch_size": 8})
    run = tmp_path / "run"
    real = os.replace
    calls = {"n": 0}

    def failing_replace(src: Any, dst: Any) -> None:
        if str(dst).endswith("state.json"):
            calls["n"] += 1
            if calls["n"] == 4:
                raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(cardmod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        evaluate(tiny_model, small, cfg, out_dir=run, progress=False)
    monkeypatch.setattr(cardmod.os, "replace", real)
    state = json.loads((run / "state.json").read_text())
    assert len(state["units"]) == 3
    assert not [p for p in run.rglob("*.tmp")], "temporary files left behind"
    card = evaluate(tiny_model, small, cfg, out_dir=run, progress=False)
    assert card["timings"]["sessions"] == 2
    assert comparable(card) == comparable(evaluate(tiny_model, small, cfg, out_dir=tmp_path / "fresh",
                                                   progress=False))
