"""Shared machinery of the defences: a :class:`~medrobust.train.Trainer` subclass with recorded
hyper-parameters, per-epoch state, seeded randomness and checks of ε against the data's scale.

Every defence is a trainer that overrides one loss method (the MAIR template, landscape.md §5.7):
``compute_loss(x, y) -> (loss, logits)``. The loop, validation, early stopping and checkpointing are
the foundation's :class:`~medrobust.train.Trainer`; the checkpoint card records the defence's name and
:meth:`DefenseTrainer.hyperparameters`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError
from medrobust.train.trainer import TrainConfig, Trainer, TrainResult

BoundsArg = tuple[float, float] | str | None
"""``(lo, hi)``, ``None`` (unbounded) or ``"auto"`` (from the training set's units at :meth:`fit`)."""

UNIT_BOUNDS: dict[str, tuple[float, float]] = {
    "normalized [0, 1]": (0.0, 1.0),
    "intensity [0, 1]": (0.0, 1.0),
}


def check_float(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                strict: bool = False) -> float:
    """A finite float within ``[minimum, maximum]`` (``strict``: ``> minimum``), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    v = float(value)
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}, got {v}.")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {v}.")
    return v


def check_count(value: Any, name: str, *, minimum: int = 0) -> int:
    """An ``int >= minimum`` or :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` or :class:`ConfigError`."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}.")
    return str(value)


def check_bounds(value: Any, name: str = "bounds") -> BoundsArg:
    """Validate a bounds argument (``None``, ``"auto"`` or ``(lo, hi)`` with ``lo < hi``)."""
    if value is None or value == "auto":
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo = check_float(value[0], f"{name}[0]")
        hi = check_float(value[1], f"{name}[1]")
        if not lo < hi:
            raise ConfigError(f"{name} needs lo < hi, got {value!r}.")
        return (lo, hi)
    raise ConfigError(f"{name} must be None, 'auto' or a pair (lo, hi), got {value!r}.")


def is_mlp1(model: nn.Module) -> bool:
    """Whether ``model`` is Ma & Liang's MLP1 (the papers give MLP-specific defaults)."""
    from medrobust.models.ma_liang import MLP1

    return isinstance(model, MLP1)


def clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clamp to ``bounds`` (identity when ``None``); differentiable almost everywhere."""
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def median_peak_to_peak(x: torch.Tensor, max_samples: int = 4096) -> float:
    """Median per-sample peak-to-peak amplitude (over at most ``max_samples`` evenly spaced samples)."""
    step = max(1, x.shape[0] // max_samples)
    flat = x[::step].flatten(1)
    return float((flat.amax(1) - flat.amin(1)).median())


class DefenseTrainer(Trainer):
    """Base class of the defences: a :class:`Trainer` with hyper-parameters, an epoch counter and a generator.

    Parameters
    ----------
    model
        The model to train (any module mapping ``(B, leads, samples)`` or images to logits).
    config
        :class:`~medrobust.train.TrainConfig` (epochs, optimiser, batch size, seed ...).
    out_dir
        Output folder of the checkpoint and ``history.jsonl`` (see :class:`Trainer`).
    generator
        Source of the defence's randomness (random starts, noise, projections). Default: a CPU
        generator seeded with ``config.seed``.

    Notes
    -----
    Subclasses store their hyper-parameters in ``self.hp`` (a JSON-serialisable dict) which
    :meth:`hyperparameters` returns and the checkpoint card records. ``self.epoch`` is the 0-based
    epoch being trained (set by :meth:`on_epoch_start`); warm-up and ε ramps read it.
    """

    name = "defense"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        self.epoch = 0
        self.hp: dict[str, Any] = {}
        self.data_units: str | None = None
        self.data_ptp: float | None = None

    # ------------------------------------------------------------------------------ hooks
    def on_epoch_start(self, epoch: int) -> None:
        """Record the epoch (0-based) for warm-up and ramps."""
        self.epoch = epoch

    def hyperparameters(self) -> dict[str, Any]:
        """The defence's hyper-parameters (recorded in the checkpoint card)."""
        return dict(self.hp)

    def prepare(self, train: ECGDataset) -> None:
        """Called by :meth:`fit` before training: resolve data-dependent settings, check scales."""

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """Resolve data-dependent settings (``bounds="auto"``, relative radii), check ε, then train."""
        self.data_units = train.meta.units
        self.data_ptp = median_peak_to_peak(train.x)
        self.prepare(train)
        return super().fit(train, val)

    # ------------------------------------------------------------------------------ helpers
    def resolve_bounds(self, bounds: BoundsArg) -> tuple[float, float] | None:
        """``"auto"``: ``(0, 1)`` for data in normalised [0, 1] units, else ``None``."""
        if bounds != "auto":
            return bounds  # type: ignore[return-value]
        return UNIT_BOUNDS.get(self.data_units or "")

    def check_scale(self, value: float, name: str) -> None:
        """Raise :class:`ConfigError` when a radius (or noise level) exceeds the data's typical amplitude.

        A radius as large as the median peak-to-peak amplitude of the training inputs is almost
        always a unit mistake (e.g. CardioDefense's ε = 10 ADC units on MIT-BIH beats in [0, 1]).
        """
        if self.data_ptp is not None and self.data_ptp > 0 and value >= self.data_ptp:
            raise ConfigError(
                f"{type(self).__name__}: {name}={value:g} is at least the median peak-to-peak amplitude "
                f"({self.data_ptp:.4g} {self.data_units or 'input units'}) of the training inputs; "
                f"give {name} in the data's units (e.g. {name}={0.1 * self.data_ptp:.2g})."
            )

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``x`` drawn from :attr:`generator`."""
        r = torch.randn(tuple(x.shape), generator=self.generator, device=self.generator.device, dtype=torch.float32)
        return r.to(device=x.device, dtype=x.dtype)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """``U[0, 1)`` noise shaped like ``x`` drawn from :attr:`generator`."""
        r = torch.rand(tuple(x.shape), generator=self.generator, device=self.generator.device, dtype=torch.float32)
        return r.to(device=x.device, dtype=x.dtype)
