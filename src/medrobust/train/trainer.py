"""Standard supervised training with validation-based model selection.

A template trainer in the style of MAIR (Kim et al., "Fantastic Robustness Measures", 2023): the
loop, seeding, validation, checkpointing and early stopping live here; a defence overrides only
:meth:`Trainer.compute_loss` (and, if it needs state per epoch, :meth:`Trainer.on_epoch_start`).

Padding masks (variable-length records, e.g. CPSC 2018) travel with every batch: ``compute_loss``
receives the batch's mask and the model is called through :func:`medrobust.models.inference.forward`,
which hands the mask to models with masked pooling.

A model whose validation balanced accuracy stays within :data:`DEGENERATE_MARGIN` of ``1/K`` (what a
constant predictor scores) is *degenerate*: the trainer warns, marks the history row, and records
``training["degenerate"] = True`` with the reason in the checkpoint card, so that an evaluation does
not present the robust accuracy of a constant predictor as robustness.

Parts of Ma & Liang's recipe (ICLR 2020 AI4AH workshop, arXiv 2005.09134, §3; the optimiser and
the per-unit layers of their released code) are options of :class:`TrainConfig`:
``decoupled_decay`` (``p ← p − lr·d·sign(p)`` and ``p ← p − lr·d·p`` before every optimiser step,
decoupled from the Adamax moments as in Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019) and ``reinit_dead_units`` (units whose absolute weight gradient summed over
an epoch is exactly zero get a fresh unit-norm weight vector at the start of the next epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medrobust.data.balance import class_weights, oversample_indices
from medrobust.distributed import all_reduce_sum, average_gradients, shard
from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError
from medrobust.evaluation.metrics import classification_metrics
from medrobust.models.inference import forward
from medrobust.train import resume as resume_state
from medrobust.train.augment import LR_SCHEDULES, crop_length, lr_factor, random_crop

MONITORS = ("accuracy", "balanced_accuracy", "macro_f1", "loss")
CLASS_BALANCE = ("auto", "none", "oversample", "weights")
SELECTIONS = ("best", "last")
DEGENERATE_MARGIN = 0.05
"""Validation balanced accuracy within this distance of ``1/K`` marks a (near-)constant predictor."""


def degenerate_reason(metrics: dict[str, Any], margin: float = DEGENERATE_MARGIN) -> str | None:
    """Why ``metrics`` (of :func:`~medrobust.evaluation.metrics.classification_metrics`) look like a constant
    predictor, or ``None``.

    ``K`` counts the classes present in the evaluated labels (those with support), because balanced
    accuracy averages recall over them; a constant predictor scores exactly ``1/K``.
    """
    sens = metrics.get("sensitivity") or {}
    support = metrics.get("support")
    if isinstance(support, dict):
        k = sum(1 for v in support.values() if v)
    else:
        k = sum(1 for v in sens.values() if v is not None and not (isinstance(v, float) and math.isnan(v)))
    bal = metrics.get("balanced_accuracy")
    if k < 2 or bal is None:
        return None
    if abs(float(bal) - 1.0 / k) <= margin:
        return (f"validation balanced accuracy {float(bal):.3f} is within {margin} of 1/K = {1.0 / k:.3f} "
                f"(K = {k} classes): the model (nearly) predicts one class; train with class balancing "
                f"(class_balance='oversample') or a lower learning rate")
    return None


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
        L2 weight decay of the optimiser (coupled: added to the gradient).
    decoupled_decay
        Ma & Liang's decoupled decay ``d``: before every optimiser step each parameter is shrunk by
        ``lr·d·sign(p)`` and then by ``lr·d·p`` (their recipe: ``d = 0.01``; 0 disables it).
    class_balance
        ``"none"``, ``"oversample"`` (Ma & Liang's tiled sampler, re-shuffled each epoch),
        ``"weights"`` (inverse-frequency weighted cross-entropy) or ``"auto"`` (default: the trainer's
        :attr:`Trainer.default_class_balance`, i.e. the balancing of the defence's paper; plain CE
        training: ``"none"``). The card records the resolved value.
    reinit_dead_units
        Re-initialise dead units at every epoch start (Ma & Liang); needs a model with
        ``reinit_dead_units`` and ``norm_layers`` (``cnn1``/``mlp1``).
    select
        ``"best"`` (default: the best epoch on validation by ``monitor``) or ``"last"`` (the final
        epoch, as Ma & Liang evaluate).
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
    lr_schedule
        ``"constant"`` (default) or ``"cosine"`` (per-epoch cosine annealing to 0 over ``epochs``;
        :func:`medrobust.train.augment.cosine_factor`).
    random_crop
        ``None`` (default) or the fraction of every training signal's samples kept in a window at a random
        offset per signal and epoch (:func:`medrobust.train.augment.random_crop`); validation and test see the
        whole signal, so the model must accept any length (e.g. ``resnet1d``).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    decoupled_decay: float = 0.0
    class_balance: str = "auto"
    reinit_dead_units: bool = False
    select: str = "best"
    seed: int = 0
    patience: int | None = 5
    monitor: str = "accuracy"
    device: str = "cpu"
    progress: bool = True
    max_batches_per_epoch: int | None = None
    eval_batch_size: int = 1024
    lr_schedule: str = "constant"
    random_crop: float | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")
        if self.optimizer not in ("adam", "adamax"):
            raise ConfigError(f"optimizer must be 'adam' or 'adamax', got {self.optimizer!r}.")
        if self.class_balance not in CLASS_BALANCE:
            raise ConfigError(f"class_balance must be one of {CLASS_BALANCE}, got {self.class_balance!r}.")
        if not (isinstance(self.decoupled_decay, (int, float)) and 0.0 <= self.decoupled_decay < 1.0 / self.lr):
            raise ConfigError(f"decoupled_decay must be a number in [0, 1/lr), got {self.decoupled_decay!r}.")
        if self.select not in SELECTIONS:
            raise ConfigError(f"select must be one of {SELECTIONS}, got {self.select!r}.")
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {MONITORS}, got {self.monitor!r}.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}.")
        if self.random_crop is not None and not (isinstance(self.random_crop, (int, float))
                                                 and not isinstance(self.random_crop, bool)
                                                 and 0.0 < self.random_crop <= 1.0):
            raise ConfigError(f"random_crop must be None or a fraction in (0, 1], got {self.random_crop!r}.")


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`: per-epoch history and the selected epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    checkpoint: str | None = None
    degenerate: str | None = None
    """Why the selected model looks like a constant predictor (``None``: it does not)."""
    dead_units_reset: int = 0


class Trainer:
    """Train ``model`` with cross-entropy; override :meth:`compute_loss` for other objectives.

    Parameters
    ----------
    model
        Any module mapping ``(B, leads, samples)`` to logits (optionally ``forward(x, mask=None)``).
    config
        :class:`TrainConfig` (copied; ``class_balance="auto"`` is resolved to
        :attr:`default_class_balance`).
    out_dir
        When given, ``history.jsonl`` is appended after every epoch and the best model is saved to
        ``out_dir/checkpoint`` as soon as it improves (so an interrupted run loses nothing).
    """

    name = "ce"
    default_class_balance = "none"
    """Class balancing of ``class_balance="auto"`` (defences set their paper's)."""
    resumable = True
    """Whether an interrupted :meth:`fit` can continue at its last epoch (``resume=True``; two-stage defences
    that train a second network inside :meth:`fit` cannot yet)."""
    resume = False
    """Continue from ``out_dir/train_state.pt`` when it exists (set before :meth:`fit`)."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, out_dir: str | Path | None = None) -> None:
        self.config = dataclasses.replace(config) if config is not None else TrainConfig()
        self.config.validate()
        if self.config.class_balance == "auto":
            self.config.class_balance = self.default_class_balance
        self.model = model.to(self.config.device)
        if self.config.reinit_dead_units and not (hasattr(model, "reinit_dead_units") and hasattr(model, "norm_layers")):
            raise ConfigError(f"reinit_dead_units=True needs a model with per-unit layers (cnn1, mlp1); "
                              f"{type(model).__name__} has none. Set reinit_dead_units=False.")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.loss_weights: torch.Tensor | None = None
        self.optimizer = self._make_optimizer()
        self._grad_abs: dict[str, torch.Tensor] = {}
        self._dead_reset = 0

    # -- override points -------------------------------------------------------------------
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, logits)`` for one batch (model in train mode; ``mask``: the batch's padding mask)."""
        logits = forward(self.model, x, mask)
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

    @torch.no_grad()
    def _decay(self) -> None:
        """Ma & Liang's decoupled decay: ``p ← p − lr·d·sign(p)``, then ``p ← p − lr·d·p``."""
        rate = self.config.lr * self.config.decoupled_decay
        for p in self.model.parameters():
            if p.requires_grad:
                p.sub_(rate * p.sign())
                p.sub_(rate * p)

    def _unit_layers(self) -> dict[str, nn.Module]:
        layers = {id(m) for m in self.model.norm_layers()}  # type: ignore[operator]
        return {n: m for n, m in self.model.named_modules() if id(m) in layers}

    @torch.no_grad()
    def _accumulate_grad_abs(self) -> None:
        for name, layer in self._unit_layers().items():
            g = layer.weight.grad
            if g is not None:
                acc = self._grad_abs.get(name)
                self._grad_abs[name] = g.abs() if acc is None else acc + g.abs()
            elif name not in self._grad_abs:
                self._grad_abs[name] = torch.zeros_like(layer.weight)

    def _reinit_dead(self, gen: torch.Generator) -> None:
        """Re-initialise the units whose accumulated |gradient| over the last epoch is exactly zero."""
        if self._grad_abs:
            self._dead_reset += int(self.model.reinit_dead_units(self._grad_abs, generator=gen))  # type: ignore[operator]
        self._grad_abs = {}

    def _step(self, loss: torch.Tensor | None, share: float | None = None) -> None:
        """One optimiser step; under a process group ``share`` is this rank's slice of the global batch and the
        gradients are combined over the ranks first (``loss=None``: an empty slice, no gradient of its own)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
        if share is not None:
            average_gradients(self.model.parameters(), share)
        if cfg.reinit_dead_units:
            self._accumulate_grad_abs()
        if cfg.decoupled_decay > 0:
            self._decay()
        self.optimizer.step()

    def train_epoch(self, train: ECGDataset, gen: torch.Generator, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        if cfg.reinit_dead_units and epoch > 0:
            self._reinit_dead(gen)
        order = self._epoch_order(train, gen, epoch)
        batches = order.split(cfg.batch_size)
        if cfg.max_batches_per_epoch is not None:
            batches = batches[: cfg.max_batches_per_epoch]
        total, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        normalize = getattr(self.model, "normalize_kernels", None)
        rank, world = shard()
        crop_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        for b in bar:
            share = None
            if world > 1:  # this rank's slice of the global batch; the gradients are averaged over the ranks
                share, b = len(b[rank::world]) / len(b), b[rank::world]
            if normalize is not None:
                normalize()
            if len(b) == 0:
                self._step(None, share)
                continue
            x, y, mask = train.x[b].to(cfg.device), train.y[b].to(cfg.device), batch_mask(train, b, cfg.device)
            if cfg.random_crop is not None:
                x, mask = random_crop(x, mask, length=crop_length(x.shape[-1], cfg.random_crop), generator=crop_gen)
            loss, logits = self.compute_loss(x, y, mask)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate (lr={cfg.lr})."
                )
            self._step(loss, share)
            total += len(b)
            loss_sum += float(loss.detach()) * len(b)
            correct += int((logits.detach().argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{correct / total:.3f}")
        total, correct, loss_sum = all_reduce_sum([total, correct, loss_sum])
        return {"train_loss": loss_sum / max(total, 1), "train_accuracy": correct / max(total, 1)}

    @torch.no_grad()
    def evaluate(self, data: ECGDataset) -> dict[str, Any]:
        """Loss and classification metrics on ``data`` (model in eval mode, the data's masks passed on)."""
        was_training = self.model.training
        self.model.eval()
        preds, loss_sum = [], 0.0
        for b in torch.arange(len(data)).split(self.config.eval_batch_size):
            x, y = data.x[b].to(self.config.device), data.y[b].to(self.config.device)
            logits = forward(self.model, x, batch_mask(data, b, self.config.device))
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu())
        self.model.train(was_training)
        m = classification_metrics(data.y, torch.cat(preds), data.num_classes, data.meta.classes)
        m["loss"] = loss_sum / max(len(data), 1)
        return m

    def _better(self, new: dict[str, Any], best: dict[str, Any] | None) -> bool:
        if best is None or self.config.select == "last":
            return True
        key = self.config.monitor
        return new[key] < best[key] if key == "loss" else new[key] > best[key]

    def _start(self, train: ECGDataset, val: ECGDataset) -> dict[str, Any] | None:
        """Checks and class weights; the saved state to continue from (``resume``), else a fresh history."""
        cfg = self.config
        if train.input_shape != val.input_shape:
            raise ConfigError(f"train inputs {train.input_shape} and val inputs {val.input_shape} differ.")
        if cfg.random_crop is not None:
            self._check_crop(train)
        if cfg.class_balance == "weights":
            self.loss_weights = class_weights(train.y.numpy(), train.num_classes).to(cfg.device)
        self._stamp = resume_state.fingerprint(self, train, val) if self.out_dir is not None else None
        path = None if self.out_dir is None else self.out_dir / resume_state.STATE_NAME
        self.check_resume()
        if self.resume and path is not None and path.is_file():
            return resume_state.load_state(path, self._stamp)  # type: ignore[arg-type]
        if self._writes():
            self.out_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            (self.out_dir / "history.jsonl").write_text("")  # type: ignore[operator]

    @torch.no_grad()
    def _check_crop(self, train: ECGDataset) -> None:
        """Refuse ``random_crop`` for images and for a model that needs its training length (before any work)."""
        if len(train.input_shape) != 2:
            raise ConfigError(f"random_crop crops signals (leads, samples); the training inputs are {train.input_shape}. "
                              "Set random_crop to None.")
        x = train.x[:1].to(self.config.device)
        was_training = self.model.training
        self.model.eval()
        try:
            forward(self.model, x[..., : crop_length(x.shape[-1], self.config.random_crop)])  # type: ignore[arg-type]
        except RuntimeError as exc:
            raise ConfigError(f"random_crop={self.config.random_crop}: {type(self.model).__name__} does not accept "
                              f"signals shorter than its training length ({str(exc).splitlines()[0][:120]}); use a "
                              "length-agnostic model such as resnet1d, or set random_crop to None.") from None
        finally:
            self.model.train(was_training)

    def check_resume(self) -> None:
        """Refuse ``resume`` for a trainer that cannot continue at an epoch (before any work is done)."""
        if self.resume and not self.resumable:
            raise ConfigError(f"defence {self.name!r} cannot resume an interrupted training yet (it trains a second "
                              "network inside fit); rerun with --overwrite to train from the start.")

    def _writes(self) -> bool:
        """Whether this process writes the history and checkpoints (rank 0 of a process group)."""
        return self.out_dir is not None and shard()[0] == 0

    def _log(self, row: dict[str, Any], val_m: dict[str, Any]) -> None:
        if self._writes():
            with open(self.out_dir / "history.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.config.progress and shard()[0] == 0:
            tqdm.write(
                f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  val acc {val_m['accuracy']:.4f}  "
                f"bal-acc {val_m['balanced_accuracy']:.4f}  F1 {val_m['macro_f1']:.4f}  "
                f"({row['seconds']:.1f}s){'  *' if row['best'] else ''}{'  DEGENERATE' if row['degenerate'] else ''}"
            )

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """Train, validate every epoch, keep the best-on-validation (or last) weights (never test)."""
        cfg = self.config
        saved = self._start(train, val)
        gen = torch.Generator().manual_seed(cfg.seed)
        result = TrainResult()
        best_state: dict[str, torch.Tensor] | None = None
        stale, first = 0, 0
        if saved is not None:
            first, stale, best_state = resume_state.restore(self, saved, gen, result)
            if cfg.patience is not None and stale >= cfg.patience:
                first = cfg.epochs  # it had stopped early; only the final steps were lost
        start = time.perf_counter()
        for epoch in range(first, cfg.epochs):
            for group in self.optimizer.param_groups:  # each group's own starting rate, as torch's schedulers keep it
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
            self.on_epoch_start(epoch)
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(train, gen, epoch)}
            row["seconds"] = time.perf_counter() - t0
            val_m = self.evaluate(val)
            row.update({f"val_{k}": val_m[k] for k in ("loss", "accuracy", "balanced_accuracy", "macro_f1")})
            row["val_sensitivity"] = val_m["sensitivity"]
            row["degenerate"] = degenerate_reason(val_m) is not None
            if cfg.reinit_dead_units:
                row["dead_units_reset"] = self._dead_reset
            improved = self._better(val_m, result.best_metrics or None)
            row["best"] = improved
            result.history.append(row)
            if improved:
                result.best_epoch, result.best_metrics = epoch + 1, val_m
                result.degenerate = degenerate_reason(val_m)
                best_state = copy.deepcopy(self.model.state_dict())
                stale = 0
                if self._writes():
                    result.checkpoint = str(self.save(self.out_dir / "checkpoint", train, result))  # type: ignore[operator]
            else:
                stale += 1
            self._log(row, val_m)
            if self._writes() and self.resumable:
                resume_state.save_state(self.out_dir / resume_state.STATE_NAME, trainer=self, epoch=epoch + 1,  # type: ignore[operator]
                                        gen=gen, result=result, best_state=best_state, stale=stale, stamp=self._stamp)
            if cfg.patience is not None and stale >= cfg.patience:
                break
        if self._writes():
            (self.out_dir / resume_state.STATE_NAME).unlink(missing_ok=True)  # type: ignore[operator]
        result.seconds = time.perf_counter() - start
        result.dead_units_reset = self._dead_reset
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        self._warn_degenerate(result)
        return result

    def _warn_degenerate(self, result: TrainResult) -> None:
        if result.degenerate is None:
            return
        msg = f"{self.name}: degenerate model (epoch {result.best_epoch}): {result.degenerate}."
        if self.config.progress:
            tqdm.write("WARNING: " + msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def save(self, path: Path, train: ECGDataset, result: TrainResult) -> Path:
        """Checkpoint the current model with its training card (``training["degenerate"]`` included)."""
        from medrobust.models.checkpoint import save_checkpoint

        training = {"trainer": self.name, "config": asdict(self.config), "hyperparameters": self.hyperparameters(),
                    "best_epoch": result.best_epoch,
                    "val_metrics": {k: result.best_metrics.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                    "degenerate": result.degenerate is not None}
        if result.degenerate is not None:
            training["degenerate_reason"] = result.degenerate
        return save_checkpoint(
            self.model,
            path,
            classes=train.meta.classes,
            fs=train.meta.fs,
            input_shape=train.input_shape,
            units=train.meta.units,
            training=training,
            data=train.meta.card(),
        )


def batch_mask(data: ECGDataset, index: torch.Tensor, device: str) -> torch.Tensor | None:
    """The padding mask of the items ``index`` of ``data`` (``None`` when the data has none)."""
    m = getattr(data, "mask", None)
    if m is None:
        return None
    m = m if m.shape[0] == 1 else m[index]
    return m.to(device)


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
