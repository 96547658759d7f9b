"""Validation of a result card against a leaderboard task (``medrobust leaderboard add``).

A card is entered only if it was computed under exactly the task's conditions: the task's protocol
version, dataset (name, split, options, data fingerprint), evaluated subset (limit, seed and the SHA-256 of the
selected indices), attack ensemble and radii of one of its open threat rows, with the weights of the model it
claims (SHA-256), and every accuracy as numerator and denominator. Each failure is one line naming the card
field and the fix. Reliability flags do not refuse a card: the entry is shown as flagged (RobustBench marks
entries whose evaluation is questionable the same way; Croce et al., NeurIPS Datasets and Benchmarks 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from medrobust.leaderboard.tasks import ThreatRow, Task

CARD_FORMAT = "medrobust-result-card/1"


@dataclass
class Validation:
    """The outcome: ``problems`` (one line each; empty = valid), the matched threat row and the flags."""

    task: Task
    row: ThreatRow | None
    problems: list[str] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _get(card: Mapping[str, Any], path: str) -> Any:
    cur: Any = card
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _mapping(v: Any) -> Mapping[str, Any]:
    """``v`` if it is a mapping, else an empty one (a card section of the wrong type counts as missing)."""
    return v if isinstance(v, Mapping) else {}


def _same(a: Any, b: Any) -> bool:
    """Equality of JSON values, numbers compared as numbers (``30`` equals ``30.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _data_problems(card: Mapping[str, Any], task: Task) -> list[str]:
    ds, out = task.dataset, []
    fix = f"evaluate on the task's data (see `medrobust leaderboard tasks {task.name}`)"
    for key in ("name", "split"):
        got = _get(card, f"data.{key}")
        if got != ds[key]:
            out.append(f"data.{key}: the card has {got!r}, task {task.name} needs {ds[key]!r}; {fix}.")
    opts = _mapping(_get(card, "data.options"))
    for key, want in (ds.get("options") or {}).items():   # a loader may record an option under another name:
        if key in opts and not _same(opts[key], want):      # the fingerprint and the indices hash still hold it
            out.append(f"data.options.{key}: the card has {opts.get(key)!r}, task {task.name} needs {want!r}; "
                       f"load the dataset with {key}={want!r}.")
    want_fp, got_fp = ds.get("fingerprint"), _get(card, "data.fingerprint")
    if want_fp and got_fp != want_fp:
        out.append(f"data.fingerprint: the card's data ({str(got_fp)[:12]}...) is not the task's "
                   f"({want_fp[:12]}...); evaluate on the published files of {ds['name']} (unmodified).")
    return out


def _subset_problems(card: Mapping[str, Any], task: Task) -> list[str]:
    sub, out = task.subset, []
    sel = _mapping(_get(card, "data.evaluated.selection"))
    limit, seed = sub.get("limit"), sub.get("seed")
    n_total = task.dataset.get("n_total")
    whole = limit is None or (n_total is not None and limit >= n_total)
    fix = (f"evaluate with --limit {limit} --seed {seed}" if not whole else "evaluate the whole split (no --limit)")
    if not whole and (sel.get("limit") != limit or sel.get("seed") != seed):
        out.append(f"data.evaluated.selection: the card's subset is limit={sel.get('limit')!r} "
                   f"seed={sel.get('seed')!r}, task {task.name} needs limit={limit} seed={seed}; {fix}.")
    want_hash, got_hash = sub.get("indices_sha256"), _get(card, "data.evaluated.indices_sha256")
    if want_hash and got_hash != want_hash:
        out.append(f"data.evaluated.indices_sha256: the card evaluated other samples ({str(got_hash)[:12]}...) than "
                   f"task {task.name} ({want_hash[:12]}...); {fix}.")
    return out


def _protocol_diff(card: Mapping[str, Any], row: ThreatRow) -> list[str]:
    proto, out = _mapping(card.get("protocol")), []
    for key, want in row.expected().items():
        got = proto.get(key)
        if _same(got, want):
            continue
        if key == "version":
            out.append(f"protocol.version: the card was evaluated under protocol version {got!r}, task "
                       f"{row.id} needs version {want}; re-evaluate with a medrobust release of protocol version "
                       f"{want}.")
        else:
            out.append(f"protocol.{key}: the card has {got!r}, threat row {row.id!r} needs {want!r}; evaluate with "
                       f"the task's protocol (`medrobust leaderboard tasks`).")
    return out


def match_row(card: Mapping[str, Any], task: Task, threat: str | None = None) -> tuple[ThreatRow | None, list[str]]:
    """The open threat row whose protocol the card carries (or ``threat``), and the differences otherwise."""
    if threat is not None:
        row = task.threat(threat)
        if row.protocol is None:
            return None, [f"threat row {row.id!r} of task {task.name} is {row.status}: {row.reason}"]
        return row, _protocol_diff(card, row)
    diffs: list[tuple[ThreatRow, list[str]]] = [(r, _protocol_diff(card, r)) for r in task.open_rows]
    for r, d in diffs:
        if not d:
            return r, []
    mode = _get(card, "protocol.eps_mode")
    best = next(((r, d) for r, d in diffs if r.protocol is not None and r.protocol.eps_mode == mode), diffs[0])
    return best[0], best[1]


def _ratio_problems(where: str, r: Any, n: int | None) -> list[str]:
    if not isinstance(r, Mapping):
        return [f"{where}: missing; the card must give every accuracy as numerator and denominator "
                "(re-evaluate with medrobust evaluate)."]
    out = []
    for key in ("numerator", "denominator"):
        v = r.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            out.append(f"{where}.{key}: missing or not a count ({v!r}); the card must give every accuracy as "
                       "numerator and denominator (re-evaluate with medrobust evaluate).")
    if out:
        return out
    num, den = r["numerator"], r["denominator"]
    if n is not None and den != n:
        out.append(f"{where}.denominator: {den} is not the number of evaluated samples ({n}); the card is "
                   "inconsistent: re-evaluate.")
    value = r.get("value")
    if num > den or (den and not (isinstance(value, (int, float)) and math.isclose(value, num / den, abs_tol=1e-9))):
        out.append(f"{where}.value: {value!r} is not {num}/{den}; the card was edited: re-evaluate.")
    return out


def _result_problems(card: Mapping[str, Any], row: ThreatRow | None) -> list[str]:
    n = _get(card, "data.evaluated.n")
    out = _ratio_problems("clean.accuracy", _get(card, "clean.accuracy"), n)
    results = card.get("results")
    eps = [] if row is None or row.protocol is None else list(row.protocol.eps)
    if not isinstance(results, list) or (eps and len(results) != len(eps)):
        return out + [f"results: expected one entry per ε {eps}, got "
                      f"{len(results) if isinstance(results, list) else results!r}; re-evaluate."]
    for i, res in enumerate(results):
        if not isinstance(res, Mapping):
            out.append(f"results[{i}]: {res!r} is not a result entry (eps, robust_accuracy); re-evaluate.")
            continue
        if eps and not _same(res.get("eps"), eps[i]):
            out.append(f"results[{i}].eps: {res.get('eps')!r} is not the task's ε {eps[i]}; re-evaluate.")
        out += _ratio_problems(f"results[{i}].robust_accuracy", res.get("robust_accuracy"), n)
    return out


def validate(card: Mapping[str, Any], task: Task, *, weights_sha256: str | None,
             threat: str | None = None) -> Validation:
    """Check ``card`` against ``task`` (see the module docstring).

    ``weights_sha256`` is the SHA-256 of the checkpoint the entry claims (its ``model.safetensors``); ``None``
    reports that the entry has no checkpoint to check.
    """
    if card.get("format") != CARD_FORMAT:
        return Validation(task, None, [f"format: {card.get('format')!r} is not a {CARD_FORMAT} result card; pass "
                                       "the card.json written by medrobust evaluate."])
    row, problems = match_row(card, task, threat)
    problems = _data_problems(card, task) + _subset_problems(card, task) + problems
    got_w = _get(card, "model.card.weights_sha256")
    if weights_sha256 is None:
        problems.append("weights: no checkpoint given to check the card's weights against; pass --checkpoint DIR "
                        "or --zoo ID.")
    elif got_w != weights_sha256:
        problems.append(f"model.card.weights_sha256: the card measured weights {str(got_w)[:12]}..., the checkpoint "
                        f"holds {weights_sha256[:12]}...; evaluate this checkpoint (or pass the checkpoint that "
                        "was evaluated).")
    used = _get(card, "precision.used")
    if used not in (None, "fp32"):
        problems.append(f"precision.used: the card was evaluated in {used}; the board compares float32 evaluations: "
                        "re-evaluate with --precision fp32.")
    problems += _result_problems(card, row)
    flags = card.get("flags")
    flags = [f for f in flags if isinstance(f, Mapping)] if isinstance(flags, list) else []
    return Validation(task, row, problems, [dict(f) for f in flags])
