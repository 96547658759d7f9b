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


def test_soft_ce_and_kl_by_hand() -> None:
    from medrobust.attacks.losses import ce_loss, kl_loss

    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], dtype=torch.float64)
    logq = torch.log_softmax(z, 1)
    soft_ce = torch.stack([-(0.7 * logq[0, 0] + 0.2 * logq[0, 1] + 0.1 * logq[0, 2]),
                           -(0.5 * logq[1, 1] + 0.5 * logq[1, 2])])
    torch.testing.assert_close(ce_loss(z, p), soft_ce)
    entropy = torch.stack([-(p[0] * p[0].log()).sum(), -(0.5 * torch.log(torch.tensor(0.5, dtype=torch.float64))) * 2])
    torch.testing.assert_close(kl_loss(z, p), soft_ce - entropy)  # KL = CE − H(p), with 0·log 0 = 0
    torch.testing.assert_close(kl_loss(z, torch.log_softmax(z, 1).exp()), torch.zeros(2, dtype=torch.float64))
    y = torch.tensor([0, 2])
    torch.testing.assert_close(kl_loss(z, y), ce_loss(z, y))  # integer labels: KL(one-hot ‖ q) = CE
    onehot = torch.nn.functional.one_hot(y, 3).double()
    torch.testing.assert_close(ce_loss(z, onehot), ce_loss(z, y))
    torch.testing.assert_close(get_loss("margin")(z, onehot), get_loss("margin")(z, y))  # argmax of soft labels


def test_callable_loss_receives_y_as_given_and_soft_labels_decide_success() -> None:
    from medrobust.attacks import PGD

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3)).double()
    x = torch.rand(4, 1, 6, dtype=torch.float64)
    with torch.no_grad():
        p = model(x).softmax(1)
    seen: list[torch.Tensor] = []

    def my_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        seen.append(y)
        return -(y * torch.log_softmax(z, 1)).sum(1)

    res = PGD(model, eps=0.5, steps=3, loss=my_loss, random_start=False)(x, p)
    assert all(s.ndim == 2 and s.shape[1] == 3 for s in seen) and torch.equal(seen[0], p)
    assert torch.equal(res.y, p.argmax(1)) and torch.equal(res.soft_y, p)
    assert torch.equal(res.success, res.adv_pred != p.argmax(1))
    assert res.config["loss"].endswith("my_loss")
    with pytest.raises(ConfigError, match="unknown loss"):
        PGD(model, eps=0.5, loss="hinge")


def test_trades_kl_pgd_without_early_stop_returns_the_final_iterate() -> None:
    """``early_stop=False``: every sample runs every step; the output is the last PGD iterate (by hand)."""
    from medrobust.attacks import PGD

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    x = torch.rand(5, 1, 6, dtype=torch.float64)
    with torch.no_grad():
        p = model(x).softmax(1)
    eps, alpha, steps = 0.3, 0.1, 6
    res = PGD(model, eps=eps, steps=steps, step_size=alpha, loss="kl", early_stop=False, random_start=False,
              bounds=(0, 1))(x, p)
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        q = torch.log_softmax(model(xa), 1)
        kl = (p * (p.log() - q)).sum()
        (g,) = torch.autograd.grad(kl, xa)
        xa = (x + (xa.detach() + alpha * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    torch.testing.assert_close(res.x_adv, xa, rtol=0, atol=1e-12)
    assert bool((res.grad_evals_per_sample == steps).all())
