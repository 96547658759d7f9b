"""Multi-label training end to end on the CinC 2021 and CPSC 2018 samples, and the metrics by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.data import load_dataset
from medrobust.errors import ConfigError, DataError
from medrobust.models import build_model, load_checkpoint
from medrobust.train import TrainConfig, seed_everything
from medrobust.train.multilabel import MultiLabelTrainer, multilabel_metrics


def test_metrics_by_hand() -> None:
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    p = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)
    m = multilabel_metrics(y, p, ["a", "b", "c", "d"])
    # per class: a TP2 -> F1 1; b TP1 FN1 -> 2/3; c FP1 FN1 -> 0; d has no positives (left out of the means)
    assert m["f1"] == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 0.0, "d": 0.0})
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["sensitivity"]["b"] == 0.5 and m["specificity"]["c"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(((1 + 1) / 2 + (0.5 + 1) / 2 + (0 + 2 / 3) / 2) / 3)
    assert m["accuracy"] == m["subset_accuracy"] == 0.25  # only row 2 is entirely right
    assert m["hamming_accuracy"] == pytest.approx(12 / 16)
    assert m["support"] == {"a": 2, "b": 2, "c": 1, "d": 0}


@pytest.fixture(scope="module")
def cinc2021(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("c21")
    kw = dict(root=shared_data / "cinc2021_sample", cache_dir=cache, seconds=6.144, test_fraction=0.2, val_fraction=0.2)
    return load_dataset("cinc2021", split="train", **kw), load_dataset("cinc2021", split="val", **kw)


def test_end_to_end_on_cinc2021(cinc2021, tmp_path: Path) -> None:
    train, val = cinc2021
    assert train.meta.multilabel and train.y.shape[1] == val.y.shape[1]
    seed_everything(0)
    model = build_model("resnet18_12lead", in_channels=12, num_classes=train.num_classes, width_scale=1 / 16)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, patience=None, monitor="macro_f1", progress=False, seed=0)
    trainer = MultiLabelTrainer(model, cfg, out_dir=tmp_path, pass_mask=True)
    before = trainer.evaluate(train)["loss"]
    result = trainer.fit(train, val)
    assert len(result.history) == 2
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert trainer.evaluate(train)["loss"] < before
    m = trainer.evaluate(val)
    prob = trainer.predict_proba(val)
    assert m == {**multilabel_metrics(val.y, prob >= 0.5, val.meta.classes), "loss": m["loss"], "threshold": 0.5}
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.card["training"]["hyperparameters"]["multilabel"] is True and loaded.card["data"]["multilabel"]
    with torch.no_grad():
        best = trainer.model.eval()(val.x, val.mask)
        assert torch.equal(loaded(val.x, val.mask), best)


def test_cpsc_multilabel_targets_train(shared_data: Path, tmp_path: Path) -> None:
    ds = load_dataset("cpsc2018", root=shared_data / "cpsc2018_sample", split="all", multilabel=True, leads="8",
                      scale="maxabs", seconds=4.0, truncate_seconds=4.0, cache_dir=tmp_path)
    seed_everything(0)
    model = build_model("han_cnn", in_channels=8, num_classes=9, width_scale=1 / 32, length_scale=0.25)
    cfg = TrainConfig(epochs=3, batch_size=5, lr=1e-2, patience=None, progress=False)
    trainer = MultiLabelTrainer(model, cfg)
    result = trainer.fit(ds, ds)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_bad_input(shared_data: Path, cinc2021, tmp_path: Path) -> None:
    train, _ = cinc2021
    single = load_dataset("cpsc2018", root=shared_data / "cpsc2018_sample", split="all", seconds=8.192,
                          cache_dir=tmp_path)
    model = build_model("resnet18_12lead", in_channels=12, num_classes=9, width_scale=1 / 16)
    trainer = MultiLabelTrainer(model, TrainConfig(epochs=1, progress=False))
    with pytest.raises(DataError, match="single-label"):
        trainer.fit(single, single)
    with pytest.raises(ConfigError, match="targets are"):
        trainer.compute_loss(train.x[:2], train.y[:2])
    with pytest.raises(ConfigError, match="class_balance"):
        MultiLabelTrainer(model, TrainConfig(class_balance="oversample"))
    with pytest.raises(ConfigError, match="threshold"):
        MultiLabelTrainer(model, TrainConfig(), threshold=1.0)
