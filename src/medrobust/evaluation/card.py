"""JSON result cards and the resumable evaluation state.

A run folder written by :func:`medrobust.evaluation.evaluate` holds::

    RUN_DIR/
      card.json        # the result card (format "medrobust-result-card/1")
      state.json       # progress manifest: settings hash, finished work units, timings
      units/*.npz      # one file per finished work unit (per-sample results)
      examples.npz     # adversarial examples of a few records for the report
      per_sample.npz   # per-sample predictions of the whole evaluation

**Resuming.** Every work unit (a batch at one ε, a bisection batch, a check) is seeded from the run
seed and its own name only, so it gives the same result whenever it runs. A finished unit's
arrays are written atomically (temporary file, ``fsync``, ``os.replace``) and only then recorded in
``state.json``, itself replaced atomically: a process killed at any instant (SIGKILL included)
leaves either the old or the new manifest, never a half-written one. On restart the finished units
are read back and only the rest is computed. The card is always built from the units as read back
from disk, so an interrupted-and-resumed run yields the same card as an uninterrupted one, **except
for its ``timings`` section** (wall-clock times, number of sessions), which is kept apart for that
reason: compare cards with :func:`comparable`.

The card follows RobustBench's model cards (Croce et al., NeurIPS Datasets and Benchmarks 2021):
versions, git commit, seeds, data fingerprint and split, model card, threat
model, attack settings, numerators and denominators, timings and reliability flags.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medrobust.atomic import atomic_write_bytes, atomic_write_json, jsonable, npz_bytes, to_json
from medrobust.errors import ConfigError, DataError
from medrobust.outdir import claim_out_dir

__all__ = ["CARD_FORMAT", "STATE_FORMAT", "CARD_NAME", "STATE_NAME", "UNITS_DIR", "EXAMPLES_NAME", "PER_SAMPLE_NAME",
           "TIMINGS_KEY", "REPORT_FILES", "RunState", "read_npz", "config_hash", "environment", "git_commit",
           "write_card", "load_card", "comparable", "atomic_write_bytes", "atomic_write_json", "npz_bytes", "to_json"]

CARD_FORMAT = "medrobust-result-card/1"
STATE_FORMAT = "medrobust-eval-state/1"
CARD_NAME = "card.json"
STATE_NAME = "state.json"
UNITS_DIR = "units"
EXAMPLES_NAME = "examples.npz"
PER_SAMPLE_NAME = "per_sample.npz"
TIMINGS_KEY = "timings"
REPORT_FILES = ("report.md", "report.html", "figures")
SHARDS_DIR = "shards"
EVALUATION_FILES = (STATE_NAME, CARD_NAME, EXAMPLES_NAME, PER_SAMPLE_NAME, UNITS_DIR, SHARDS_DIR, *REPORT_FILES)
"""Everything an evaluation and its report write into the run folder (what ``overwrite`` removes)."""
"""What ``medrobust report`` (and ``evaluate --report``) writes into a run folder."""


# ------------------------------------------------------------------------------------------ files
def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`npz_bytes` (pickles refused)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}. The file is corrupt or truncated; delete the run folder's "
                        "state (or pass --overwrite) and evaluate again.") from exc


def config_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ state
class RunState:
    """The resumable progress of one evaluation (see the module docstring).

    Parameters
    ----------
    run_dir
        Run folder, or ``None`` to keep everything in memory (no resuming).
    settings_hash
        :func:`config_hash` of everything that determines the results; a run folder holding a
        different hash is refused.
    settings
        Short human-readable summary stored beside the hash.
    overwrite
        Discard an existing state in ``run_dir`` (and only the files an evaluation writes) instead of
        resuming it.
    components
        ``{"model weights": sha256, "data fingerprint": ..., ...}``: recorded so that a refused resume
        says which of them differs.

    Raises
    ------
    DataError
        ``state.json`` is not valid JSON or not a medrobust state.
    ConfigError
        ``state.json`` belongs to an evaluation with other settings (the message names which component
        differs), or ``run_dir`` holds other files and no state (never overwritten without ``overwrite``).
    """

    def __init__(self, run_dir: Path | None, *, settings_hash: str, settings: dict[str, Any],
                 overwrite: bool = False, components: Mapping[str, str] | None = None) -> None:
        self.dir = None if run_dir is None else Path(run_dir)
        self.settings_hash, self.settings = settings_hash, settings
        self.components = dict(components or {})
        self.units: dict[str, dict[str, Any]] = {}
        self.sessions: list[str] = []
        self.resumed = False
        self._memory: dict[str, dict[str, np.ndarray]] = {}
        if self.dir is not None:
            # the one output-folder guard: a foreign non-empty folder is refused; overwrite removes only what an
            # evaluation (and its report) writes; a folder holding a state (or its units) is this evaluation's
            claim_out_dir(self.dir, command="evaluate", overwrite=overwrite, produced=EVALUATION_FILES,
                          resume=True, adopt=(STATE_NAME, UNITS_DIR))
            if (self.dir / STATE_NAME).exists():
                self._load(self.dir / STATE_NAME)
            (self.dir / UNITS_DIR).mkdir(parents=True, exist_ok=True)
        self.sessions.append(_utc_now())

    @property
    def path(self) -> Path | None:
        return None if self.dir is None else self.dir / STATE_NAME

    def _load(self, path: Path) -> None:
        fix = f"delete {path} (or pass --overwrite) to start this evaluation again"
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"the state file {path} is corrupt (not valid JSON: {exc}); {fix}.") from exc
        ok = (isinstance(data, dict) and data.get("format") == STATE_FORMAT and isinstance(data.get("units"), dict)
              and isinstance(data.get("settings_hash"), str) and isinstance(data.get("sessions", []), list))
        if ok:
            ok = all(isinstance(u, dict) and isinstance(u.get("file"), str) and isinstance(u.get("sha256"), str)
                     and isinstance(u.get("seconds"), (int, float)) for u in data["units"].values())
        if not ok:
            raise DataError(f"the state file {path} is not a {STATE_FORMAT} file or is incomplete; {fix}.")
        if data["settings_hash"] != self.settings_hash:
            raise ConfigError(f"{self.dir} holds an evaluation with different settings: {self._difference(data)}; "
                              "choose another --out folder, or pass --overwrite to discard it.")
        self.units = data["units"]
        self.sessions = [str(s) for s in data.get("sessions", [])]
        self.resumed = bool(self.units)

    def _difference(self, data: dict[str, Any]) -> str:
        """Which of the recorded components (model weights, data, settings) differ, with both values."""
        old = data.get("components")
        if isinstance(old, dict) and self.components:
            diffs = [f"the {k} {'differ' if k.endswith('s') else 'differs'} (folder {_abbrev(old.get(k))}, "
                     f"now {_abbrev(v)})"
                     for k, v in self.components.items() if old.get(k) != v]
            if diffs:
                return "; ".join(diffs)
        return f"folder ({_short(data.get('settings', {}))}), now ({_short(self.settings)})"

    def has(self, key: str) -> bool:
        """Whether work unit ``key`` is finished."""
        return key in self.units

    def get(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of finished unit ``key`` (read back from disk, checksum verified)."""
        if key in self._memory:
            return self._memory[key]
        if self.dir is None or key not in self.units:
            raise KeyError(key)
        entry = self.units[key]
        path = self.dir / UNITS_DIR / entry["file"]
        if not path.is_file():
            raise DataError(f"{path} (work unit {key!r} of {self.path}) is missing; delete {self.path} "
                            "(or pass --overwrite) to start the evaluation again.")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise DataError(f"{path} does not match its checksum in {self.path} (corrupt or replaced); delete "
                            f"{self.path} (or pass --overwrite) to start the evaluation again.")
        arrays = read_npz(path)
        self._memory[key] = arrays
        return arrays

    def put(self, key: str, arrays: dict[str, np.ndarray], seconds: float) -> dict[str, np.ndarray]:
        """Record unit ``key``; returns its arrays as they will be read back."""
        data = npz_bytes(arrays)
        if self.dir is None:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                self._memory[key] = {k: z[k] for k in z.files}
            self.units[key] = {"file": "", "sha256": hashlib.sha256(data).hexdigest(), "seconds": float(seconds)}
            return self._memory[key]
        fname = _unit_file(key)
        atomic_write_bytes(self.dir / UNITS_DIR / fname, data)
        self.units[key] = {"file": fname, "sha256": hashlib.sha256(data).hexdigest(), "seconds": float(seconds)}
        self._write_manifest()
        return self.get(key)

    def _write_manifest(self) -> None:
        assert self.dir is not None
        atomic_write_json(self.dir / STATE_NAME, {
            "format": STATE_FORMAT,
            "settings_hash": self.settings_hash,
            "settings": self.settings,
            "components": self.components,
            "sessions": self.sessions,
            "units": self.units,
        })

    def timings(self) -> dict[str, Any]:
        """Wall-clock information (differs between an interrupted and an uninterrupted run)."""
        per_unit = {k: v["seconds"] for k, v in self.units.items()}
        return {
            "started_utc": self.sessions[0] if self.sessions else None,
            "finished_utc": _utc_now(),
            "sessions": len(self.sessions),
            "resumed": self.resumed or len(self.sessions) > 1,
            "seconds_compute": float(sum(per_unit.values())),
            "seconds_per_unit": per_unit,
        }


def _unit_file(key: str) -> str:
    safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in key)
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.npz"


def _abbrev(v: Any) -> str:
    s = str(v)
    return s[:12] + "…" if len(s) > 16 and all(c in "0123456789abcdef" for c in s) else s


def _short(settings: dict[str, Any]) -> str:
    keys = ("checkpoint", "dataset", "split", "n", "attacks", "eps", "seed")
    parts = [f"{k}={settings[k]}" for k in keys if k in settings]
    return ", ".join(parts) if parts else "unknown settings"


# ------------------------------------------------------------------------------------------ environment
def git_commit(path: Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: the medrobust sources)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def environment() -> dict[str, Any]:
    """Versions of medrobust, torch, numpy and Python, and the git commit of the sources."""
    import torch

    from medrobust import __version__

    return {
        "medrobust_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "git": git_commit(),
    }


# ------------------------------------------------------------------------------------------ cards
def write_card(run_dir: Path, card: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/card.json`` atomically."""
    path = Path(run_dir) / CARD_NAME
    atomic_write_json(path, card)
    return path


def load_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result card (``path`` = the run folder or the card file)."""
    p = Path(path)
    if p.is_dir():
        p = p / CARD_NAME
    if not p.is_file():
        raise DataError(f"no result card at {p}; run `medrobust evaluate ... --out {p.parent}` first.")
    try:
        card = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"the result card {p} is not valid JSON ({exc}); evaluate again to rewrite it.") from exc
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DataError(f"{p} is not a {CARD_FORMAT} result card.")
    return card


def comparable(card: dict[str, Any]) -> dict[str, Any]:
    """The card without its ``timings`` section: equal for an interrupted-and-resumed and an uninterrupted run."""
    out = copy.deepcopy(card)
    out.pop(TIMINGS_KEY, None)
    return out
