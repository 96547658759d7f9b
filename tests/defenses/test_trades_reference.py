"""TRADES (Zhang et al., ICML 2019) against hand computations on tiny linear models (float64).

Loss ``CE(f(x), y) + β·KL(softmax f(x) ‖ softmax f(x'))``, ``x'`` from Algorithm 1: a Gaussian start
``x + init_std·N(0, I)`` then ``steps`` sign-gradient steps of the KL, projected on the ε-ball and the bounds,
final iterate, model in eval mode with frozen parameters, padding never perturbed. Hyper-parameters, argument
errors (whole messages) and the settings reaching the base trainer are pinned.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import AttackContext
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses import TRADES, trades_kl
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import Linear

K, D = 3, 4
W = torch.tensor([[0.5, -1.0, 0.25, 2.0], [-0.75, 0.5, 1.5, -0.5], [1.0, 0.0, -2.0, 0.5]], dtype=torch.float64)
X = torch.tensor([[[0.3, -0.2, 0.8, 0.1]], [[-0.5, 0.9, 0.0, 0.4]], [[1.0, 0.2, -0.7, -0.3]]], dtype=torch.float64)
MASK = torch.tensor([[[1.0, 1.0, 1.0, 0.0]], [[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64)
NOISE = torch.tensor([[[0.5, -1.2, 0.3, 0.9]], [[-0.4, 0.8, 1.1, -0.6]], [[0.2, 0.7, -1.5, 0.4]]],
                     dtype=torch.float64)


class MaskedLinear(Linear):
    """``W·flatten(x·mask)``: a linear model that takes the padding mask (like masked pooling)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if mask is None else x * mask)


def _hand_kl(zc: list[float], za: list[float]) -> float:
    p = [math.exp(v) / sum(math.exp(u) for u in zc) for v in zc]
    q = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "progress": False, **kw})


def _data(x: torch.Tensor, units: str) -> ECGDataset:
    n = x.shape[0]
    meta = DatasetMeta(name="tiny", fs=100.0, classes=("a", "b", "c"), units=units, ids=np.arange(n))
    return ECGDataset(x, torch.arange(n) % K, meta)


@pytest.fixture()
def noise(monkeypatch):
    """The Gaussian start's N(0, I) draws, fixed (per sample, as PGD's per-sample streams)."""
    monkeypatch.setattr(AttackContext, "randn", lambda self, act, *shape: NOISE[act.idx].to(self.x.dtype))


def _algorithm_1(model, x, mask, *, eps, step, steps, std, bounds):
    """Zhang et al.'s Algorithm 1 written out (the mask multiplies the perturbation and reaches the model)."""
    m = torch.ones_like(x) if mask is None else mask
    with torch.no_grad():
        p = torch.softmax(model(x, mask), 1)
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    xa = (x + std * NOISE[: x.shape[0]] * m).clamp(lo, hi)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        kl = (p * (p.log() - torch.log_softmax(model(xa, mask), 1))).sum()
        (g,) = torch.autograd.grad(kl, xa)
        xa = torch.minimum(torch.maximum(xa + step * g.sign() * m, x - eps), x + eps).clamp(lo, hi).detach()
    return xa


# ----------------------------------------------------------------------------------- KL
def test_trades_kl_class_axis_is_dim_1() -> None:
    """(N, K, L) logits: the distributions are over dim 1; the batch mean runs over the rest."""
    g = torch.Generator().manual_seed(4)
    zc = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    za = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    hand = [_hand_kl(zc[i, :, j].tolist(), za[i, :, j].tolist()) for i in range(2) for j in range(2)]
    assert trades_kl(zc, za).item() == pytest.approx(sum(hand) / 4, rel=1e-12)
    z2c, z2a = zc[:, :, 0], za[:, :, 0]
    assert trades_kl(z2c, z2a).item() == pytest.approx((hand[0] + hand[2]) / 2, rel=1e-12)


# ----------------------------------------------------------------------------------- construction
def test_defaults_and_hyperparameters_pinned() -> None:
    t = TRADES(MaskedLinear(W), _cfg())
    assert t.hyperparameters() == {"beta": 6.0, "eps": 0.1, "steps": 10, "step_size": 0.1 / 10.0, "norm": "linf",
                                   "bounds": None, "bounds_arg": "auto", "init_std": 0.001,
                                   "attack_mode": "eval, frozen parameters"}
    assert t.name == "trades" and t.config.class_balance == "none"
    u = TRADES(MaskedLinear(W), _cfg(), beta=0.0, eps=0.5, steps=1, bounds=(-1.0, 2.0), init_std=0.0)
    assert u.hyperparameters() == {"beta": 0.0, "eps": 0.5, "steps": 1, "step_size": 0.05, "norm": "linf",
                                   "bounds": [-1.0, 2.0], "bounds_arg": (-1.0, 2.0), "init_std": 0.0,
                                   "attack_mode": "eval, frozen parameters"}
    v = TRADES(MaskedLinear(W), _cfg(), beta=0.5, step_size=0.3, bounds=None)
    assert (v.beta, v.step_size, v.bounds, v.hyperparameters()["bounds_arg"]) == (0.5, 0.3, None, None)


def test_settings_reach_the_base_trainer(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    t = TRADES(MaskedLinear(W), _cfg(epochs=4, seed=2), out_dir=tmp_path, generator=gen)
    assert t.generator is gen and t.out_dir == tmp_path and t.config.epochs == 4 and t.config.seed == 2
    d = TRADES(MaskedLinear(W), _cfg(seed=8))
    assert d.out_dir is None
    assert torch.equal(d.generator.get_state(), torch.Generator().manual_seed(8).get_state())


@pytest.mark.parametrize(("kw", "msg"), [
    ({"beta": -1.0}, "beta must be >= 0.0, got -1.0."),
    ({"eps": 0.0}, "eps must be > 0.0, got 0.0."),
    ({"eps": -0.1}, "eps must be > 0.0, got -0.1."),
    ({"steps": 0}, "steps must be an integer >= 1, got 0."),
    ({"step_size": 0.0}, "step_size must be > 0.0, got 0.0."),
    ({"step_size": -0.5}, "step_size must be > 0.0, got -0.5."),
    ({"init_std": -0.01}, "init_std must be >= 0.0, got -0.01."),
    ({"bounds": "x"}, "bounds must be None, 'auto' or a pair (lo, hi), got 'x'."),
])
def test_argument_errors_name_the_argument(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        TRADES(MaskedLinear(W), _cfg(), **kw)
    assert str(e.value) == msg


def test_prepare_resolves_auto_bounds_and_checks_the_scale() -> None:
    x01 = torch.tensor([[[0.0, 1.0, 0.5, 0.2]], [[0.1, 0.9, 0.4, 0.3]]])
    t = TRADES(MaskedLinear(W), _cfg(), eps=0.05)
    t.setup(_data(x01, "normalized [0, 1]"))
    assert t.bounds == (0.0, 1.0) and t.hyperparameters()["bounds"] == [0.0, 1.0]
    assert t.hyperparameters()["bounds_arg"] == "auto"
    mv = torch.tensor([[[0.0, 2.0, 1.0, 0.5]], [[-1.0, 1.0, 0.0, 0.5]]])  # every peak-to-peak is 2 mV
    fixed = TRADES(MaskedLinear(W), _cfg(), eps=1.9, bounds=(-5.0, 5.0))
    fixed.setup(_data(mv, "mV"))
    assert fixed.bounds == (-5.0, 5.0)
    auto = TRADES(MaskedLinear(W), _cfg(), eps=1.9)
    auto.setup(_data(mv, "mV"))
    assert auto.bounds is None and auto.hyperparameters()["bounds"] is None
    with pytest.raises(ConfigError) as e:
        TRADES(MaskedLinear(W), _cfg(), eps=3.0).setup(_data(mv, "mV"))
    assert str(e.value) == ("TRADES: eps=3 is at least the median peak-to-peak amplitude (2 mV) of the training "
                            "inputs; give eps in the data's units (e.g. eps=0.2).")


# ----------------------------------------------------------------------------------- the adversary
@pytest.mark.parametrize("bounds", [None, (-0.75, 1.05)])
def test_attack_is_algorithm_1_by_hand_with_the_mask(noise, bounds) -> None:
    model = MaskedLinear(W)
    kw = dict(eps=0.5, step=0.07, steps=3, std=0.2)
    t = TRADES(model, _cfg(), eps=0.5, steps=3, step_size=0.07, init_std=0.2, bounds=bounds)
    got = t.attack(X, MASK)
    ref = _algorithm_1(model, X, MASK, bounds=bounds, **kw)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert torch.equal(got[MASK == 0], X[MASK == 0])  # padding untouched
    assert not got.requires_grad and model.training and all(p.requires_grad for p in model.parameters())


def test_attack_without_mask_by_hand(noise) -> None:
    model = MaskedLinear(W)
    got = TRADES(model, _cfg(), eps=0.4, steps=2, step_size=0.1, init_std=0.15, bounds=None).attack(X)
    torch.testing.assert_close(got, _algorithm_1(model, X, None, eps=0.4, step=0.1, steps=2, std=0.15, bounds=None),
                               rtol=0, atol=1e-12)


def test_attack_runs_every_step_to_the_final_iterate(noise) -> None:
    """No early stop: a sample whose label flips keeps stepping (its final iterate lies on the ball)."""
    w = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    x = torch.tensor([[[-0.02, -0.01, 0.01, 0.0]]], dtype=torch.float64)  # f = (0.02, 0, −0.1): a near tie
    model = MaskedLinear(w)
    t = TRADES(model, _cfg(), eps=0.3, steps=6, step_size=0.1, init_std=0.01, bounds=None)
    got = t.attack(x)
    with torch.no_grad():
        assert int(model(got).argmax(1)) != 0  # the label flipped on the way
    ref = _algorithm_1(model, x, None, eps=0.3, step=0.1, steps=6, std=0.01, bounds=None)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert float((got - x).abs().max()) == pytest.approx(0.3, abs=1e-12)


def test_attack_draws_its_start_from_the_trainer_generator() -> None:
    x = X.repeat(2, 1, 1)

    def run(seed: int) -> torch.Tensor:
        return TRADES(MaskedLinear(W), _cfg(), eps=0.5, steps=1, step_size=0.01, init_std=0.1, bounds=None,
                      generator=torch.Generator().manual_seed(seed)).attack(x)

    a, b, c = run(1), run(1), run(2)
    torch.manual_seed(123)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a - x, torch.zeros_like(x))


# ----------------------------------------------------------------------------------- the loss
def test_loss_by_hand_with_weights_and_mask(noise) -> None:
    y = torch.tensor([2, 0, 1])
    t = TRADES(MaskedLinear(W), _cfg(), beta=2.5, eps=0.3, steps=2, step_size=0.1, init_std=0.05, bounds=None)
    t.loss_weights = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    x_adv = t.attack(X, MASK)
    ref = _algorithm_1(t.model, X, MASK, eps=0.3, step=0.1, steps=2, std=0.05, bounds=None)
    torch.testing.assert_close(x_adv, ref, rtol=0, atol=1e-12)
    loss, logits = t.compute_loss(X, y, MASK)
    zc = ((X * MASK).flatten(1) @ W.T).tolist()
    za = ((ref * MASK).flatten(1) @ W.T).tolist()
    wts = [1.0, 3.0, 0.5]
    ce_terms = [wts[yi] * -(zc[i][yi] - math.log(sum(math.exp(v) for v in zc[i]))) for i, yi in enumerate(y.tolist())]
    ce = sum(ce_terms) / sum(wts[yi] for yi in y.tolist())
    kl = sum(_hand_kl(zc[i], za[i]) for i in range(3)) / 3
    assert kl > 1e-3
    assert loss.item() == pytest.approx(ce + 2.5 * kl, rel=1e-12)
    torch.testing.assert_close(logits, torch.tensor(zc, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    loss.backward()
    assert t.model.weight.grad is not None and float(t.model.weight.grad.abs().sum()) > 0


def test_loss_gradient_flows_through_both_terms(noise) -> None:
    """``∂L/∂W`` equals autograd of CE(f(x)) + β·KL(f(x) ‖ f(x')) with x' held fixed."""
    y = torch.tensor([0, 1, 2])
    t = TRADES(MaskedLinear(W), _cfg(), beta=6.0, eps=0.3, steps=2, step_size=0.1, init_std=0.05, bounds=None)
    x_adv = _algorithm_1(t.model, X, None, eps=0.3, step=0.1, steps=2, std=0.05, bounds=None)
    loss, _ = t.compute_loss(X, y)
    (g,) = torch.autograd.grad(loss, t.model.weight)
    w = W.clone().requires_grad_(True)
    zc, za = X.flatten(1) @ w.T, x_adv.flatten(1) @ w.T
    ref = F.cross_entropy(zc, y) + 6.0 * (F.softmax(zc, 1) * (F.log_softmax(zc, 1) - F.log_softmax(za, 1))).sum(1).mean()
    (g_ref,) = torch.autograd.grad(ref, w)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_loss_attacks_with_the_mask(noise) -> None:
    """Large values on the padding: f(x) without the mask would give other soft labels and another x'."""
    xp = X + 4.0 * (1 - MASK) * torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    y = torch.tensor([1, 2, 0])
    kw = dict(eps=0.3, step=0.1, steps=2, std=0.05, bounds=None)
    t = TRADES(MaskedLinear(W), _cfg(), beta=1.0, eps=0.3, steps=2, step_size=0.1, init_std=0.05, bounds=None)
    ref = _algorithm_1(t.model, xp, MASK, **kw)
    unmasked = _algorithm_1(lambda v, m: t.model(v), xp, None, **kw)
    zc, za = (xp * MASK).flatten(1) @ W.T, (ref * MASK).flatten(1) @ W.T
    assert not torch.allclose(za, (unmasked * MASK).flatten(1) @ W.T)
    loss, _ = t.compute_loss(xp, y, MASK)
    kl = sum(_hand_kl(zc[i].tolist(), za[i].tolist()) for i in range(3)) / 3
    assert loss.item() == pytest.approx(F.cross_entropy(zc, y).item() + kl, rel=1e-12)
