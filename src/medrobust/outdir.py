"""One guard for output folders: create or reuse one without ever overwriting something silently.

Every command and Python entry point that writes a folder of results (``train``, ``evaluate``,
``attack``, :func:`medrobust.evaluation.evaluate`, :func:`medrobust.evaluation.export.attack_dataset`)
claims it with :func:`claim_out_dir`: an absent or empty folder is taken; a folder the same command
wrote (a marker file :data:`MARKER_NAME` names the command) is resumed or refused according to the
caller; anything else is refused with one line naming the folder and ``--overwrite``, which removes
only what that command writes. Bottom layer: it imports only :mod:`medrobust.atomic` and
:mod:`medrobust.errors`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from medrobust.atomic import atomic_write_json
from medrobust.errors import ConfigError

__all__ = ["MARKER_NAME", "claim_out_dir", "ensure_writable_dir"]

MARKER_NAME = ".medrobust-out.json"
"""File recording which command created an output folder (``{"command": ..., "produced": [...]}``)."""


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create ``path`` and check it is writable."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".medrobust-write-test-{os.getpid()}"  # one per process: ranks of a torchrun share --out
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {p} is not a writable folder ({exc.strerror}); choose another path.") from exc
    return p



def _read_marker(folder: Path) -> dict[str, Any] | None:
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def _plain_names(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts or name in ("", ".", MARKER_NAME):
            raise ValueError(f"claim_out_dir: produced entries must be plain relative names, got {name!r}.")
    return names


def _refusal(out: Path, what: str, command: str, owner: str | None, entries: list[Path],
             produced: tuple[str, ...]) -> str:
    whose = (f"the output of an earlier `medrobust {command}`" if owner == command else
             f"written by `medrobust {owner}`" if owner else f"not created by `medrobust {command}`")
    listed = ", ".join(sorted(e.name for e in entries)[:5]) + (" ..." if len(entries) > 5 else "")
    return (f"{what} {out} is not empty ({listed}; {whose}); choose another folder, or pass "
            f"--overwrite to replace what `medrobust {command}` writes there ({', '.join(produced)}).")


def claim_out_dir(path: str | os.PathLike[str], *, command: str, overwrite: bool = False,
                  produced: Iterable[str] = (), resume: bool = False, adopt: Iterable[str] = (),
                  what: str = "--out") -> Path:
    """Create or reuse an output folder without ever overwriting something silently.

    The folder is accepted when it is absent or empty, or when ``command`` created it (a marker file
    :data:`MARKER_NAME` records the command) and it holds none of the entries in ``produced`` (or
    ``resume`` is true: the caller continues the run found there). Otherwise, a folder that another
    command or a person filled, or one holding this command's earlier output, is refused with a
    :class:`ConfigError` naming the folder. With ``overwrite`` the folder is always accepted and the entries
    named in ``produced`` (files or folders directly under ``path``) are removed first; anything else
    is left alone.

    Parameters
    ----------
    path
        The output folder (created with its parents).
    command
        The command claiming it, e.g. ``"train"``, ``"evaluate"``, ``"attack"``.
    overwrite
        The user's ``--overwrite``.
    produced
        Names (relative to ``path``) the command writes; what ``overwrite`` removes.
    resume
        Accept this command's own folder as it is (a resumable run decides itself what to keep).
    adopt
        Names whose presence marks a folder this command wrote before markers existed (e.g. a run's state file):
        such a folder is treated as this command's.
    what
        How the folder is named to the user (the flag).

    Returns
    -------
    Path
        The folder, which now holds the marker.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {out} is a file, not a folder; choose a folder path.")
    produced = _plain_names(produced)
    ensure_writable_dir(out, what)
    entries = [e for e in out.iterdir() if e.name != MARKER_NAME]
    marker = _read_marker(out)
    owner = marker["command"] if marker else (command if any((out / a).exists() for a in adopt) else None)
    ours = owner == command
    earlier = [n for n in produced if (out / n).exists() or (out / n).is_symlink()]
    if overwrite:
        for name in earlier:
            _remove(out / name)
    elif entries and not (ours and (resume or not earlier)):
        raise ConfigError(_refusal(out, what, command, owner, entries, produced))
    if marker is None or not ours:
        atomic_write_json(out / MARKER_NAME, {"command": command, "produced": list(produced)})
    return out
