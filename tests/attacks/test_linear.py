"""Soundness and completeness on a linear classifier whose minimal adversarial distance is known.

For ``s(x) = w·x + b`` (wrapped to two logits ``[0, s]``) the smallest perturbation that flips the
decision has norm ``|w·x + b| / ‖w‖_*`` with the dual norm ``‖w‖₁`` for L∞ and ``‖w‖₂`` for L2.
Every attack must find nothing below that distance; PGD, FGSM and APGD must find an example just
above it. Each sample gets its own ε (per-sample ε tensors).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import APGD, FGSM, PGD, SAP, BinaryLogitWrapper, get_attack

from .conftest import small_kwargs


class Linear1d(nn.Module):
    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


@pytest.fixture(scope="module")
def linear_problem(beats_x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(187, generator=g, dtype=torch.float64)
    x = beats_x.double()
    s = x.flatten(1) @ w
    mid = s.sort().values[len(s) // 2 - 1: len(s) // 2 + 1]
    b = float(-mid.mean())  # half the beats on each side, none on the boundary
    model = BinaryLogitWrapper(Linear1d(w, b)).double()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, s + b


def distance(scores: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    dual = w.abs().sum() if norm == "linf" else w.norm()
    return scores.abs() / dual


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("cls", [PGD, FGSM, APGD])
def test_finds_example_just_above_minimal_distance(cls: type, norm: str, linear_problem) -> None:
    model, x, y, scores = linear_problem
    d = distance(scores, model.model.w.detach(), norm)
    kw = {"steps": 20, "random_start": False, "rel_step_size": 0.25} if cls is PGD else {}
    if cls is APGD:
        kw = {"steps": 10}
    res = cls(model, eps=d * 1.02, norm=norm, **kw)(x, y)
    assert bool(res.success.all()), f"{cls.__name__} missed {int((~res.success).sum())} breakable samples"
    assert bool((res.norms <= d * 1.02).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_and_restarts_also_break_linear(norm: str, linear_problem) -> None:
    model, x, y, scores = linear_problem
    d = distance(scores, model.model.w.detach(), norm)
    res = PGD(model, eps=d * 1.02, norm=norm, steps=30, rel_step_size=0.1, random_start=True, restarts=2,
              generator=torch.Generator().manual_seed(0))(x, y)
    assert bool(res.success.all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["pgd", "fgsm", "apgd", "sap"])
def test_nothing_below_minimal_distance(name: str, norm: str, linear_problem) -> None:
    model, x, y, scores = linear_problem
    d = distance(scores, model.model.w.detach(), norm)
    kw = {**small_kwargs(name)}
    res = get_attack(name, model, eps=d * 0.98, norm=norm, generator=torch.Generator().manual_seed(0), **kw)(x, y)
    assert not bool(res.success.any())
    assert torch.equal(res.adv_pred, y)


def test_sap_cannot_reach_the_corner_but_stays_sound(linear_problem) -> None:
    """SAP's smooth δ cannot align with a random-sign w, so it is weaker than PGD here (but never unsound)."""
    model, x, y, scores = linear_problem
    d = distance(scores, model.model.w.detach(), "linf")
    sap = SAP(model, eps=d * 1.02, steps=5)(x, y)
    pgd = PGD(model, eps=d * 1.02, steps=20, random_start=False, rel_step_size=0.25)(x, y)
    assert int(sap.success.sum()) < int(pgd.success.sum())
