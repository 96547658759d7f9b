"""Property: a damaged MIT-BIH record (truncated or byte-flipped .hea, .dat or .atr) gives a correct result or
a medrobust error naming the damaged record's file; never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrobust.data.beats import AAMI_CLASSES
from medrobust.data.mitdb import build_mitdb

from ._fuzz import accepted, assert_names, fuzz_settings, mutate, mutations

RECORD = "100"


@pytest.fixture(scope="module")
def originals(shared_data: Path) -> dict[str, bytes]:
    return {ext: (shared_data / "mitdb" / f"{RECORD}.{ext}").read_bytes() for ext in ("hea", "dat", "atr")}


def _check_result(arrays: dict[str, np.ndarray], n_samples_signal: int | None = None) -> None:
    x, y = arrays["x"], arrays["y"]
    assert x.ndim == 3 and x.shape[1] == 1 and x.shape[0] == len(y) == len(arrays["positions"])
    assert np.isfinite(x).all()
    assert ((y >= 0) & (y < len(AAMI_CLASSES))).all()
    assert (arrays["positions"] >= 0).all() and (np.diff(arrays["positions"]) >= 0).all()
    assert set(arrays["ids"].tolist()) <= {RECORD}


@fuzz_settings(8)
@given(ext=st.sampled_from(["hea", "dat", "atr"]), ops=mutations())
def test_damaged_mitdb_record(originals: dict[str, bytes], ext: str, ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for e, data in originals.items():
            # binary files: edits in the first 4 KiB, where the structure that matters lives, half of the time
            head = 4096 if (e != "hea" and ops[0][1] < 0.5) else None
            (folder / f"{RECORD}.{e}").write_bytes(mutate(data, ops, head=head) if e == ext else data)
        try:
            arrays, _ = build_mitdb(folder, records=[RECORD], format="native", use_cache=False)
        except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
            assert_names(exc, f"{RECORD}.hea", f"{RECORD}.dat", f"{RECORD}.atr", f"record {RECORD}")
        else:
            accepted()
            _check_result(arrays)


@fuzz_settings(6)
@given(ext=st.sampled_from(["hea", "atr"]), garbage=st.binary(min_size=0, max_size=600))
def test_mitdb_file_replaced_by_random_bytes(originals: dict[str, bytes], ext: str, garbage: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for e, data in originals.items():
            (folder / f"{RECORD}.{e}").write_bytes(garbage if e == ext else data)
        for mode in ("error", "skip"):
            try:
                arrays, _ = build_mitdb(folder, records=[RECORD], format="native", use_cache=False,
                                        unknown_symbols=mode)
            except Exception as exc:  # noqa: BLE001
                assert_names(exc, f"{RECORD}.{ext}", f"record {RECORD}", f"{RECORD}.dat")
            else:
                accepted()
                _check_result(arrays)
