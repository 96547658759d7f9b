"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import yaml

from medrobust.atomic import atomic_write_json
from medrobust.data.options import check_section, check_value
from medrobust.errors import ConfigError

__all__ = ["parse_options", "read_yaml", "check_section", "check_value", "claim_out_dir", "ensure_writable_dir",
           "write_json", "format_table", "MARKER_NAME"]

MARKER_NAME = ".medrobust-out.json"
"""Marker file a command leaves in the output folder it created (records the command and what it writes)."""


def parse_options(pairs: list[str] | None, *, flag: str = "--option") -> dict[str, Any]:
    """``["format=native", "fs=250"]`` -> ``{"format": "native", "fs": 250}`` (values parsed as YAML).

    Only the syntax is checked here; the keys and value types are checked by whoever receives the options
    (:func:`medrobust.data.check_dataset_options` for dataset options) before any work starts.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} format=native.")
        if key in out:
            raise ConfigError(f"{flag} {key} is given twice ({out[key]!r} and {value!r}); give it once.")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", "") or "not valid YAML")
            raise ConfigError(f"{flag} {pair!r}: the value {value!r} is not a valid YAML value ({problem}); "
                              "quote it or write a list as [a, b].") from None
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with clear errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; is it the right file?") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}.") from None
    except (yaml.YAMLError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = str(getattr(exc, "problem", "") or type(exc).__name__)
        raise ConfigError(f"config file {p} is not valid YAML{at}: {problem}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping (key: value), got {type(data).__name__}.")
    return data


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create ``path`` and check it is writable."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".medrobust-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {p} is not a writable folder ({exc.strerror}); choose another path.") from exc
    return p


write_json = atomic_write_json
"""Atomic JSON write (kept as a name for the commands that import it; it is :func:`medrobust.atomic.atomic_write_json`)."""


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


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [header] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
