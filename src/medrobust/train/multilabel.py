"""Multi-label training: one sigmoid per class, binary cross-entropy, thresholded metrics.

12-lead datasets label a record with every diagnosis that applies (CPSC 2018: up to three of nine
classes; CinC 2021: any number of SNOMED-CT codes; Reyna et al. 2021). A multi-label head is the
same ``K`` logits as a single-label one; only the loss and the metrics change:

* loss: ``binary_cross_entropy_with_logits`` averaged over samples and classes (optionally with a
  per-class ``pos_weight``);
* prediction: class ``k`` is present when ``sigmoid(z_k) >= threshold`` (0.5);
* metrics (:func:`multilabel_metrics`): per-class F1 ``2 TP / (2 TP + FP + FN)``, sensitivity,
  specificity and precision; macro-F1 and class-balanced accuracy (mean of ``(sens + spec) / 2``)
  over the classes with at least one positive record; subset accuracy (every label of a record
  right), reported as ``accuracy`` so that validation-based selection works unchanged; Hamming
  accuracy (share of correct record-class decisions).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from medrobust.data.base import ECGDataset
from medrobust.errors import ConfigError, DataError
from medrobust.train.trainer import TrainConfig, Trainer, TrainResult


def multilabel_metrics(
    y_true: Any, y_pred: Any, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Metrics of binary decisions ``y_pred`` against multi-hot ``y_true``, both ``(N, K)``.

    Returns
    -------
    dict
        ``n``, ``accuracy`` (= ``subset_accuracy``), ``hamming_accuracy``, ``macro_f1``,
        ``balanced_accuracy``, per-class ``f1``, ``sensitivity``, ``specificity``, ``precision``,
        ``support`` (positives per class) and per-class counts ``tp``, ``fp``, ``fn``.
    """
    t = torch.as_tensor(y_true).detach().cpu().numpy() > 0.5
    p = torch.as_tensor(y_pred).detach().cpu().numpy() > 0.5
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must both be (N, K).")
    n, k = t.shape
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    tp = (t & p).sum(0).astype(np.float64)
    fp = (~t & p).sum(0).astype(np.float64)
    fn = (t & ~p).sum(0).astype(np.float64)
    tn = (~t & ~p).sum(0).astype(np.float64)
    pos = tp + fn
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(k), where=(2 * tp + fp + fn) > 0)
    sens = np.divide(tp, pos, out=np.zeros(k), where=pos > 0)
    spec = np.divide(tn, tn + fp, out=np.zeros(k), where=(tn + fp) > 0)
    prec = np.divide(tp, tp + fp, out=np.zeros(k), where=(tp + fp) > 0)
    present = pos > 0
    return {
        "n": int(n),
        "accuracy": float((t == p).all(1).mean()) if n else 0.0,
        "subset_accuracy": float((t == p).all(1).mean()) if n else 0.0,
        "hamming_accuracy": float((t == p).mean()) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(((sens + spec) / 2)[present].mean()) if present.any() else 0.0,
        "f1": {c: float(v) for c, v in zip(names, f1)},
        "sensitivity": {c: float(v) for c, v in zip(names, sens)},
        "specificity": {c: float(v) for c, v in zip(names, spec)},
        "precision": {c: float(v) for c, v in zip(names, prec)},
        "support": {c: int(v) for c, v in zip(names, pos)},
        "tp": tp.astype(int).tolist(),
        "fp": fp.astype(int).tolist(),
        "fn": fn.astype(int).tolist(),
    }


class MultiLabelTrainer(Trainer):
    """:class:`~medrobust.train.trainer.Trainer` for multi-hot targets (``meta.multilabel`` datasets).

    Parameters
    ----------
    model
        Maps ``(B, leads, samples)`` (and, with ``pass_mask``, a ``(B, 1, samples)`` mask) to ``K`` logits.
    config
        :class:`TrainConfig`; ``class_balance`` must be ``"none"`` (use ``pos_weight`` instead) and
        ``monitor`` picks the validation quantity (``"macro_f1"`` is the usual choice).
    out_dir
        As for :class:`Trainer`.
    threshold
        Probability at or above which a class is predicted present.
    pos_weight
        Optional ``(K,)`` weights of the positive term of each class's BCE (e.g. ``negatives / positives``).
    pass_mask
        Call ``model(x, mask)`` with the dataset's mask (models with masked pooling, such as
        ``resnet18_12lead``).
    """

    name = "bce_multilabel"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | None = None,
        threshold: float = 0.5,
        pos_weight: torch.Tensor | Sequence[float] | None = None,
        pass_mask: bool = False,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir)
        if self.config.class_balance != "none":
            raise ConfigError(f"MultiLabelTrainer supports class_balance='none' only (got "
                              f"{self.config.class_balance!r}); pass pos_weight=... to weight rare classes.")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}.")
        self.threshold = float(threshold)
        self.pos_weight = (None if pos_weight is None
                           else torch.as_tensor(pos_weight, dtype=torch.float32).to(self.config.device))
        self.pass_mask = pass_mask
        self._mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits, with the current batch's mask when ``pass_mask``."""
        if self.pass_mask and self._mask is not None:
            return self.model(x, self._mask)
        return self.model(x)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean binary cross-entropy over samples and classes (``mask``: this batch's padding mask)."""
        if mask is not None and self.pass_mask:
            self._mask = mask
        logits = self.forward(x)
        if logits.shape != y.shape:
            raise ConfigError(f"model outputs {tuple(logits.shape)} but targets are {tuple(y.shape)}; "
                              "build the model with num_classes = the dataset's number of classes.")
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=self.pos_weight), logits

    def hyperparameters(self) -> dict[str, Any]:
        return {"multilabel": True, "threshold": self.threshold, "pass_mask": self.pass_mask,
                "pos_weight": None if self.pos_weight is None else self.pos_weight.tolist()}

    def _check(self, data: ECGDataset) -> None:
        if not data.meta.multilabel or data.y.ndim != 2:
            raise DataError(f"dataset '{data.meta.name}' ({data.meta.split}) is single-label; MultiLabelTrainer needs "
                            "multi-hot targets (e.g. load_dataset('cpsc2018', multilabel=True) or 'cinc2021').")
        if self.pass_mask and data.mask is None:
            raise DataError(f"pass_mask=True but dataset '{data.meta.name}' has no mask.")

    def _set_mask(self, data: ECGDataset, b: torch.Tensor) -> None:
        self._mask = data.mask[b].to(self.config.device) if (self.pass_mask and data.mask is not None) else None

    def train_epoch(self, train: ECGDataset, gen: torch.Generator, epoch: int) -> dict[str, float]:
        """One epoch over ``train`` in a seeded random order; reports loss and subset accuracy."""
        self._check(train)
        cfg = self.config
        self.model.train()
        batches = torch.randperm(len(train), generator=gen).split(cfg.batch_size)
        if cfg.max_batches_per_epoch is not None:
            batches = batches[: cfg.max_batches_per_epoch]
        total, exact, loss_sum = 0, 0, 0.0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
        for b in bar:
            x, y = train.x[b].to(cfg.device), train.y[b].to(cfg.device)
            self._set_mask(train, b)
            loss, logits = self.compute_loss(x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate (lr={cfg.lr})."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            pred = torch.sigmoid(logits.detach()) >= self.threshold
            total += len(b)
            loss_sum += float(loss.detach()) * len(b)
            exact += int((pred == (y > 0.5)).all(1).sum())
            bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{exact / total:.3f}")
        self._mask = None
        return {"train_loss": loss_sum / max(total, 1), "train_accuracy": exact / max(total, 1)}

    @torch.no_grad()
    def predict_logits(self, data: ECGDataset) -> torch.Tensor:
        """Logits ``(N, K)`` (model in eval mode, mask passed when ``pass_mask``)."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for b in torch.arange(len(data)).split(self.config.eval_batch_size):
            self._set_mask(data, b)
            out.append(self.forward(data.x[b].to(self.config.device)).cpu())
        self._mask = None
        self.model.train(was_training)
        return torch.cat(out) if out else torch.zeros((0, data.num_classes))

    def predict_proba(self, data: ECGDataset) -> torch.Tensor:
        """Per-class probabilities ``sigmoid(logits)`` ``(N, K)``."""
        return torch.sigmoid(self.predict_logits(data))

    @torch.no_grad()
    def evaluate(self, data: ECGDataset) -> dict[str, Any]:
        """Loss (mean BCE over samples and classes) and :func:`multilabel_metrics` at ``threshold``."""
        self._check(data)
        logits = self.predict_logits(data)
        m = multilabel_metrics(data.y, torch.sigmoid(logits) >= self.threshold, data.meta.classes)
        pw = None if self.pos_weight is None else self.pos_weight.cpu()
        m["loss"] = (float(F.binary_cross_entropy_with_logits(logits, data.y.to(logits.dtype), pos_weight=pw))
                     if logits.numel() else 0.0)
        m["threshold"] = self.threshold
        return m

    def fit(self, train: ECGDataset, val: ECGDataset) -> TrainResult:
        """As :meth:`Trainer.fit`, after checking that both datasets are multi-label with the same classes."""
        self._check(train)
        self._check(val)
        if tuple(train.meta.classes) != tuple(val.meta.classes):
            raise DataError(f"train and val classes differ ({train.meta.classes} vs {val.meta.classes}); "
                            "load both splits with the same options (for CinC 2021 the same codes=...).")
        return super().fit(train, val)
