"""Attack losses against hand computations, and the single-logit binary wrapper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import BinaryLogitWrapper, get_loss
from medrobust.errors import ConfigError

Z = torch.tensor([[2.0, 1.0, -1.0, 0.5], [0.0, 3.0, 1.0, 2.0]])
Y = torch.tensor([0, 3])
T = torch.tensor([2, 0])


def test_ce() -> None:
    torch.testing.assert_close(get_loss("ce")(Z, Y, None), F.cross_entropy(Z, Y, reduction="none"))
    torch.testing.assert_close(get_loss("ce")(Z, Y, T), -F.cross_entropy(Z, T, reduction="none"))


def test_margin_by_hand() -> None:
    # untargeted: max_{j≠y} z_j − z_y
    torch.testing.assert_close(get_loss("margin")(Z, Y, None), torch.tensor([1.0 - 2.0, 3.0 - 2.0]))
    # targeted: z_t − max_{j≠t} z_j
    torch.testing.assert_close(get_loss("margin")(Z, Y, T), torch.tensor([-1.0 - 2.0, 0.0 - 3.0]))
    assert get_loss("cw") is get_loss("margin")


def test_soft_margin_by_hand() -> None:
    lse0 = math.log(math.exp(1.0) + math.exp(-1.0) + math.exp(0.5))
    lse1 = math.log(math.exp(0.0) + math.exp(3.0) + math.exp(1.0))
    torch.testing.assert_close(get_loss("soft_margin")(Z, Y, None), torch.tensor([lse0 - 2.0, lse1 - 2.0]))
    lse_t0 = math.log(math.exp(2.0) + math.exp(1.0) + math.exp(0.5))
    torch.testing.assert_close(get_loss("soft_margin")(Z, Y, T)[0], torch.tensor(-1.0 - lse_t0))


def test_dlr_by_hand_and_invariance() -> None:
    dlr = get_loss("dlr")
    # sample 0: z_y = 2 (largest), max other = 1, z_pi1 − z_pi3 = 2 − 0.5
    torch.testing.assert_close(dlr(Z, Y, None)[0], torch.tensor(-(2.0 - 1.0) / 1.5))
    torch.testing.assert_close(dlr(3.0 * Z + 7.0, Y, None), dlr(Z, Y, None))  # shift and scale invariant
    # targeted: −(z_y − z_t) / (z_pi1 − (z_pi3 + z_pi4)/2)
    torch.testing.assert_close(dlr(Z, Y, T)[1], torch.tensor(-(2.0 - 0.0) / (3.0 - 0.5)))
    with pytest.raises(ConfigError, match="4 classes"):
        dlr(Z[:, :3], torch.tensor([0, 1]), None)


def test_unknown_loss() -> None:
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("hinge")


def test_binary_wrapper_matches_sigmoid_and_bce() -> None:
    head = torch.nn.Linear(5, 1)
    x = torch.randn(7, 5)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    wrapped = BinaryLogitWrapper(head)
    z = wrapped(x)
    assert z.shape == (7, 2)
    s = head(x)[:, 0]
    torch.testing.assert_close(torch.softmax(z, 1)[:, 1], torch.sigmoid(s))
    torch.testing.assert_close(F.cross_entropy(z, y, reduction="none"),
                               F.binary_cross_entropy_with_logits(s, y.float(), reduction="none"))
    torch.testing.assert_close(get_loss("margin")(z, y, None), torch.where(y == 0, s, -s))
    with pytest.raises(ConfigError, match="one logit"):
        BinaryLogitWrapper(torch.nn.Linear(5, 3))(x)
