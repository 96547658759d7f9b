"""The worked example of docs/attacks.md ("writing an attack") runs and follows the contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import medrobust.attacks as attacks_pkg

DOC = Path(__file__).resolve().parents[2] / "docs" / "attacks.md"


def test_new_attack_example_from_the_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    code = next(b for b in blocks if "class IterFGSM" in b)
    monkeypatch.setattr(attacks_pkg, "register_attack", lambda name: (lambda cls: cls))  # keep the registry clean
    ns: dict[str, object] = {}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    cls = ns["IterFGSM"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x = torch.rand(6, 1, 12, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = cls(model, eps=0.3, steps=5, bounds=(0, 1))  # type: ignore[operator]
    assert atk.hyperparameters() == {"steps": 5, "loss": "ce"}
    res = atk(x, y)
    assert bool((res.norms <= 0.3 + 1e-12).all()) and float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy
        assert float(ce(model(res.x_adv), y)) > float(ce(model(x), y))  # it ascends the loss
    assert bool((res.grad_evals_per_sample == 5).all())
