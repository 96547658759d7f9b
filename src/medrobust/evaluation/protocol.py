"""The evaluation protocol: ε sweeps, attack ensembles, minimal-ε bisection, checks and the result card.

:func:`evaluate` runs, for one model and one dataset split:

1. **Pre-flight checks** on a small batch (:mod:`medrobust.evaluation.flags`): probabilities instead
   of logits (the model is then attacked through ``log p``), a non-deterministic forward pass, zero
   or vanishing input gradients, DLR with fewer than 4 classes.
2. **Clean predictions** of every sample.
3. **ε sweep with an attack ensemble.** At every ε, the attacks run one after another. In
   ``"sequential"`` mode (AutoAttack's semantics, Croce & Hein ICML 2020, arXiv 2003.01690;
   landscape.md §4.3) each attack runs only on the samples that are still robust; in
   ``"individual"`` mode every attack runs on every clean-correct sample (then each attack's own
   curve is known too). A sample counts as robust only if no attack broke it: the reported number
   is the pointwise worst case over the ensemble. Samples misclassified when clean are never
   attacked and keep their clean prediction (methods-ecg.md §1). Each attack may have
   ``restarts``: further independently seeded runs on the samples it has not broken yet.
4. **Minimal adversarial ε** (optional): per sample, a binary search over the ε grid followed by
   ``refine_steps`` bisection steps between grid points, each step one run of the ensemble with a
   per-sample radius (attacks early-stopped, ``early_stop=True`` where the attack accepts it). The
   result, an upper bound on each sample's minimal adversarial radius, gives robust accuracy at every
   ε up to the largest one from a single run (a continuous accuracy-versus-ε curve).
5. **Large-ε sanity check**: PGD (margin loss) at a radius far beyond the sweep must bring accuracy
   on clean-correct samples down to chance (ART ``SecurityCurve``).
6. **Examples**: every attack alone at every ε on a few records (one per class), kept for the report.

Every step is a *work unit* with its own seed, recorded in a resumable state (see
:mod:`medrobust.evaluation.card`), and the result card is built from the recorded units.

Named ``standard`` protocols (:data:`STANDARD_PROTOCOLS`) fix the radii, attacks and settings per
data type so that numbers are comparable between models.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrobust.errors import CheckpointError, ConfigError
from medrobust.evaluation import card as cardmod
from medrobust.evaluation import flags as flagmod
from medrobust.evaluation.metrics import confusion_matrix, metrics_from_confusion
from medrobust.evaluation.perturbation import DEFAULT_CUTOFF_HZ, METRICS, perturbation_metrics, summarize, unit_scale
from medrobust.evaluation.robustness import (
    attack_success_rate,
    curve_auc,
    curve_from_minimal_eps,
    fooling_rate,
    ratio,
    robust_accuracy,
)

MODES: tuple[str, ...] = ("sequential", "individual")
THREAT_KEYS = frozenset({"eps", "norm", "eps_mode", "bounds", "mask", "threat", "generator"})
PROTOCOL_VERSION = 1


# ============================================================================================ specs
@dataclass(frozen=True)
class AttackSpec:
    """One member of an attack ensemble.

    Parameters
    ----------
    name
        A registered attack name (``medrobust.attacks.available_attacks()``); black-box attacks
        join the same way once registered.
    kwargs
        Constructor arguments other than the threat model (``steps``, ``loss``, ``step_size`` ...).
        ``fs="auto"`` is replaced by the dataset's sampling rate.
    label
        Unique name in the ensemble (default: ``name``, plus ``-<loss>`` when a loss is given).
    restarts
        Independently seeded runs of this attack on the samples it has not broken yet (protocol-level
        restarts; works for any attack).
    optional
        Skip (and record as skipped) when ``name`` is not registered, instead of failing.
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    restarts: int = 1
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"attack name must be a non-empty string, got {self.name!r}.")
        object.__setattr__(self, "name", self.name.strip().lower())
        if not isinstance(self.kwargs, Mapping):
            raise ConfigError(f"attack {self.name!r}: kwargs must be a mapping, got {type(self.kwargs).__name__}.")
        bad = sorted(set(self.kwargs) & THREAT_KEYS)
        if bad:
            raise ConfigError(
                f"attack {self.name!r}: {bad} belong to the protocol's threat model (eps, norm, eps_mode, bounds) "
                "or are set by it (generator, mask); remove them from the attack's options."
            )
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise ConfigError(f"attack {self.name!r}: restarts must be an integer >= 1, got {self.restarts!r}.")
        if not self.label:
            loss = self.kwargs.get("loss")
            object.__setattr__(self, "label", f"{self.name}-{loss}" if loss else self.name)

    @classmethod
    def parse(cls, obj: Any) -> "AttackSpec":
        """From ``"pgd"`` or ``{"name": "pgd", "steps": 50, "restarts": 2, "label": ...}``
        (attack options inline or under ``kwargs``)."""
        if isinstance(obj, AttackSpec):
            return obj
        if isinstance(obj, str):
            return cls(obj)
        if isinstance(obj, Mapping):
            d = dict(obj)
            if "name" not in d:
                raise ConfigError(f"an attack entry needs a 'name', got {obj!r}.")
            name = d.pop("name")
            label = d.pop("label", "") or ""
            restarts = d.pop("restarts", 1)
            optional = bool(d.pop("optional", False))
            kwargs = dict(d.pop("kwargs", {}) or {})
            kwargs.update(d)
            return cls(name, kwargs, label=str(label), restarts=restarts, optional=optional)
        raise ConfigError(f"an attack must be a name or a mapping with 'name', got {type(obj).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "kwargs": dict(self.kwargs), "restarts": self.restarts,
                "optional": self.optional}


@dataclass(frozen=True)
class ProtocolConfig:
    """Everything that determines an evaluation's numbers.

    Parameters
    ----------
    attacks
        The ensemble, in order.
    eps
        Radii of the sweep (strictly increasing after sorting; duplicates refused).
    norm, eps_mode
        Threat model (see :class:`medrobust.attacks.ThreatModel`).
    bounds
        ``None`` (unbounded, e.g. mV), ``(lo, hi)``, or ``"auto"``: taken from the dataset's units
        (``"normalized [0, 1]"`` → ``(0, 1)``, ``"max-abs scaled [-1, 1]"`` → ``(-1, 1)``; others unbounded).
    mode
        ``"sequential"`` or ``"individual"`` (see the module docstring).
    batch_size
        Samples per work unit.
    seed
        Run seed; every unit's generator is derived from it and the unit's name.
    minimal_eps
        Also estimate each sample's minimal adversarial ε by bisection.
    refine_steps
        Bisection steps between grid points (resolution ``Δε / 2^refine_steps``).
    large_eps_check, large_eps_factor, large_eps_samples, large_eps_steps
        The large-ε sanity check: PGD with ``factor × max ε`` (``min ε − 40 dB`` for ``snr_db``) on up to
        ``samples`` clean-correct samples.
    n_examples
        Records kept (with every attack's adversarial version) for the report.
    hf_cutoff_hz
        Smoothness cut-off for the high-frequency energy fraction.
    name
        ``"custom"`` or the name of a standard protocol.
    """

    attacks: tuple[AttackSpec, ...]
    eps: tuple[float, ...]
    norm: str = "linf"
    eps_mode: str = "abs"
    bounds: Any = "auto"
    mode: str = "sequential"
    batch_size: int = 256
    seed: int = 0
    minimal_eps: bool = False
    refine_steps: int = 6
    large_eps_check: bool = True
    large_eps_factor: float = 10.0
    large_eps_samples: int = 128
    large_eps_steps: int = 50
    n_examples: int = 5
    hf_cutoff_hz: float = DEFAULT_CUTOFF_HZ
    name: str = "custom"

    def __post_init__(self) -> None:
        attacks = tuple(AttackSpec.parse(a) for a in (self.attacks or ()))
        if not attacks:
            raise ConfigError("the protocol needs at least one attack, e.g. attacks=['pgd'].")
        labels = [a.label for a in attacks]
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise ConfigError(f"attack labels must be unique, {dup} repeat; give each a distinct 'label'.")
        object.__setattr__(self, "attacks", attacks)
        try:
            eps = tuple(sorted(float(e) for e in self.eps))
        except (TypeError, ValueError):
            raise ConfigError(f"eps must be a list of numbers, got {self.eps!r}.") from None
        if not eps:
            raise ConfigError("eps must hold at least one radius, e.g. eps=[0.01, 0.05, 0.1].")
        if len(set(eps)) != len(eps):
            raise ConfigError(f"eps holds duplicates: {list(self.eps)}.")
        if not all(math.isfinite(e) for e in eps) or (self.eps_mode != "snr_db" and eps[0] <= 0):
            raise ConfigError(f"every ε must be finite and > 0, got {list(self.eps)}.")
        object.__setattr__(self, "eps", eps)
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}.")
        for key, minimum in (("batch_size", 1), ("refine_steps", 0), ("large_eps_samples", 1),
                             ("large_eps_steps", 1), ("n_examples", 0), ("seed", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"{key} must be an integer >= {minimum}, got {v!r}.")
        if self.minimal_eps and self.eps_mode == "snr_db":
            raise ConfigError("minimal_eps bisection needs a radius that grows with ε; it is not available with "
                              "eps_mode='snr_db'.")
        if not (self.large_eps_factor > 1):
            raise ConfigError(f"large_eps_factor must be > 1, got {self.large_eps_factor!r}.")
        b = self.bounds
        if not (b is None or b == "auto" or (isinstance(b, (tuple, list)) and len(b) == 2)):
            raise ConfigError(f"bounds must be None, 'auto' or (lo, hi), got {b!r}.")
        if isinstance(b, list):
            object.__setattr__(self, "bounds", tuple(float(v) for v in b))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": PROTOCOL_VERSION,
            "attacks": [a.to_dict() for a in self.attacks],
            "eps": list(self.eps),
            "norm": self.norm,
            "eps_mode": self.eps_mode,
            "bounds": list(self.bounds) if isinstance(self.bounds, tuple) else self.bounds,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "minimal_eps": self.minimal_eps,
            "refine_steps": self.refine_steps,
            "large_eps_check": self.large_eps_check,
            "large_eps_factor": self.large_eps_factor,
            "large_eps_samples": self.large_eps_samples,
            "large_eps_steps": self.large_eps_steps,
            "n_examples": self.n_examples,
            "hf_cutoff_hz": self.hf_cutoff_hz,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProtocolConfig":
        """Inverse of :meth:`to_dict` (unknown keys refused)."""
        allowed = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k != "version"}
        bad = sorted(set(data) - allowed)
        if bad:
            raise ConfigError(f"unknown protocol settings {bad}; allowed: {sorted(allowed)}.")
        if isinstance(data.get("bounds"), list):
            data["bounds"] = tuple(data["bounds"])
        return cls(**data)


# ============================================================================================ standard
_WB_NORMALIZED = (
    AttackSpec("apgd", {"loss": "ce", "steps": 100}),
    AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
    AttackSpec("pgd", {"steps": 100, "step_size": 0.01, "update": "adamax", "random_start": True},
               label="pgd-adamax"),
    AttackSpec("sap", {"steps": 100, "smooth_steps": 200, "step_size": 0.01}),
)
_BLACK_BOX = (AttackSpec("square", {}, optional=True), AttackSpec("spsa", {}, optional=True))

STANDARD_PROTOCOLS: dict[str, ProtocolConfig] = {
    # Ma & Liang's MIT-BIH protocol (beats min-max scaled to [0, 1]; methods-ecg.md §3.6, §4.2).
    "standard-ecg-normalized": ProtocolConfig(
        attacks=_WB_NORMALIZED + _BLACK_BOX, eps=(0.01, 0.03, 0.05, 0.1, 0.2, 0.3), norm="linf",
        bounds=(0.0, 1.0), mode="sequential", name="standard-ecg-normalized"),
    # Signals in mV: radii 10, 20, 50, 100 µV; SAP kernels scaled from Han's 300 Hz to the data's rate.
    "standard-ecg-mv": ProtocolConfig(
        attacks=(AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
                 AttackSpec("pgd", {"steps": 100, "random_start": True}),
                 AttackSpec("sap", {"steps": 100, "smooth_steps": 200, "fs": "auto", "reference_fs": 300.0}))
        + _BLACK_BOX,
        eps=(0.01, 0.02, 0.05, 0.1), norm="linf", bounds=None, mode="sequential", name="standard-ecg-mv"),
    # Ma & Liang's CPSC2018 protocol (leads max-abs scaled to [-1, 1]; 100-PGD, step ε/10, 2 restarts).
    "standard-ecg-maxabs": ProtocolConfig(
        attacks=(AttackSpec("pgd", {"steps": 100, "rel_step_size": 0.1, "random_start": True}, restarts=2),
                 AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
                 AttackSpec("sap", {"steps": 100, "smooth_steps": 200, "rel_step_size": 0.1})) + _BLACK_BOX,
        eps=(0.001, 0.003, 0.005, 0.01, 0.03, 0.05, 0.1), norm="linf", bounds=(-1.0, 1.0), mode="sequential",
        batch_size=32, name="standard-ecg-maxabs"),
    # Han et al.'s raw ADC counts (ε = 10 ≈ 10 µV; methods-ecg.md §2.5–2.6).
    "standard-ecg-adc": ProtocolConfig(
        attacks=(AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
                 AttackSpec("pgd", {"steps": 20, "rel_step_size": 0.1, "random_start": False}),
                 AttackSpec("sap", {"steps": 20, "smooth_steps": 40, "rel_step_size": 0.1})) + _BLACK_BOX,
        eps=(1.0, 5.0, 10.0, 20.0), norm="linf", bounds=None, mode="sequential", batch_size=32,
        name="standard-ecg-adc"),
    # Images in [0, 1] (RobustBench's L∞ radii).
    "standard-image": ProtocolConfig(
        attacks=(AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}))
        + _BLACK_BOX,
        eps=(1 / 255, 2 / 255, 4 / 255, 8 / 255), norm="linf", bounds=(0.0, 1.0), mode="sequential",
        name="standard-image"),
}


def data_type(units: str, fs: float) -> str:
    """``"ecg-normalized"``, ``"ecg-mv"``, ``"ecg-maxabs"``, ``"ecg-adc"`` or ``"image"`` from a dataset's units."""
    u = (units or "").strip().lower()
    if u.startswith("intensity") or not fs:
        return "image"
    if u == "mv" or u == "uv" or u == "µv":
        return "ecg-mv"
    if u.startswith("normalized"):
        return "ecg-normalized"
    if u.startswith("max-abs"):
        return "ecg-maxabs"
    if u.startswith("adc"):
        return "ecg-adc"
    raise ConfigError(f"no standard protocol for data in units {units!r}; pass the attacks and radii yourself.")


def standard_protocol(units: str, fs: float, **overrides: Any) -> ProtocolConfig:
    """The standard protocol for data with these units and sampling rate.

    ``overrides`` may change only run logistics (``batch_size``, ``minimal_eps``, ``refine_steps``,
    ``n_examples``), never the attacks, radii or seed, which the standard fixes.
    """
    allowed = {"batch_size", "minimal_eps", "refine_steps", "n_examples"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ConfigError(f"a standard protocol has fixed {bad}; use a custom protocol to change them.")
    return replace(STANDARD_PROTOCOLS[f"standard-{data_type(units, fs)}"], **overrides)


def bounds_from_units(units: str) -> tuple[float, float] | None:
    """``(lo, hi)`` when the units name a closed range like ``"normalized [0, 1]"``, else ``None``."""
    m = re.search(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]", units or "")
    if not m:
        return None
    lo, hi = float(m.group(1)), float(m.group(2))
    return (lo, hi) if lo < hi else None


# ============================================================================================ helpers
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the run seed and a unit's name (stable across processes and platforms)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def select_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """All ``n`` indices, or a seeded random subset of ``limit`` of them in increasing order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {limit!r}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:limit])


def check_compatible(model_card: Mapping[str, Any] | None, dataset: Any) -> list[str]:
    """Refuse a checkpoint whose classes or input shape differ from the dataset's; return notes.

    Raises
    ------
    CheckpointError
        Different class names/order, number of classes, input shape or sampling rate.
    """
    if not model_card:
        return []
    notes: list[str] = []
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


def build_attack(
    model: nn.Module,
    spec: AttackSpec,
    *,
    eps: float | torch.Tensor,
    norm: str,
    eps_mode: str,
    bounds: tuple[float, float] | None,
    generator: torch.Generator,
    fs: float | None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``spec``'s attack for ``model`` with the protocol's threat model and a seeded generator."""
    from medrobust.attacks import ThreatModel, get_attack
    from medrobust.attacks.registry import attack_class

    cls = attack_class(spec.name)
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = dict(spec.kwargs)
    for k, v in (extra or {}).items():
        if k in params:
            kw[k] = v
    if kw.get("fs") == "auto":
        kw["fs"] = float(fs) if fs else None
    if "threat" in params:
        kw["threat"] = ThreatModel(eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds)
    else:
        kw.update({k: v for k, v in (("eps", eps), ("norm", norm), ("eps_mode", eps_mode), ("bounds", bounds))
                   if k in params})
    if "generator" in params:
        kw["generator"] = generator
    return get_attack(spec.name, model, **kw)


@dataclass
class _Context:
    model: nn.Module
    config: ProtocolConfig
    members: tuple[AttackSpec, ...]
    bounds: tuple[float, float] | None
    fs: float | None
    device: torch.device

    def attack(self, spec: AttackSpec, eps: float | torch.Tensor, seed: int, extra: Mapping[str, Any] | None = None
               ) -> Any:
        gen = torch.Generator().manual_seed(seed)
        if isinstance(eps, torch.Tensor):
            eps = eps.to(self.device)
        return build_attack(self.model, spec, eps=eps, norm=self.config.norm, eps_mode=self.config.eps_mode,
                            bounds=self.bounds, generator=gen, fs=self.fs, extra=extra)


def _subset_mask(mask: torch.Tensor | None, sel: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    return mask[sel] if mask.shape[0] > 1 else mask


def run_ensemble(
    ctx: _Context,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    seed_parts: tuple[Any, ...],
    mask: torch.Tensor | None = None,
    mode: str = "sequential",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the ensemble on clean-correct samples ``x`` (all on ``ctx.device``).

    Returns
    -------
    dict
        ``status`` ``(M, n)`` int8 (1 success, 0 failed, -1 not run), ``pred`` ``(M, n)`` adversarial
        predictions (-1 where not run), ``x_member`` (list of ``(n, ...)`` tensors: each attack's output,
        successful or not, ``x`` where it did not run), ``broken_by`` ``(n,)`` first member that broke each sample in
        ensemble order (-1), ``x_ens`` the worst-case examples, ``grad_evals`` and ``queries`` ``(M,)``.
    """
    n, m_count = len(x), len(ctx.members)
    status = np.full((m_count, n), -1, dtype=np.int8)
    pred = np.full((m_count, n), -1, dtype=np.int64)
    grads = np.zeros(m_count, dtype=np.int64)
    queries = np.zeros(m_count, dtype=np.int64)
    robust = torch.ones(n, dtype=torch.bool)
    broken_by = np.full(n, -1, dtype=np.int64)
    x_ens = x.clone()
    x_member: list[torch.Tensor] = []
    for m, spec in enumerate(ctx.members):
        todo = robust.clone() if mode == "sequential" else torch.ones(n, dtype=torch.bool)
        done = torch.zeros(n, dtype=torch.bool)
        xm = x.clone()
        for r in range(spec.restarts):
            sel = (todo & ~done).nonzero().squeeze(1)
            if len(sel) == 0:
                break
            e = eps[sel] if isinstance(eps, torch.Tensor) else eps
            atk = ctx.attack(spec, e, derive_seed(*seed_parts, spec.label, r), extra)
            sel_d = sel.to(x.device)
            res = atk(x[sel_d], y[sel_d], mask=_subset_mask(mask, sel_d))
            succ = res.success.cpu()
            s_np = sel.numpy()
            status[m, s_np] = np.maximum(status[m, s_np], succ.numpy().astype(np.int8))
            pred[m, s_np] = res.adv_pred.cpu().numpy()
            grads[m] += int(res.grad_evals)
            queries[m] += int(res.queries)
            # the attack's output for every sample it ran on: successes, and the final attempt of the
            # others (samples already broken by an earlier restart are not in ``sel``)
            xm[sel_d] = res.x_adv.to(x.dtype)
            hit = sel[succ]
            if len(hit):
                done[hit] = True
        new = done & robust
        if bool(new.any()):
            x_ens[new.to(x.device)] = xm[new.to(x.device)]
            broken_by[new.numpy()] = m
        robust &= ~done
        x_member.append(xm)
    return {"status": status, "pred": pred, "x_member": x_member, "broken_by": broken_by, "x_ens": x_ens,
            "grad_evals": grads, "queries": queries}


def _metrics_arrays(x: torch.Tensor, x_adv: torch.Tensor, success: np.ndarray, fs: float | None,
                    cutoff: float) -> dict[str, np.ndarray]:
    out = {k: np.full(len(x), np.nan) for k in METRICS}
    idx = np.nonzero(success)[0]
    if len(idx):
        t = torch.as_tensor(idx)
        pm = perturbation_metrics(x[t.to(x.device)].cpu(), x_adv[t.to(x_adv.device)].cpu(), fs=fs, cutoff_hz=cutoff)
        for k in METRICS:
            out[k][idx] = pm[k]
    return out


# ============================================================================================ evaluate
def evaluate(
    model: nn.Module,
    dataset: Any,
    config: ProtocolConfig,
    *,
    out_dir: str | Path | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    model_card: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    selection: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with ``config``; returns the result card (and writes it to ``out_dir``).

    Parameters
    ----------
    model
        Classifier returning logits (probabilities are detected, flagged and converted).
    dataset
        An :class:`~medrobust.data.ECGDataset` (single-label).
    config
        The protocol.
    out_dir
        Run folder (state, card, examples). ``None``: in memory, no resuming.
    indices
        Samples of ``dataset`` to evaluate (default all); see :func:`select_indices`.
    model_card
        The checkpoint card (recorded and checked against the dataset).
    checkpoint
        Checkpoint path, for the card.
    selection
        How ``indices`` were chosen (recorded).
    device
        Where to run (default: the model's device).
    progress
        Show progress bars.
    overwrite
        Discard an existing state in ``out_dir`` instead of resuming.
    command
        The command line, for the card.

    Returns
    -------
    dict
        The result card.

    Notes
    -----
    The model is moved to ``device`` and kept in eval mode with frozen parameters during the
    evaluation; its train/eval flags and ``requires_grad`` are restored afterwards.
    """
    from medrobust.attacks import frozen_eval

    with frozen_eval(model):
        return _evaluate(model, dataset, config, out_dir=out_dir, indices=indices, model_card=model_card,
                         checkpoint=checkpoint, selection=selection, device=device, progress=progress,
                         overwrite=overwrite, command=command)


def _evaluate(
    model: nn.Module,
    dataset: Any,
    config: ProtocolConfig,
    *,
    out_dir: str | Path | None,
    indices: Sequence[int] | np.ndarray | None,
    model_card: Mapping[str, Any] | None,
    checkpoint: str | None,
    selection: Mapping[str, Any] | None,
    device: str | torch.device | None,
    progress: bool,
    overwrite: bool,
    command: str | None,
) -> dict[str, Any]:
    from medrobust.attacks import available_attacks
    from medrobust.attacks.registry import attack_class

    meta = dataset.meta
    if getattr(meta, "multilabel", False):
        raise ConfigError(f"dataset {meta.name!r} is multi-label; the evaluation protocol needs single-label data.")
    notes = check_compatible(model_card, dataset)
    registered = set(available_attacks())
    members, skipped = [], []
    for spec in config.attacks:
        if spec.name not in registered:
            if spec.optional:
                skipped.append(spec.label)
                continue
            attack_class(spec.name)  # raises a ConfigError listing the available attacks
        members.append(spec)
    if not members:
        raise ConfigError("none of the protocol's attacks is registered; available: "
                          + ", ".join(sorted(registered)) + ".")
    bounds = bounds_from_units(meta.units) if config.bounds == "auto" else config.bounds
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= len(dataset):
        raise ConfigError(f"indices must select at least one of the {len(dataset)} samples.")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model = model.to(device).eval()
    x_all = dataset.x[torch.as_tensor(idx)]
    y_all = dataset.y[torch.as_tensor(idx)].long()
    mask_all = None if getattr(dataset, "mask", None) is None else dataset.mask[torch.as_tensor(idx)]
    n = len(idx)
    num_classes = len(meta.classes)
    ctx = _Context(model=model, config=config, members=tuple(members), bounds=bounds, fs=meta.fs or None,
                   device=device)
    # Validate every attack's options before any work (unknown options, bad values).
    for spec in members:
        ctx.attack(spec, float(config.eps[-1]) if config.eps_mode != "snr_db" else float(config.eps[0]), 0)

    weights_id = (model_card or {}).get("weights_sha256") or _state_dict_hash(model)
    idx_hash = hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()
    settings = {
        "protocol": config.to_dict(),
        "members": [s.label for s in members],
        "weights": weights_id,
        "data": {"name": meta.name, "split": meta.split, "fingerprint": meta.fingerprint,
                 "options": meta.options, "indices_sha256": idx_hash, "n": n},
        "bounds": list(bounds) if bounds else None,
    }
    summary = {"checkpoint": checkpoint, "dataset": meta.name, "split": meta.split, "n": n,
               "attacks": [s.label for s in members], "eps": list(config.eps), "seed": config.seed}
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    state = cardmod.RunState(out, settings_hash=cardmod.config_hash(settings), settings=summary, overwrite=overwrite)

    bs = config.batch_size
    batches = [np.arange(s, min(s + bs, n)) for s in range(0, n, bs)]
    plan: list[str] = ["preflight", "clean"]
    plan += [f"sweep/e{e}/b{b}" for e in range(len(config.eps)) for b in range(len(batches))]
    if config.minimal_eps:
        plan += [f"mineps/b{b}" for b in range(len(batches))]
    if config.large_eps_check:
        plan.append("large-eps")
    if config.n_examples:
        plan.append("examples")

    computed = 0
    bar = tqdm(total=len(plan), desc=f"evaluate {meta.name}/{meta.split} (n={n})", unit="unit", disable=not progress,
               initial=sum(state.has(k) for k in plan), leave=True)
    wrapped: dict[str, Any] = {}

    def unit(key: str, fn: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        nonlocal computed
        if state.has(key):
            return state.get(key)
        t0 = time.perf_counter()
        arrays = fn()
        res = state.put(key, arrays, time.perf_counter() - t0)
        computed += 1
        bar.update(1)
        bar.set_postfix_str(key)
        return res

    def to_dev(t: torch.Tensor) -> torch.Tensor:
        return t.to(device)

    # ---------------------------------------------------------------- pre-flight checks
    def preflight() -> dict[str, np.ndarray]:
        k = min(64, n)
        xb, yb = to_dev(x_all[:k]), to_dev(y_all[:k])
        flags: list[dict[str, Any]] = []
        f = flagmod.check_output_range(model, xb)
        kind = ""
        if f is not None:
            flags.append(f.to_dict())
            kind = f.details["kind"]
        mdl = flagmod.ProbabilitiesToLogits(model, kind) if kind else model
        f = flagmod.check_randomized(mdl, xb)
        if f is not None:
            flags.append(f.to_dict())
        with torch.no_grad():
            cc = (mdl(xb).argmax(1) == yb)
        f = flagmod.check_gradients(mdl, xb[cc], yb[cc])
        if f is not None:
            flags.append(f.to_dict())
        f = flagmod.check_few_classes_dlr(num_classes, [(s.label, s.name, dict(s.kwargs)) for s in members])
        if f is not None:
            flags.append(f.to_dict())
        return {"flags": np.array(json.dumps(flags)), "probability_kind": np.array(kind)}

    pre = unit("preflight", preflight)
    kind = str(pre["probability_kind"])
    if kind:
        model_used: nn.Module = flagmod.ProbabilitiesToLogits(model, kind).eval()
        ctx.model = model_used
        wrapped["probabilities_to_logits"] = kind
    else:
        model_used = model

    # ---------------------------------------------------------------- clean predictions
    def clean() -> dict[str, np.ndarray]:
        preds = []
        with torch.no_grad():
            for b in batches:
                preds.append(model_used(to_dev(x_all[torch.as_tensor(b)])).argmax(1).cpu())
        return {"clean_pred": torch.cat(preds).numpy().astype(np.int64)}

    clean_pred = unit("clean", clean)["clean_pred"]
    y_np = y_all.numpy().astype(np.int64)
    correct = clean_pred == y_np

    # ---------------------------------------------------------------- sweep
    def sweep(e: int, b: int) -> Callable[[], dict[str, np.ndarray]]:
        def fn() -> dict[str, np.ndarray]:
            bi = batches[b]
            m_count = len(members)
            status = np.full((m_count, len(bi)), -1, dtype=np.int8)
            mpred = np.full((m_count, len(bi)), -1, dtype=np.int64)
            adv_pred = clean_pred[bi].copy()
            broken_by = np.full(len(bi), -1, dtype=np.int64)
            ens = {k: np.full(len(bi), np.nan) for k in METRICS}
            mem = {k: np.full((m_count, len(bi)), np.nan) for k in METRICS}
            grads = np.zeros(m_count, dtype=np.int64)
            queries = np.zeros(m_count, dtype=np.int64)
            loc = np.nonzero(correct[bi])[0]
            if len(loc):
                rows = torch.as_tensor(bi[loc])
                xb, yb = to_dev(x_all[rows]), to_dev(y_all[rows])
                mb = None if mask_all is None else to_dev(mask_all[rows])
                r = run_ensemble(ctx, xb, yb, float(config.eps[e]), seed_parts=(config.seed, "sweep", e, b),
                                 mask=mb, mode=config.mode)
                status[:, loc], mpred[:, loc] = r["status"], r["pred"]
                broken_by[loc] = r["broken_by"]
                hit = r["broken_by"] >= 0
                ens_pred = np.where(hit, r["pred"][np.clip(r["broken_by"], 0, None), np.arange(len(loc))],
                                    yb.cpu().numpy())
                adv_pred[loc] = ens_pred
                for k, v in _metrics_arrays(xb, r["x_ens"], hit, ctx.fs, config.hf_cutoff_hz).items():
                    ens[k][loc] = v
                for m in range(m_count):
                    mm = _metrics_arrays(xb, r["x_member"][m], r["status"][m] == 1, ctx.fs, config.hf_cutoff_hz)
                    for k, v in mm.items():
                        mem[k][m, loc] = v
                grads, queries = r["grad_evals"], r["queries"]
            out = {"status": status, "member_pred": mpred, "adv_pred": adv_pred, "broken_by": broken_by,
                   "grad_evals": grads, "queries": queries}
            out.update({f"ens_{k}": v for k, v in ens.items()})
            out.update({f"mem_{k}": v for k, v in mem.items()})
            return out
        return fn

    sweep_units = [[unit(f"sweep/e{e}/b{b}", sweep(e, b)) for b in range(len(batches))]
                   for e in range(len(config.eps))]

    # ---------------------------------------------------------------- minimal ε by bisection
    min_eps_units = None
    if config.minimal_eps:
        grid = np.asarray(config.eps, dtype=np.float64)

        def mineps(b: int) -> Callable[[], dict[str, np.ndarray]]:
            def fn() -> dict[str, np.ndarray]:
                bi = batches[b]
                lo = np.zeros(len(bi))
                hi = np.where(correct[bi], np.inf, 0.0)
                by = np.full(len(bi), -1, dtype=np.int64)
                loc = np.nonzero(correct[bi])[0]
                if len(loc) == 0:
                    return {"lo": lo, "hi": hi, "broken_by": by}
                rows = torch.as_tensor(bi[loc])
                xb, yb = to_dev(x_all[rows]), to_dev(y_all[rows])
                mb = None if mask_all is None else to_dev(mask_all[rows])
                step = 0

                def attempt(which: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                    nonlocal step
                    step += 1
                    sel = torch.as_tensor(which)
                    r = run_ensemble(ctx, xb[sel.to(device)], yb[sel.to(device)],
                                     torch.as_tensor(radii, dtype=torch.float64),
                                     seed_parts=(config.seed, "mineps", b, step),
                                     mask=_subset_mask(mb, sel.to(device)), mode="sequential",
                                     extra={"early_stop": True})
                    return r["broken_by"] >= 0, r["broken_by"]

                k = len(loc)
                lo_i = np.full(k, -1)
                hi_i = np.full(k, len(grid))
                ok, who = attempt(np.arange(k), np.full(k, grid[-1]))
                hi_i[ok] = len(grid) - 1
                bb = np.full(k, -1)
                bb[ok] = who[ok]
                while True:
                    need = np.nonzero(ok & (hi_i - lo_i > 1))[0]
                    if len(need) == 0:
                        break
                    mid = (lo_i[need] + hi_i[need]) // 2
                    s, w = attempt(need, grid[mid])
                    hi_i[need[s]], bb[need[s]] = mid[s], w[s]
                    lo_i[need[~s]] = mid[~s]
                a = np.where(lo_i >= 0, grid[np.clip(lo_i, 0, None)], 0.0)
                z = np.where(ok, grid[np.clip(hi_i, 0, len(grid) - 1)], np.inf)
                for _ in range(config.refine_steps):
                    need = np.nonzero(ok)[0]
                    if len(need) == 0:
                        break
                    mid = (a[need] + z[need]) / 2.0
                    s, w = attempt(need, mid)
                    z[need[s]], bb[need[s]] = mid[s], w[s]
                    a[need[~s]] = mid[~s]
                lo[loc], hi[loc], by[loc] = a, z, bb
                return {"lo": lo, "hi": hi, "broken_by": by}
            return fn

        min_eps_units = [unit(f"mineps/b{b}", mineps(b)) for b in range(len(batches))]

    # ---------------------------------------------------------------- large-ε check
    large = None
    if config.large_eps_check:
        if config.eps_mode == "snr_db":
            eps_large = float(config.eps[0]) - 40.0
        else:
            eps_large = float(config.large_eps_factor * config.eps[-1])

        def large_fn() -> dict[str, np.ndarray]:
            rows = np.nonzero(correct)[0][: config.large_eps_samples]
            if len(rows) == 0:
                return {"n": np.array(0), "still_correct": np.array(0), "eps": np.array(eps_large)}
            t = torch.as_tensor(rows)
            spec = AttackSpec("pgd", {"steps": config.large_eps_steps, "loss": "margin", "random_start": False,
                                      "early_stop": True})
            atk = ctx.attack(spec, eps_large, derive_seed(config.seed, "large-eps"))
            res = atk(to_dev(x_all[t]), to_dev(y_all[t]),
                      mask=None if mask_all is None else to_dev(mask_all[t]))
            return {"n": np.array(len(rows)), "still_correct": np.array(int((~res.success).sum())),
                    "eps": np.array(eps_large)}

        large = unit("large-eps", large_fn)

    # ---------------------------------------------------------------- examples
    examples = None
    if config.n_examples:
        def examples_fn() -> dict[str, np.ndarray]:
            chosen = _pick_examples(y_np, correct, num_classes, config.n_examples)
            t = torch.as_tensor(chosen, dtype=torch.long)
            xe = x_all[t]
            ye = y_all[t]
            shape = tuple(xe.shape[1:])
            m_count, e_count = len(members), len(config.eps)
            x_adv = np.zeros((m_count, e_count, len(chosen), *shape), dtype=np.float32)
            adv_pred = np.full((m_count, e_count, len(chosen)), -1, dtype=np.int64)
            success = np.zeros((m_count, e_count, len(chosen)), dtype=bool)
            if len(chosen):
                xd, yd = to_dev(xe), to_dev(ye)
                md = None if mask_all is None else to_dev(mask_all[t])
                for m, spec in enumerate(members):
                    for e, eps in enumerate(config.eps):
                        single = replace(ctx, members=(spec,))
                        r = run_ensemble(single, xd, yd, float(eps), seed_parts=(config.seed, "examples", e),
                                         mask=md, mode="individual")
                        x_adv[m, e] = r["x_member"][0].cpu().numpy()
                        adv_pred[m, e] = np.where(r["status"][0] >= 0, r["pred"][0], clean_pred[chosen])
                        success[m, e] = r["status"][0] == 1
            return {
                "index": idx[chosen].astype(np.int64), "position": np.asarray(chosen, dtype=np.int64),
                "x": xe.numpy().astype(np.float32), "y": ye.numpy().astype(np.int64),
                "clean_pred": clean_pred[chosen], "x_adv": x_adv, "adv_pred": adv_pred, "success": success,
                "ids": np.asarray([str(meta.ids[i]) for i in idx[chosen]], dtype=str),
                "labels": np.asarray([s.label for s in members], dtype=str),
                "eps": np.asarray(config.eps, dtype=np.float64),
                "classes": np.asarray(list(meta.classes), dtype=str),
                "fs": np.array(float(meta.fs or 0.0)), "units": np.array(str(meta.units)),
                "leads": np.asarray(list(meta.leads), dtype=str),
            }

        examples = unit("examples", examples_fn)
        if out is not None:
            cardmod.atomic_write_bytes(out / cardmod.EXAMPLES_NAME, cardmod.npz_bytes(examples))
    bar.close()

    # ---------------------------------------------------------------- assemble
    def cat(key: str, e: int) -> np.ndarray:
        return np.concatenate([u[key] for u in sweep_units[e]], axis=-1)

    E, M = len(config.eps), len(members)
    status = np.stack([cat("status", e) for e in range(E)])          # (E, M, n)
    adv_pred = np.stack([cat("adv_pred", e) for e in range(E)])      # (E, n)
    broken_by = np.stack([cat("broken_by", e) for e in range(E)])    # (E, n)
    member_pred = np.stack([cat("member_pred", e) for e in range(E)])
    ens_m = {k: np.stack([cat(f"ens_{k}", e) for e in range(E)]) for k in METRICS}
    mem_m = {k: np.stack([cat(f"mem_{k}", e) for e in range(E)]) for k in METRICS}
    costs = {e: (np.sum([u["grad_evals"] for u in sweep_units[e]], axis=0),
                 np.sum([u["queries"] for u in sweep_units[e]], axis=0)) for e in range(E)}
    min_lo = min_hi = None
    if min_eps_units is not None:
        min_lo = np.concatenate([u["lo"] for u in min_eps_units])
        min_hi = np.concatenate([u["hi"] for u in min_eps_units])

    flags = [flagmod.Flag(f["code"], f["message"], f["details"]) for f in json.loads(str(pre["flags"]))]
    if large is not None:
        f = flagmod.no_collapse_flag(n=int(large["n"]), still_correct=int(large["still_correct"]),
                                     num_classes=num_classes, eps=float(large["eps"]))
        if f is not None:
            flags.append(f)
    f = flagmod.black_box_stronger_flag(status, [s.label for s in members],
                                        [flagmod.is_black_box(s.name) for s in members], config.eps)
    if f is not None:
        flags.append(f)

    results = _results(config=config, members=members, y=y_np, clean_pred=clean_pred, adv_pred=adv_pred,
                       status=status, broken_by=broken_by, ens_m=ens_m, mem_m=mem_m, costs=costs,
                       classes=list(meta.classes), units=meta.units)
    card: dict[str, Any] = {
        "format": cardmod.CARD_FORMAT,
        "title": f"{(model_card or {}).get('architecture', type(model).__name__)} on {meta.name}/{meta.split}",
        "command": command,
        "environment": cardmod.environment(),
        "seeds": {"protocol_seed": config.seed, "selection_seed": (selection or {}).get("seed"),
                  "unit_seeds": "sha256(protocol_seed, unit name, attack label, restart)"},
        "data": {
            **meta.card(),
            "evaluated": {"n": n, "n_total_split": len(dataset), "indices_sha256": idx_hash,
                          "selection": dict(selection or {"method": "all samples"}),
                          "class_counts": np.bincount(y_np, minlength=num_classes).tolist()},
            "class_resampled": bool(meta.class_resampled),
            "class_resampled_note": ("the evaluation set repeats samples to balance classes (Ma & Liang); accuracy "
                                     "is then a class-balanced figure" if meta.class_resampled else
                                     "the evaluation set is not class-resampled (natural class frequencies)"),
        },
        "model": {"checkpoint": checkpoint, "card": dict(model_card) if model_card else None,
                  "wrapped": wrapped or None},
        "notes": notes,
        "threat_model": {"norm": config.norm, "eps_mode": config.eps_mode, "eps": list(config.eps),
                         "eps_uv": _to_uv(config.eps, meta.units, config.eps_mode),
                         "bounds": list(bounds) if bounds else None, "units": meta.units,
                         "mask": "dataset mask" if mask_all is not None else None},
        "protocol": {**config.to_dict(), "members": [s.to_dict() for s in members], "skipped_optional": skipped,
                     "black_box": {s.label: flagmod.is_black_box(s.name) for s in members}},
        "clean": results["clean"],
        "results": results["per_eps"],
        "curves": results["curves"],
        "minimal_eps": None if min_hi is None else _minimal_section(min_lo, min_hi, correct, config, results),
        "large_eps_check": None if large is None else {
            "eps": float(large["eps"]), "n": int(large["n"]), "still_correct": int(large["still_correct"]),
            "attack": f"pgd margin loss, {config.large_eps_steps} steps, no random start"},
        "flags": [fl.to_dict() for fl in flags],
        "files": {"state": cardmod.STATE_NAME, "examples": cardmod.EXAMPLES_NAME if examples is not None else None,
                  "per_sample": cardmod.PER_SAMPLE_NAME},
        cardmod.TIMINGS_KEY: state.timings(),
    }
    if out is not None:
        per_sample = {"index": idx, "y": y_np, "clean_pred": clean_pred, "adv_pred": adv_pred,
                      "broken_by": broken_by, "status": status, "member_pred": member_pred,
                      "eps": np.asarray(config.eps), "ids": np.asarray([str(meta.ids[i]) for i in idx], dtype=str)}
        if min_hi is not None:
            per_sample.update({"min_eps": min_hi, "min_eps_lower": min_lo})
        cardmod.atomic_write_bytes(out / cardmod.PER_SAMPLE_NAME, cardmod.npz_bytes(per_sample))
        cardmod.write_card(out, card)
    return card


def _state_dict_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _to_uv(eps: Iterable[float], units: str, eps_mode: str) -> list[float] | None:
    s = unit_scale(units)
    if s is None or eps_mode != "abs":
        return None
    return [float(e) * s for e in eps]


def _pick_examples(y: np.ndarray, correct: np.ndarray, num_classes: int, k: int) -> list[int]:
    """Up to ``k`` clean-correct positions, round-robin over classes (first occurrences first)."""
    pools = [list(np.nonzero(correct & (y == c))[0]) for c in range(num_classes)]
    out: list[int] = []
    depth = 0
    while len(out) < k and any(len(p) > depth for p in pools):
        for p in pools:
            if len(p) > depth and len(out) < k:
                out.append(int(p[depth]))
        depth += 1
    return out


def _results(*, config: ProtocolConfig, members: Sequence[AttackSpec], y: np.ndarray, clean_pred: np.ndarray,
             adv_pred: np.ndarray, status: np.ndarray, broken_by: np.ndarray, ens_m: dict[str, np.ndarray],
             mem_m: dict[str, np.ndarray], costs: dict[int, tuple[np.ndarray, np.ndarray]], classes: list[str],
             units: str) -> dict[str, Any]:
    k = len(classes)
    n = len(y)
    correct = clean_pred == y
    clean_cm = confusion_matrix(y, clean_pred, k)
    clean = {"accuracy": ratio(int(correct.sum()), n), "metrics": metrics_from_confusion(clean_cm, classes)}
    per_eps = []
    for e, eps in enumerate(config.eps):
        members_out = []
        for m, spec in enumerate(members):
            st = status[e, m]
            succ = st == 1
            entry: dict[str, Any] = {
                "label": spec.label, "name": spec.name,
                "success_rate": ratio(int(succ.sum()), int((st >= 0).sum())),
                "broken_first": int((broken_by[e] == m).sum()),
                "robust_accuracy_after": ratio(int((correct & ~((broken_by[e] >= 0) & (broken_by[e] <= m))).sum()), n),
                "grad_evals": int(costs[e][0][m]), "queries": int(costs[e][1][m]),
                "perturbation": summarize({kk: mem_m[kk][e, m][succ] for kk in METRICS}, units=units,
                                          cutoff_hz=config.hf_cutoff_hz),
            }
            if config.mode == "individual":
                entry["robust_accuracy_alone"] = ratio(int((correct & ~succ).sum()), n)
            members_out.append(entry)
        hit = broken_by[e] >= 0
        per_eps.append({
            "eps": float(eps),
            "robust_accuracy": robust_accuracy(y, adv_pred[e]),
            "attack_success_rate": attack_success_rate(y, clean_pred, adv_pred[e]),
            "fooling_rate": fooling_rate(clean_pred, adv_pred[e]),
            "metrics": metrics_from_confusion(confusion_matrix(y, adv_pred[e], k), classes),
            "attacks": members_out,
            "perturbation": summarize({kk: ens_m[kk][e][hit] for kk in METRICS}, units=units,
                                      cutoff_hz=config.hf_cutoff_hz),
        })
    grid = [0.0] + [float(e) for e in config.eps] if config.eps_mode != "snr_db" else None
    clean_acc = clean["accuracy"]["value"] or 0.0
    curves: dict[str, Any] = {"eps": grid if grid else [float(e) for e in config.eps]}
    ens_acc = [p["robust_accuracy"]["value"] for p in per_eps]
    curves["ensemble"] = {"accuracy": ([clean_acc] + ens_acc) if grid else ens_acc,
                          "auc": curve_auc(config.eps, ens_acc, clean_accuracy=clean_acc) if grid else None}
    kind = "alone" if config.mode == "individual" else "after"
    curves["kind"] = "standalone" if kind == "alone" else "cumulative (robust after this attack and those before it)"
    curves["attacks"] = {}
    for m, spec in enumerate(members):
        acc = [p["attacks"][m][f"robust_accuracy_{kind}"]["value"] for p in per_eps]
        curves["attacks"][spec.label] = {
            "accuracy": ([clean_acc] + acc) if grid else acc,
            "auc": curve_auc(config.eps, acc, clean_accuracy=clean_acc) if grid else None,
        }
    return {"clean": clean, "per_eps": per_eps, "curves": curves}


def _minimal_section(lo: np.ndarray, hi: np.ndarray, correct: np.ndarray, config: ProtocolConfig,
                     results: dict[str, Any]) -> dict[str, Any]:
    n = len(hi)
    eps_max = float(config.eps[-1])
    dense = np.linspace(0.0, eps_max, 101)
    curve = curve_from_minimal_eps(hi, dense, n)
    acc = [c["value"] for c in curve]
    at_grid = curve_from_minimal_eps(hi, config.eps, n)
    agreement = [{"eps": float(e), "bisection": g, "sweep": p["robust_accuracy"],
                  "difference": g["numerator"] - p["robust_accuracy"]["numerator"]}
                 for e, g, p in zip(config.eps, at_grid, results["per_eps"])]
    broken = correct & np.isfinite(hi)
    width = (hi - lo)[broken]
    q = np.quantile(hi[broken], [0.1, 0.25, 0.5, 0.75, 0.9]).tolist() if broken.any() else None
    return {
        "method": (f"binary search over the ε grid, then {config.refine_steps} bisection steps; ensemble in "
                   "sequential mode with early-stopped attacks; the value is an upper bound (an adversarial "
                   "example was found there)"),
        "eps_max": eps_max,
        "n_clean_correct": int(correct.sum()),
        "n_broken_within_eps_max": int(broken.sum()),
        "quantiles_of_broken": None if q is None else dict(zip(["q10", "q25", "median", "q75", "q90"], q)),
        "max_bracket_width": float(width.max()) if width.size else None,
        "curve": {"eps": dense.tolist(), "accuracy": acc, "numerators": [c["numerator"] for c in curve],
                  "denominator": n},
        "auc": float(np.trapezoid(acc, dense) / eps_max) if hasattr(np, "trapezoid")
        else float(np.trapz(acc, dense) / eps_max),
        "agreement_with_sweep": agreement,
    }
