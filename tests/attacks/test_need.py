"""The real-data fixtures never skip silently in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import _need


def test_need_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        _need(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _need(missing)
    assert _need(tmp_path) == tmp_path
