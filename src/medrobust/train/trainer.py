"""Standard supervised training with validation-based model selection.

A template trainer in the style of MAIR (Kim et al., "Fantastic Robustness Measures", 2023): the
loop, seeding, validation, checkpointing and early stopping live here; a defence overrides only
:meth:`Trainer.compute_loss` (and, if it needs state per epoch, :meth:`Trainer.on_epoch_start`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medrobust.data.balance import class_weights, oversample_indices
from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError
from medrobust.evaluation.metrics import classification_metrics

MONITORS = ("accuracy", "balanced_accuracy", "macro_f1", "loss")


@dataclass
class TrainConfig:
    """Training settings (all recorded in the checkpoint card).

    Attributes
    ----------
    epochs
        Maximum epochs.
    batch_size
        Mini-batch size.
    lr
        Learning rate.
    optimizer
        ``"adam"`` or ``"adamax"`` (Ma & Liang use Adamax, lr 1e-3, batch 128).
    weight_decay
        L2 weight decay of the optimiser.
    class_balance
        ``"none"``, ``"oversample"`` (Ma & Liang's tiled sampler, re-shuffled each epoch) or
        ``"weights"`` (inverse-frequency weighted cross-entropy).
    seed
        Seeds initialisation-independent randomness: batch order and oversampling.
    patience
        Stop after this many epochs without improvement of ``monitor`` (``None``: never).
    monitor
        Validation quantity that picks the best epoch: accuracy, balanced_accuracy, macro_f1 or loss.
    device
        Torch device string.
    progress
        Show a progress bar.
    max_batches_per_epoch
        Cap on batches per epoch (``None``: full epochs); useful for quick runs.
    eval_batch_size
        Batch size of validation passes.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    class_balance: str = "none"
    seed: int = 0
    patience: int | None = 5
    monitor: str = "accuracy"
    device: str = "cpu"
    progress: bool = True
    max_batches_per_epoch: int | None = None
    eval_batch_size: int = 1024

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")
        if self.optimizer not in ("adam", "adamax"):
            raise ConfigError(f"optimizer must be 'adam' or 'adamax', got {self.optimizer!r}.")
        if self.class_balance not in ("none", "oversample", "weights"):
            raise ConfigError(f"class_balance must be 'none', 'oversample' or 'weights', got {self.class_balance!r}.")
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {MONITORS}, got {self.monitor!r}.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}.")


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`: per-epoch history and the selected epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    checkpoint: str | None = None


class Trainer:
    """Train ``model`` with cross-entropy; override :meth:`compute_loss` for other objectives.

    Parameters
    ----------
    model
        Any module mapping ``(B, leads, samples)`` to logits.
    config
        :class:`TrainConfig`.
    out_dir
        When given, ``history.jsonl`` is appended after every epoch and the best model is saved to
        ``out_dir/checkpoint`` as soon as it improves (so an interrupted run loses nothing).
    """

    name = "ce"

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, out_dir: str | Path | None = None) -> None:
        self.config = config or TrainConfig()
        self.config.validate()
        self.model = model.to(self.config.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.loss_weights: torch.Tensor | None = None
        self.optimizer = self._make_optimizer()

    # -- override points -------------------------------------------------------------------
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, logits)`` for one batch (model in train mode)."""
        logits = self.model(x)
        return F.cross_entropy(logits, y, weight=self.loss_weights), logits

    def on_epoch_start(self, epoch: int) -> None:
        """Hook called before each epoch (e.g. for ε ramps)."""

    def hyperparameters(self) -> dict[str, Any]:
        """Defence hyper-parameters recorded in the checkpoint card."""
        return {}

    # -- the loop ---------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.Adam if self.config.optimizer == "adam" else torch.optim.Adamax
        return cls(self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _epoch_order(self, train: ECGDataset, gen: torch.Generator, epoch: int) -> torch.Tensor:
        if self.config.class_balance == "oversample":
            idx = oversample_indices(train.y.numpy(), seed=self.config.seed * 1000 + epoch)
            return torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
        return torch.randperm(len(train), generator=gen)

    def train_epoch(self, train: ECGDataset, gen: torch.Generator, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        order = self._epoch_order(train, gen, epoch)
        batches = order.split(cfg.batch_size)
        if cfg.max_batches_per_epoch is not None:
            batches = batches[: cfg.max_batches_per_epoch]
        total, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        normalize = getattr(self.model, "normalize_kernels", None)
        for b in bar:
            x, y = train.x[b].to(cfg.device), train.y[b].to(cfg.device)
            if normalize is not None:
                normalize()
            loss, logits = self.compute_loss(x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate (lr={cfg.lr})."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = len(b)
            total += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.detach().argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{correct / total:.3f}")
        return {"train_loss": loss_sum / max(total, 1), "train_accuracy": correct / max(total, 1)}

    @torch.no_grad()
    def evaluate(self, data: ECGDataset) -> dict[str, Any]:
        """Loss and classification metrics on ``data`` (model in eval mode)."""
        was_training = self.model.training
        self.model.eval()
        preds, loss_sum = [], 0.0
        for b in torch.arange(len(data)).split(self.config.eval_batch_size):
            x, y = data.x[b].to(self.config.device), data.y[b].to(self.config.device)
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu())
        self.model.train(was_training)
        m = classification_metrics(data.y, torch.cat(preds), data.num_classes, data.meta.classes)
        m["loss"] = loss_sum / max(len(data), 1)
        return m

    def _better(self, new: dict[str, Any], best: dict[str, Any] | None) -> bool:
        if best is None:
            return True
        key = self.config.monitor
        return new[key] < best[key] if key == "loss" else new[key] > best[key]

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """Train, validate every epoch, keep the best-on-validation weights (never test)."""
        cfg = self.config
        if train.input_shape != val.input_shape:
            raise ConfigError(f"train inputs {train.input_shape} and val inputs {val.input_shape} differ.")
        if cfg.class_balance == "weights":
            self.loss_weights = class_weights(train.y.numpy(), train.num_classes).to(cfg.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        result = TrainResult()
        best_state: dict[str, torch.Tensor] | None = None
        stale = 0
        start = time.perf_counter()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "history.jsonl").write_text("")
        for epoch in range(cfg.epochs):
            self.on_epoch_start(epoch)
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(train, gen, epoch)}
            row["seconds"] = time.perf_counter() - t0
            val_m = self.evaluate(val)
            row.update({f"val_{k}": val_m[k] for k in ("loss", "accuracy", "balanced_accuracy", "macro_f1")})
            row["val_sensitivity"] = val_m["sensitivity"]
            improved = self._better(val_m, result.best_metrics or None)
            row["best"] = improved
            result.history.append(row)
            if improved:
                result.best_epoch, result.best_metrics = epoch + 1, val_m
                best_state = copy.deepcopy(self.model.state_dict())
                stale = 0
                if self.out_dir is not None:
                    result.checkpoint = str(self.save(self.out_dir / "checkpoint", train, result))
            else:
                stale += 1
            if self.out_dir is not None:
                with open(self.out_dir / "history.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            if cfg.progress:
                tqdm.write(
                    f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val acc {val_m['accuracy']:.4f}  "
                    f"bal-acc {val_m['balanced_accuracy']:.4f}  F1 {val_m['macro_f1']:.4f}  "
                    f"({row['seconds']:.1f}s){'  *' if improved else ''}"
                )
            if cfg.patience is not None and stale >= cfg.patience:
                break
        result.seconds = time.perf_counter() - start
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return result

    def save(self, path: Path, train: ECGDataset, result: TrainResult) -> Path:
        """Checkpoint the current model with its training card."""
        from medrobust.models.checkpoint import save_checkpoint

        return save_checkpoint(
            self.model,
            path,
            classes=train.meta.classes,
            fs=train.meta.fs,
            input_shape=train.input_shape,
            units=train.meta.units,
            training={"trainer": self.name, "config": asdict(self.config), "hyperparameters": self.hyperparameters(),
                      "best_epoch": result.best_epoch,
                      "val_metrics": {k: result.best_metrics.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")}},
            data=train.meta.card(),
        )


def train_model(
    model: nn.Module, train: ECGDataset, val: ECGDataset, config: TrainConfig | None = None, *, out_dir: str | Path | None = None
) -> tuple[nn.Module, TrainResult]:
    """Convenience: ``Trainer(model, config, out_dir=out_dir).fit(train, val)``."""
    trainer = Trainer(model, config, out_dir=out_dir)
    result = trainer.fit(train, val)
    return trainer.model, result


def seed_everything(seed: int) -> None:
    """Seed torch and numpy's legacy global RNG (model initialisation happens outside the trainer)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
