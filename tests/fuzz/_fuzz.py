"""Shared pieces of the property-based suites: bounded, seeded settings and byte-level file mutations.

``make test`` runs each suite with a few examples (derandomized: the same examples every run);
``make fuzz`` sets ``MEDROBUST_FUZZ_FACTOR`` to multiply them.
"""

from __future__ import annotations

import os
import re
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from medrobust.errors import MedrobustError

FACTOR = max(1, int(os.environ.get("MEDROBUST_FUZZ_FACTOR", "1")))


def fuzz_settings(examples: int) -> settings:
    """``examples`` (times ``MEDROBUST_FUZZ_FACTOR``), derandomized, no deadline, no example database."""
    return settings(max_examples=examples * FACTOR, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


@st.composite
def mutations(draw: Any) -> list[tuple]:
    """A short list of byte edits: truncate, flip bytes (xor with a non-zero byte), overwrite a run, insert."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "insert"]))
        pos = draw(st.floats(0.0, 1.0, allow_nan=False))
        if kind == "truncate":
            ops.append((kind, pos))
        elif kind == "flip":
            ops.append((kind, pos, draw(st.integers(1, 255))))
        else:
            ops.append((kind, pos, draw(st.binary(min_size=1, max_size=16))))
    return ops


def mutate(data: bytes, ops: list[tuple], *, head: int | None = None) -> bytes:
    """Apply ``ops``; positions are fractions of the length (or of the first ``head`` bytes, where the
    structure of a binary file lives)."""
    buf = bytearray(data)
    for op in ops:
        span = max(1, min(len(buf), head) if head else len(buf))
        i = min(int(op[1] * span), max(0, len(buf) - 1))
        if op[0] == "truncate":
            del buf[i:]
        elif op[0] == "flip" and buf:
            buf[i] ^= op[2]
        elif op[0] == "overwrite":
            buf[i:i + len(op[2])] = op[2]
        elif op[0] == "insert":
            buf[i:i] = op[2]
    return bytes(buf)


def assert_names(exc: BaseException, *names: str) -> None:
    """``exc`` is one of medrobust's errors, on one line, naming one of ``names`` (a file or a key)."""
    assert isinstance(exc, MedrobustError), f"{type(exc).__name__}: {exc}"
    event(f"refused: {type(exc).__name__}")
    msg = str(exc)
    assert msg.strip(), "empty error message"
    assert any(re.search(re.escape(n), msg) for n in names), f"message names none of {names}: {msg}"


def accepted() -> None:
    """Record a correct result (``pytest --hypothesis-show-statistics`` shows how often each outcome occurred)."""
    event("accepted")
