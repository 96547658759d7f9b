"""Where datasets and caches live.

Resolution order for a dataset root: the explicit ``root`` argument (``--data-dir`` on the CLI),
then the ``MEDROBUST_DATA`` environment variable, then the user cache
(``$XDG_CACHE_HOME/medrobust/data`` or ``~/.cache/medrobust/data``). A root may point either at the
dataset folder itself or at a parent folder holding it under its conventional name
(``mitdb/``, ``cinc2017/`` ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from medrobust.errors import DataError


def user_cache_dir() -> Path:
    """Return medrobust's per-user cache directory (not created)."""
    env = os.environ.get("MEDROBUST_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medrobust"


def default_data_root() -> Path:
    """Return ``$MEDROBUST_DATA`` if set, else the user cache's ``data`` folder."""
    env = os.environ.get("MEDROBUST_DATA")
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def resolve_dataset_dir(
    root: str | os.PathLike[str] | None,
    subdir: str,
    marker: str,
    *,
    must_exist: bool = True,
) -> Path:
    """Find a dataset folder.

    Parameters
    ----------
    root
        Explicit root, or ``None`` to use ``MEDROBUST_DATA`` / the user cache.
    subdir
        Conventional folder name of the dataset under a data root (e.g. ``"mitdb"``).
    marker
        A file name (or glob) that identifies the dataset folder (e.g. ``"100.hea"``).
    must_exist
        Raise :class:`DataError` when no folder is found.
    """
    base = Path(root).expanduser() if root is not None else default_data_root()
    candidates = [base, base / subdir]
    for cand in candidates:
        if cand.is_dir() and any(cand.glob(marker)):
            return cand
    if not must_exist:
        return base / subdir if base.name != subdir else base
    how = "the root argument / --data-dir" if root is not None else "MEDROBUST_DATA or the user cache"
    raise DataError(
        f"dataset folder not found: looked for '{marker}' in {candidates[0]} and {candidates[1]} "
        f"(from {how}). Fix: pass root=/path/to/{subdir} (CLI: --data-dir), or set "
        f"MEDROBUST_DATA to the folder that contains '{subdir}/'."
    )
