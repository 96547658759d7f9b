"""Transfer evaluation: craft on model A, evaluate on model B."""

from __future__ import annotations

import copy

import pytest
import torch

from medrobust.attacks import PGD, SPSA, transfer_attack
from medrobust.errors import ConfigError

from ._blackbox import linear_problem, min_distance


@pytest.fixture(scope="module")
def lin(beats_x: torch.Tensor):  # type: ignore[no-untyped-def]
    return linear_problem(beats_x)


def test_identical_copy_receives_every_example(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    out = transfer_attack(PGD(model, eps=d * 1.05, steps=20, rel_step_size=0.25, random_start=False),
                          copy.deepcopy(model), x, y)
    assert out["success_rate_a"] == 1.0 and out["success_rate_b"] == 1.0
    assert out["transfer_rate"] == 1.0 and out["robust_accuracy_b"] == 0.0
    assert out["clean_accuracy_b"] == 1.0


def test_rates_equal_a_hand_computation(lin) -> None:  # type: ignore[no-untyped-def]
    """B = a linear model with another weight vector: the rates must match B's own predictions."""
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    model_b, _, _, _ = linear_problem(x.float(), seed=11)
    out = transfer_attack(SPSA(model, eps=d * 3.0, steps=10, nb_samples=32), model_b, x, y, batch_size=3)
    with torch.no_grad():
        clean_b = model_b(x).argmax(1)
        adv_b = model_b(out["x_adv"]).argmax(1)
    succ_a = out["success_a"]
    fooled_b = adv_b != y
    den = succ_a & (clean_b == y)
    assert torch.equal(out["adv_pred_b"], adv_b) and torch.equal(out["success_b"], fooled_b)
    assert out["robust_accuracy_b"] == pytest.approx(float((adv_b == y).double().mean()))
    expected = float((fooled_b & den).sum()) / float(den.sum()) if bool(den.any()) else float("nan")
    if den.any():
        assert out["transfer_rate"] == pytest.approx(expected)
    assert out["transfer_rate_all"] == pytest.approx(float((fooled_b & succ_a).sum()) / float(succ_a.sum()))
    assert out["n"] == len(x) and out["result"].attack == "spsa"


def test_targeted_transfer_counts_target_hits(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    t = 1 - y
    out = transfer_attack(PGD(model, eps=d * 1.05, steps=20, rel_step_size=0.25, random_start=False),
                          copy.deepcopy(model), x, y, target=t)
    assert out["targeted"] and torch.equal(out["success_b"], out["adv_pred_b"] == t)
    assert out["success_rate_b"] == 1.0


def test_errors(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, _ = lin
    atk = PGD(model, eps=0.1, steps=2)
    with pytest.raises(ConfigError, match="different target model"):
        transfer_attack(atk, model, x, y)
    with pytest.raises(ConfigError, match="Attack"):
        transfer_attack(lambda a, b: a, model, x, y)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        transfer_attack(atk, copy.deepcopy(model), x, y, batch_size=0)


class MaskedMean(torch.nn.Module):
    """Two logits from the mean of the masked signal: a model whose forward takes the padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(mask)
        m = torch.ones_like(x) if mask is None else mask
        s = (x * m).flatten(1).sum(1) / m.flatten(1).sum(1) - 0.3
        return torch.stack([-s, s], 1)


def test_mask_limits_the_attack_and_reaches_model_b(lin) -> None:  # type: ignore[no-untyped-def]
    model, x, y, s = lin
    d = min_distance(model, s, "linf")
    mask = torch.ones_like(x)
    mask[:, :, 150:] = 0
    b = MaskedMean().double()
    out = transfer_attack(PGD(model, eps=d * 3.0, steps=10, rel_step_size=0.25), b, x, y, mask=mask, batch_size=3)
    assert torch.equal(out["x_adv"][:, :, 150:], x[:, :, 150:])
    # clean and adversarial batches of 3, 3 and 2 samples, each with its rows of the mask
    assert len(b.seen) == 2 * 3 and all(m is not None and m.shape[0] <= 3 for m in b.seen)
    with torch.no_grad():
        assert torch.equal(out["adv_pred_b"], b(out["x_adv"], mask=mask).argmax(1))
