"""Distillation / ADT (soft labels, temperature, SAP adversary, ablations) and the UAP pool of UAP retraining."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.attacks import sap_kernel, smooth
from medrobust.defenses import ADT, DefensiveDistillation, UAPRetraining, soft_cross_entropy
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import TinyNet


def test_soft_cross_entropy_by_hand() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.7, 0.2, 0.1]])
    t = 2.0
    zs = [v / t for v in z[0].tolist()]
    lse = math.log(sum(math.exp(v) for v in zs))
    by_hand = -sum(qi * (v - lse) for qi, v in zip(q[0].tolist(), zs))
    assert soft_cross_entropy(z, q, temperature=t).item() == pytest.approx(by_hand, rel=1e-6)
    onehot = torch.tensor([[1.0, 0.0, 0.0]])
    assert soft_cross_entropy(z, onehot).item() == pytest.approx(
        nn.functional.cross_entropy(z, torch.tensor([0])).item(), rel=1e-6)


class DropTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(187, 5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


def test_soft_labels_eval_mode_by_default_and_train_mode_quirk(beats) -> None:
    x = beats[0].x[:8]
    teacher = DropTeacher()
    d = DefensiveDistillation(TinyNet(187, 5), TrainConfig(epochs=1), temperature=10.0, teacher=teacher)
    q1, q2 = d.soft_labels(x), d.soft_labels(x)
    torch.testing.assert_close(q1, q2)
    teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(q1, torch.softmax(teacher(x) / 10.0, dim=1))
    quirk = DefensiveDistillation(TinyNet(187, 5), TrainConfig(epochs=1), temperature=10.0, teacher=teacher,
                                  soft_labels_train_mode=True)
    assert not torch.allclose(quirk.soft_labels(x), q1)  # dropout active
    assert quirk.hyperparameters()["soft_labels_mode"] == "train"
    assert d.hyperparameters()["temperature"] == 10.0 and DefensiveDistillation(TinyNet(4, 2)).temperature == 100.0


def _adt(**hp) -> ADT:
    return ADT(TinyNet(187, 5), TrainConfig(epochs=1), eps=0.05, step_size=0.01, **hp)


def test_adt_adversary_stays_in_ball_smooth_and_bounded(beats) -> None:
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x = beats[0].x[:8]
    with torch.no_grad():
        q = torch.softmax(net(x), 1)
    x_adv = _adt(pgd_steps=3, smooth_steps=3, bounds=(0.0, 1.0))._adversarial(net, x, q, None)
    delta = x_adv - x
    assert float(delta.abs().max()) <= 0.05 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        assert soft_cross_entropy(net(x_adv), q).item() > soft_cross_entropy(net(x), q).item()
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_adt_adversary_output_is_smoothed(beats) -> None:
    """The applied perturbation is S(θ): far smoother than the sign-step PGD warm start (kills 'smoothing removed')."""
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x = beats[0].x[:8]
    with torch.no_grad():
        q = torch.softmax(net(x), 1)

    def roughness(smooth_steps: int) -> float:
        d = _adt(pgd_steps=3, smooth_steps=smooth_steps, bounds=None)._adversarial(net, x, q, None) - x
        return float((d[..., 2:] - 2 * d[..., 1:-1] + d[..., :-2]).abs().mean())

    assert roughness(2) < 0.2 * roughness(0)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_adt_adversary_is_sap_on_soft_labels_by_hand(temperature: float, beats) -> None:
    """Shao et al.'s adversary written out: pgd_steps sign steps on δ from 0, then smooth_steps sign steps on θ
    through Han's filter, both maximising H(q, f(x + ·)/T), output the final x + S(θ) of every sample (kills:
    temperature ignored, hard labels, no warm start, early stop / best iterate, random start)."""
    torch.manual_seed(0)
    net = TinyNet(187, 5)
    x = beats[0].x[:16]
    q = torch.softmax(torch.randn(16, 5, generator=torch.Generator().manual_seed(2)), 1)
    got = _adt(pgd_steps=3, smooth_steps=4, bounds=None, temperature=temperature)._adversarial(net, x, q, None)

    def ascend(v: torch.Tensor, to_input, steps: int) -> torch.Tensor:
        for _ in range(steps):
            v = v.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(soft_cross_entropy(net(to_input(v)), q, temperature=temperature,
                                                          reduction="sum"), v)
            v = (v + 0.01 * g.sign()).clamp(-0.05, 0.05)
        return v.detach()

    kernel = sap_kernel()
    delta = ascend(torch.zeros_like(x), lambda d: x + d, 3)
    theta = ascend(delta, lambda t: x + smooth(t, kernel), 4)
    torch.testing.assert_close(got, x + smooth(theta, kernel), atol=1e-6, rtol=0)


class _ModeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(187, 5)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("train_mode", [False, True])
def test_adt_adversary_mode_flag(train_mode: bool, beats) -> None:
    """Eval mode by default; the reference's train-mode adversary with attack_train_mode=True; both restore the
    model's mode and frozen parameters afterwards."""
    net = _ModeNet()
    x = beats[0].x[:4]
    q = torch.full((4, 5), 0.2)
    net.train()
    _adt(pgd_steps=1, smooth_steps=1, attack_train_mode=train_mode)._adversarial(net, x, q, None)
    assert net.modes and set(net.modes) == {train_mode}
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_adt_ablations_and_scale_guard(beats) -> None:
    flags = {a: (ADT(TinyNet(187, 5), TrainConfig(epochs=1), ablation=a, eps=0.05, step_size=0.01).adversarial_teacher,
                 ADT(TinyNet(187, 5), TrainConfig(epochs=1), ablation=a, eps=0.05, step_size=0.01).adversarial_student)
             for a in ("none", "init", "dist")}
    assert flags == {"none": (True, True), "init": (True, False), "dist": (False, True)}
    train, val = beats
    with pytest.raises(ConfigError, match="peak-to-peak"):  # CardioDefense's ε = 10 ADC units on [0, 1] beats
        ADT(TinyNet(187, 5), TrainConfig(epochs=1, progress=False)).fit(train, val)


def test_distillation_trains_the_teacher_first(beats, tmp_path) -> None:
    train, val = beats
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, progress=False, max_batches_per_epoch=2, batch_size=64)
    from medrobust.models import build_model

    d = ADT(build_model("mlp1"), cfg, out_dir=tmp_path, eps=0.05, step_size=0.01, pgd_steps=1, smooth_steps=1)
    d.fit(train, val)
    hp = d.hyperparameters()
    assert hp["teacher_training"]["epochs_run"] == 1 and (tmp_path / "teacher" / "checkpoint").is_dir()
    from medrobust.models.checkpoint import read_card

    card = read_card(tmp_path / "checkpoint")
    assert card["training"]["trainer"] == "adt" and card["training"]["hyperparameters"]["ablation"] == "none"


class Margin(nn.Module):
    """Two classes split by a hyperplane: logits ``[0, wᵀx − c]``."""

    def __init__(self, w: torch.Tensor, c: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w - self.c
        return torch.stack([torch.zeros_like(s), s], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_uap_pool_finds_the_universal_direction(norm: str, beats) -> None:
    """For a linear classifier the best universal perturbation is ∓ξ·dir(w); the pool should match it.

    The threshold leaves 70 % of the inputs on one side: with a median split the per-sample margins of the
    two sides cancel in a mean-loss solver, and the best universal shift fools only a few inputs anyway."""
    ds = beats[0].subset(range(300))
    x = ds.x
    torch.manual_seed(0)
    w = torch.randn(187)
    s = x.flatten(1) @ w
    c = float(s.quantile(0.3))
    model = Margin(w, c)
    eps = 0.3 * float(s.std()) / (float(w.abs().sum()) if norm == "linf" else float(w.norm()))
    t = UAPRetraining(model, TrainConfig(epochs=1), eps=eps, eps_mode="abs", norm=norm, pool_size=3,
                      generation_size=300, uap_max_iter=3, uap_step_size=eps / 4, bounds=None)  # unbounded: the optimum is reachable
    t.setup(ds)
    t.build_pool()
    assert t.pool is not None and t.pool.shape == (3, 1, 187)
    size = t.pool.flatten(1).abs().amax(1) if norm == "linf" else t.pool.flatten(1).norm(dim=1)
    assert bool((size <= eps * (1 + 1e-5)).all())
    best_shift = eps * (float(w.abs().sum()) if norm == "linf" else float(w.norm()))
    best = max(float(((s > c) & (s - best_shift <= c)).double().mean()), float(((s <= c) & (s + best_shift > c)).double().mean()))
    assert best > 0.1
    assert t.rounds[-1]["fooling_rate_max"] >= 0.9 * best
    with torch.no_grad():
        for v in t.pool:  # every member really fools (recomputed here, not the solver's own count)
            assert float((model(x + v).argmax(1) != model(x).argmax(1)).double().mean()) >= 0.8 * best


def test_uap_retraining_rebuilds_the_pool_every_round(beats) -> None:
    train, val = beats
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, progress=False, max_batches_per_epoch=1, batch_size=32, patience=None)
    t = UAPRetraining(TinyNet(187, 5), cfg, epochs_per_round=2, pool_size=3, uap_max_iter=1, generation_size=64,
                      norm="linf", eps=0.02, eps_mode="abs")
    t.fit(train, val)
    assert [r["epoch"] for r in t.rounds] == [1, 3]
    assert t.pool is not None and t.pool.shape == (3, 1, 187) and float(t.pool.abs().max()) <= 0.02 + 1e-7
    assert t.hyperparameters()["rounds"] == t.rounds
