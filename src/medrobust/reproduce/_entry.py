"""``python -m medrobust.reproduce.<step> CONFIG.yaml``: rerun one non-CLI reproduction step by hand."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from medrobust.errors import ConfigError, MedrobustError


def step_main(argv: list[str] | None, run: Callable[[dict[str, Any]], dict[str, Any]], *, module: str, config: str,
              summary: Callable[[dict[str, Any]], str]) -> int:
    """Read the step's YAML, run it, print ``summary(result)``; a medrobust error is one line and exit 2."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m medrobust.reproduce.{module} CONFIG.yaml (a reproduction's configs/{config})",
              file=sys.stderr)
        return 2
    try:
        path = Path(args[0])
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; pass a reproduction's configs/{config}.")
        result = run(yaml.safe_load(path.read_text("utf-8")))
    except MedrobustError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0
