"""Helpers shared by benchmark scripts: paths, environment record, incremental JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
RESULTS = REPO / "benchmarks" / "results"


def environment() -> dict[str, Any]:
    """Machine, versions, git commit and load average at the start of the run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    import medrobust

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "medrobust": medrobust.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg(),
        "git_commit": commit,
    }


class ResultFile:
    """A JSON result written atomically after every update, so a killed run keeps what it measured."""

    def __init__(self, name: str, command: str) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path = RESULTS / name
        self.data: dict[str, Any] = {"command": command, "environment": environment(), "complete": False}
        self.flush()

    def update(self, **items: Any) -> None:
        self.data.update(items)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=float) + "\n")
        os.replace(tmp, self.path)
