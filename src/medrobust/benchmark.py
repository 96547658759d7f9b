"""One call to benchmark a classifier: the standard protocol of the data type on a stratified subset.

>>> from medrobust.benchmark import benchmark
>>> card = benchmark("model.pt", dataset="mitdb", data_dir="data", n=200, out="runs/bench",  # doctest: +SKIP
...                  fs=125, units="normalized [0, 1]", classes="N,S,V,F,Q")
>>> card["results"][-1]["robust_accuracy"]["value"]                                           # doctest: +SKIP

The model is any source :func:`medrobust.models.load_model` accepts (checkpoint folder, TorchScript, ONNX,
``module:factory`` + weights) or a ``torch.nn.Module``. The protocol is the named standard protocol of the
dataset's units (:data:`medrobust.evaluation.STANDARD_PROTOCOLS`; RobustBench's fixed-protocol idea, Croce et
al., NeurIPS Datasets and Benchmarks 2021); ``n`` draws a stratified seeded subset (never the first ``n`` rows:
test splits are ordered by record). A black-box-only model (an ONNX graph that does not convert) is evaluated
with the protocol's black-box members only and without the large-ε PGD check; the card says so.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from medrobust.errors import ConfigError

THREAT_MODELS = ("linf", "l2")


def is_black_box_model(model: Any, card: Mapping[str, Any] | None = None) -> bool:
    """``True`` when the model runs forward passes only (its card or the model says ``black_box_only``)."""
    source = (card or getattr(model, "card", None) or {}).get("source") or {}
    return bool(getattr(model, "black_box_only", False) or source.get("black_box_only", False))


def black_box_attacks() -> list[str]:
    """The registered attacks that need forward passes only (score- or decision-based, noise)."""
    from medrobust.attacks import available_attacks
    from medrobust.evaluation import is_black_box

    return [a for a in available_attacks() if is_black_box(a)]


def check_black_box_members(model: Any, card: Mapping[str, Any] | None, names: Sequence[str]) -> None:
    """Refuse in one line the white-box attacks among ``names`` for a black-box-only model."""
    if not is_black_box_model(model, card):
        return
    from medrobust.evaluation import is_black_box

    white = list(dict.fromkeys(n for n in names if not is_black_box(n)))
    if white:
        source = (card or {}).get("source") or {}
        raise ConfigError(
            f"{source.get('path', 'the model')} is black-box only ({source.get('why', 'no input gradients')}); "
            f"white-box attacks {white} cannot run. Use --attacks with any of {', '.join(black_box_attacks())} "
            "(or transfer from a surrogate: medrobust.attacks.transfer_attack)."
        )


def benchmark_protocol(units: str, fs: float, *, threat_model: str = "linf", eps: Sequence[float] | None = None,
                       black_box: bool = False, **logistics: Any) -> Any:
    """The standard protocol of data in ``units`` at ``fs``, with another threat model or radii if asked.

    ``eps`` or ``threat_model="l2"`` make it a ``custom`` protocol with the standard's attacks (the standard radii
    are L∞). ``black_box`` keeps only the black-box members (made mandatory) and drops the large-ε PGD check.
    """
    from medrobust.evaluation import AttackSpec, is_black_box, standard_protocol

    if threat_model not in THREAT_MODELS:
        raise ConfigError(f"threat_model must be one of {THREAT_MODELS}, got {threat_model!r}.")
    cfg = standard_protocol(units, fs, **logistics)
    if threat_model == "l2" and eps is None:
        raise ConfigError("threat_model='l2' needs eps (the standard protocols are L∞): pass --eps, e.g. 0.1,0.5,1.")
    if eps is not None:
        cfg = replace(cfg, eps=tuple(float(e) for e in eps), norm=threat_model, name="custom")
    if black_box:
        members = tuple(AttackSpec(s.name, s.kwargs, label=s.label, restarts=s.restarts, optional=False)
                        for s in cfg.attacks if is_black_box(s.name))
        cfg = replace(cfg, attacks=members, large_eps_check=False,
                      name=f"{cfg.name}-black-box" if cfg.name != "custom" else "custom")
    return cfg


def _model_and_card(model: Any, load: Mapping[str, Any], ds: Any) -> tuple[nn.Module, dict[str, Any] | None, str]:
    """The model (loaded from a source when ``model`` is a path or ``module:factory``), its card, its name."""
    from medrobust.models import load_model, source_kind
    from medrobust.models.sources import probe

    if isinstance(model, (str, os.PathLike)):
        kwargs = {k: v for k, v in load.items() if v is not None}
        if source_kind(model) != "checkpoint":
            kwargs.setdefault("input_shape", list(ds.input_shape))  # the probe at the data's shape checks the length
        loaded = load_model(model, **kwargs)
        return loaded, dict(loaded.card), str(model)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module or a model source path, got {type(model).__name__}.")
    card = dict(getattr(model, "card", None) or {}) or None
    if card is None:
        probe(model, {"input_shape": list(ds.input_shape), "classes": list(ds.meta.classes)},
              what=type(model).__name__)
    return model, card, type(model).__name__


def benchmark(
    model: Any,
    dataset: Any = "mitdb",
    threat_model: str = "linf",
    eps: Sequence[float] | None = None,
    n: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    options: Mapping[str, Any] | None = None,
    load: Mapping[str, Any] | None = None,
    minimal_eps: bool = False,
    batch_size: int | None = None,
    report: bool = True,
    device: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` with the standard protocol of ``dataset``'s data type; return the result card.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (returning logits) or a source for :func:`medrobust.models.load_model`.
    dataset
        A dataset name (loaded from ``data_dir``, split ``split``, loader ``options``) or a loaded dataset.
    threat_model
        ``"linf"`` (the standard protocol) or ``"l2"`` (needs ``eps``).
    eps
        Radii instead of the standard's (the protocol is then ``custom``).
    n
        Evaluate a stratified seeded subset of ``n`` samples (each class in proportion to its count).
    out
        Run folder: the result card, per-sample results and, with ``report``, ``report.md``/``report.html``.
    load
        Keyword arguments of :func:`load_model` for a source: ``weights``, ``model_path``, ``fs``, ``units``,
        ``classes``, ``input_shape``, ``trust_unverified`` (``input_shape`` defaults to the data's).
    minimal_eps, batch_size
        Run logistics of the standard protocol (they do not change its numbers' meaning).
    """
    from medrobust.data import load_dataset
    from medrobust.evaluation import evaluate, select_indices
    from medrobust.evaluation.protocol import stratified_selection

    ds = load_dataset(dataset, root=data_dir, split=split, **dict(options or {})) if isinstance(dataset, str) \
        else dataset
    mdl, card, name = _model_and_card(model, dict(load or {}), ds)
    logistics: dict[str, Any] = {"minimal_eps": bool(minimal_eps)}
    if batch_size is not None:
        logistics["batch_size"] = batch_size
    protocol = benchmark_protocol(ds.meta.units, ds.meta.fs, threat_model=threat_model, eps=eps,
                                  black_box=is_black_box_model(mdl, card), **logistics)
    idx = select_indices(len(ds), n, protocol.seed, labels=ds.y.numpy())
    result = evaluate(mdl, ds, protocol, out_dir=out, indices=idx, model_card=card, checkpoint=name,
                      selection=stratified_selection(n, protocol.seed, len(ds)), device=device, progress=progress,
                      overwrite=overwrite, command=command)
    if out is not None and report:
        from medrobust.report import write_report

        write_report(Path(out), progress=progress)
    return result


class _CallableModule(types.ModuleType):
    """``medrobust.benchmark(model, ...)``: the module itself is callable and runs :func:`benchmark`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return benchmark(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
