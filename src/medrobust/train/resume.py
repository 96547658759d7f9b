"""Resuming an interrupted training at the last finished epoch (``medrobust train --resume``).

After every epoch the trainer writes ``train_state.pt`` into its folder (atomically): the weights, the optimiser's
state, every random generator (the epoch order, the defence's own, torch's global one), the best weights so far,
the history and the early-stopping counter — tensors and plain values only, read back with
``torch.load(weights_only=True)`` (no pickled code). A fingerprint of the trainer, its configuration, its
hyper-parameters, the data and the parameter shapes is stored beside them: a state written by another training is
refused, naming what differs. The file is removed when the training finishes (``summary.json`` marks a finished
run). A resumed run is the uninterrupted run: the same epochs with the same random draws.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from medrobust.atomic import atomic_write_bytes, jsonable
from medrobust.errors import CheckpointError

STATE_NAME = "train_state.pt"
STATE_FORMAT = "medrobust-train-state/1"


def fingerprint(trainer: Any, train: Any, val: Any) -> dict[str, str]:
    """What must not change between an interrupted run and its resumption (each part hashed separately)."""
    cfg = {k: v for k, v in asdict(trainer.config).items() if k not in ("progress", "device")}
    parts = {
        "trainer": type(trainer).__name__,
        "configuration": cfg,
        "hyper-parameters": trainer.hyperparameters(),
        "data": [train.meta.fingerprint, val.meta.fingerprint, len(train), len(val)],
        "model": [(n, list(p.shape)) for n, p in trainer.model.state_dict().items()],
    }
    return {k: hashlib.sha256(json.dumps(jsonable(v), sort_keys=True).encode()).hexdigest()
            for k, v in parts.items()}


def save_state(path: Path, *, trainer: Any, epoch: int, gen: torch.Generator, result: Any,
               best_state: dict[str, torch.Tensor] | None, stale: int, stamp: dict[str, str]) -> None:
    """Write the state after ``epoch`` finished epochs."""
    own = getattr(trainer, "generator", None)
    state = {
        "format": STATE_FORMAT, "fingerprint": stamp, "epoch": epoch, "stale": stale,
        "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "order_generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
        "defense_generator": own.get_state() if isinstance(own, torch.Generator) else None,
        "best_state": best_state, "grad_abs": dict(trainer._grad_abs), "dead_reset": trainer._dead_reset,
        "result": json.dumps(jsonable({"history": result.history, "best_epoch": result.best_epoch,
                                       "best_metrics": result.best_metrics, "degenerate": result.degenerate,
                                       "checkpoint": result.checkpoint})),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, stamp: dict[str, str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; refuse a corrupt one or one of another training."""
    fix = f"delete {path} (or rerun with --overwrite instead of --resume) to train from the start"
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path} is not a readable training state ({type(exc).__name__}); {fix}.") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a {STATE_FORMAT} file; {fix}.")
    differ = [k for k in stamp if state["fingerprint"].get(k) != stamp[k]]
    if differ:
        raise CheckpointError(f"{path} belongs to another training (different {', '.join(differ)}); resume with the "
                              f"same settings and data, or {fix}.")
    return state


def restore(trainer: Any, state: dict[str, Any], gen: torch.Generator, result: Any) -> tuple[int, int, Any]:
    """Put the trainer back where the state left it; ``(first epoch to run, stale, best weights)``."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["order_generator"])
    torch.set_rng_state(state["torch_rng"])
    own = getattr(trainer, "generator", None)
    if isinstance(own, torch.Generator) and state["defense_generator"] is not None:
        own.set_state(state["defense_generator"])
    trainer._grad_abs = dict(state["grad_abs"])
    trainer._dead_reset = int(state["dead_reset"])
    saved = json.loads(state["result"])
    result.history, result.best_epoch = saved["history"], saved["best_epoch"]
    result.best_metrics, result.degenerate, result.checkpoint = saved["best_metrics"], saved["degenerate"], saved["checkpoint"]
    return int(state["epoch"]), int(state["stale"]), state["best_state"]
