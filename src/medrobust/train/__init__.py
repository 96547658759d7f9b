"""Training: a template :class:`Trainer` (defences override ``compute_loss``)."""

from medrobust.train.trainer import TrainConfig, Trainer, TrainResult, seed_everything, train_model

__all__ = ["Trainer", "TrainConfig", "TrainResult", "train_model", "seed_everything"]
