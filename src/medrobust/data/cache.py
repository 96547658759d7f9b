"""Atomic npz cache of built arrays, keyed by every build parameter and verified by a checksum.

Each cache file holds the built arrays, the source files' ``fingerprint`` and ``__checksum__``: a SHA-256
over every array's name, dtype, shape and bytes. :func:`load_cached` recomputes it; a file whose arrays
were edited, truncated or lack a required key is removed with a :class:`CacheWarning` and the caller
rebuilds from the source files, so an edited cache is never used and never reported under the original
data's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from medrobust.atomic import atomic_save_npz
from medrobust.paths import user_cache_dir

CACHE_VERSION = 2
CHECKSUM_KEY = "__checksum__"

NPZ_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, struct.error, OverflowError,
    NotImplementedError,  # zipfile: "zip file version 10.9", "That compression method is not supported"
    RuntimeError,         # zipfile: "File ... is encrypted, password required"
)
"""What reading a damaged ``.npz`` with :func:`numpy.load` can raise (found by the tests/fuzz suites)."""


class CacheWarning(UserWarning):
    """A cache file was unreadable or did not match its checksum; it is removed and rebuilt."""


def cache_key(params: dict[str, Any]) -> str:
    """Stable hash of JSON-serialisable parameters (plus the cache format version)."""
    blob = json.dumps({"v": CACHE_VERSION, **params}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_path(kind: str, params: dict[str, Any], cache_dir: str | os.PathLike[str] | None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "cache"
    return base / f"{kind}-{cache_key(params)}.npz"


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (key order does not matter)."""
    h = hashlib.sha256()
    for key in sorted(k for k in arrays if k != CHECKSUM_KEY):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _discard(path: Path, why: str) -> None:
    warnings.warn(f"cache file {path} {why}; it is removed and the data rebuilt from the source files.",
                  CacheWarning, stacklevel=3)
    path.unlink(missing_ok=True)


def load_cached(path: Path, *, required: Iterable[str] = ("fingerprint",)) -> dict[str, np.ndarray] | None:
    """Arrays from ``path``, or ``None`` when absent or not trustworthy.

    A file that cannot be read, lacks a key of ``required`` or the checksum, or whose arrays do not match
    their checksum is removed with a :class:`CacheWarning`, and ``None`` is returned (the caller rebuilds).
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except NPZ_READ_ERRORS as exc:
        _discard(path, f"is unreadable ({type(exc).__name__})")
        return None
    missing = [k for k in (*required, CHECKSUM_KEY) if k not in arrays]
    if missing:
        _discard(path, f"lacks {missing}")
        return None
    if str(arrays.pop(CHECKSUM_KEY)) != arrays_checksum(arrays):
        _discard(path, "does not match its checksum (its arrays were edited or damaged)")
        return None
    return arrays


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and their checksum to ``path`` atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if k != CHECKSUM_KEY}
    atomic_save_npz(path, {**arrays, CHECKSUM_KEY: np.asarray(arrays_checksum(arrays))})


def file_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over the contents of ``paths`` (in the given order, names included)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def file_stats(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) per file: a cheap cache-key component that changes with the files."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return out
