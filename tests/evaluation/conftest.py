"""Fixtures of the evaluation tests: a tiny trained CNN1 checkpoint and synthetic test beats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


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
