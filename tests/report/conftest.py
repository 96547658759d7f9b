"""Fixtures of the report tests: one small evaluation run on the tiny CNN1 checkpoint (shared helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ecg_run(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    """An evaluation run (PGD, SAP, FGSM at 2 ε, minimal ε, 3 example records) and its report."""
    from medrobust.evaluation import ProtocolConfig, evaluate
    from medrobust.models import load_checkpoint
    from medrobust.report import write_report

    h = helpers
    model = load_checkpoint(h.tiny_checkpoint(tmp_path_factory.getbasetemp()))
    beats = h.synthetic_beats(8)
    out = tmp_path_factory.mktemp("report") / "run"
    cfg = ProtocolConfig(attacks=[{"name": "pgd", "steps": 5}, {"name": "sap", "steps": 3}, "fgsm"],
                         eps=(0.05, 0.15), mode="individual", minimal_eps=True, refine_steps=2, n_examples=3,
                         large_eps_steps=5)
    evaluate(model, beats, cfg, out_dir=out, model_card=model.card, checkpoint="tiny-cnn1/checkpoint",
             command="medrobust evaluate (test)", progress=False)
    write_report(out, progress=False, max_ecg_examples=2)
    return out
