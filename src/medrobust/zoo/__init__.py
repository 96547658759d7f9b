"""The model zoo: trained checkpoints loadable in one line, each with the result card it was measured with.

>>> import medrobust.zoo as zoo
>>> [e.id for e in zoo.list()]                     # doctest: +SKIP
['cinc2017/resnet1d-ce', 'mitdb-intra/cnn1-ce', ...]
>>> model = zoo.load("mitdb-intra/cnn1-ce")         # doctest: +SKIP

Like RobustBench's model zoo (Croce et al., NeurIPS Datasets and Benchmarks 2021), every entry names its task,
architecture, defence, parameter count and training budget. An entry is a folder
``entries/<task>/<name>/`` (package data) holding::

    zoo.json            # the entry's description (format "medrobust-zoo-entry/1")
    card.json           # the checkpoint card (architecture, classes, fs, units, weights_sha256)
    model.safetensors   # the weights (shipped entries only)
    probe.json          # logits of the model on a fixed seeded input: load() is checked without any data
    eval/card.json      # the result card of its leaderboard evaluation (optional)
    eval/per_sample.npz # that evaluation's per-sample outcomes (for `medrobust leaderboard add --verify`)
    eval/<row>/...      # the same two files for another threat row of the task (e.g. eval/l2-uap/)

Weights too large to ship are described by ``source: {url, sha256}`` and looked up in a local cache
(``MEDROBUST_ZOO_CACHE``, default ``~/.cache/medrobust/zoo``) as ``<cache>/<task>/<name>/model.safetensors``;
medrobust never downloads them itself.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medrobust.atomic import atomic_write_bytes, atomic_write_json
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.checkpoint import file_sha256

__all__ = ["ZooEntry", "list", "list_entries", "get", "load", "add", "probe_logits", "zoo_root", "cache_dir",
           "ENTRY_FORMAT", "PROBE_ATOL"]

ENTRY_FORMAT = "medrobust-zoo-entry/1"
ENTRY_NAME = "zoo.json"
PROBE_NAME = "probe.json"
EVAL_DIR = "eval"
EVAL_FILES = ("card.json", "per_sample.npz", "report.html")
PROBE_ATOL = 1e-4
"""Largest absolute difference between the recorded and the recomputed probe logits (float32 on any CPU)."""
PROBE_SEED, PROBE_N = 0, 2


def zoo_root() -> Path:
    """The folder of the shipped entries (``medrobust/zoo/entries``)."""
    return Path(__file__).resolve().parent / "entries"


def cache_dir() -> Path:
    """Where URL entries' weights are looked up: ``MEDROBUST_ZOO_CACHE`` or ``~/.cache/medrobust/zoo``."""
    env = os.environ.get("MEDROBUST_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medrobust" / "zoo"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo entry (see the module docstring); ``folder`` is where its files are."""

    id: str
    task: str
    architecture: str
    defence: str
    parameters: int
    budget: str
    weights_sha256: str
    source: Any
    folder: Path
    notes: str = ""

    @property
    def shipped(self) -> bool:
        return self.source == "shipped"

    @property
    def eval_card(self) -> Path | None:
        """The entry's leaderboard result card, if it has one."""
        p = self.folder / EVAL_DIR / "card.json"
        return p if p.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        return {"format": ENTRY_FORMAT, "id": self.id, "task": self.task, "architecture": self.architecture,
                "defence": self.defence, "parameters": self.parameters, "budget": self.budget,
                "weights_sha256": self.weights_sha256, "source": self.source, "notes": self.notes,
                "card": "card.json", "eval_card": f"{EVAL_DIR}/card.json" if self.eval_card else None}


def _check_id(entry_id: str) -> tuple[str, str]:
    parts = entry_id.split("/") if isinstance(entry_id, str) else []
    ok = len(parts) == 2 and all(p and all(c.isalnum() or c in "-_." for c in p) and not p.startswith(".")
                                 for p in parts)
    if not ok:
        raise ConfigError(f"zoo id {entry_id!r} must be 'TASK/NAME' (letters, digits, '-', '_', '.'), "
                          "e.g. 'mitdb-intra/cnn1-ce'.")
    return parts[0], parts[1]


def _read_entry(folder: Path) -> ZooEntry:
    path = folder / ENTRY_NAME
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"zoo entry {path} is unreadable ({exc}); re-add it with `medrobust zoo add`.") from exc
    if not isinstance(d, dict) or d.get("format") != ENTRY_FORMAT:
        raise CheckpointError(f"{path} is not a {ENTRY_FORMAT} file; re-add the entry with `medrobust zoo add`.")
    src = d.get("source")
    if not (src == "shipped" or (isinstance(src, dict) and isinstance(src.get("url"), str)
                                 and isinstance(src.get("sha256"), str))):
        raise CheckpointError(f"{path}: source must be \"shipped\" or {{url, sha256}}, got {src!r}.")
    params = d.get("parameters")
    if params is not None and (isinstance(params, bool) or not isinstance(params, int) or params < 0):
        raise CheckpointError(f"{path}: parameters must be a count (an integer >= 0), got {params!r}; re-add the "
                              "entry with `medrobust zoo add`.")
    try:
        return ZooEntry(id=str(d["id"]), task=str(d["task"]), architecture=str(d["architecture"]),
                        defence=str(d["defence"]), parameters=d["parameters"], budget=str(d["budget"]),
                        weights_sha256=str(d["weights_sha256"]), source=src, folder=folder,
                        notes=str(d.get("notes", "")))
    except KeyError as exc:
        raise CheckpointError(f"{path}: missing field {exc}; re-add the entry with `medrobust zoo add`.") from exc


def list_entries(task: str | None = None, *, root: str | os.PathLike[str] | None = None) -> list[ZooEntry]:
    """Every zoo entry (of ``task`` only, if given), sorted by id."""
    base = Path(root) if root is not None else zoo_root()
    found = [_read_entry(p.parent) for p in sorted(base.glob(f"*/*/{ENTRY_NAME}"))]
    return [e for e in found if task is None or e.task == task]


def get(entry_id: str, *, root: str | os.PathLike[str] | None = None) -> ZooEntry:
    """The entry ``entry_id`` (``"TASK/NAME"``)."""
    task, name = _check_id(entry_id)
    base = Path(root) if root is not None else zoo_root()
    folder = base / task / name
    if not (folder / ENTRY_NAME).is_file():
        known = [e.id for e in list_entries(root=base)]
        raise ConfigError(f"no zoo entry {entry_id!r}; known entries: {known}.")
    return _read_entry(folder)


def probe_input(input_shape: Any, *, seed: int = PROBE_SEED, n: int = PROBE_N) -> torch.Tensor:
    """The fixed probe: ``n`` samples uniform in [0, 1) of ``input_shape``, from ``torch.Generator`` seeded ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand((n, *[int(d) for d in input_shape]), generator=g, dtype=torch.float32)


def probe_logits(model: nn.Module, input_shape: Any, *, seed: int = PROBE_SEED, n: int = PROBE_N) -> torch.Tensor:
    """The model's logits on :func:`probe_input` (eval mode, CPU, no gradient)."""
    x = probe_input(input_shape, seed=seed, n=n)
    model = model.eval()
    with torch.no_grad():
        return model.cpu()(x).float()


def _weights_folder(entry: ZooEntry) -> Path:
    """The folder holding the entry's ``model.safetensors`` + ``card.json`` (the cache for URL entries)."""
    if entry.shipped:
        return entry.folder
    src = entry.source
    folder = cache_dir() / entry.task / entry.id.split("/")[1]
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"zoo entry {entry.id!r} is not shipped: download {src['url']} (SHA-256 {src['sha256']}) yourself and "
            f"save it as {weights} (or set MEDROBUST_ZOO_CACHE to the folder holding {entry.id}/model.safetensors); "
            "medrobust never downloads weights.")
    digest = file_sha256(weights)
    if digest != src["sha256"]:
        raise CheckpointError(f"{weights} (zoo entry {entry.id!r}) has SHA-256 {digest[:12]}..., not the entry's "
                              f"{src['sha256'][:12]}...: the download is truncated or another file; download "
                              f"{src['url']} again.")
    card = entry.folder / "card.json"
    if not (folder / "card.json").is_file() or (folder / "card.json").read_bytes() != card.read_bytes():
        atomic_write_bytes(folder / "card.json", card.read_bytes())
    return folder


def load(entry_id: str, *, map_location: str | torch.device = "cpu", verify_probe: bool = True,
         root: str | os.PathLike[str] | None = None) -> nn.Module:
    """The model of zoo entry ``entry_id`` in eval mode (``model.card`` = its checkpoint card).

    The weights must hash to the entry's ``weights_sha256`` (and to the URL entry's ``sha256``);
    ``verify_probe`` also recomputes the logits on the entry's probe input and compares them with
    ``probe.json`` (to :data:`PROBE_ATOL`). Any mismatch raises :class:`~medrobust.errors.CheckpointError`.
    """
    from medrobust.models import load_checkpoint

    entry = get(entry_id, root=root)
    folder = _weights_folder(entry)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"zoo entry {entry.id!r}: {weights} is missing; re-add it with `medrobust zoo add`.")
    digest = file_sha256(weights)
    if digest != entry.weights_sha256:
        raise CheckpointError(f"zoo entry {entry.id!r}: {weights} has SHA-256 {digest[:12]}..., the entry records "
                              f"{entry.weights_sha256[:12]}...; the file was replaced or is corrupt: restore it "
                              "(git checkout) or re-add the entry with `medrobust zoo add`.")
    model = load_checkpoint(folder, map_location="cpu")
    if verify_probe:
        check_probe(model, entry)
    return model.to(map_location)


def check_probe(model: nn.Module, entry: ZooEntry) -> float:
    """The largest difference between ``model``'s probe logits and ``probe.json``; raises above :data:`PROBE_ATOL`."""
    path = entry.folder / PROBE_NAME
    try:
        rec = json.loads(path.read_text())
        expected = torch.tensor(rec["logits"], dtype=torch.float32)
        shape, seed, n = [int(d) for d in rec["input_shape"]], int(rec["seed"]), int(rec["n"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"zoo entry {entry.id!r}: {path} is missing or unreadable ({exc}); re-add the entry "
                              "with `medrobust zoo add`.") from exc
    try:
        got = probe_logits(model, shape, seed=seed, n=n)
    except RuntimeError as exc:   # a negative size, or an input the architecture cannot take
        raise CheckpointError(f"zoo entry {entry.id!r}: the probe input (n={n}, shape {tuple(shape)}) recorded in "
                              f"{path} does not run through the model ({str(exc).splitlines()[0]}); the model is not "
                              "the one the entry was made from.") from exc
    if got.shape != expected.shape:
        raise CheckpointError(f"zoo entry {entry.id!r}: probe logits have shape {tuple(got.shape)}, {path} records "
                              f"{tuple(expected.shape)}; the model is not the one the entry was made from.")
    diff = float((got - expected).abs().max())
    if not diff <= PROBE_ATOL:
        raise CheckpointError(f"zoo entry {entry.id!r}: logits on the probe input differ from {path} by {diff:.3g} "
                              f"(> {PROBE_ATOL}); the weights or the architecture's code changed since the entry "
                              "was made: restore them, or re-add the entry (and re-evaluate it).")
    return diff


# ------------------------------------------------------------------------------------------ add
def _defence(card: Mapping[str, Any]) -> str:
    tr = card.get("training") or {}
    return str(tr.get("defense") or tr.get("defence") or tr.get("trainer") or "unknown")


def _budget(card: Mapping[str, Any]) -> str:
    tr = card.get("training") or {}
    cfg = tr.get("config") or {}
    parts = []
    if cfg.get("epochs") is not None:
        parts.append(f"{cfg['epochs']} epochs")
    if tr.get("best_epoch") is not None:
        parts.append(f"best epoch {tr['best_epoch']}")
    if cfg.get("batch_size") is not None:
        parts.append(f"batch {cfg['batch_size']}")
    if cfg.get("max_batches_per_epoch"):
        parts.append(f"≤ {cfg['max_batches_per_epoch']} batches/epoch")
    if cfg.get("device"):
        parts.append(str(cfg["device"]))
    return ", ".join(parts) or "not recorded"


def _eval_folder(eval_card: Path) -> Path:
    folder = eval_card.parent if eval_card.is_file() else eval_card
    if not (folder / "card.json").is_file():
        raise ConfigError(f"--eval-card {eval_card}: no card.json there; pass the evaluation's card.json or its run "
                          "folder (medrobust evaluate --out).")
    return folder


def _eval_files(folder: Path) -> dict[str, bytes]:
    """The evaluation's files to copy into the entry (name -> bytes), read before anything is written; the
    per-sample file recompressed (the same arrays: record ids and int64 outcomes shrink ~10x)."""
    import io

    import numpy as np

    out = {}
    for name in EVAL_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".npz"):
            out[name] = path.read_bytes()
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"--eval-card: {path} is not an .npz file of plain arrays ({exc}); pass the run "
                              "folder written by medrobust evaluate.") from exc
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        out[name] = buf.getvalue()
    return out


def add(checkpoint: str | os.PathLike[str], *, entry_id: str, eval_card: str | os.PathLike[str] | None = None,
        defence: str | None = None, budget: str | None = None, notes: str = "", url: str | None = None,
        root: str | os.PathLike[str] | None = None, overwrite: bool = False) -> ZooEntry:
    """Copy a checkpoint folder (and its evaluation's card + per-sample file) into the zoo as ``entry_id``.

    The checkpoint must load with a verified weights hash; ``probe.json`` is computed here. With ``url`` the
    weights are not copied (a URL entry; the file must later be put in :func:`cache_dir`).
    """
    from medrobust.models import load_checkpoint

    task, name = _check_id(entry_id)
    eval_files = {} if eval_card is None else _eval_files(_eval_folder(Path(eval_card)))
    model = load_checkpoint(checkpoint)
    card = dict(model.card)  # type: ignore[arg-type]
    shape = card["input_shape"]
    logits = probe_logits(model, shape)
    if torch.allclose(logits[0], logits[1], atol=1e-3, rtol=0.0):
        raise ConfigError(f"{checkpoint}: the model gives both probe inputs the same logits {logits[0].tolist()}, so "
                          "the probe could not check that load() restores these weights; a model constant on random "
                          "inputs (dead units, a collapsed training) is not shipped: inspect or retrain it.")
    base = Path(root) if root is not None else zoo_root()
    folder = base / task / name
    if folder.exists():
        if not overwrite:
            raise ConfigError(f"zoo entry {entry_id!r} exists ({folder}); pass --overwrite to replace it.")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    src_dir = Path(checkpoint)
    src_dir = src_dir.parent if src_dir.is_file() else src_dir
    shutil.copyfile(src_dir / "card.json", folder / "card.json")
    if url is None:
        shutil.copyfile(src_dir / "model.safetensors", folder / "model.safetensors")
    if eval_files:
        (folder / EVAL_DIR).mkdir()
        for fname, data in eval_files.items():
            atomic_write_bytes(folder / EVAL_DIR / fname, data)
    atomic_write_json(folder / PROBE_NAME, {"seed": PROBE_SEED, "n": PROBE_N, "input_shape": shape,
                                            "input": "torch.rand((n, *input_shape), generator=torch.Generator()"
                                                     ".manual_seed(seed))",
                                            "logits": logits.tolist(), "atol": PROBE_ATOL})
    sha = str(card["weights_sha256"])
    entry = ZooEntry(id=entry_id, task=task, architecture=str(card["architecture"]),
                     defence=defence or _defence(card), parameters=sum(p.numel() for p in model.parameters()),
                     budget=budget or _budget(card), weights_sha256=sha,
                     source="shipped" if url is None else {"url": url, "sha256": sha}, folder=folder, notes=notes)
    atomic_write_json(folder / ENTRY_NAME, entry.to_dict())
    return entry


list = list_entries  # noqa: A001  (``medrobust.zoo.list()``, RobustBench's spelling)
