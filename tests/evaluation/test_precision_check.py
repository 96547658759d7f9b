"""The bf16 check by hand: robust accuracy over all samples, difference in pp, tolerance, clean agreement."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.evaluation.precision import precision_check
from medrobust.models.precision import Autocast


def _fake_attack(success: dict[bool, list[bool]], clean: dict[bool, list[int]]) -> Any:
    """An attack whose outcome per sample depends only on whether the model runs in bf16."""
    def build(model: nn.Module) -> Any:
        low = isinstance(model, Autocast)

        def run(x: torch.Tensor, y: torch.Tensor, mask: Any = None) -> Any:
            return SimpleNamespace(clean_pred=torch.tensor(clean[low]), y=y, success=torch.tensor(success[low]),
                                   attack="fake", eps=torch.full((len(y),), 0.05))
        return run
    return build


def test_precision_check_by_hand() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    clean = {False: [0, 0, 1, 1, 2, 2, 1, 0], True: [0, 0, 1, 1, 2, 0, 1, 0]}      # 6/8 and 5/8 correct
    # robust = correct and not flipped: fp32 rows 0,2,3 -> 3/8; bf16 rows 0,2 -> 2/8
    success = {False: [False, True, False, False, True, True, False, False],
               True: [False, True, False, True, True, False, False, False]}
    r = precision_check(nn.Linear(1, 1), torch.zeros(8, 1, 1), y, attack=_fake_attack(success, clean))
    assert r["clean_accuracy"] == {"fp32": 0.75, "bf16": 0.625}
    assert r["robust_accuracy"] == {"fp32": 0.375, "bf16": 0.25}
    assert r["difference_pp"] == pytest.approx(-12.5) and r["within"] is False
    assert r["clean_agreement"] == 0.875 and r["n"] == 8 and r["attack"] == "fake" and r["eps"] == 0.05
    same = precision_check(nn.Linear(1, 1), torch.zeros(8, 1, 1), y, tolerance_pp=13.0,
                           attack=_fake_attack(success, clean))
    assert same["within"] is True and same["tolerance_pp"] == 13.0
    with pytest.raises(ConfigError, match="tolerance_pp"):
        precision_check(nn.Linear(1, 1), torch.zeros(8, 1, 1), y, tolerance_pp=-1, attack=_fake_attack(success, clean))
