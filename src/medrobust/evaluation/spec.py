"""Protocol configuration: one ensemble member (:class:`AttackSpec`), the whole protocol
(:class:`ProtocolConfig`) and the named standard protocols (:data:`STANDARD_PROTOCOLS`).

The standard protocols fix the radii, attacks and settings per data type so that numbers are
comparable between models: Ma & Liang's MIT-BIH and CPSC 2018 settings (arXiv 2005.09134; Ma & Liang
2022), Han et al.'s raw-ADC radii (Nature Medicine 2020) and RobustBench's L∞ image radii (Croce et
al., NeurIPS Datasets and Benchmarks 2021). The data type comes from
:meth:`medrobust.units.Units.parse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from medrobust.errors import ConfigError
from medrobust.evaluation.perturbation import DEFAULT_CUTOFF_HZ
from medrobust.units import Units

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
        object.__setattr__(self, "attacks", _parse_attacks(self.attacks))
        object.__setattr__(self, "eps", _parse_eps(self.eps, self.eps_mode))
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


def _parse_attacks(attacks: Any) -> tuple[AttackSpec, ...]:
    """The ensemble as :class:`AttackSpec` s (at least one, unique labels)."""
    parsed = tuple(AttackSpec.parse(a) for a in (attacks or ()))
    if not parsed:
        raise ConfigError("the protocol needs at least one attack, e.g. attacks=['pgd'].")
    labels = [a.label for a in parsed]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ConfigError(f"attack labels must be unique, {dup} repeat; give each a distinct 'label'.")
    return parsed


def _parse_eps(eps: Any, eps_mode: str) -> tuple[float, ...]:
    """The radii sorted (finite, distinct, > 0 unless ``eps_mode == "snr_db"``)."""
    try:
        out = tuple(sorted(float(e) for e in eps))
    except (TypeError, ValueError):
        raise ConfigError(f"eps must be a list of numbers, got {eps!r}.") from None
    if not out:
        raise ConfigError("eps must hold at least one radius, e.g. eps=[0.01, 0.05, 0.1].")
    if len(set(out)) != len(out):
        raise ConfigError(f"eps holds duplicates: {list(eps)}.")
    if not all(math.isfinite(e) for e in out) or (eps_mode != "snr_db" and out[0] <= 0):
        raise ConfigError(f"every ε must be finite and > 0, got {list(eps)}.")
    return out


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
    # Ma & Liang's MIT-BIH protocol (beats min-max scaled to [0, 1]; Comput. Biol. Med. 2022, arXiv 2110.09759).
    "standard-ecg-normalized": ProtocolConfig(
        attacks=_WB_NORMALIZED + _BLACK_BOX, eps=(0.01, 0.03, 0.05, 0.1, 0.2, 0.3), norm="linf",
        bounds=(0.0, 1.0), mode="sequential", name="standard-ecg-normalized"),
    # Signals in mV: radii 10, 20, 50, 100 µV; SAP kernels scaled from Han's 300 Hz to the data's rate.
    "standard-ecg-mv": ProtocolConfig(
        attacks=(AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
                 AttackSpec("pgd", {"steps": 100, "random_start": True}),
                 AttackSpec("sap", {"steps": 100, "smooth_steps": 200, "fs": "auto"}))
        + _BLACK_BOX,
        eps=(0.01, 0.02, 0.05, 0.1), norm="linf", bounds=None, mode="sequential", name="standard-ecg-mv"),
    # Ma & Liang's CPSC2018 protocol (leads max-abs scaled to [-1, 1]; 100-PGD, step ε/10, 2 restarts).
    "standard-ecg-maxabs": ProtocolConfig(
        attacks=(AttackSpec("pgd", {"steps": 100, "rel_step_size": 0.1, "random_start": True}, restarts=2),
                 AttackSpec("apgd", {"loss": "ce", "steps": 100}), AttackSpec("apgd", {"loss": "dlr", "steps": 100}),
                 AttackSpec("sap", {"steps": 100, "smooth_steps": 200, "rel_step_size": 0.1})) + _BLACK_BOX,
        eps=(0.001, 0.003, 0.005, 0.01, 0.03, 0.05, 0.1), norm="linf", bounds=(-1.0, 1.0), mode="sequential",
        batch_size=32, name="standard-ecg-maxabs"),
    # Han et al.'s raw ADC counts (ε = 10 ≈ 10 µV; Han et al., Nature Medicine 2020).
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


def standard_protocol(units: str, fs: float, **overrides: Any) -> ProtocolConfig:
    """The standard protocol for data with these units and sampling rate.

    ``overrides`` may change only run logistics (``batch_size``, ``minimal_eps``, ``refine_steps``,
    ``n_examples``), never the attacks, radii or seed, which the standard fixes.
    """
    allowed = {"batch_size", "minimal_eps", "refine_steps", "n_examples"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ConfigError(f"a standard protocol has fixed {bad}; use a custom protocol to change them.")
    return replace(STANDARD_PROTOCOLS[f"standard-{Units.parse(units, fs=fs).require_kind()}"], **overrides)
