"""Fixtures of the leaderboard tests: a TEST task on the synthetic beats, a zoo of three tiny CNN1 checkpoints
(one trained, two with seeded weight noise: three real models of different accuracy) and their real result cards
(medrobust.evaluation.evaluate on the task's subset and protocol)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.leaderboard._lb import LIMIT, N_PER_CLASS, PROTOCOL, write_task


@dataclass
class Env:
    task: Path              # the TEST task YAML
    zoo: Path               # a zoo root holding synth-test/tiny-a, tiny-b, tiny-c
    cards: dict[str, Path]  # id -> evaluation folder (card.json + per_sample.npz)
    ckpts: dict[str, Path]  # id -> checkpoint folder


def _noisy(src: Path, dest: Path, scale: float, seed: int) -> Path:
    from medrobust.models import load_checkpoint, save_checkpoint

    m = load_checkpoint(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))
    c = m.card
    save_checkpoint(m, dest, classes=c["classes"], fs=c["fs"], input_shape=c["input_shape"], units=c["units"],
                    training=c.get("training"), data=c.get("data"), arch=(c["architecture"], c["kwargs"]))
    return dest


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory, helpers: Any) -> Env:
    from medrobust import zoo
    from medrobust.data import load_dataset
    from medrobust.evaluation import ProtocolConfig, evaluate
    from medrobust.models import load_checkpoint

    base = tmp_path_factory.mktemp("leaderboard")
    task = write_task(base / "synth-test.yaml")
    trained = helpers.tiny_checkpoint(tmp_path_factory.getbasetemp())
    ckpts = {"tiny-a": trained, "tiny-b": _noisy(trained, base / "ckpt-b", 0.3, 1),
             "tiny-c": _noisy(trained, base / "ckpt-c", 1.5, 2)}
    ds = load_dataset("synthetic", split="test", n_per_class=N_PER_CLASS)
    config = replace(ProtocolConfig.from_dict({**PROTOCOL, "name": "custom"}), n_examples=0)
    cards = {}
    for name, ck in ckpts.items():
        model = load_checkpoint(ck)
        out = base / f"eval-{name}"
        evaluate(model, ds, config, out_dir=out, limit=LIMIT, model_card=model.card, checkpoint=str(ck),
                 progress=False)
        cards[name] = out
        zoo.add(ck, entry_id=f"synth-test/{name}", eval_card=out / "card.json", root=base / "zoo")
    return Env(task=task, zoo=base / "zoo", cards=cards, ckpts=ckpts)


@pytest.fixture()
def card_copy(env: Env, tmp_path: Path) -> Any:
    """``card_copy(name)``: a private copy of that model's evaluation folder (to edit)."""
    made: list[Path] = []

    def make(name: str = "tiny-a") -> Path:
        dest = tmp_path / f"eval-{name}-{len(made)}"
        made.append(dest)
        shutil.copytree(env.cards[name], dest)
        return dest
    return make
