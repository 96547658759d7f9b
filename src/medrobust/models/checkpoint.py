"""Safe checkpoints: safetensors weights plus a JSON card.

A checkpoint is a folder::

    CKPT/
      model.safetensors   # tensors only: loading never unpickles anything
      card.json           # architecture + kwargs, classes, fs, input shape, units, training config,
                          # data fingerprint, medrobust and torch versions, weights SHA-256

``load_checkpoint`` rebuilds the architecture from the registry and loads the tensors; nothing in
a checkpoint can execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medrobust.errors import CheckpointError
from medrobust.models.registry import build_model

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "medrobust-checkpoint/1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    classes: list[str] | tuple[str, ...],
    fs: float,
    input_shape: tuple[int, ...] | list[int],
    units: str = "",
    training: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    arch: tuple[str, dict[str, Any]] | None = None,
) -> Path:
    """Write ``model`` to the checkpoint folder ``path`` (created; files replaced atomically).

    Parameters
    ----------
    model
        A model built with :func:`medrobust.models.build_model` (or pass ``arch``).
    path
        Checkpoint folder.
    classes, fs, input_shape, units
        What the model expects and predicts.
    training
        Training configuration and outcome (epochs, optimiser, defence hyper-parameters ...).
    data
        Dataset card (name, split, fingerprint, options).
    extra
        Anything else JSON-serialisable.
    arch
        ``(registered name, kwargs)`` when the model was not built by ``build_model``.
    """
    from medrobust import __version__

    if arch is None:
        info = getattr(model, "medrobust_arch", None)
        if info is None:
            raise CheckpointError(
                "save_checkpoint: the model's architecture is unknown; build it with "
                "medrobust.models.build_model(name, ...) or pass arch=(name, kwargs)."
            )
        arch = (info["name"], info["kwargs"])
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp_fd, tmp_weights = tempfile.mkstemp(dir=out, prefix=".weights.", suffix=".tmp")
    os.close(tmp_fd)
    try:
        save_file(tensors, tmp_weights)
        digest = _sha256(Path(tmp_weights))
        card = {
            "format": FORMAT,
            "architecture": arch[0],
            "kwargs": arch[1],
            "classes": list(classes),
            "fs": float(fs),
            "input_shape": [int(s) for s in input_shape],
            "units": units,
            "training": training or {},
            "data": data or {},
            "extra": extra or {},
            "medrobust_version": __version__,
            "torch_version": torch.__version__,
            "weights_sha256": digest,
        }
        os.chmod(tmp_weights, 0o644)
        os.replace(tmp_weights, out / WEIGHTS_NAME)
    except BaseException:
        Path(tmp_weights).unlink(missing_ok=True)
        raise
    _atomic_write_bytes(out / CARD_NAME, json.dumps(card, indent=2, default=str).encode())
    return out


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint's JSON card (``path`` = folder, card or weights file)."""
    folder = _folder(Path(path))
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise CheckpointError(f"checkpoint card missing: {card_path}. A checkpoint folder holds {CARD_NAME} and {WEIGHTS_NAME}.")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON ({exc}); re-save the checkpoint.") from exc
    missing = [k for k in ("format", "architecture", "kwargs", "classes", "fs", "input_shape") if k not in card]
    if missing or card.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint card {card_path} is not a {FORMAT} card (missing {missing or 'format'}); "
            "re-save it with medrobust.models.save_checkpoint."
        )
    return card


def _folder(path: Path) -> Path:
    if path.is_file() and path.name in (CARD_NAME, WEIGHTS_NAME):
        return path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}. Pass the folder written by save_checkpoint / medrobust train.")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (expected {CARD_NAME} + {WEIGHTS_NAME} inside).")
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint folder; returns it in eval mode with ``model.card`` set.

    Raises
    ------
    CheckpointError
        Missing or corrupt files, a weights hash that does not match the card, or weights that do
        not fit the recorded architecture.
    """
    card = read_card(path)
    folder = _folder(Path(path))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights missing: {weights}.")
    digest = _sha256(weights)
    if card.get("weights_sha256") and digest != card["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match its card (SHA-256 {digest[:12]}... vs {card['weights_sha256'][:12]}...): "
            "the file is truncated or was replaced; re-save the checkpoint."
        )
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}. The file is corrupt; re-save the checkpoint.") from exc
    model = build_model(card["architecture"], **card["kwargs"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {weights} do not fit architecture {card['architecture']!r} {card['kwargs']}: {exc}"
        ) from exc
    model.to(map_location)
    model.eval()
    model.card = card  # type: ignore[assignment]
    return model
