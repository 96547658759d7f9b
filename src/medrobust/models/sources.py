"""Load the user's own model: a checkpoint folder, TorchScript, ``module.path:factory`` + weights, or ONNX.

:func:`load_model` recognises the source, loads it without ever unpickling Python objects, and checks it
once with a probe forward pass before anything else uses it:

==========================  =================================================================================
source                      how it is loaded
==========================  =================================================================================
checkpoint folder           :func:`medrobust.models.load_checkpoint` (safetensors + JSON card, hash verified)
``model.pt`` / ``.ts``      ``torch.jit.load`` of a TorchScript archive (``torch.jit.script``/``trace`` +
                            ``torch.jit.save``); a ``torch.save`` file is refused (it would need unpickling)
``pkg.module:factory``      the user's code imported from ``model_path`` (default: the current folder),
                            ``factory()`` called, ``weights`` (safetensors, or a state dict read with
                            ``torch.load(weights_only=True)``) loaded with ``strict=True``
``model.onnx``              :mod:`medrobust.models.onnx_model`: white-box through onnx2torch when the
                            converted graph reproduces onnxruntime's logits, otherwise black-box only
==========================  =================================================================================

Every loaded model carries ``model.card``: the checkpoint card (for a folder) or a card of the same keys
(``classes``, ``fs``, ``units``, ``input_shape``, ``weights_sha256``), plus ``source`` = kind, path,
SHA-256 of each file, and whether the model is white-box or black-box only and why.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError, MedrobustError
from medrobust.models.checkpoint import file_sha256  # noqa: F401  (also imported from here by onnx_model and tests)

SOURCE_KINDS = ("checkpoint", "torchscript", "factory", "onnx")
PROBE_BATCH = 4
"""Samples in the probe forward pass (seeded ``U[0, 1)`` inputs of the declared input shape)."""

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def source_kind(source: str | os.PathLike[str]) -> str:
    """The kind of model ``source`` names: ``"checkpoint"``, ``"torchscript"``, ``"factory"`` or ``"onnx"``.

    Raises
    ------
    CheckpointError
        The path does not exist (and is no ``module:factory``), or the file is of no supported kind
        (a ``torch.save`` pickle, a bare weights file ...); the message says what to pass instead.
    """
    text = str(source)
    p = Path(text)
    if p.is_dir() or (p.is_file() and p.name in ("card.json", "model.safetensors") and (p.parent / "card.json").is_file()):
        return "checkpoint"
    if p.is_file():
        if p.suffix.lower() == ".onnx":
            return "onnx"
        if _is_torchscript(p):
            return "torchscript"
        raise CheckpointError(_unsupported_file(p))
    if _FACTORY.match(text):
        return "factory"
    raise CheckpointError(f"model source not found: {text}. Pass a checkpoint folder, a TorchScript file (.pt/.ts), "
                          "an ONNX file (.onnx) or MODULE:FACTORY with --weights FILE.")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``<name>/code/`` and ``<name>/constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _unsupported_file(path: Path) -> str:
    if path.suffix.lower() in (".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".pkl", ".pickle") or \
            zipfile.is_zipfile(path):
        return (f"{path} is not a TorchScript archive (it looks like a torch.save/pickle or bare weights file): "
                "medrobust never unpickles full models. Export the model with torch.jit.script (or trace) + "
                "torch.jit.save, or to ONNX, or pass MODULE:FACTORY with --weights "
                f"{path.name} (a state dict or safetensors file).")
    return (f"{path} is not a model medrobust can load; pass a checkpoint folder, a TorchScript file (.pt/.ts), "
            "an ONNX file (.onnx) or MODULE:FACTORY with --weights FILE.")


def load_model(
    source: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    model_path: str | os.PathLike[str] | None = None,
    fs: float | None = None,
    units: str | None = None,
    classes: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    trust_unverified: bool = False,
) -> nn.Module:
    """Load a model from any supported source, check it with a probe forward pass, return it with ``.card``.

    Parameters
    ----------
    source
        A checkpoint folder, a TorchScript file, an ONNX file, or ``"pkg.module:factory"``.
    weights
        For a factory: the weights (``.safetensors``, or a state dict saved with ``torch.save``; read with
        ``weights_only=True``). Refused for the other kinds (their weights are inside the file).
    model_path
        For a factory: the folder the user's package is imported from (default: the current folder).
    fs, units, classes, input_shape
        What the model expects and predicts; required when the file does not say (TorchScript, factory,
        ONNX without static shape). For a checkpoint they must agree with its card.
    trust_unverified
        For a checkpoint: load weights whose hash is missing or different (see :func:`load_checkpoint`).

    Returns
    -------
    nn.Module
        In eval mode on the CPU, with ``model.card`` (see the module docstring). An ONNX model that cannot be
        converted is an onnxruntime wrapper with ``black_box_only = True``.

    Raises
    ------
    ConfigError
        A required declaration (``fs``, ``units``, ``classes``, ``input_shape``) is missing or malformed, or
        the user's module cannot be imported / its factory fails.
    CheckpointError
        The file is missing, of an unsupported kind, corrupt, has the wrong weights, or the probe forward
        fails (wrong input shape, class count different from ``classes``, probabilities instead of logits).
    """
    kind = source_kind(source)
    if weights is not None and kind != "factory":
        raise ConfigError(f"--weights is only for a MODULE:FACTORY source; {source} holds its own weights.")
    if kind == "checkpoint":
        return _load_checkpoint_source(Path(source), fs=fs, units=units, classes=classes, input_shape=input_shape,
                                       trust_unverified=trust_unverified)
    if kind == "onnx":
        from medrobust.models.onnx_model import load_onnx

        model, info = load_onnx(Path(source), input_shape=input_shape)
        files = {str(source): info.pop("sha256")}
        shape = info.pop("input_shape")
    elif kind == "torchscript":
        model, files = _load_torchscript(Path(source)), {str(source): file_sha256(Path(source))}
        shape, info = input_shape, {"white_box": True, "why": "a TorchScript module (differentiable)"}
    else:
        model, files = _load_factory(str(source), weights=weights, model_path=model_path)
        shape, info = input_shape, {"white_box": True, "why": "a PyTorch module built by the user's factory"}
    decl = declared(fs=fs, units=units, classes=classes, input_shape=shape, what=str(source))
    card = _card(kind, str(source), files, decl, info)
    probe(model, card, what=str(source))
    model.card = card  # type: ignore[assignment]
    return model


def declared(*, fs: Any, units: Any, classes: Any, input_shape: Any, what: str) -> dict[str, Any]:
    """The user's declarations, checked; each missing one is a :class:`ConfigError` naming its flag."""
    from medrobust.units import Units

    missing = [flag for flag, v in (("--fs", fs), ("--units", units), ("--classes", classes),
                                    ("--input-shape", input_shape)) if v is None or (isinstance(v, str) and not v)]
    if missing:
        raise ConfigError(f"{what} does not say what it expects: pass {', '.join(missing)} (Python: fs=, units=, "
                          "classes=, input_shape=), e.g. --fs 125 --units 'normalized [0, 1]' --classes N,S,V,F,Q "
                          "--input-shape 1,187.")
    cls = parse_classes(classes)
    shape = parse_shape(input_shape)
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (fs >= 0) or fs == float("inf"):
        raise ConfigError(f"--fs must be a sampling rate in Hz >= 0 (0 for images), got {fs!r}.")
    Units.parse(str(units), fs=float(fs))  # any string parses; the kind is checked where a protocol needs it
    return {"fs": float(fs), "units": str(units), "classes": cls, "input_shape": shape}


def parse_classes(classes: Any) -> list[str]:
    """``"N,S,V"`` or a sequence of names -> list of distinct names (at least two)."""
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    names = [c for c in names if c]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"--classes must name at least two distinct classes in the model's output order, "
                          f"e.g. N,S,V,F,Q; got {classes!r}.")
    return names


def parse_shape(shape: Any) -> list[int]:
    """``"1,187"`` or a sequence -> list of positive ints (the input without the batch dimension)."""
    try:
        dims = [int(d) for d in (shape.split(",") if isinstance(shape, str) else shape)]
    except (TypeError, ValueError):
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"--input-shape must be positive integers without the batch dimension, e.g. 1,187 "
                          f"(leads, samples); got {shape!r}.")
    return dims


def _card(kind: str, path: str, files: dict[str, str], decl: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    combined = hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(files.items())).encode()).hexdigest()
    return {
        "architecture": f"{kind}:{Path(path).name if kind != 'factory' else path}",
        "kwargs": {},
        **decl,
        "training": {},
        "data": {},
        "weights_sha256": next(iter(files.values())) if len(files) == 1 else combined,
        "source": {"kind": kind, "path": path, "sha256": files, "black_box_only": not info.get("white_box", True),
                   **info},
    }


def _load_checkpoint_source(path: Path, *, fs: Any, units: Any, classes: Any, input_shape: Any,
                            trust_unverified: bool) -> nn.Module:
    from medrobust.models.checkpoint import load_checkpoint

    model = load_checkpoint(path, trust_unverified=trust_unverified)
    card = dict(model.card)
    given = {"fs": None if fs is None else float(fs), "units": units,
             "classes": None if classes is None else parse_classes(classes),
             "input_shape": None if input_shape is None else parse_shape(input_shape)}
    for key, value in given.items():
        if value is not None and value != card.get(key):
            raise CheckpointError(f"checkpoint {path} records {key} = {card.get(key)!r}, not {value!r}; drop "
                                  f"--{key.replace('_', '-')} (the card says it) or use the right checkpoint.")
    folder = path if path.is_dir() else path.parent
    card["source"] = {"kind": "checkpoint", "path": str(path), "sha256": {str(folder / "model.safetensors"):
                                                                          card.get("weights_sha256")},
                      "black_box_only": False, "white_box": True, "why": "a medrobust checkpoint"}
    model.card = card  # type: ignore[assignment]
    probe(model, card, what=str(path), allow_probabilities=True)
    return model


def _load_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch's own deprecation notice of TorchScript, not the user's concern
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a corrupt or foreign archive fails anywhere inside the TorchScript loader
        raise CheckpointError(f"cannot load TorchScript file {path}: {_last_line(exc)}; re-export it with "
                              "torch.jit.save.") from None
    return model.eval()


def _import_factory(spec: str, model_path: str | os.PathLike[str] | None) -> Any:
    module_name, _, attr = spec.partition(":")
    folder = str(Path(model_path if model_path is not None else os.getcwd()).resolve())
    if model_path is not None and not Path(folder).is_dir():
        raise ConfigError(f"--model-path {model_path} is not a folder; pass the folder your package is in.")
    sys.path.insert(0, folder)
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any import failure is reported in one line
        raise ConfigError(f"cannot import {module_name!r} from {folder} ({type(exc).__name__}: {_last_line(exc)}); "
                          "pass --model-path DIR with the folder that holds your package.") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"{spec}: module {module_name!r} has no callable {attr!r}; name a function or class that "
                          "returns the model.")
    return fn


def _load_factory(spec: str, *, weights: Any, model_path: Any) -> tuple[nn.Module, dict[str, str]]:
    if weights is None:
        raise ConfigError(f"{spec}: pass --weights FILE (safetensors or a state dict); a factory builds the "
                          "architecture only.")
    fn = _import_factory(spec, model_path)
    try:
        model = fn()
    except Exception as exc:  # the user's factory: any failure is one line
        raise ConfigError(f"factory {spec}() raised {type(exc).__name__}: {_last_line(exc)}; it must build the "
                          "model without arguments.") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {spec}() returned {type(model).__name__}, not a torch.nn.Module.")
    wpath = Path(weights)
    state = read_state_dict(wpath)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise CheckpointError(f"weights {wpath} do not fit the model of {spec}: {' '.join(lines[1:4])[:300]}; "
                              "pass the weights saved from this architecture.") from None
    return model.eval(), {str(wpath): file_sha256(wpath)}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a state dict saved with ``torch.save`` (``weights_only=True``)."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}.")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}.") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (the weights-only unpickler refuses anything but tensors)
        raise CheckpointError(f"{path} is not a state dict readable with torch.load(weights_only=True) "
                              f"({_last_line(exc)[:160]}); save model.state_dict() or use safetensors.") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds {type(obj).__name__}, not a state dict of tensors; save "
                              "model.state_dict().")
    return obj


def probe(model: nn.Module, card: dict[str, Any], *, what: str, allow_probabilities: bool = False) -> None:
    """One forward pass of ``PROBE_BATCH`` seeded inputs of ``card["input_shape"]``; refuse in one line a failure,
    a class count different from ``card["classes"]``, or probabilities instead of logits (unless
    ``allow_probabilities``: checkpoint folders keep today's behaviour, the evaluation flags and converts them)."""
    from medrobust.attacks.base import check_logits

    shape = [int(s) for s in card["input_shape"]]
    g = torch.Generator().manual_seed(0)
    x = torch.rand((PROBE_BATCH, *shape), generator=g)
    try:
        with torch.no_grad():
            z = model(x)
    except MedrobustError:
        raise
    except Exception as exc:  # the user's model fails anywhere inside torch: name the shape instead
        raise CheckpointError(f"{what}: a forward pass of inputs shaped {tuple(x.shape)} (batch, *input shape) "
                              f"failed: {_last_line(exc)[:200]}. Pass the model's input shape (--input-shape, "
                              "leads,samples) and load the data at that length.") from None
    try:
        check_logits(z, PROBE_BATCH)
    except MedrobustError as exc:
        if not (allow_probabilities and _rows_are_probabilities(z)):
            raise CheckpointError(f"{what}: {exc}") from None
    k = int(z.shape[1])
    if k != len(card["classes"]):
        raise CheckpointError(f"{what} predicts {k} classes but {len(card['classes'])} are declared "
                              f"({card['classes']}); pass --classes with the model's {k} class names in output order.")


def _rows_are_probabilities(z: Any) -> bool:
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] < 2 or not torch.isfinite(z).all():
        return False
    zd = z.detach().double()
    return bool((zd >= 0).all()) and bool(((zd.sum(1) - 1.0).abs() < 1e-4).all())


def _last_line(exc: BaseException) -> str:
    """The informative line of an exception message (TorchScript puts the real error last)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    for ln in reversed(lines):
        if re.match(r"^\w*(Error|Exception):", ln):
            return ln
    return lines[0] if len(lines) == 1 else lines[-1]
