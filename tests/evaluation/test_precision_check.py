"""The bf16 check by hand: robust accuracy over all samples, difference in pp, tolerance, clean agreement."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.precision import precision_check
from medrobust.models.precision import Autocast


BASE = nn.Linear(1, 1)
CALLS: list[tuple[torch.Tensor, Any]] = []


def _fake_attack(success: dict[bool, list[bool]], clean: dict[bool, list[int]]) -> Any:
    """An attack whose outcome per sample depends only on whether it attacks BASE itself or BASE in bf16."""
    def build(model: nn.Module) -> Any:
        low = isinstance(model, Autocast)
        assert (model.model if low else model) is BASE

        def run(x: torch.Tensor, y: torch.Tensor, mask: Any = None) -> Any:
            CALLS.append((x, mask))
            return SimpleNamespace(clean_pred=torch.tensor(clean[low]), y=y, success=torch.tensor(success[low]),
                                   attack="fake", eps=torch.linspace(0.05, 0.09, len(y)))
        return run
    return build


def test_precision_check_by_hand() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    clean = {False: [0, 0, 1, 1, 2, 2, 1, 0], True: [0, 0, 1, 1, 2, 0, 1, 0]}      # 6/8 and 5/8 correct
    # robust = correct and not flipped: fp32 rows 0,2,3 -> 3/8; bf16 rows 0,2 -> 2/8
    success = {False: [False, True, False, False, True, True, False, False],
               True: [False, True, False, True, True, False, False, False]}
    x, mask = torch.zeros(8, 1, 1), torch.ones(8, 1, 1)
    CALLS.clear()
    r = precision_check(BASE, x, y, mask=mask, attack=_fake_attack(success, clean))
    assert len(CALLS) == 2 and all(cx is x and cm is mask for cx, cm in CALLS)
    assert r["precision"] == "bf16" and r["clean_accuracy"] == {"fp32": 0.75, "bf16": 0.625}
    assert r["robust_accuracy"] == {"fp32": 0.375, "bf16": 0.25}
    assert r["difference_pp"] == -12.5 and r["within"] is False                   # 100 x (2 - 3) / 8, exact
    assert r["clean_agreement"] == 0.875 and r["n"] == 8 and r["attack"] == "fake" and r["eps"] == 0.05
    edge = precision_check(BASE, x, y, tolerance_pp=12.5, attack=_fake_attack(success, clean))
    assert edge["within"] is True and edge["tolerance_pp"] == 12.5                # the tolerance itself is within
    with pytest.raises(ConfigError, match=r"^tolerance_pp must be >= 0.0, got -1"):
        precision_check(BASE, x, y, tolerance_pp=-1, attack=_fake_attack(success, clean))
    with pytest.raises(DataError, match="at least one sample"):
        precision_check(BASE, x[:0], y[:0], attack=_fake_attack(success, clean))
