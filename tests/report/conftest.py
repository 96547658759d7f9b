"""Fixtures of the report tests: one small evaluation run on the tiny CNN1 checkpoint (shared helpers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch


def _helpers() -> Any:
    name = "medrobust_eval_test_helpers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "evaluation" / "helpers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ecg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluation run (PGD, SAP, FGSM at 2 ε, minimal ε, 3 example records) and its report."""
    from medrobust.evaluation import ProtocolConfig, evaluate
    from medrobust.models import load_checkpoint
    from medrobust.report import write_report

    h = _helpers()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_checkpoint(h.tiny_checkpoint(tmp_path_factory.getbasetemp()))
        beats = h.synthetic_beats(8)
        out = tmp_path_factory.mktemp("report") / "run"
        cfg = ProtocolConfig(attacks=[{"name": "pgd", "steps": 5}, {"name": "sap", "steps": 3}, "fgsm"],
                             eps=(0.05, 0.15), mode="individual", minimal_eps=True, refine_steps=2, n_examples=3,
                             large_eps_steps=5)
        evaluate(model, beats, cfg, out_dir=out, model_card=model.card, checkpoint="tiny-cnn1/checkpoint",
                 command="medrobust evaluate (test)", progress=False)
        write_report(out, progress=False, max_ecg_examples=2)
    finally:
        torch.set_num_threads(n)
    return out
