"""Shared fixtures: the real data folder beside the repo, and a per-session cache."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator

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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the whole session (restored at the end).

    The tests use small models and batches, which gain nothing from more threads; on a busy 2-core
    machine OpenMP oversubscription makes them 5-50x slower. Session scope, so that module- and
    session-scoped fixtures (tiny checkpoints, evaluation runs) run on one thread too.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _evaluation_helpers() -> Any:
    """``tests/evaluation/helpers.py`` (tiny checkpoint, synthetic beats, flag-triggering models), loaded once."""
    name = "medrobust_eval_test_helpers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "evaluation" / "helpers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def helpers() -> Any:
    """The shared evaluation test helpers (used by tests/evaluation, tests/report and tests/cli)."""
    return _evaluation_helpers()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium (never a browser download): skipped where it is missing, a failure under CI."""
    import shutil

    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: CI must install it (apt-get install -y chromium) before the tests")
        pytest.skip("headless Chromium not installed (apt-get install -y chromium); browser test not run")
    return path
