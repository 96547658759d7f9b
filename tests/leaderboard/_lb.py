"""Helpers of the leaderboard tests: the TEST task on the synthetic beats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

N_PER_CLASS, LIMIT = 8, 24
PROTOCOL = {"attacks": [{"name": "pgd", "label": "pgd5", "steps": 5, "rel_step_size": 0.25, "random_start": True},
                        {"name": "spsa", "nb_samples": 4, "steps": 2}],
            "eps": [0.02, 0.1], "mode": "sequential", "minimal_eps": False, "seed": 0}


def task_dict(**changes: Any) -> dict[str, Any]:
    """The TEST task (synthetic test beats, stratified 24 of 40, the PROTOCOL row), pinned from the data."""
    from medrobust.data import load_dataset
    from medrobust.evaluation.inputs import select_indices
    from medrobust.leaderboard.tasks import indices_sha256

    limit, seed = changes.pop("limit", LIMIT), changes.pop("seed", 0)
    ds = load_dataset("synthetic", split="test", n_per_class=N_PER_CLASS)
    idx = select_indices(len(ds), limit, seed, labels=ds.y.numpy())
    d = {"task": "synth-test", "version": 1, "protocol_version": 1, "title": "synthetic beats (test task)",
         "dataset": {"name": "synthetic", "options": {"n_per_class": N_PER_CLASS}, "split": "test",
                     "fingerprint": ds.meta.fingerprint, "n_total": len(ds)},
         "subset": {"limit": limit, "seed": seed, "indices_sha256": indices_sha256(idx)},
         "threats": [{"id": "linf", "title": "L∞ (test)", "status": "open", "units": "normalized [0, 1]",
                      "protocol": PROTOCOL},
                     {"id": "l2-uap", "title": "L2 UAP", "status": "not-evaluated", "reason": "no UAP card"}]}
    d.update(changes)
    return d


def write_task(path: Path, **changes: Any) -> Path:
    path.write_text(yaml.safe_dump(task_dict(**changes), sort_keys=False, allow_unicode=True))
    return path


def claim_survived(folder: Path, e: int) -> int:
    """Edit an evaluation folder consistently (``per_sample.npz`` and ``card.json``) so that the first sample broken
    at radius ``e`` is claimed robust; returns that sample's dataset index. Validation alone accepts the edit."""
    import json

    import numpy as np

    from medrobust.atomic import npz_bytes
    from medrobust.evaluation.card import read_npz

    ps = read_npz(folder / "per_sample.npz")
    broken = np.nonzero((ps["adv_pred"][e] != ps["y"]) & (ps["clean_pred"] == ps["y"]))[0]
    assert len(broken) >= 1, f"no sample is broken at radius {e}: nothing to claim"
    k = int(broken[0])
    ps["adv_pred"][e, k] = ps["y"][k]
    (folder / "per_sample.npz").write_bytes(npz_bytes(ps))
    card = json.loads((folder / "card.json").read_text())
    ra = card["results"][e]["robust_accuracy"]
    ra["numerator"] += 1
    ra["value"] = ra["numerator"] / ra["denominator"]
    (folder / "card.json").write_text(json.dumps(card))
    return int(ps["index"][k])
