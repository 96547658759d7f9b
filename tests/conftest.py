"""Shared fixtures: the real data folder beside the repo, and a per-session cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; in CI its absence is a failure, elsewhere the test is skipped."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder missing: {SHARED_DATA} (CI must have ../shared beside the repo)")
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by the tests of one session (built arrays are reused, never the user's cache)."""
    return tmp_path_factory.mktemp("medrobust-cache")


@pytest.fixture(autouse=True)
def _isolate_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the user's MEDROBUST_DATA and cache."""
    monkeypatch.setenv("MEDROBUST_CACHE", str(tmp_path_factory.getbasetemp() / "user-cache"))
    monkeypatch.delenv("MEDROBUST_DATA", raising=False)
    torch.manual_seed(0)
