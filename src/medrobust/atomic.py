"""The one atomic writer: every file medrobust writes goes through :func:`atomic_write_bytes`.

A temporary file in the destination folder is written, flushed and ``fsync``-ed, then renamed over the
destination (``os.replace`` is atomic on POSIX and Windows), and the folder is ``fsync``-ed so the rename is
durable. A reader (or a run killed with SIGKILL) therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (file mode ``mode``, default ``0o666 & ~umask``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomic UTF-8 text write."""
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(v: Any) -> Any:
    """``v`` with numpy scalars/arrays and paths converted, non-finite floats as ``None``."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, Path):
        return str(v)
    return v


def to_json(data: Any) -> str:
    """JSON text, indented, key order kept (section order is meaningful to readers)."""
    return json.dumps(jsonable(data), indent=2, allow_nan=False, default=str) + "\n"


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Atomic JSON write (non-finite floats become ``null``)."""
    atomic_write_bytes(path, to_json(data).encode("utf-8"))


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An uncompressed ``.npz`` archive in memory (no pickled objects)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def atomic_save_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Atomic ``.npz`` write."""
    atomic_write_bytes(path, npz_bytes(arrays))
