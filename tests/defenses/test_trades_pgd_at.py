"""TRADES KL by hand, the inner attacks stay in the ball, PGD-AT's mix, ramp and frozen eval-mode attack."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.attacks import PGD, AttackContext
from medrobust.defenses import TRADES, AdversarialTraining, trades_kl
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import TinyNet


def test_trades_kl_by_hand() -> None:
    clean = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], requires_grad=True)
    adv = torch.tensor([[0.0, 0.5, 0.2], [0.5, 0.5, 2.0]], requires_grad=True)
    by_hand = 0.0
    for zc, za in zip(clean.tolist(), adv.tolist()):
        p = [math.exp(v) / sum(math.exp(u) for u in zc) for v in zc]
        q = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
        by_hand += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    kl = trades_kl(clean, adv)
    assert kl.item() == pytest.approx(by_hand / 2, rel=1e-6)
    kl.backward()
    assert clean.grad is not None and adv.grad is not None  # the outer loss differentiates both arguments
    assert float(adv.grad[1].abs().sum()) < 1e-7  # identical rows contribute no gradient


def test_trades_attack_stays_in_ball_and_bounds_and_raises_kl(beats) -> None:
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x = beats[0].x[:32]
    t = TRADES(net, TrainConfig(epochs=1), eps=0.05, steps=5, step_size=0.02, bounds=(0.0, 1.0))
    x_adv = t.attack(x)
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-7
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        assert trades_kl(net(x), net(x_adv)).item() > 1e-4


def test_trades_adversary_is_algorithm_1_by_hand(beats, monkeypatch) -> None:
    """TRADES' adversary (PGD, Gaussian start, KL loss, final iterate) = Zhang et al.'s Algorithm 1 written out: start x + 0.001·N(0, I), then every sample takes
    every sign step of the KL to softmax(f(x)), projected on the ball and [0, 1]; the output is the final
    iterate (kills: uniform or no start, wrong start scale, early stop / best iterate, hard-label CE)."""
    torch.manual_seed(0)
    net = TinyNet(187, 5).double()  # float64: a gradient coordinate near 0 must not flip sign between torch builds
    x = beats[0].x[:24].double()
    noise = torch.randn(tuple(x.shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    monkeypatch.setattr(AttackContext, "randn", lambda self, act, *shape: noise[act.idx].to(self.x.dtype))
    eps, step, steps = 0.05, 0.02, 6
    with torch.no_grad():
        p = torch.softmax(net(x), 1)
    got = TRADES(net, TrainConfig(epochs=1), eps=eps, steps=steps, step_size=step, bounds=(0.0, 1.0)).attack(x)
    xa = (x + 0.001 * noise).clamp(0, 1)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        kl = (p * (p.log() - torch.log_softmax(net(xa), 1))).sum()
        (g,) = torch.autograd.grad(kl, xa)
        xa = torch.minimum(torch.maximum(xa + step * g.sign(), x - eps), x + eps).clamp(0, 1).detach()
    torch.testing.assert_close(got, xa, atol=1e-12, rtol=0)
    assert float((got - x).flatten(1).abs().amax(1).min()) > 0.9 * eps  # every sample moved (no early stop at x)


class _DropNet(nn.Module):
    """Dropout makes train and eval mode differ; records the mode of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(187, 5)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.fc(self.drop(x.flatten(1)))


@pytest.mark.parametrize("cls", [AdversarialTraining, TRADES])
def test_attack_runs_in_eval_mode_with_frozen_parameters(cls, beats) -> None:
    net = _DropNet()
    t = cls(net, TrainConfig(epochs=2), eps=0.05, steps=3)
    net.train()
    t.compute_loss(beats[0].x[:8], beats[0].y[:8])
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert False in net.modes and True in net.modes  # attack forwards in eval, loss forwards in train mode


def test_pgd_at_loss_mix_and_ball(beats) -> None:
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x, y = beats[0].x[:16], beats[0].y[:16]
    t = AdversarialTraining(net, TrainConfig(epochs=3), eps=0.05, steps=4, step_size=0.02, adv_ratio=0.5,
                            bounds=(0.0, 1.0))
    x_adv = t.attack(x, y, 0.05)
    assert bool((x_adv - x).abs().max() <= torch.tensor(0.05)) and float(x_adv.min()) >= 0.0
    t.generator.manual_seed(5)
    loss, logits = t.compute_loss(x, y)
    t.generator.manual_seed(5)
    x_adv = t.attack(x, y, 0.05)
    ce = nn.functional.cross_entropy
    assert loss.item() == pytest.approx(0.5 * ce(net(x), y).item() + 0.5 * ce(net(x_adv), y).item(), rel=1e-5)
    # adversarial inputs increase the loss (the attack works)
    assert ce(net(x_adv), y).item() > ce(net(x), y).item()


def test_eps_ramp_and_warmup_schedule() -> None:
    t = AdversarialTraining(TinyNet(4, 2), TrainConfig(epochs=70), eps=0.1, warmup_epochs=10, eps_ramp=True,
                            rel_step_size=0.2, steps=20, attack_loss="soft_margin", attack_correct_only=True)
    sched = []
    for e in (0, 9, 10, 39, 69):
        t.on_epoch_start(e)
        sched.append(t.current_eps())
    assert sched == pytest.approx([0.0, 0.0, 0.1 * 1 / 60, 0.1 * 30 / 60, 0.1])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        AdversarialTraining(TinyNet(4, 2), TrainConfig(epochs=5), warmup_epochs=5)
    with pytest.raises(ConfigError, match="not both"):
        AdversarialTraining(TinyNet(4, 2), step_size=0.01, rel_step_size=0.1)


def test_attack_correct_only_leaves_misclassified_samples_clean(beats) -> None:
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x = beats[0].x[:16]
    with torch.no_grad():
        pred = net(x).argmax(1)
    y = pred.clone()
    y[:6] = (y[:6] + 1) % 5  # six misclassified samples
    seen: list[torch.Tensor] = []

    class Spy(AdversarialTraining):
        def attack(self, xs: torch.Tensor, ys: torch.Tensor, eps: float,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(ys)
            return super().attack(xs, ys, eps, mask)

    t = Spy(net, TrainConfig(epochs=2), eps=0.05, steps=2, attack_correct_only=True)
    net.eval()  # no dropout in TinyNet; eval keeps the "current forward pass" deterministic
    t.compute_loss(x, y)
    assert len(seen) == 1 and len(seen[0]) == 10
