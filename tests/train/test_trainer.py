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


# ----------------------------------------------------------------------------- no silent collapse
def test_degenerate_reason_threshold() -> None:
    from medrobust.train import degenerate_reason

    support = {c: 10 for c in "NSVFQ"}  # K = 5, constant predictor scores 0.2
    assert degenerate_reason({"balanced_accuracy": 0.2, "support": support}) is not None
    assert degenerate_reason({"balanced_accuracy": 0.249, "support": support}) is not None
    assert degenerate_reason({"balanced_accuracy": 0.151, "support": support}) is not None
    assert degenerate_reason({"balanced_accuracy": 0.26, "support": support}) is None
    four = {**support, "Q": 0}  # an absent class does not count: 1/K = 0.25
    assert degenerate_reason({"balanced_accuracy": 0.29, "support": four}) is not None
    assert degenerate_reason({"balanced_accuracy": 0.31, "support": four}) is None


def test_collapsed_model_warns_and_is_recorded(real_slice, tmp_path: Path) -> None:
    """A model pinned to one class (huge output bias, lr ≈ 0) is flagged in the warning, history and card."""
    train, val = real_slice
    seed_everything(0)
    model = build_model("mlp1")
    with torch.no_grad():
        model.out.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0, 0.0]))
    trainer = Trainer(model, TrainConfig(epochs=2, lr=1e-12, progress=False, patience=None), out_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="degenerate model"):
        result = trainer.fit(train, val)
    assert result.degenerate is not None and "1/K" in result.degenerate
    assert all(row["degenerate"] for row in result.history)
    rows = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert all(r["degenerate"] for r in rows)
    card = load_checkpoint(tmp_path / "checkpoint").card["training"]
    assert card["degenerate"] is True and "predicts one class" in card["degenerate_reason"]


def test_normal_model_is_not_flagged(real_slice, tmp_path: Path) -> None:
    import warnings

    train, val = real_slice
    seed_everything(0)
    trainer = Trainer(build_model("mlp1"), TrainConfig(epochs=2, lr=3e-3, progress=False, class_balance="oversample",
                                                       max_batches_per_epoch=30), out_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer.fit(train, val)
    assert not [w for w in caught if "degenerate" in str(w.message)]
    assert result.degenerate is None and not any(r["degenerate"] for r in result.history)
    assert result.best_metrics["balanced_accuracy"] > 0.5
    assert load_checkpoint(tmp_path / "checkpoint").card["training"]["degenerate"] is False


# ----------------------------------------------------------------------------- Ma & Liang's recipe parts
class _ZeroLoss(Trainer):
    """A loss with zero gradient: the optimiser's step is then a no-op and only the decay moves weights."""

    def compute_loss(self, x, y, mask=None):
        logits = self.model(x)
        return logits.sum() * 0.0, logits


@pytest.mark.parametrize("optimizer", ["adam", "adamax"])
def test_decoupled_decay_is_applied_before_every_step(real_slice, optimizer: str) -> None:
    train, val = real_slice
    torch.manual_seed(0)
    model = build_model("mlp1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lr, d, steps = 0.1, 0.5, 3
    t = _ZeroLoss(model, TrainConfig(epochs=1, lr=lr, decoupled_decay=d, optimizer=optimizer, progress=False,
                                     max_batches_per_epoch=steps, batch_size=64))
    t.train_epoch(train, torch.Generator().manual_seed(0), 0)
    for k, p0 in before.items():
        expect = p0.clone()
        for _ in range(steps):
            expect = expect - lr * d * expect.sign()
            expect = expect - lr * d * expect
        assert torch.allclose(model.state_dict()[k], expect, atol=1e-6), k


def test_dead_units_are_reinitialised_at_the_next_epoch(real_slice) -> None:
    """A unit with zero input weights and a large negative bias never fires (zero gradient all epoch)."""
    train, val = real_slice

    def run(reinit: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        seed_everything(0)
        model = build_model("mlp1")
        with torch.no_grad():
            model.fc2.weight[3].zero_()
            model.fc2.bias[3] = -100.0
        cfg = TrainConfig(epochs=2, lr=1e-3, progress=False, patience=None, select="last", reinit_dead_units=reinit,
                          max_batches_per_epoch=3)
        res = Trainer(model, cfg).fit(train, val)
        return model.fc2.weight[3].detach(), model.fc2.bias[3].detach(), res.dead_units_reset

    w, b, n = run(True)
    assert n >= 1 and float(w.norm()) > 0.5 and abs(float(b)) < 0.1  # fresh unit-norm row, bias 0 (then 3 steps)
    w, b, n = run(False)
    assert n == 0 and float(w.abs().max()) == 0.0 and float(b) == pytest.approx(-100.0, abs=0.1)
    with pytest.raises(ConfigError, match="reinit_dead_units"):
        Trainer(torch.nn.Linear(3, 2), TrainConfig(reinit_dead_units=True))


def test_select_last_keeps_the_final_epoch(real_slice) -> None:
    train, val = real_slice
    seed_everything(0)
    res = Trainer(build_model("mlp1"), TrainConfig(epochs=3, lr=1e-12, progress=False, patience=None,
                                                   select="last", max_batches_per_epoch=1)).fit(train, val)
    assert res.best_epoch == 3 and all(r["best"] for r in res.history)


def test_auto_class_balance_resolves_per_trainer() -> None:
    assert TrainConfig().class_balance == "auto"
    assert Trainer(build_model("mlp1")).config.class_balance == "none"
    cfg = TrainConfig(class_balance="weights")
    assert Trainer(build_model("mlp1"), cfg).config.class_balance == "weights"
    assert cfg.class_balance == "weights"  # the caller's config is copied, not modified
