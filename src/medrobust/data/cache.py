"""Atomic npz cache of built arrays, keyed by every build parameter."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.paths import user_cache_dir

CACHE_VERSION = 1


def cache_key(params: dict[str, Any]) -> str:
    """Stable hash of JSON-serialisable parameters (plus the cache format version)."""
    blob = json.dumps({"v": CACHE_VERSION, **params}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_path(kind: str, params: dict[str, Any], cache_dir: str | os.PathLike[str] | None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "cache"
    return base / f"{kind}-{cache_key(params)}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays from ``path``, or ``None`` when absent or unreadable (a broken file is removed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        path.unlink(missing_ok=True)
        return None


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
