"""Universal adversarial perturbations on synthetic inputs: budget, metrics, inner steps, controls, persistence
(the real-data tests are in test_uap_real.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.attacks import UAPResult, UniversalPerturbation, uap_random_control
from medrobust.errors import ConfigError, DataError


class CoordModel(nn.Module):
    """Logits are the input coordinates minus one: ``x`` (N, 1, K) -> logits (N, K)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) - 1.0  # shifted so that rows never look like probabilities


class Linear2(nn.Module):
    """Two logits ``[0, w·x + b]``: a linear binary classifier with a known decision boundary."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ budget
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_xi_is_zeta_times_mean_norm_by_hand(norm: str) -> None:
    x = torch.tensor([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -2.0]]])  # (2, 2 channels, 2)
    by_hand = {"l2": (5.0 + 5.0 ** 0.5) / 2, "linf": (4.0 + 2.0) / 2}[norm]
    uap = UniversalPerturbation(CoordModel(), norm=norm, zeta=0.04)
    assert uap.resolve_xi(x) == pytest.approx(0.04 * by_hand, rel=1e-12)
    first = {"l2": (5.0 + 1.0) / 2, "linf": (4.0 + 1.0) / 2}[norm]  # channel 0 only (MedicalAI-UAP quirk)
    uap0 = UniversalPerturbation(CoordModel(), norm=norm, zeta=0.02, norm_channels="first")
    assert uap0.resolve_xi(x) == pytest.approx(0.02 * first, rel=1e-12)
    assert UniversalPerturbation(CoordModel(), norm=norm, eps=0.3).resolve_xi(x) == 0.3


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_on_hand_made_example() -> None:
    # logits = coordinates; delta adds +1 to the logit of class 1
    x = torch.tensor([[[0.0, 1.0]], [[0.5, 0.0]], [[2.0, 0.0]], [[0.0, 0.5]]])  # clean preds 1, 0, 0, 1
    y = torch.tensor([0, 0, 0, 1])
    delta = torch.tensor([[0.0, 1.0]])  # adv preds 1, 1, 0, 1
    uap = UniversalPerturbation(CoordModel(), norm="l2", eps=1.0)
    ev = uap.evaluate(x, y, delta, target=1)
    assert ev["fooling_rate"] == 0.25  # only the second input changes its prediction
    assert ev["clean_accuracy"] == 0.75
    assert ev["misclassification_rate"] == 0.5  # adv preds 1, 1 differ from labels 0, 0
    assert ev["targeted_success_rate"] == 0.75  # over all inputs
    assert ev["clean_target_rate"] == 0.5
    assert ev["n_not_target"] == 2
    assert ev["targeted_success_rate_excluding_target"] == 0.5  # over the two not already predicted 1
    assert ev["transition"] == [[1, 1], [0, 2]]
    assert ev["adv_class_fractions"] == [0.25, 0.75]


def test_evaluate_rejects_wrong_shape() -> None:
    uap = UniversalPerturbation(CoordModel(), norm="l2", eps=1.0)
    with pytest.raises(DataError, match="shape"):
        uap.evaluate(torch.zeros(3, 1, 2), None, torch.zeros(1, 3))


# ------------------------------------------------------------------------------------------ inner steps
def test_fgsm_step_rejected_unless_it_flips() -> None:
    # boundary at x0 + x1 = 0 with w = (1, 1); inputs at distance >= 0.5 in L∞ from it
    model = Linear2(torch.tensor([1.0, 1.0]), 0.0)
    x = torch.tensor([[[-0.5, -0.5]], [[-1.0, -0.5]]])  # class 0 (score < 0)
    tiny = UniversalPerturbation(model, norm="linf", eps=2.0, method="fgsm", step_size=0.1, max_iter=3)
    res = tiny.fit(x)
    assert torch.equal(res.delta, torch.zeros(1, 2)) and res.fit_rate == 0.0
    assert all(h["accepted"] == 0 for h in res.history)
    big = UniversalPerturbation(model, norm="linf", eps=2.0, method="fgsm", step_size=0.6, max_iter=3)
    res = big.fit(x)
    assert res.history[0]["accepted"] >= 1 and res.fit_rate > 0.0
    assert res.norms["linf"] <= 2.0


def test_targeted_fgsm_accepts_only_steps_reaching_target() -> None:
    model = CoordModel()  # three classes, logits = coordinates
    x = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])
    uap = UniversalPerturbation(model, norm="linf", eps=3.0, method="fgsm", target=2, step_size=0.6, max_iter=2)
    res = uap.fit(x)
    ev = uap.evaluate(x, torch.tensor([0, 1, 2]), res)
    assert res.target == 2 and ev["targeted_success_rate"] == 1.0
    assert ev["targeted_success_rate_excluding_target"] == 1.0 and ev["clean_target_rate"] == pytest.approx(1 / 3)
    # a step too small to reach the target in one move is never accepted (Hirano & Takemoto's rule)
    small = UniversalPerturbation(model, norm="linf", eps=3.0, method="fgsm", target=2, step_size=0.4, max_iter=2)
    assert torch.equal(small.fit(x).delta, torch.zeros(1, 3))


def test_deepfool_step_is_the_minimal_l2_step() -> None:
    w = torch.tensor([3.0, 4.0])  # ‖w‖ = 5
    model = Linear2(w, -1.0)
    x = torch.tensor([[[-1.0, 0.0]]])  # score -4: distance to the boundary 4/5 = 0.8
    uap = UniversalPerturbation(model, norm="l2", eps=10.0, method="deepfool", overshoot=0.02, max_iter=1)
    res = uap.fit(x)
    assert res.fit_rate == 1.0
    expected = (0.8 + 1e-4 / 5) * 1.02
    assert res.norms["l2"] == pytest.approx(expected, rel=1e-4)
    cos = float(res.delta.flatten() @ w / (res.delta.norm() * w.norm()))
    assert cos == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ConfigError, match="non-targeted"):
        UniversalPerturbation(model, norm="l2", eps=1.0, method="deepfool", target=1)


# ------------------------------------------------------------------------------------------ controls
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_controls_obey_the_norm(norm: str) -> None:
    shape, xi = (2, 50), 0.7
    for s in range(5):
        v = uap_random_control(shape, xi=xi, norm=norm, kind="uniform", generator=gen(s))
        assert v.shape == shape
        assert float(v.flatten().norm() if norm == "l2" else v.abs().max()) <= xi * (1 + 1e-6)
    sign = uap_random_control(shape, xi=xi, norm=norm, kind="sign", generator=gen(1))
    if norm == "linf":
        assert torch.allclose(sign.abs(), torch.full(shape, xi))
    else:
        assert float(sign.norm()) == pytest.approx(xi, rel=1e-5)
        assert torch.allclose(sign.abs(), torch.full(shape, xi / 10.0))
    a = uap_random_control(shape, xi=xi, norm=norm, generator=gen(3))
    assert torch.equal(a, uap_random_control(shape, xi=xi, norm=norm, generator=gen(3)))
    assert not torch.equal(a, uap_random_control(shape, xi=xi, norm=norm, generator=gen(4)))


def test_uniform_l2_control_fills_the_ball() -> None:
    # uniform in a d-ball: P(‖v‖ <= r ξ) = r^d; in d = 2 the median radius is ξ/√2
    radii = torch.tensor([float(uap_random_control((1, 2), xi=1.0, norm="l2", generator=gen(s)).norm())
                          for s in range(400)])
    assert float(radii.median()) == pytest.approx(2 ** -0.5, abs=0.06)
    assert float((radii <= 0.5).double().mean()) == pytest.approx(0.25, abs=0.06)


# ------------------------------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path: Path) -> None:
    res = UAPResult(delta=torch.randn(1, 187, generator=gen()), xi=0.15, norm="l2", zeta=0.04, mean_norm=3.75,
                    method="batched", target=2, fit_rate=0.5, history=[{"pass": 1, "rate": 0.5, "norm": 0.15}],
                    converged=False, grad_evals=10, queries=20, seconds=1.5, config={"batch_size": 4})
    path = res.save(tmp_path / "uap")
    assert path.suffix == ".safetensors" and path.exists()
    back = UAPResult.load(path)
    assert torch.equal(back.delta, res.delta)
    assert back.summary() == res.summary()
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError, match="bad.safetensors"):
        UAPResult.load(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="not found"):
        UAPResult.load(tmp_path / "missing.safetensors")


def test_bad_arguments() -> None:
    m = CoordModel()
    with pytest.raises(ConfigError, match="norm"):
        UniversalPerturbation(m, norm="l1")
    with pytest.raises(ConfigError, match="method"):
        UniversalPerturbation(m, method="pgd")
    with pytest.raises(ConfigError, match="zeta"):
        UniversalPerturbation(m, zeta=-0.1)
    with pytest.raises(ConfigError, match="fooling_goal"):
        UniversalPerturbation(m, fooling_goal=1.5)
    with pytest.raises(ConfigError, match="target"):
        UniversalPerturbation(m, eps=1.0, target=5).fit(torch.rand(4, 1, 3))
    with pytest.raises(DataError, match="bounds"):
        UniversalPerturbation(m, eps=1.0, bounds=(0.0, 1.0)).fit(torch.rand(4, 1, 3) + 2)
    with pytest.raises(ConfigError, match="random_control needs"):
        UniversalPerturbation(m, zeta=0.04).random_control()
