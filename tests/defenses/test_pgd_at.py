"""PGD adversarial training (Madry et al., ICLR 2018) step by step: the inner maximisation is Madry's PGD written
out (uniform start, sign steps, projection on the ball and the bounds, final iterate), the outer loss is
w_clean·CE(f(x)) + w_adv·CE(f(x_adv)) with Ma & Liang's (2020) per-model mix, the warm-up and ε ramp of
their CPSC 2018 recipe (2022), the correct-only attack and the padding mask; every setting is checked and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import PGD, AttackContext
from medrobust.data.base import DatasetMeta, ECGDataset
from medrobust.defenses import AdversarialTraining
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig

N, LEADS, S, K = 6, 2, 8, 3


class Net(nn.Module):
    """A small smooth float64 net (tanh) that takes a padding mask, records the mask and mode of every call.

    The logits ignore the mask, so the input gradient is non-zero on the padding: an adversary that forgot the
    mask would move it."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(LEADS * S, 8).double()
        self.b = nn.Linear(8, K).double()
        self.calls: list[tuple[bool, int, torch.Tensor | None]] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((self.training, x.shape[0], None if mask is None else mask.detach().clone()))
        return self.b(torch.tanh(self.a(x.flatten(1))))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.flatten(1))))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((N, LEADS, S), generator=g, dtype=torch.float64) * 0.9 + 0.05
    x[0, 0, :3] = torch.tensor([0.0, 0.01, 1.0], dtype=torch.float64)  # at / near the bounds: clipping matters
    return x, torch.tensor([0, 1, 2, 0, 1, 2])


def _uniform(monkeypatch: pytest.MonkeyPatch, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Fix the random start's U[0, 1) draws (per sample, by its index in the batch)."""
    u = torch.rand(tuple(x.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    monkeypatch.setattr(AttackContext, "rand", lambda self, act, *shape: u[act.idx].to(self.x.dtype))
    return u


def _objective(z: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(z, y, reduction="sum")
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    others = z.masked_fill(F.one_hot(y, K).bool(), -torch.inf)
    return (others.amax(1) - zy).sum()  # Carlini-Wagner margin


def _madry(net: Net, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
           u: torch.Tensor | None, bounds: tuple[float, float] | None, loss: str = "ce",
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Madry et al.'s L∞ PGD: x⁰ = Π(x + U[−ε, ε]), xᵗ⁺¹ = Π(xᵗ + α·sign ∇ₓL(f(xᵗ), y)); the final iterate."""
    m = torch.ones_like(x) if mask is None else mask.expand_as(x).to(x.dtype)
    lo, hi = bounds if bounds is not None else (-torch.inf, torch.inf)

    def proj(xa: torch.Tensor) -> torch.Tensor:
        d = torch.minimum(torch.maximum(xa - x, -eps * torch.ones_like(x)), eps * torch.ones_like(x)) * m
        return (x + d).clamp(lo, hi)

    xa = proj(x + (2 * u - 1) * eps) if u is not None else x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(_objective(net.logits(xa), y, loss), xa)
        xa = proj(xa + alpha * g.sign())
    return xa.detach()


# ------------------------------------------------------------------------------------------ the inner maximisation
@pytest.mark.parametrize("case", ["absolute step", "relative step at a ramped eps", "margin, no start, unbounded"])
def test_the_training_attack_is_madry_pgd_by_hand(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch()
    net = Net()
    u = _uniform(monkeypatch, x)
    if case == "absolute step":
        t = AdversarialTraining(net, eps=0.05, steps=4, step_size=0.02, bounds=(0.0, 1.0))
        want = _madry(net, x, y, eps=0.05, alpha=0.02, steps=4, u=u, bounds=(0.0, 1.0))
        eps = 0.05
    elif case == "relative step at a ramped eps":  # the default rel_step_size 0.1 of the radius being trained
        t = AdversarialTraining(net, eps=0.1, steps=3, bounds=(0.0, 1.0))
        eps = 0.04
        want = _madry(net, x, y, eps=eps, alpha=0.004, steps=3, u=u, bounds=(0.0, 1.0))
    else:
        t = AdversarialTraining(net, eps=0.05, steps=3, step_size=0.03, random_start=False, attack_loss="margin",
                                bounds=None)
        want = _madry(net, x, y, eps=0.05, alpha=0.03, steps=3, u=None, bounds=None, loss="margin")
        eps = 0.05
        assert float(want.min()) < 0.0  # unbounded: the sample at 0 went below
    got = t.attack(x, y, eps)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert float((got - x).abs().amax()) <= eps + 1e-12
    assert float((got - x).flatten(1).abs().amax(1).min()) > 0.5 * eps  # every sample took every step


def test_the_l2_attack_stays_in_the_l2_ball() -> None:
    x, y = _batch()
    net = Net()
    t = AdversarialTraining(net, eps=0.2, steps=5, step_size=0.1, norm="l2", bounds=None,
                            generator=torch.Generator().manual_seed(4))
    got = t.attack(x, y, 0.2)
    want = PGD(net, eps=0.2, steps=5, step_size=0.1, norm="l2", random_start=True, early_stop=False,
               bounds=None, generator=torch.Generator().manual_seed(4))(x, y).x_adv
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    l2 = (got - x).flatten(1).norm(dim=1)
    assert bool((l2 <= 0.2 + 1e-9).all()) and bool((l2 > 0.15).all())
    assert float((got - x).abs().amax()) < 0.2  # an L∞ attack of radius 0.2 would reach 0.2 per coordinate


def test_every_batch_gets_a_fresh_random_start_from_the_trainer_generator() -> None:
    x, y = _batch()
    gen = torch.Generator().manual_seed(8)
    t = AdversarialTraining(Net(), eps=0.05, steps=1, step_size=0.001, bounds=None, generator=gen)
    assert t.generator is gen
    first, second = t.attack(x, y, 0.05), t.attack(x, y, 0.05)
    assert not torch.equal(first, second)
    again = AdversarialTraining(Net(), eps=0.05, steps=1, step_size=0.001, bounds=None,
                                generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(again.attack(x, y, 0.05), first, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ the outer minimisation
def test_madry_trains_on_adversarial_inputs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """adv_ratio = 1 (Madry): loss = CE(f(x_adv)) with the class weights; no clean forward; the logits returned
    are the adversarial ones."""
    x, y = _batch()
    net = Net()
    u = _uniform(monkeypatch, x)
    t = AdversarialTraining(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.03, adv_ratio=1.0,
                            bounds=(0.0, 1.0))
    t.loss_weights = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    loss, logits = t.compute_loss(x, y)
    x_adv = _madry(net, x, y, eps=0.05, alpha=0.03, steps=2, u=u, bounds=(0.0, 1.0))
    want = F.cross_entropy(net.logits(x_adv), y, weight=t.loss_weights)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(logits.detach(), net.logits(x_adv).detach(), rtol=0, atol=1e-12)
    train_calls = [c for c in net.calls if c[0]]
    assert len(train_calls) == 1  # only the adversarial forward in train mode


def test_the_mix_of_clean_and_adversarial_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    """loss = w_clean·CE(f(x)) + w_adv·CE(f(x_adv)), both class-weighted; the logits returned are the clean ones."""
    x, y = _batch()
    net = Net()
    u = _uniform(monkeypatch, x)
    t = AdversarialTraining(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.03, clean_weight=0.3,
                            adv_weight=0.7, bounds=(0.0, 1.0))
    t.loss_weights = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    loss, logits = t.compute_loss(x, y)
    x_adv = _madry(net, x, y, eps=0.05, alpha=0.03, steps=2, u=u, bounds=(0.0, 1.0))
    w = t.loss_weights
    want = 0.7 * F.cross_entropy(net.logits(x_adv), y, weight=w) + 0.3 * F.cross_entropy(net.logits(x), y, weight=w)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(logits.detach(), net.logits(x).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", [{"adv_ratio": 1.0}, {"clean_weight": 0.3, "adv_weight": 0.7}])
def test_warmup_epochs_train_plain_ce_without_attacking(kw: dict) -> None:
    x, y = _batch()
    net = Net()

    class NoAttack(AdversarialTraining):
        def attack(self, *a, **k):  # type: ignore[no-untyped-def]
            raise AssertionError("attacked during the warm-up")

    t = NoAttack(net, TrainConfig(epochs=3), eps=0.05, steps=2, warmup_epochs=1, **kw)
    t.loss_weights = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    t.on_epoch_start(0)
    loss, logits = t.compute_loss(x, y)
    want = F.cross_entropy(net.logits(x), y, weight=t.loss_weights)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(logits.detach(), net.logits(x).detach(), rtol=0, atol=0)
    assert len(net.calls) == 1


def test_the_padding_mask_reaches_every_forward_and_the_adversary(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch()
    mask = torch.ones(N, 1, S, dtype=torch.float64)
    mask[:, :, :3] = 0.0
    x = x * mask
    net = Net()
    u = _uniform(monkeypatch, x)
    t = AdversarialTraining(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.03, bounds=(0.0, 1.0))
    loss, _ = t.compute_loss(x, y, mask)
    assert all(m is not None and torch.equal(m, mask) for _, _, m in net.calls)
    x_adv = _madry(net, x, y, eps=0.05, alpha=0.03, steps=2, u=u, bounds=(0.0, 1.0), mask=mask)
    assert float((x_adv * (1 - mask)).abs().max()) == 0.0
    want = 0.5 * F.cross_entropy(net.logits(x_adv), y) + 0.5 * F.cross_entropy(net.logits(x), y)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


def test_the_attack_runs_in_eval_mode_with_frozen_parameters_and_the_loss_in_train_mode() -> None:
    """Madry's inner maximisation is over the input only: the adversary's forwards see the model in eval mode with
    frozen parameters; the training forwards run in train mode and the parameters stay trainable."""
    x, y = _batch()
    frozen: list[tuple[bool, bool]] = []

    class Probe(Net):
        def forward(self, x, mask=None):  # type: ignore[no-untyped-def]
            frozen.append((self.training, not any(p.requires_grad for p in self.parameters())))
            return super().forward(x, mask)

    net = Probe()
    t = AdversarialTraining(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.03)
    net.train()
    loss, _ = t.compute_loss(x, y)
    # clean forward (train), the attack's forwards (eval, frozen), adversarial forward (train)
    assert frozen[0] == (True, False) and frozen[-1] == (True, False)
    assert len(frozen) > 2 and all(f == (False, True) for f in frozen[1:-1])
    assert net.training and all(p.requires_grad for p in net.parameters())
    loss.backward()
    assert net.a.weight.grad is not None and float(net.a.weight.grad.abs().sum()) > 0


def _correct_only(net: Net, y_flip: list[int], mask: torch.Tensor | None = None,
                  **kw) -> tuple[AdversarialTraining, list, torch.Tensor, torch.Tensor]:
    x, _ = _batch()
    x = x if mask is None else x * mask
    with torch.no_grad():
        y = net.logits(x).argmax(1)
    y[y_flip] = (y[y_flip] + 1) % K
    seen: list = []

    class Spy(AdversarialTraining):
        def attack(self, xs, ys, eps, mask=None):  # type: ignore[no-untyped-def]
            seen.append((xs.clone(), ys.clone(), None if mask is None else mask.clone()))
            return super().attack(xs, ys, eps, mask)

    t = Spy(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.03, attack_correct_only=True,
            bounds=(0.0, 1.0), **kw)
    return t, seen, x, y


@pytest.mark.parametrize("shared", [False, True])
def test_correct_only_attacks_the_correct_samples_with_their_masks(shared: bool) -> None:
    mask = torch.ones(1 if shared else N, 1, S, dtype=torch.float64)
    mask[..., :2] = 0.0
    if not shared:
        mask[4, :, 5] = 0.0  # differs per sample: the correct samples' rows must be picked
    net = Net()
    net.eval()
    t, seen, xm, y = _correct_only(net, [0, 2, 3], mask)
    t.compute_loss(xm, y, mask)
    ok = torch.tensor([1, 4, 5])
    assert len(seen) == 1 and torch.equal(seen[0][0], xm[ok]) and torch.equal(seen[0][1], y[ok])
    assert torch.equal(seen[0][2], mask if shared else mask[ok])


def test_correct_only_with_one_or_no_correct_sample() -> None:
    net = Net()
    net.eval()
    t, seen, x, y = _correct_only(net, [0, 1, 2, 3, 4], adv_ratio=1.0)
    t.compute_loss(x, y)
    assert len(seen) == 1 and torch.equal(seen[0][0], x[5:])  # the one correct sample is attacked
    net2 = Net()
    net2.eval()
    t2, seen2, x2, y2 = _correct_only(net2, list(range(N)), adv_ratio=1.0)
    loss2, logits2 = t2.compute_loss(x2, y2)
    assert seen2 == []  # nothing to attack: the adversarial term is the clean CE
    assert loss2.item() == pytest.approx(F.cross_entropy(net2.logits(x2), y2).item(), rel=1e-12)
    torch.testing.assert_close(logits2.detach(), net2.logits(x2).detach(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ settings
def _dataset(amplitude: float, units: str) -> ECGDataset:
    x = 0.5 + amplitude * torch.sin(torch.linspace(0, 6.28, S)).repeat(8, 1, 1)
    meta = DatasetMeta(name="sine", fs=100.0, classes=("a", "b", "c"), units=units, ids=np.arange(8).astype(str))
    return ECGDataset(x, torch.arange(8) % 3, meta)


def test_documented_defaults_recorded_in_the_card(tmp_path: Path) -> None:
    t = AdversarialTraining(nn.Linear(4, 2), TrainConfig(epochs=5), out_dir=tmp_path)
    assert t.out_dir == tmp_path and t.config.epochs == 5
    hp = {"eps": 0.1, "steps": 10, "step_size": None, "rel_step_size": 0.1, "clean_weight": 0.5, "adv_weight": 0.5,
          "norm": "linf", "random_start": True, "bounds": None, "bounds_arg": "auto", "attack_loss": "ce",
          "attack_correct_only": False, "warmup_epochs": 0, "eps_ramp": False,
          "attack_mode": "eval, frozen parameters"}
    assert t.hyperparameters() == hp
    t.setup(_dataset(0.4, "normalized [0, 1]"))  # prepare: "auto" bounds resolved from the units
    assert t.bounds == (0.0, 1.0) and t.hyperparameters() == {**hp, "bounds": [0.0, 1.0]}
    t = AdversarialTraining(nn.Linear(4, 2), eps=0.2, steps=20, step_size=0.01, norm="l2", random_start=False,
                            bounds=(-1.0, 2.0), attack_loss="soft_margin", attack_correct_only=True,
                            warmup_epochs=3, eps_ramp=True, adv_ratio=0.25, config=TrainConfig(epochs=6))
    assert t.hyperparameters() == {
        "eps": 0.2, "steps": 20, "step_size": 0.01, "rel_step_size": None, "clean_weight": 0.75, "adv_weight": 0.25,
        "norm": "l2", "random_start": False, "bounds": [-1.0, 2.0], "bounds_arg": (-1.0, 2.0),
        "attack_loss": "soft_margin", "attack_correct_only": True, "warmup_epochs": 3, "eps_ramp": True,
        "attack_mode": "eval, frozen parameters"}
    t.setup(_dataset(0.4, "mV"))
    assert t.bounds == (-1.0, 2.0)
    assert AdversarialTraining(nn.Linear(4, 2), rel_step_size=0.2).rel_step_size == 0.2


def test_prepare_checks_eps_against_the_data() -> None:
    t = AdversarialTraining(nn.Linear(4, 2), eps=0.5)
    with pytest.raises(ConfigError, match=r"^AdversarialTraining: eps=0\.5 is at least the median peak-to-peak"):
        t.setup(_dataset(0.1, "mV"))
    t = AdversarialTraining(nn.Linear(4, 2), eps=0.05)
    t.setup(_dataset(0.4, "mV"))
    assert t.bounds is None and t.hyperparameters()["bounds"] is None


def test_ma_liang_mix_follows_the_model() -> None:
    """Ma & Liang (2020): MLP1 trains CE(clean) + 1.0·CE(adv), other models 0.5·CE(clean) + 0.5·CE(adv)."""
    mlp = build_model("mlp1")
    assert (AdversarialTraining(mlp).clean_weight, AdversarialTraining(mlp).adv_weight) == (1.0, 1.0)
    assert (AdversarialTraining(nn.Linear(4, 2)).clean_weight, AdversarialTraining(nn.Linear(4, 2)).adv_weight) == (
        0.5, 0.5)
    t = AdversarialTraining(mlp, adv_weight=2.0)
    assert (t.clean_weight, t.adv_weight) == (1.0, 2.0)
    t = AdversarialTraining(nn.Linear(4, 2), clean_weight=0.0)
    assert (t.clean_weight, t.adv_weight) == (0.0, 0.5)
    t = AdversarialTraining(nn.Linear(4, 2), clean_weight=0.2, adv_weight=1.0)
    assert (t.clean_weight, t.adv_weight) == (0.2, 1.0)
    t = AdversarialTraining(nn.Linear(4, 2), adv_ratio=1.0)
    assert (t.clean_weight, t.adv_weight) == (0.0, 1.0)


@pytest.mark.parametrize("kw, msg", [
    ({"eps": 0.0}, r"^eps must be > 0\.0, got 0\.0\.$"),
    ({"eps": -0.1}, r"^eps must be > 0\.0, got -0\.1\.$"),
    ({"steps": 0}, r"^steps must be an integer >= 1, got 0\.$"),
    ({"step_size": 0.0}, r"^step_size must be > 0\.0, got 0\.0\.$"),
    ({"step_size": -0.01}, r"^step_size must be > 0\.0, got -0\.01\.$"),
    ({"rel_step_size": 0.0}, r"^rel_step_size must be > 0\.0, got 0\.0\.$"),
    ({"rel_step_size": -0.1}, r"^rel_step_size must be > 0\.0, got -0\.1\.$"),
    ({"step_size": 0.01, "rel_step_size": 0.1},
     r"^pass step_size \(absolute\) or rel_step_size \(fraction of eps\), not both\.$"),
    ({"norm": "l1"}, r"^norm must be one of \('linf', 'l2'\), got 'l1'\.$"),
    ({"norm": "L2"}, r"^norm must be one of \('linf', 'l2'\), got 'L2'\.$"),
    ({"attack_loss": "hinge"}, r"^attack_loss must be one of \('ce', 'margin', 'soft_margin', 'dlr', 'kl'\)"),
    ({"warmup_epochs": -1}, r"^warmup_epochs must be an integer >= 0, got -1\.$"),
    ({"warmup_epochs": 4}, r"^warmup_epochs=4 leaves no adversarial epoch out of epochs=4\.$"),
    ({"adv_ratio": 0.5, "clean_weight": 0.5}, r"^pass adv_ratio or clean_weight/adv_weight, not both\.$"),
    ({"adv_ratio": 0.5, "adv_weight": 0.5}, r"^pass adv_ratio or clean_weight/adv_weight, not both\.$"),
    ({"adv_ratio": 1.5}, r"^adv_ratio must be <= 1\.0, got 1\.5\.$"),
    ({"adv_ratio": -0.5}, r"^adv_ratio must be >= 0\.0, got -0\.5\.$"),
    ({"clean_weight": -1.0}, r"^clean_weight must be >= 0\.0, got -1\.0\.$"),
    ({"adv_weight": -1.0}, r"^adv_weight must be >= 0\.0, got -1\.0\.$"),
    ({"adv_weight": 0.0},
     r"^adv_weight must be > 0 \(with adv_weight=0 this is plain CE training: use defence 'ce'\)\.$"),
])
def test_bad_settings_name_the_argument(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        AdversarialTraining(nn.Linear(4, 2), TrainConfig(epochs=4), **kw)


def test_the_l2_norm_and_one_step_are_accepted() -> None:
    t = AdversarialTraining(nn.Linear(4, 2), norm="l2", steps=1)
    assert (t.norm, t.steps) == ("l2", 1)


def test_eps_schedule_never_exceeds_eps() -> None:
    t = AdversarialTraining(nn.Linear(4, 2), TrainConfig(epochs=5), eps=0.2, warmup_epochs=1, eps_ramp=True)
    sched = []
    for e in range(7):
        t.on_epoch_start(e)
        sched.append(t.current_eps())
    assert sched == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    t = AdversarialTraining(nn.Linear(4, 2), TrainConfig(epochs=5), eps=0.2, warmup_epochs=2)
    t.on_epoch_start(1)
    assert t.current_eps() == 0.0
    t.on_epoch_start(2)
    assert t.current_eps() == 0.2
