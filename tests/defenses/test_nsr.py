"""NSR regularisation: every term equals a hand computation; Euler's identity for bias-free ReLU nets."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.defenses import NSRAlignTrainer, NSRTrainer, alignment_loss, mse_onehot_loss, nsr_loss, within_margin_loss
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig

from .conftest import Linear, TinyNet


def test_mse_to_one_hot_by_hand() -> None:
    z = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.4, 1.1]])
    y = torch.tensor([0, 2])
    by_hand = ((0.8 - 1) ** 2 + 0.1**2 + 0.3**2 + 0.2**2 + 0.4**2 + (1.1 - 1) ** 2) / 2
    assert float(mse_onehot_loss(z, y)) == pytest.approx(by_hand, rel=1e-6)


def test_within_margin_hinge_by_hand() -> None:
    z = torch.tensor([
        [2.0, 1.5, 0.2],   # correct (y=0): t = 0.5 (kept), -0.8 (dropped)
        [0.1, 0.9, 0.3],   # correct (y=1): t = 0.2, 0.4 (both kept)
        [1.0, 0.5, 0.6],   # correct (y=0): t = 0.5, 0.6
        [0.2, 0.1, 0.5],   # misclassified (y=0): ignored although its t would be kept
        [3.0, 0.5, 1.0],   # correct (y=0), margin satisfied: t = -1.5, -1.0 (dropped)
    ], requires_grad=True)
    y = torch.tensor([0, 1, 0, 0, 0])
    loss = within_margin_loss(z, y, margin=1.0)
    assert loss.item() == pytest.approx((0.5 + 0.2 + 0.4 + 0.5 + 0.6) / 5, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(z.grad[3]) == 0 and torch.count_nonzero(z.grad[4]) == 0
    # a single kept term is not divided; none gives 0
    single = within_margin_loss(torch.tensor([[2.0, 1.7, -5.0]]), torch.tensor([0]), margin=1.0)
    assert float(single) == pytest.approx(0.7, rel=1e-6)
    assert float(within_margin_loss(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))) == 0.0
    assert float(within_margin_loss(torch.tensor([[0.0, 5.0]]), torch.tensor([0]))) == 0.0


def _linear_case() -> tuple[Linear, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.1, 0.2, -0.3, 0.4], [-0.7, 0.0, 0.6, 0.1]], dtype=torch.float64)
    b = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    x = torch.tensor([[[1.0, -0.5, 0.3, 0.2]], [[0.2, 0.4, -0.1, 1.0]], [[-0.3, 0.1, 0.9, 0.0]]],
                     dtype=torch.float64)
    y = torch.tensor([0, 1, 1])  # sample 2 has z = [-0.585, -0.28, 0.8] -> predicted 2: misclassified
    return Linear(w, b), w, b, x, y


def test_nsr_term_by_hand_on_a_linear_model() -> None:
    model, w, b, x, y = _linear_case()
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    assert (z.argmax(1) == y).tolist() == [True, True, False]
    got = nsr_loss(xg, z, y, e=0.01)
    terms = []
    for i in (0, 1):  # correct samples only, divided by N_c = 2
        zy = float(w[y[i]] @ x[i, 0] + b[y[i]])
        terms.append(math.log(1 + float(w[y[i]].abs().sum()) / (abs(zy) + 0.01)))
    assert got.item() == pytest.approx(sum(terms) / 2, rel=1e-12)


def test_nsr_relu_signal_and_zero_gradient() -> None:
    # true-class logit negative but still the largest: ReLU signal gives log(1 + 0/(0 + e)) = 0
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[[-0.2, -0.5]]], dtype=torch.float64, requires_grad=True)
    z = Linear(w)(x)
    y = torch.tensor([0])
    assert nsr_loss(x, z, y, signal="relu").item() == 0.0
    assert nsr_loss(x, z, y, signal="abs").item() == pytest.approx(math.log(1 + 1 / (0.2 + 0.01)))
    # ∇z_y = 0 -> NSR = 0
    w0 = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    x0 = torch.ones(1, 1, 2, dtype=torch.float64, requires_grad=True)
    m0 = Linear(w0, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert nsr_loss(x0, m0(x0), torch.tensor([0])).item() == 0.0


def test_nsr_matches_per_sample_fresh_forward_on_a_nonlinear_net() -> None:
    """The folded computation equals the reference's: a fresh forward per correct sample."""
    torch.manual_seed(1)
    net = TinyNet(5, 3).double()
    x = torch.randn(12, 1, 5, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:4] = (y[:4] + 1) % 3  # four misclassified samples
    xg = x.clone().requires_grad_(True)
    got = nsr_loss(xg, net(xg), y, e=0.01)
    ref = []
    for i in range(4, 12):
        xi = x[i: i + 1].clone().requires_grad_(True)
        zy = net(xi)[0, y[i]]
        (g,) = torch.autograd.grad(zy, xi)
        ref.append(torch.log1p(g.abs().sum() / (zy.abs() + 0.01)))
    assert got.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-10)
    # double back-propagation: the regulariser has parameter gradients
    got.backward()
    assert net.a.weight.grad is not None and float(net.a.weight.grad.abs().sum()) > 0


def test_alignment_term_by_hand_on_a_bias_free_linear_model() -> None:
    _, w, _, x, y = _linear_case()
    model = Linear(w)
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    correct = (z.argmax(1) == y)
    got = alignment_loss(xg, z, y)
    terms = []
    for i in torch.nonzero(correct).flatten().tolist():
        xi = x[i, 0]
        terms.append(float(((w[y[i]] - xi / (xi @ xi + 1e-8)) ** 2).sum()))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)


@pytest.mark.parametrize("arch", ["mlp1", "cnn1"])
def test_euler_identity_for_bias_free_relu_nets(arch: str, beats) -> None:
    """Bias-free ReLU (and max-pool) networks are positively homogeneous: ∇ₓz_y · x = z_y."""
    torch.manual_seed(0)
    model = build_model(arch, bias=False).double()
    x = beats[0].x[:16].double().requires_grad_(True)
    z = model(x)
    y = z.detach().argmax(1)
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    (g,) = torch.autograd.grad(zy.sum(), x)
    torch.testing.assert_close((g * x).flatten(1).sum(1), zy.detach(), rtol=1e-9, atol=1e-12)
    # with biases the identity fails (so the test can fail)
    biased = build_model(arch, bias=True).double()
    with torch.no_grad():
        for name, p in biased.named_parameters():
            if name.endswith("bias"):
                p.fill_(0.1)
    xb = x.detach().clone().requires_grad_(True)
    zb = biased(xb)[:, 0]
    (gb,) = torch.autograd.grad(zb.sum(), xb)
    assert not torch.allclose((gb * xb).flatten(1).sum(1), zb.detach(), rtol=1e-6)


def test_documented_defaults_and_recipes() -> None:
    assert NSRTrainer(build_model("cnn1")).beta == 0.3
    assert NSRTrainer(build_model("mlp1")).beta == 0.4
    t = NSRTrainer(build_model("cnn1"))
    assert (t.e, t.margin, t.margin_weight, t.warmup_epochs, t.signal) == (0.01, 1.0, 1.0, 0, "abs")
    c = NSRTrainer(build_model("cnn1"), TrainConfig(epochs=70), recipe="cpsc2018")
    assert (c.beta, c.warmup_epochs, c.signal) == (1.0, 10, "relu")
    assert NSRTrainer(build_model("cnn1"), beta=0.5).hyperparameters()["beta"] == 0.5
    assert NSRAlignTrainer(build_model("mlp1", bias=False)).weight == 0.2
    with pytest.raises(ConfigError, match="recipe"):
        NSRTrainer(build_model("cnn1"), recipe="cpsc")


def test_warmup_trains_mse_only_then_the_full_loss() -> None:
    torch.manual_seed(0)
    model = TinyNet(6, 3)
    t = NSRTrainer(model, TrainConfig(epochs=20), recipe="cpsc2018")
    x, y = torch.randn(10, 1, 6), torch.randint(0, 3, (10,))
    t.on_epoch_start(9)
    loss, z = t.compute_loss(x, y)
    assert loss.item() == pytest.approx(mse_onehot_loss(z, y).item())
    assert set(t.last_terms) == {"mse"}
    t.on_epoch_start(10)
    y = model(x).argmax(1).detach()  # all correct, so both extra terms are active
    loss, z = t.compute_loss(x, y)
    assert set(t.last_terms) == {"mse", "margin", "regularizer"}
    expected = t.last_terms["mse"] + t.last_terms["margin"] + 1.0 * t.last_terms["regularizer"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_method1_refuses_models_with_biases() -> None:
    with pytest.raises(ConfigError, match="bias-free"):
        NSRAlignTrainer(build_model("mlp1"))
