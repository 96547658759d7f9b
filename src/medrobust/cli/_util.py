"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from medrobust.errors import ConfigError


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["format=native", "fs=250"]`` -> ``{"format": "native", "fs": 250}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option format=native.")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with clear errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
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


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [header] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
