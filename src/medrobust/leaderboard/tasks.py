"""Leaderboard tasks: one versioned YAML file per task (dataset, evaluated subset, threat rows).

A task fixes everything that makes two result cards comparable, the way RobustBench fixes one threat
model and one evaluation set per leaderboard (Croce et al., NeurIPS Datasets and Benchmarks 2021):

* ``dataset``: the loader name, its options, the split, and the split's data fingerprint (pinned once with
  ``medrobust leaderboard pin``);
* ``subset``: the stratified seeded subset (``limit``, ``seed``; ``null`` limit = the whole split) and the
  SHA-256 of the selected indices;
* ``threats``: one row per threat-model family. A row with ``status: open`` holds the exact
  :class:`~medrobust.evaluation.ProtocolConfig` settings (attacks, radii, mode, seed) an entry's card must
  carry; ``not-evaluated`` / ``not-applicable`` rows say why no card can be entered yet.

Any change of these is a new ``version``; a card of another version is refused.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from medrobust.errors import ConfigError
from medrobust.evaluation.spec import ProtocolConfig

STATUSES = ("open", "not-evaluated", "not-applicable")
COMPARED_PROTOCOL_KEYS = ("version", "attacks", "eps", "norm", "eps_mode", "bounds", "mode", "seed", "minimal_eps")
"""The protocol settings an entry's card must share with its task's threat row (the rest, such as
``batch_size`` or ``n_examples``, are logistics that change no number: every sample has its own random stream)."""


@dataclass(frozen=True)
class ThreatRow:
    """One threat-model family of a task."""

    id: str
    title: str
    status: str
    protocol: ProtocolConfig | None = None
    units: str = ""
    uv: str = ""
    uv_per_unit: float | None = None
    reason: str = ""

    protocol_version: int = 1

    def expected(self) -> dict[str, Any]:
        """The compared protocol settings (:data:`COMPARED_PROTOCOL_KEYS`) as a card records them; ``version`` is the
        task's ``protocol_version``."""
        if self.protocol is None:
            raise ConfigError(f"threat row {self.id!r} is {self.status}: {self.reason}")
        d = {**self.protocol.to_dict(), "version": self.protocol_version}
        return {k: d[k] for k in COMPARED_PROTOCOL_KEYS}


@dataclass(frozen=True)
class Task:
    """A leaderboard task (see the module docstring)."""

    name: str
    version: int
    protocol_version: int
    title: str
    dataset: dict[str, Any]
    subset: dict[str, Any]
    threats: tuple[ThreatRow, ...]
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def threat(self, threat_id: str) -> ThreatRow:
        for row in self.threats:
            if row.id == threat_id:
                return row
        raise ConfigError(f"task {self.name!r} has no threat row {threat_id!r}; rows: {[r.id for r in self.threats]}.")

    @property
    def open_rows(self) -> tuple[ThreatRow, ...]:
        return tuple(r for r in self.threats if r.status == "open")

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (for the site)."""
        rows = []
        for r in self.threats:
            row: dict[str, Any] = {"id": r.id, "title": r.title, "status": r.status, "units": r.units}
            if r.protocol is not None:
                row["protocol"] = r.expected()
            if r.uv:
                row["uv"] = r.uv
            if r.uv_per_unit is not None:
                row["eps_uv"] = [e * r.uv_per_unit for e in r.protocol.eps] if r.protocol else None
            if r.reason:
                row["reason"] = r.reason
            rows.append(row)
        return {"task": self.name, "version": self.version, "protocol_version": self.protocol_version,
                "title": self.title, "dataset": self.dataset, "subset": self.subset, "threats": rows}


def _need(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing '{key}'; see docs/leaderboard.md for the task format.")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise ConfigError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {v!r}.")
    return v


def _row(d: Any, where: str, protocol_version: int) -> ThreatRow:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: each threat row must be a mapping with id, title, status.")
    rid, status = str(_need(d, "id", str, where)), str(_need(d, "status", str, where))
    if status not in STATUSES:
        raise ConfigError(f"{where} row {rid!r}: status must be one of {STATUSES}, got {status!r}.")
    proto = None
    if status == "open":
        spec = dict(_need(d, "protocol", dict, f"{where} row {rid!r}"))
        proto = ProtocolConfig.from_dict({**spec, "name": "custom"})
    elif not d.get("reason"):
        raise ConfigError(f"{where} row {rid!r} is {status}: give the 'reason'.")
    uvpu = d.get("uv_per_unit")
    if uvpu is not None and (isinstance(uvpu, bool) or not isinstance(uvpu, (int, float)) or not math.isfinite(uvpu)
                             or uvpu <= 0):
        raise ConfigError(f"{where} row {rid!r}: uv_per_unit must be a positive number (µV per data unit) or null, "
                          f"got {uvpu!r}.")
    return ThreatRow(id=rid, title=str(d.get("title", rid)), status=status, protocol=proto,
                     units=str(d.get("units", "")), uv=str(d.get("uv", "")),
                     uv_per_unit=None if uvpu is None else float(uvpu), reason=str(d.get("reason", "")).strip(),
                     protocol_version=protocol_version)


def _check_pins(source: str, ds: Mapping[str, Any], sub: Mapping[str, Any]) -> None:
    """The optional fields (each may be null): ``dataset.options`` a mapping, ``dataset.n_total`` a positive
    integer, ``dataset.fingerprint`` and ``subset.indices_sha256`` strings."""
    fields = (("dataset", ds, "options", Mapping, "a mapping"), ("dataset", ds, "fingerprint", str, "a string"),
              ("dataset", ds, "n_total", int, "a positive integer"), ("subset", sub, "indices_sha256", str, "a string"))
    for section, d, key, kind, what in fields:
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind) or (kind is int and v < 1)):
            raise ConfigError(f"{source}: {section}.{key} must be {what} or null, got {v!r}.")


def parse_task(data: Any, *, source: str = "<task>") -> Task:
    """A :class:`Task` from the YAML mapping ``data`` (``source`` names it in errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a task file must be a YAML mapping.")
    version = _need(data, "version", int, source)
    if version < 1:
        raise ConfigError(f"{source}: version must be an integer >= 1, got {version!r}.")
    pv = _need(data, "protocol_version", int, source)
    ds = dict(_need(data, "dataset", dict, source))
    for key in ("name", "split"):
        _need(ds, key, str, f"{source} dataset")
    ds.setdefault("options", {})
    sub = dict(_need(data, "subset", dict, source))
    limit = sub.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{source}: subset.limit must be a positive integer or null, got {limit!r}.")
    _need(sub, "seed", int, f"{source} subset")
    _check_pins(source, ds, sub)
    rows_raw = _need(data, "threats", list, source)
    rows = tuple(_row(r, f"{source} threats[{i}]", pv) for i, r in enumerate(rows_raw))
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids) or not any(r.status == "open" for r in rows):
        raise ConfigError(f"{source}: threat row ids must be unique and at least one row open, got {ids}.")
    return Task(name=str(_need(data, "task", str, source)), version=version, protocol_version=pv,
                title=str(data.get("title", "")), dataset=ds, subset=sub, threats=rows, source=source, raw=dict(data))


def _builtin_dir() -> Path:
    return Path(str(resources.files("medrobust.leaderboard") / "tasks"))


def task_names() -> list[str]:
    """The names of the built-in tasks."""
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def load_task(task: str | os.PathLike[str]) -> Task:
    """A built-in task by name (``"mitdb-intra"``) or a task YAML file by path."""
    p = Path(task)
    if not p.suffix:
        p = _builtin_dir() / f"{task}.yaml"
        if not p.is_file():
            raise ConfigError(f"unknown leaderboard task {str(task)!r}; built-in tasks: {task_names()} "
                              "(or pass a task YAML file).")
    if not p.is_file():
        raise ConfigError(f"task file {p} does not exist; pass a built-in task name ({task_names()}) or a YAML file.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"task file {p} is not valid YAML: {exc}".splitlines()[0]) from exc
    t = parse_task(data, source=str(p))
    if p.parent == _builtin_dir() and t.name != p.stem:   # a built-in task (by name or by its path)
        raise ConfigError(f"{p}: 'task: {t.name}' differs from the file name; rename one of them.")
    return t


def builtin_tasks() -> list[Task]:
    return [load_task(n) for n in task_names()]


# ------------------------------------------------------------------------------------------ data
def load_task_data(task: Task, *, root: str | os.PathLike[str] | None = None) -> Any:
    """The task's split (``dataset.name``/``options``/``split``) read with :func:`medrobust.data.load_dataset`."""
    from medrobust.data import load_dataset

    ds = task.dataset
    return load_dataset(ds["name"], root=root, split=ds["split"], **dict(ds.get("options") or {}))


def subset_indices(task: Task, dataset: Any) -> Any:
    """The evaluated indices: :func:`medrobust.evaluation.select_indices` with the task's ``limit`` and ``seed``
    (stratified by the labels, as ``medrobust evaluate --limit`` selects them)."""
    from medrobust.evaluation.inputs import select_indices

    return select_indices(len(dataset), task.subset.get("limit"), int(task.subset["seed"]), labels=dataset.y.numpy())


def indices_sha256(idx: Any) -> str:
    """SHA-256 of the indices as int64 bytes (the card's ``data.evaluated.indices_sha256``)."""
    import hashlib

    import numpy as np

    return hashlib.sha256(np.asarray(idx).astype(np.int64).tobytes()).hexdigest()


def pin(task: Task, *, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The values a task file records once: the split's fingerprint, its size and the subset's indices hash."""
    data = load_task_data(task, root=root)
    idx = subset_indices(task, data)
    return {"fingerprint": data.meta.fingerprint, "n_total": len(data), "indices_sha256": indices_sha256(idx),
            "n_evaluated": len(idx)}


def evaluate_config(task: Task, *, threat: str = "linf", checkpoint: str | None = None, out: str | None = None,
                    data_dir: str | None = None) -> dict[str, Any]:
    """A ``medrobust evaluate --config`` mapping that evaluates under ``task``'s row ``threat`` (its dataset,
    subset and protocol exactly)."""
    row = task.threat(threat)
    if row.protocol is None:
        raise ConfigError(f"threat row {threat!r} of task {task.name} is {row.status}: {row.reason}")
    raw_row = next(r for r in task.raw["threats"] if r.get("id") == threat)
    ds = task.dataset
    dataset: dict[str, Any] = {"name": ds["name"], "split": ds["split"], "options": dict(ds.get("options") or {})}
    if task.subset.get("limit") is not None:
        dataset["limit"] = task.subset["limit"]
    if data_dir is not None:
        dataset["root"] = data_dir
    protocol = dict(raw_row["protocol"])
    protocol["seed"] = int(task.subset["seed"]) if "seed" not in protocol else protocol["seed"]
    cfg: dict[str, Any] = {"checkpoint": checkpoint, "dataset": dataset, "protocol": protocol, "out": out}
    return {k: v for k, v in cfg.items() if v is not None}
