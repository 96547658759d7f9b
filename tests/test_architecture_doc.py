"""The two worked examples of docs/architecture.md run and follow the attack and defence contracts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import medrobust.attacks as attacks_pkg
import medrobust.defenses.registry as defense_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _block(marker: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    code = next(b for b in blocks if marker in b)
    keep = lambda name, **kw: (lambda cls: cls)  # noqa: E731 - keep the registries clean
    monkeypatch.setattr(attacks_pkg, "register_attack", keep)
    monkeypatch.setattr(defense_registry, "register_defense", keep)
    ns: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    return ns


def test_new_attack_example(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = _block("class NoisyFGSM", monkeypatch)["NoisyFGSM"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x = torch.rand(16, 1, 12, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = cls(model, eps=0.3, trials=2, bounds=(0, 1))
    assert atk.hyperparameters() == {"alpha": 1.25, "trials": 2, "loss": "ce"}
    res = atk(x, y)
    assert bool((res.norms <= 0.3 + 1e-12).all()) and float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert bool(res.success.any())
    # successes leave the active set: a sample broken by the first trial is not attacked again
    assert bool((res.grad_evals_per_sample <= 2).all()) and bool((res.grad_evals_per_sample >= 1).all())
    assert bool((res.grad_evals_per_sample[~res.success] == 2).all())


def test_new_defence_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medrobust.data import load_dataset
    from medrobust.models import build_model
    from medrobust.train import TrainConfig

    cls = _block("class LogitSqueezing", monkeypatch)["LogitSqueezing"]
    train = load_dataset("synthetic", split="train", n_per_class=16)
    val = load_dataset("synthetic", split="val", n_per_class=16)
    norms = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model("mlp1")
        trainer = cls(model, TrainConfig(epochs=4, batch_size=16, progress=False, seed=0), weight=weight,
                      out_dir=tmp_path / str(weight))
        trainer.fit(train, val)
        assert trainer.hyperparameters() == {"weight": weight}
        with torch.no_grad():
            norms[weight] = float(model.eval()(val.x).pow(2).sum(1).mean())
    assert norms[0.5] < norms[0.0]  # the regulariser squeezes the logits
