"""An interrupted training continues at its last finished epoch and ends with the uninterrupted run's weights and
history (the epoch order, the defence's random starts and dropout drawn from the restored generators)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust.cli.main import main
from medrobust.data import load_dataset
from medrobust.defenses import get_defense
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig
from medrobust.train.resume import STATE_NAME


class Killed(Exception):
    pass


def _data() -> tuple[Any, Any]:
    return (load_dataset("synthetic", split="train", n_per_class=12, seed=0),
            load_dataset("synthetic", split="val", n_per_class=6, seed=0))


def _trainer(out: Path, *, kill_at: int | None = None, lr: float = 1e-3) -> Any:
    torch.manual_seed(0)
    model = build_model("mlp1")                                    # MLP1 has dropout: the global RNG matters
    trainer = get_defense("pgd_at", model, TrainConfig(epochs=4, batch_size=16, lr=lr, progress=False, seed=3),
                          out_dir=out, eps=0.05, steps=2, random_start=True)   # random starts: the defence's RNG
    if kill_at is not None:
        hook = trainer.on_epoch_start

        def dying(epoch: int) -> None:
            if epoch == kill_at:
                raise Killed
            hook(epoch)
        trainer.on_epoch_start = dying
    return trainer


def test_a_resumed_training_is_the_uninterrupted_one(tmp_path: Path) -> None:
    train, val = _data()
    whole = _trainer(tmp_path / "whole")
    whole.fit(train, val)
    assert not (tmp_path / "whole" / STATE_NAME).exists()          # removed once the training finished
    with pytest.raises(Killed):
        _trainer(tmp_path / "cut", kill_at=2).fit(train, val)
    state = torch.load(tmp_path / "cut" / STATE_NAME, weights_only=True)
    assert state["epoch"] == 2
    again = _trainer(tmp_path / "cut")
    again.resume = True
    result = again.fit(train, val)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), again.model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    h_whole = (tmp_path / "whole" / "history.jsonl").read_text().splitlines()
    h_cut = (tmp_path / "cut" / "history.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(h_cut) == strip(h_whole) and len(result.history) == 4 and result.best_epoch >= 1


def test_a_state_of_another_training_or_a_corrupt_one_is_refused(tmp_path: Path) -> None:
    train, val = _data()
    with pytest.raises(Killed):
        _trainer(tmp_path, kill_at=1).fit(train, val)
    other = _trainer(tmp_path, lr=5e-3)
    other.resume = True
    with pytest.raises(CheckpointError, match=r"belongs to another training \(different configuration\)"):
        other.fit(train, val)
    (tmp_path / STATE_NAME).write_bytes(b"not a state")
    again = _trainer(tmp_path)
    again.resume = True
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / STATE_NAME} is not a readable training state"):
        again.fit(train, val)


def test_two_stage_defences_refuse_to_resume(tmp_path: Path) -> None:
    train, val = _data()
    trainer = get_defense("distillation", build_model("mlp1"), TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    trainer.resume = True
    with pytest.raises(ConfigError, match="defence 'distillation' cannot resume an interrupted training yet"):
        trainer.fit(train, val)


def test_cli_resume_refuses_overwrite_and_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--dataset", "synthetic", "--option", "n_per_class=8", "--model", "mlp1", "--epochs", "1",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "--resume continues the run in --out and --overwrite deletes it" in capsys.readouterr().err
    assert main(args) == 0 and (tmp_path / "run" / "summary.json").is_file()
    assert main([*args, "--resume"]) == 2
    assert "finished (summary.json); nothing to continue" in capsys.readouterr().err


def test_dropout_draws_continue_from_the_restored_global_generator(tmp_path: Path) -> None:
    from medrobust.train import Trainer

    train, val = _data()

    def make(out: Path, kill_at: int | None = None) -> Any:
        torch.manual_seed(0)
        model = build_model("han_cnn", in_channels=1, num_classes=5, input_length=187, width_scale=0.0625,
                            length_scale=0.25)                      # dropout after every block
        t = Trainer(model, TrainConfig(epochs=3, batch_size=16, progress=False, select="last"), out_dir=out)
        if kill_at is not None:
            t.on_epoch_start = lambda e: (_ for _ in ()).throw(Killed) if e == kill_at else None
        return t

    whole = make(tmp_path / "whole")
    whole.fit(train, val)
    with pytest.raises(Killed):
        make(tmp_path / "cut", kill_at=1).fit(train, val)
    torch.manual_seed(123)                                          # the new process's global RNG differs
    again = make(tmp_path / "cut")
    torch.manual_seed(123)
    again.resume = True
    again.fit(train, val)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), again.model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)             # the last epoch's weights
    losses = [[json.loads(x)["train_loss"] for x in (tmp_path / d / "history.jsonl").read_text().splitlines()]
              for d in ("whole", "cut")]
    assert losses[1] == losses[0] and len(set(losses[0])) == 3
