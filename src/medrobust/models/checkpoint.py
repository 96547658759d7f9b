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
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torch import nn

from medrobust.atomic import atomic_write_bytes
from medrobust.errors import CheckpointError, MedrobustError
from medrobust.models.registry import build_model

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "medrobust-checkpoint/1"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UnverifiedWeightsWarning(UserWarning):
    """Weights loaded with ``trust_unverified=True`` whose hash could not be checked against the card."""


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
    blob = save_tensors(tensors)
    digest = hashlib.sha256(blob).hexdigest()
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
    atomic_write_bytes(out / WEIGHTS_NAME, blob)
    atomic_write_bytes(out / CARD_NAME, json.dumps(card, indent=2, default=str).encode())
    return out


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint's JSON card (``path`` = folder, card or weights file)."""
    folder = _folder(Path(path))
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise CheckpointError(f"checkpoint card missing: {card_path}. A checkpoint folder holds {CARD_NAME} and {WEIGHTS_NAME}.")
    try:
        card = json.loads(card_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON ({exc}); re-save the checkpoint.") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint card {card_path}: {exc.strerror}.") from exc
    if not isinstance(card, dict):
        raise CheckpointError(f"checkpoint card {card_path} must hold a JSON object, got {type(card).__name__}; "
                              "re-save the checkpoint.")
    missing = [k for k in ("format", "architecture", "kwargs", "classes", "fs", "input_shape") if k not in card]
    if missing or card.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint card {card_path} is not a {FORMAT} card (missing {missing or 'format'}); "
            "re-save it with medrobust.models.save_checkpoint."
        )
    _check_card_types(card, card_path)
    return card


_CARD_TYPES: dict[str, tuple[str, Any]] = {
    "architecture": ("a model name", lambda v: isinstance(v, str)),
    "kwargs": ("a mapping of architecture arguments", lambda v: isinstance(v, dict)),
    "classes": ("a list of class names", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)),
    "fs": ("a sampling rate >= 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
    "input_shape": ("a list of positive integers",
                    lambda v: isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                          for d in v)),
    "weights_sha256": ("a SHA-256 hex string or null", lambda v: v is None or isinstance(v, str)),
}


def _check_card_types(card: dict[str, Any], card_path: Path) -> None:
    for key, (what, ok) in _CARD_TYPES.items():
        if key in card and not ok(card[key]):
            raise CheckpointError(f"checkpoint card {card_path}: {key!r} must be {what}, got {card[key]!r:.80}; "
                                  "re-save the checkpoint.")


def _folder(path: Path) -> Path:
    if path.is_file() and path.name in (CARD_NAME, WEIGHTS_NAME):
        return path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}. Pass the folder written by save_checkpoint / medrobust train.")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (expected {CARD_NAME} + {WEIGHTS_NAME} inside).")
    return path


def verify_weights(card: dict[str, Any], weights: Path, *, trust_unverified: bool = False) -> tuple[str, bool]:
    """Check ``weights`` against the card's ``weights_sha256``; returns ``(actual SHA-256, verified)``.

    A card without a hash, or a hash that differs from the file's, is refused with a
    :class:`CheckpointError` unless ``trust_unverified`` is true; then an
    :class:`UnverifiedWeightsWarning` is issued and ``verified`` is ``False``.
    """
    digest = file_sha256(weights)
    recorded = card.get("weights_sha256")
    if isinstance(recorded, str) and recorded == digest:
        return digest, True
    if not isinstance(recorded, str) or not recorded:
        problem = f"its card {weights.parent / CARD_NAME} records no weights_sha256"
    else:
        problem = (f"{weights} does not match its card (SHA-256 {digest[:12]}... vs {recorded[:12]}...): "
                   "the file is truncated or was replaced")
    if not trust_unverified:
        raise CheckpointError(
            f"refusing to load unverified weights {weights}: {problem}. Re-save the checkpoint with "
            "medrobust.models.save_checkpoint, or pass trust_unverified=True (CLI: --trust-unverified) "
            "if you trust the file; the flag is recorded in the model card."
        )
    warnings.warn(f"loading UNVERIFIED weights {weights} ({problem}); recorded as weights_verified=false.",
                  UnverifiedWeightsWarning, stacklevel=3)
    return digest, False


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                    trust_unverified: bool = False) -> nn.Module:
    """Rebuild a model from a checkpoint folder; returns it in eval mode with ``model.card`` set.

    The weights file must hash to the card's ``weights_sha256``. ``trust_unverified=True`` loads
    weights whose card has no hash (or a different one) with an :class:`UnverifiedWeightsWarning`.
    ``model.card`` then holds ``weights_verified`` (``True`` only when the hash matched) and
    ``weights_sha256`` = the hash of the weights actually loaded (the card's value, if different,
    is kept as ``weights_sha256_recorded``).

    Raises
    ------
    CheckpointError
        Missing or corrupt files, a missing or mismatching weights hash (without ``trust_unverified``),
        or weights that do not fit the recorded architecture.
    """
    card = read_card(path)
    folder = _folder(Path(path))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights missing: {weights}.")
    digest, verified = verify_weights(card, weights, trust_unverified=trust_unverified)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}. The file is corrupt; re-save the checkpoint.") from exc
    try:
        model = build_model(card["architecture"], **card["kwargs"])
    except MedrobustError as exc:
        raise CheckpointError(f"checkpoint card {folder / CARD_NAME}: {exc}") from exc
    except Exception as exc:  # kwargs come from a file: any failure of the constructor is a bad card
        raise CheckpointError(f"checkpoint card {folder / CARD_NAME}: architecture {card['architecture']!r} "
                              f"cannot be built from kwargs {card['kwargs']} ({type(exc).__name__}: {exc}); "
                              "re-save the checkpoint.") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"weights in {weights} do not fit architecture {card['architecture']!r} {card['kwargs']}: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from exc
    model.to(map_location)
    model.eval()
    recorded = card.get("weights_sha256")
    card = {**card, "weights_sha256": digest, "weights_verified": verified}
    if recorded != digest:
        card["weights_sha256_recorded"] = recorded
    model.card = card  # type: ignore[assignment]
    return model
