"""The board: validated entries (``medrobust leaderboard add``) and the seeded re-run check (``--verify``).

A board is a folder (default ``leaderboard/`` at the repository root)::

    BOARD/entries/<task>/<name>.json             # an entry of the task's first open threat row (format
                                                 # "medrobust-leaderboard-entry/1")
    BOARD/entries/<task>/<name>.<threat>.json    # the same model's entry in another row (e.g. l2-uap)

An entry holds the summary shown on the site (clean and robust accuracy with Wilson 95 % intervals at each ε,
defence, architecture, parameters, training budget, date, flags) and the path of its result card relative to
the board folder, with the card's SHA-256 so that a card changed after validation is noticed at build time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medrobust.atomic import atomic_write_json
from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.card import load_card, read_npz
from medrobust.evaluation.metrics import wilson_interval
from medrobust.leaderboard.tasks import Task, ThreatRow, builtin_tasks, load_task
from medrobust.leaderboard.validate import Validation, validate

ENTRY_FORMAT = "medrobust-leaderboard-entry/1"
ENTRIES_DIR = "entries"
VERIFY_SAMPLES = 32


def default_board() -> Path:
    """``leaderboard/`` in the current folder (the repository root when run from there)."""
    return Path("leaderboard")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ratio(r: Mapping[str, Any]) -> dict[str, Any]:
    num, den = int(r["numerator"]), int(r["denominator"])
    lo, hi = wilson_interval(num, den)
    return {"value": num / den, "numerator": num, "denominator": den, "ci95": [lo, hi]}


def _find_task(card: Mapping[str, Any], task: str | os.PathLike[str] | None, zoo_entry: Any) -> Task:
    if task is not None:
        return load_task(task)
    if zoo_entry is not None:
        return load_task(zoo_entry.task)
    name, split = card.get("data", {}).get("name"), card.get("data", {}).get("split")
    opts = card.get("data", {}).get("options") or {}
    hits = [t for t in builtin_tasks() if t.dataset["name"] == name and t.dataset["split"] == split
            and all(opts.get(k) == v for k, v in (t.dataset.get("options") or {}).items())]
    if len(hits) != 1:
        raise ConfigError(f"cannot tell the card's task from its data ({name}/{split}); pass --task "
                          f"(one of {[t.name for t in builtin_tasks()]}).")
    return hits[0]


def _model_info(zoo_entry: Any, card: Mapping[str, Any], checkpoint: str | None, meta: Mapping[str, Any]) -> dict:
    mcard = (card.get("model") or {}).get("card") or {}
    if zoo_entry is not None:
        info = {"zoo_id": zoo_entry.id, "architecture": zoo_entry.architecture, "defence": zoo_entry.defence,
                "parameters": zoo_entry.parameters, "budget": zoo_entry.budget}
    else:
        tr = mcard.get("training") or {}
        info = {"zoo_id": None, "architecture": mcard.get("architecture") or "unknown",
                "defence": tr.get("trainer") or "unknown", "parameters": None,
                "budget": (f"{(tr.get('config') or {}).get('epochs')} epochs" if tr else "not recorded")}
        if checkpoint is not None:
            from medrobust.models import load_checkpoint

            info["parameters"] = sum(p.numel() for p in load_checkpoint(checkpoint).parameters())
    info.update({k: v for k, v in meta.items() if v is not None})
    return info


def summarize(card: Mapping[str, Any], v: Validation, *, entry_id: str, card_path: Path, board: Path,
              model: Mapping[str, Any], report: Path | None = None, verified: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """The entry written to the board (see the module docstring)."""
    row = v.row
    assert row is not None and row.protocol is not None
    robust = []
    for res in card["results"]:
        item = {"eps": float(res["eps"]), **_ratio(res["robust_accuracy"])}
        if row.uv_per_unit is not None:
            item["eps_uv"] = float(res["eps"]) * row.uv_per_unit
        per = (card.get("threat_model") or {}).get("eps_uv_per_sample")
        if per:
            item["eps_uv_per_sample"] = per[len(robust)]
        robust.append(item)
    finished = (card.get("timings") or {}).get("finished_utc")
    return {
        "format": ENTRY_FORMAT, "id": entry_id, "task": v.task.name, "task_version": v.task.version,
        "protocol_version": v.task.protocol_version, "threat": row.id, "threat_title": row.title,
        "model": dict(model), "clean": _ratio(card["clean"]["accuracy"]), "robust": robust,
        "worst_case": "pointwise worst case over the ensemble " + ", ".join(a["label"] for a in
                                                                          card["protocol"]["attacks"]),
        "flags": [{"code": f.get("code"), "message": f.get("message")} for f in v.flags],
        "flagged": bool(v.flags), "date": finished or _dt.date.today().isoformat(),
        "added": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "card": os.path.relpath(card_path, board), "card_sha256": _sha256_file(card_path),
        "report": None if report is None else os.path.relpath(report, board),
        "weights_sha256": (card.get("model") or {}).get("card", {}).get("weights_sha256"),
        "verified": dict(verified) if verified else None,
    }


def entry_file_name(name: str, row: ThreatRow | None, task: Task) -> str:
    """``<name>.json`` in the task's first open row, ``<name>.<row id>.json`` in another: one model has one entry
    per threat row."""
    first = task.open_rows[0].id if task.open_rows else None
    return f"{name}.json" if row is None or row.id == first else f"{name}.{row.id}.json"


def _card_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / "card.json" if p.is_dir() else p


def add(card_path: str | os.PathLike[str], *, board: str | os.PathLike[str] | None = None,
        task: str | os.PathLike[str] | None = None, threat: str | None = None, zoo_id: str | None = None,
        checkpoint: str | None = None, entry_id: str | None = None, meta: Mapping[str, Any] | None = None,
        verify: bool = False, verify_samples: int = VERIFY_SAMPLES, data_root: str | None = None,
        zoo_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Validate the card and write its entry to ``board``; returns the entry.

    The model is a zoo entry (``zoo_id``; found by the card's weights hash when neither it nor ``checkpoint``
    is given) or a checkpoint folder (``checkpoint`` + ``entry_id``). ``verify`` re-runs a seeded sample of the
    evaluation (:func:`verify_card`) before the entry is written.

    Raises
    ------
    ConfigError
        The card does not satisfy the task: one line per problem (field and fix).
    """
    from medrobust import zoo as zoomod

    path = _card_file(card_path)
    card = load_card(path)
    board = Path(board) if board is not None else default_board()
    zentry = _zoo_entry(card, zoo_id, checkpoint, zoo_root)
    t = _find_task(card, task, zentry)
    if zentry is not None and zentry.task != t.name:
        raise ConfigError(f"zoo entry {zentry.id!r} belongs to task {zentry.task}, not {t.name}; pass the right "
                          "--task.")
    weights = zentry.weights_sha256 if zentry is not None else (_checkpoint_sha(checkpoint) if checkpoint else None)
    v = validate(card, t, weights_sha256=weights, threat=threat)
    if not v.ok:
        raise ConfigError(f"{path} is not a valid {t.name} v{t.version} entry:\n  " + "\n  ".join(v.problems))
    name = entry_id or (zentry.id.split("/")[1] if zentry is not None else None)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError("--id NAME is required for a model outside the zoo (letters, digits, '-', '_').")
    verified = None
    if verify:
        model = (zoomod.load(zentry.id, root=zoo_root) if zentry is not None else _load_ckpt(checkpoint))
        verified = verify_card(path, v.task, v.row, model, data_root=data_root, n=verify_samples)
        if not verified["ok"]:
            raise ConfigError(f"{path}: --verify failed: {verified['message']}")
    report = path.parent / "report.html"
    entry = summarize(card, v, entry_id=name, card_path=path, board=board,
                      model=_model_info(zentry, card, checkpoint, meta or {}),
                      report=report if report.is_file() else None, verified=verified)
    dest = board / ENTRIES_DIR / t.name / entry_file_name(name, v.row, t)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest, entry)
    return entry


def _zoo_entry(card: Mapping[str, Any], zoo_id: str | None, checkpoint: str | None, zoo_root: Any) -> Any:
    """The zoo entry named ``zoo_id``, or (no ``checkpoint`` either) the one entry holding the card's weights."""
    from medrobust import zoo as zoomod

    if zoo_id is not None:
        return zoomod.get(zoo_id, root=zoo_root)
    if checkpoint is not None:
        return None
    w = ((card.get("model") or {}).get("card") or {}).get("weights_sha256")
    hits = [e for e in zoomod.list_entries(root=zoo_root) if e.weights_sha256 == w]
    if len(hits) > 1:
        raise ConfigError(f"the card's weights are in several zoo entries ({[e.id for e in hits]}); pass --zoo ID.")
    return hits[0] if hits else None


def _checkpoint_sha(checkpoint: str) -> str:
    p = Path(checkpoint)
    weights = (p.parent if p.is_file() else p) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no model.safetensors there; pass the checkpoint folder.")
    return _sha256_file(weights)


def _load_ckpt(checkpoint: str | None) -> Any:
    from medrobust.models import load_checkpoint

    return load_checkpoint(checkpoint)


# ------------------------------------------------------------------------------------------ verify
def _consistency(card: Mapping[str, Any], ps: Mapping[str, np.ndarray]) -> list[str]:
    """The card's numerators recounted from its ``per_sample.npz``."""
    from medrobust.leaderboard.tasks import indices_sha256

    out = []
    y, clean = ps["y"], ps["clean_pred"]
    if indices_sha256(ps["index"]) != card["data"]["evaluated"]["indices_sha256"]:
        out.append("per_sample.npz holds other samples than the card's data.evaluated.indices_sha256")
    if int((clean == y).sum()) != card["clean"]["accuracy"]["numerator"]:
        out.append(f"clean.accuracy.numerator {card['clean']['accuracy']['numerator']} != "
                   f"{int((clean == y).sum())} correct in per_sample.npz")
    for e, res in enumerate(card["results"]):
        got = int((ps["adv_pred"][e] == y).sum())
        if got != res["robust_accuracy"]["numerator"]:
            out.append(f"results[{e}].robust_accuracy.numerator {res['robust_accuracy']['numerator']} != {got} "
                       "robust in per_sample.npz")
    return out


def verify_card(card_path: str | os.PathLike[str], task: Task, row: ThreatRow | None, model: Any, *,
                data_root: str | None = None, n: int = VERIFY_SAMPLES, seed: int = 0,
                dataset: Any = None) -> dict[str, Any]:
    """Re-run the card's evaluation on a seeded stratified sample of ``n`` of its samples and compare.

    Every sample has its own random stream (keyed by its dataset index), so the re-run gives each sample the
    outcome it had in the full run. A row with a universal attack (``uap``) is re-run on all the card's samples
    (its perturbation is fitted on all of them) and compared on the sample. Checked: the card's numerators against
    its ``per_sample.npz``, and the re-run's clean prediction and robust/broken outcome at every ε against
    ``per_sample.npz`` on the sample.
    Returns ``{"ok", "message", "n", "mismatches", ...}``.
    """
    from medrobust.evaluation import evaluate
    from medrobust.evaluation.ensemble import has_universal
    from medrobust.evaluation.inputs import select_indices
    from medrobust.leaderboard.tasks import load_task_data

    path = _card_file(card_path)
    card = load_card(path)
    ps_path = path.parent / "per_sample.npz"
    if not ps_path.is_file():
        raise DataError(f"--verify needs {ps_path} (written beside card.json by medrobust evaluate); copy it "
                        "with the card.")
    ps = read_npz(ps_path)
    problems = _consistency(card, ps)
    if problems:
        return {"ok": False, "message": "; ".join(problems), "n": 0, "mismatches": []}
    if row is None or row.protocol is None:
        raise ConfigError("--verify needs the card's threat row (validate the card first).")
    data = dataset if dataset is not None else load_task_data(task, root=data_root)
    pos = select_indices(len(ps["index"]), min(n, len(ps["index"])), seed, labels=ps["y"])
    idx = ps["index"][pos]
    config = replace(row.protocol, n_examples=0, large_eps_check=False)
    # A universal perturbation depends on every sample it was fitted on: re-run it on all of them, compare the sample.
    universal = has_universal(row.protocol.attacks)
    at = pos if universal else np.arange(len(pos))
    with tempfile.TemporaryDirectory(prefix="medrobust-verify-") as tmp:
        evaluate(model, data, config, out_dir=Path(tmp) / "run", indices=ps["index"] if universal else idx,
                 progress=False, model_card=getattr(model, "card", None))
        re = read_npz(Path(tmp) / "run" / "per_sample.npz")
    y = ps["y"][pos]
    mism = []
    for j in range(len(pos)):
        if int(re["clean_pred"][at[j]]) != int(ps["clean_pred"][pos[j]]):
            mism.append({"index": int(idx[j]), "what": "clean prediction", "card": int(ps["clean_pred"][pos[j]]),
                         "rerun": int(re["clean_pred"][at[j]])})
        for e in range(len(row.protocol.eps)):
            a, b = bool(ps["adv_pred"][e][pos[j]] == y[j]), bool(re["adv_pred"][e][at[j]] == y[j])
            if a != b:
                mism.append({"index": int(idx[j]), "what": f"robust at eps={row.protocol.eps[e]}", "card": a,
                             "rerun": b})
    msg = ("all samples agree" if not mism else
           f"{len(mism)} outcome(s) differ from the card's per_sample.npz, e.g. sample {mism[0]['index']}: "
           f"{mism[0]['what']} card {mism[0]['card']} vs re-run {mism[0]['rerun']}")
    return {"ok": not mism, "message": msg, "n": int(len(pos)), "seed": seed, "mismatches": mism[:20],
            "indices": [int(i) for i in idx]}


# ------------------------------------------------------------------------------------------ read
def read_entries(board: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every entry of ``board`` (checked: format, and the card unchanged since validation)."""
    base = Path(board) if board is not None else default_board()
    out = []
    for p in sorted((base / ENTRIES_DIR).glob("*/*.json")):
        try:
            e = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"board entry {p} is unreadable ({exc}); re-add it with medrobust leaderboard add."
                            ) from exc
        if not isinstance(e, dict) or e.get("format") != ENTRY_FORMAT:
            raise DataError(f"{p} is not a {ENTRY_FORMAT} entry; re-add it with medrobust leaderboard add.")
        card = (base / e["card"]).resolve()
        if not card.is_file() or _sha256_file(card) != e["card_sha256"]:
            raise DataError(f"board entry {p}: its card {card} is missing or changed since it was validated; "
                            "restore the card or re-add the entry (medrobust leaderboard add).")
        out.append({**e, "_card_path": str(card), "_entry_path": str(p)})
    return out
