"""Trainer: loss falls on real beats, determinism, validation-based selection, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data import load_dataset
from medrobust.errors import ConfigError
from medrobust.models import build_model, load_checkpoint
from medrobust.train import TrainConfig, Trainer, seed_everything, train_model


@pytest.fixture(scope="module")
def real_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("c")
    kw = dict(root=shared_data / "mitdb", records=["100", "119", "208"], cache_dir=cache)
    train = load_dataset("mitdb", split="train", **kw)
    val = load_dataset("mitdb", split="val", **kw)
    g = np.random.default_rng(0)
    return train.subset(g.choice(len(train), 1500, replace=False)), val.subset(np.arange(0, len(val), 3))


def test_loss_falls_on_real_beats(real_slice, tmp_path: Path) -> None:
    train, val = real_slice
    seed_everything(0)
    model, result = train_model(build_model("cnn1"), train, val,
                                TrainConfig(epochs=3, progress=False, patience=None), out_dir=tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_deterministic_on_cpu(real_slice) -> None:
    train, val = real_slice
    states = []
    for _ in range(2):
        seed_everything(7)
        model, _ = train_model(build_model("mlp1"), train, val,
                               TrainConfig(epochs=1, progress=False, class_balance="oversample", seed=7))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_best_checkpoint_is_chosen_on_validation(real_slice, tmp_path: Path) -> None:
    train, val = real_slice
    seed_everything(0)
    trainer = Trainer(build_model("mlp1"), TrainConfig(epochs=4, progress=False, patience=None, lr=3e-3,
                                                       monitor="balanced_accuracy"), out_dir=tmp_path)
    result = trainer.fit(train, val)
    scores = [h["val_balanced_accuracy"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    loaded = load_checkpoint(tmp_path / "checkpoint")
    assert loaded.card["training"]["best_epoch"] == result.best_epoch
    assert trainer.evaluate(val)["balanced_accuracy"] == pytest.approx(max(scores))
    x = val.x[:16]
    assert torch.allclose(loaded(x), trainer.model(x))
    assert loaded.card["data"]["name"] == "mitdb" and loaded.card["data"]["fingerprint"]


def test_early_stopping(real_slice) -> None:
    train, val = real_slice

    class Frozen(Trainer):
        """lr≈0: validation never improves after epoch 1, so patience 2 stops at epoch 3."""

    seed_everything(0)
    result = Frozen(build_model("mlp1"), TrainConfig(epochs=10, lr=1e-12, patience=2, progress=False)).fit(train, val)
    assert len(result.history) == 3 and result.best_epoch == 1


def test_class_weights_option(real_slice) -> None:
    train, val = real_slice
    trainer = Trainer(build_model("mlp1"), TrainConfig(epochs=1, class_balance="weights", progress=False,
                                                       max_batches_per_epoch=2))
    trainer.fit(train, val)
    counts = torch.bincount(train.y, minlength=5).float()
    assert trainer.loss_weights is not None
    present = counts > 0
    assert torch.allclose(trainer.loss_weights[present] * counts[present],
                          torch.full((int(present.sum()),), float(counts.sum() / 5)))


@pytest.mark.parametrize("field,value,match", [
    ("epochs", 0, "epochs"), ("lr", -1.0, "lr"), ("optimizer", "sgd", "optimizer"),
    ("class_balance", "smote", "class_balance"), ("monitor", "auc", "monitor"), ("batch_size", 0, "batch_size"),
])
def test_bad_config(field: str, value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Trainer(build_model("mlp1"), TrainConfig(**{field: value}))
