"""Fixtures of the evaluation tests: a tiny trained CNN1 checkpoint and synthetic test beats."""

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
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("helpers.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def helpers() -> Any:
    return _helpers()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread (fast and deterministic on a loaded 2-core box); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Path:
    return helpers.tiny_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture()
def tiny_model(tiny_ckpt: Path) -> torch.nn.Module:
    from medrobust.models import load_checkpoint

    return load_checkpoint(tiny_ckpt)


@pytest.fixture(scope="session")
def beats(helpers: Any) -> Any:
    """60 synthetic test beats (12 per class), 187 samples at 125 Hz in [0, 1]."""
    return helpers.synthetic_beats(12)
