"""What an evaluation runs on: the evaluated samples, and checks of the model against the data.

Everything here runs before the first attack, so that bad input gives one clear line
(:class:`~medrobust.errors.ConfigError`, :class:`~medrobust.errors.DataError`,
:class:`~medrobust.errors.CheckpointError`) instead of an error from deep inside torch.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from medrobust.errors import CheckpointError, ConfigError, DataError
from medrobust.evaluation.spec import AttackSpec


def select_indices(n: int, limit: int | None, seed: int = 0, *, labels: Any = None) -> np.ndarray:
    """All ``n`` indices, or a seeded subset of ``limit`` of them in increasing order.

    With ``labels`` (one class index per sample) the subset is **stratified**: each class gets
    ``limit · n_c / n`` samples (largest remainders round up; every class present gets at least one when
    ``limit`` allows), drawn at random within the class. Test splits are stored ordered by record, so
    the first ``limit`` rows would be a few records only; a stratified subset keeps the split's class mix.
    Without ``labels``: a seeded random subset (``default_rng(seed).permutation(n)[:limit]``).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a positive integer, got {limit!r}.")
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.permutation(n)[:limit])
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise ConfigError(f"labels has {len(y)} entries for {n} samples.")
    classes, counts = np.unique(y, return_counts=True)
    quota = _allocate(counts, limit)
    chosen = [rng.permutation(np.nonzero(y == c)[0])[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _allocate(counts: np.ndarray, limit: int) -> np.ndarray:
    """Samples per class in proportion to ``counts`` summing to ``limit`` (largest remainder; each class >= 1
    when ``limit >= len(counts)``)."""
    exact = limit * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: limit - int(quota.sum())]] += 1
    if limit >= len(counts):
        for c in np.nonzero(quota == 0)[0]:
            quota[int(np.argmax(quota))] -= 1
            quota[c] = 1
    return quota


def check_compatible(model_card: Mapping[str, Any] | None, dataset: Any) -> list[str]:
    """Refuse a checkpoint whose classes or input shape differ from the dataset's; return notes.

    Raises
    ------
    CheckpointError
        Different class names/order, number of classes, input shape or sampling rate.
    """
    if not model_card:
        return []
    meta = dataset.meta
    ck_classes = list(model_card.get("classes") or [])
    if ck_classes and ck_classes != list(meta.classes):
        raise CheckpointError(
            f"the checkpoint predicts classes {ck_classes} but dataset {meta.name!r} has {list(meta.classes)}; "
            "evaluate it on the dataset (and options) it was trained on."
        )
    shape = [int(s) for s in (model_card.get("input_shape") or [])]
    if shape and shape != list(dataset.input_shape):
        raise CheckpointError(
            f"the checkpoint expects inputs of shape {shape} (leads, samples) but dataset {meta.name!r} gives "
            f"{list(dataset.input_shape)}; load the data with the options used for training "
            f"(training data options: {model_card.get('data', {}).get('options', 'unknown')})."
        )
    fs = float(model_card.get("fs") or 0.0)
    if fs and meta.fs and abs(fs - float(meta.fs)) > 1e-6:
        raise CheckpointError(f"the checkpoint was trained at fs = {fs:g} Hz but the data is at {meta.fs:g} Hz; "
                              "load the data at the training rate.")
    return _compatibility_notes(model_card, meta)


def _compatibility_notes(model_card: Mapping[str, Any], meta: Any) -> list[str]:
    """Differences between training and evaluation data that do not prevent the evaluation."""
    notes: list[str] = []
    units = model_card.get("units")
    if units and meta.units and units != meta.units:
        notes.append(f"checkpoint units {units!r} differ from the data's {meta.units!r}")
    train_data = model_card.get("data") or {}
    if train_data.get("name") == meta.name:
        a, b = train_data.get("options") or {}, meta.options or {}
        skip = {"balance", "cache_dir", "use_cache", "download", "leads_used", "records", "root"}
        diff = sorted(k for k in set(a) & set(b) if k not in skip and a[k] != b[k])
        if diff:
            notes.append("data options differ from training: " + ", ".join(f"{k}={b[k]!r} (training {a[k]!r})"
                                                                          for k in diff))
    return notes


def check_labels(y: np.ndarray, classes: Sequence[str], *, dataset: str) -> None:
    """Refuse labels outside ``0 .. K-1`` for the model's ``K = len(classes)`` classes.

    Raises
    ------
    DataError
        Some label is negative or ``>= K``; the message names the dataset, the labels and the classes.
    """
    y = np.asarray(y)
    bad = np.unique(y[(y < 0) | (y >= len(classes))])
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DataError(f"dataset {dataset!r} has labels {shown} outside the model's {len(classes)} classes "
                        f"{list(classes)} (labels must be 0..{len(classes) - 1}); load the dataset the model was "
                        "trained on, with the same options.")


def state_dict_hash(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names and bytes, in sorted order)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_members(attacks: Sequence[AttackSpec]) -> tuple[list[AttackSpec], list[str]]:
    """The registered members of the ensemble, and the labels of the optional ones skipped.

    Raises
    ------
    ConfigError
        A non-optional attack is not registered (the message lists the available ones), or none is.
    """
    from medrobust.attacks import available_attacks
    from medrobust.attacks.registry import attack_class

    registered = set(available_attacks())
    members, skipped = [], []
    for spec in attacks:
        if spec.name not in registered:
            if spec.optional:
                skipped.append(spec.label)
                continue
            attack_class(spec.name)  # raises a ConfigError listing the available attacks
        members.append(spec)
    if not members:
        raise ConfigError("none of the protocol's attacks is registered; available: "
                          + ", ".join(sorted(registered)) + ".")
    return members, skipped


def check_indices(idx: np.ndarray, n: int) -> None:
    """Refuse an empty selection or indices outside the dataset."""
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise ConfigError(f"indices must select at least one of the {n} samples.")
