"""Training: a template :class:`Trainer` (defences override ``compute_loss``)."""

from medrobust.train.trainer import (
    DEGENERATE_MARGIN,
    TrainConfig,
    Trainer,
    TrainResult,
    batch_mask,
    degenerate_reason,
    seed_everything,
    train_model,
)

__all__ = ["Trainer", "TrainConfig", "TrainResult", "train_model", "seed_everything", "degenerate_reason",
           "DEGENERATE_MARGIN", "batch_mask"]
