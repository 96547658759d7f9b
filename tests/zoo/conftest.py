"""Every zoo test leaves the package's shipped entries as they were.

A test gives ``zoo.add`` a ``root`` of its own; should the code write into the package zoo anyway (a wrong
root), the test fails here and the stray entry is removed, so no later test sees it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import medrobust.zoo

ENTRIES = Path(medrobust.zoo.__file__).resolve().parent / "entries"


def _tree() -> set[Path]:
    return set(ENTRIES.glob("*")) | set(ENTRIES.glob("*/*"))


@pytest.fixture(autouse=True)
def _package_zoo_unchanged() -> Iterator[None]:
    before = _tree()
    yield
    extra = sorted(_tree() - before, key=lambda p: len(p.parts), reverse=True)
    for p in extra:
        shutil.rmtree(p, ignore_errors=True)
    assert not extra, f"the test wrote into the package zoo {ENTRIES}: {[str(p) for p in extra]}"
