"""Small helpers shared by CLI commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from medrobust.atomic import atomic_write_json
from medrobust.data.options import check_section, check_value
from medrobust.errors import ConfigError
from medrobust.outdir import MARKER_NAME, claim_out_dir, ensure_writable_dir

__all__ = ["parse_options", "read_yaml", "check_section", "check_value", "claim_out_dir", "ensure_writable_dir",
           "write_json", "format_table", "MARKER_NAME"]

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


write_json = atomic_write_json
"""Atomic JSON write (kept as a name for the commands that import it; it is :func:`medrobust.atomic.atomic_write_json`)."""


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [header] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
