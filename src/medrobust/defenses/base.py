"""Shared machinery of the defences: a :class:`~medrobust.train.Trainer` subclass with recorded
hyper-parameters, per-epoch state, seeded randomness and checks of ε against the data's scale.

Every defence is a trainer that overrides one loss method (the MAIR template; Kim et al., "Fantastic
Robustness Measures", 2023): ``compute_loss(x, y, mask=None) -> (loss, logits)``, where ``mask`` is the
batch's padding mask (``None`` for fixed-length data). The loop, validation, early stopping and checkpointing are
the foundation's :class:`~medrobust.train.Trainer`; the checkpoint card records the defence's name and
:meth:`DefenseTrainer.hyperparameters`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.checks import BoundsArg
from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError
from medrobust.models.inference import forward
from medrobust.train.trainer import TrainConfig, Trainer, TrainResult
from medrobust.units import resolve_bounds

__all__ = ["DefenseTrainer", "clip", "masked", "is_mlp1", "median_peak_to_peak"]

def is_mlp1(model: nn.Module) -> bool:
    """Whether ``model`` is Ma & Liang's MLP1 (the papers give MLP-specific defaults)."""
    from medrobust.models.ma_liang import MLP1

    return isinstance(model, MLP1)


def clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clamp to ``bounds`` (identity when ``None``); differentiable almost everywhere."""
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def masked(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``t·mask`` (``t`` unchanged when ``mask`` is ``None``): zero on padded samples."""
    return t if mask is None else t * mask.to(t.dtype)


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
        The model to train (any module mapping ``(B, leads, samples)`` or images to logits; models with
        masked pooling take ``forward(x, mask=None)``).
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

    def setup(self, train: ECGDataset) -> None:
        """Record the training data's units and amplitude, then :meth:`prepare` (``bounds="auto"``, checks)."""
        self.data_units = train.meta.units
        self.data_ptp = median_peak_to_peak(train.x)
        self.prepare(train)

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """Resolve data-dependent settings (``bounds="auto"``, relative radii), check ε, then train."""
        self.check_resume()  # before setup: a two-stage defence trains its teacher there
        self.setup(train)
        return super().fit(train, val)

    # ------------------------------------------------------------------------------ helpers
    def resolve_bounds(self, bounds: BoundsArg) -> tuple[float, float] | None:
        """``"auto"``: the natural range of the training data's units (:class:`medrobust.units.Units`:
        ``(0, 1)`` for ``"normalized [0, 1]"``, ``(-1, 1)`` for ``"max-abs scaled [-1, 1]"``, ``None`` for
        physical units), exactly as the evaluation protocol resolves it."""
        return resolve_bounds(bounds, self.data_units)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits, with the padding ``mask`` for models with masked pooling."""
        return forward(self.model, x, mask)

    def run_attack(self, attack_cls: type, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                   **kwargs: Any) -> torch.Tensor:
        """``attack_cls(model, **kwargs)(x, y, mask=mask)``; returns the detached ``x_adv``.

        The padding mask limits the perturbation (padded samples stay untouched) and the attack hands it
        to models with masked pooling in every forward (:func:`medrobust.models.inference.forward`).
        """
        res = attack_cls(self.model, **kwargs)(x, y, mask=None if mask is None else mask.to(x.dtype))
        return res.x_adv.detach()

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
