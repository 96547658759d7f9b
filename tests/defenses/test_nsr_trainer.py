"""NSR regularisation (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134; Comput. Biol. Med. 2022, arXiv
2110.09759), Method 2 through the trainer: every term of L_mse + margin_weight·L_margin + β·L_NSR by hand on linear
models, with the padding mask, the ReLU signal, a margin other than 1, the gradient of the selected samples only,
the recipes' settings and every bad setting named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.defenses import NSRTrainer, alignment_loss, nsr_loss, within_margin_loss
from medrobust.defenses.nsr import class_logit_gradient
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

W = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.1, 0.2, -0.3, 0.4], [-0.7, 0.0, 0.6, 0.1]], dtype=torch.float64)


class MaskedLinear(nn.Module):
    """``z = W·flatten(x) + b`` (``centre``: of ``x`` minus the batch mean, which couples the samples); takes a
    padding mask (ignored by the logits, so the input gradient is non-zero on the padding) and records its calls."""

    def __init__(self, b: torch.Tensor | None = None, centre: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(W.clone())
        self.b = None if b is None else nn.Parameter(b.clone())
        self.centre = centre
        self.calls: list[tuple[bool, torch.Tensor | None]] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((x.requires_grad, mask))
        xf = x.flatten(1)
        if self.centre:
            xf = xf - xf.mean(0, keepdim=True)
        z = xf @ self.w.T
        return z if self.b is None else z + self.b


def _x() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[[1.0, -0.5, 0.3, 0.2]], [[0.2, 0.4, -0.1, 1.0]], [[-0.3, 0.1, 0.9, 0.0]],
                      [[0.6, 0.3, 0.0, -0.2]]], dtype=torch.float64)
    return x, torch.tensor([0, 1, 1, 0])  # samples 0 and 1 correct, 2 and 3 misclassified


def _nsr_by_hand(z: torch.Tensor, y: torch.Tensor, g: torch.Tensor, *, e: float, relu: bool = False) -> float:
    correct = [i for i in range(len(y)) if int(z[i].argmax()) == int(y[i])]
    total = 0.0
    for i in correct:
        s = float(z[i, y[i]])
        s = max(s, 0.0) if relu else s
        total += math.log1p(float(g[i].abs().sum()) / (abs(s) + e))
    return total / len(correct)


# ------------------------------------------------------------------------------------------ the pieces
def test_margin_hinge_default_margin_and_its_boundaries() -> None:
    """t = m − z_y + z_j for the correct samples, kept when 0 < t; the default m is 1; t = 0 is not kept."""
    assert float(within_margin_loss(torch.tensor([[2.0, 1.7, -5.0]]), torch.tensor([0]))) == pytest.approx(0.7)
    z = torch.tensor([[1.0, 0.0, 0.5]])  # t = 0 (dropped) and 0.5
    assert float(within_margin_loss(z, torch.tensor([0]), margin=1.0)) == pytest.approx(0.5)
    z = torch.tensor([[2.0, 1.5, -3.0]])  # margin 2: t = 1.5 (kept) and -3
    assert float(within_margin_loss(z, torch.tensor([0]), margin=2.0)) == pytest.approx(1.5)


def test_class_logit_gradient_is_the_gradient_of_the_selected_signals() -> None:
    """∇ₓ Σ_{i selected} s_i: with the batch-centred linear model the rows are W_{y_i} − (1/N) Σ_{j selected} W_{y_j};
    padded samples get zero; x must require gradients."""
    x, y = _x()
    model = MaskedLinear(centre=True)
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    sel = torch.tensor([True, False, True, False])
    g, s = class_logit_gradient(xg, z, y, sel)
    mean_sel = (W[0] + W[1]) / 4  # rows 0 (y=0) and 2 (y=1) selected, N = 4
    want = torch.stack([(W[int(y[i])] if sel[i] else torch.zeros(4, dtype=torch.float64)) - mean_sel
                        for i in range(4)])
    torch.testing.assert_close(g.flatten(1), want)
    torch.testing.assert_close(s, z.gather(1, y.view(-1, 1)).squeeze(1))
    g_all, _ = class_logit_gradient(xg, z, y)  # no selection: every sample
    torch.testing.assert_close(g_all.flatten(1), W[y] - W[y].sum(0) / 4)
    mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    g_m, _ = class_logit_gradient(xg, z, y, sel, mask=mask)
    torch.testing.assert_close(g_m.flatten(1), want * mask.flatten(1))
    with pytest.raises(ConfigError, match=r"^the input batch must have requires_grad=True and logits must be computed "
                                          r"from it\.$"):
        class_logit_gradient(x, model(x), y)


def test_nsr_and_alignment_use_only_the_correct_samples_gradients_and_the_mask() -> None:
    x, y = _x()
    model = MaskedLinear(centre=True)
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    correct = z.detach().argmax(1) == y
    assert correct.tolist() == [True, True, False, False]
    c = [i for i in range(4) if correct[i]]
    mask = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]], dtype=torch.float64)
    g = torch.stack([W[int(y[i])] - sum(W[int(y[j])] for j in c) / 4 for i in range(4)]) * mask.flatten(1)
    assert nsr_loss(xg, z, y, e=0.01, mask=mask).item() == pytest.approx(
        _nsr_by_hand(z.detach(), y, g, e=0.01), rel=1e-10)
    xm = (x * mask).flatten(1)
    align = sum(float(((g[i] - xm[i] / (xm[i] @ xm[i] + 1e-8)) ** 2).sum()) for i in c) / len(c)
    assert alignment_loss(xg, z, y, mask=mask).item() == pytest.approx(align, rel=1e-10)


def test_regularisers_with_one_or_no_correct_sample() -> None:
    x, y = _x()
    model = MaskedLinear()
    xg = x.clone().requires_grad_(True)
    z = model(xg)
    pred = z.detach().argmax(1)
    y_none = (pred + 1) % 3
    for loss in (nsr_loss(xg, z, y_none), alignment_loss(xg, z, y_none)):
        assert loss.item() == 0.0 and loss.requires_grad
    y_one = y_none.clone()
    y_one[1] = pred[1]
    xi = x[1, 0]
    want = float(((W[int(pred[1])] - xi / (xi @ xi + 1e-8)) ** 2).sum())
    assert alignment_loss(xg, z, y_one).item() == pytest.approx(want, rel=1e-10)
    with pytest.raises(ConfigError, match=r"^signal must be one of"):
        nsr_loss(xg, z, y, signal="square")


# ------------------------------------------------------------------------------------------ the trainer
def test_method2_loss_term_by_term_with_mask_relu_margin_and_e() -> None:
    x, y = _x()
    b = torch.tensor([-1.2, -0.4, -2.0], dtype=torch.float64)  # samples 0 and 2: true logit negative but the largest
    model = MaskedLinear(b)
    mask = torch.ones(4, 1, 4, dtype=torch.float64)
    mask[:, :, 3] = 0.0
    t = NSRTrainer(model, TrainConfig(epochs=1), beta=0.7, e=0.5, margin=2.0, margin_weight=0.3, signal="relu")
    loss, logits = t.compute_loss(x, y, mask)
    z = logits.detach()
    assert (z.argmax(1) == y).tolist() == [True, True, True, False]
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    assert (zy > 0).tolist() == [False, True, False, False]
    mse = float(((z - torch.nn.functional.one_hot(y, 3)) ** 2).sum(1).mean())
    hinge = float(within_margin_loss(z, y, margin=2.0))
    g = W[y] * mask.flatten(1) * (zy > 0).double().view(-1, 1)  # ReLU(z_y): no gradient where z_y < 0
    reg = _nsr_by_hand(z, y, g, e=0.5, relu=True)
    assert reg > 0
    assert t.last_terms == pytest.approx({"mse": mse, "margin": hinge, "regularizer": reg}, rel=1e-10)
    assert loss.item() == pytest.approx(mse + 0.3 * hinge + 0.7 * reg, rel=1e-10)
    assert all(m is not None and torch.equal(m, mask) for _, m in model.calls)
    assert hinge != pytest.approx(float(within_margin_loss(z, y, margin=1.0)))


def test_input_gradients_only_when_a_regulariser_is_trained() -> None:
    """No double back-propagation graph during the warm-up or without a regulariser (β = 0, Ma & Liang's mse and
    mseMargin baselines); a margin weight of 0 drops the hinge term."""
    x, y = _x()
    model = MaskedLinear()
    t = NSRTrainer(model, TrainConfig(epochs=3), warmup_epochs=1, beta=0.5)
    assert t.last_terms == {}
    t.on_epoch_start(0)
    t.compute_loss(x, y)
    t.on_epoch_start(1)
    t.compute_loss(x, y)
    assert [c[0] for c in model.calls] == [False, True]
    model = MaskedLinear()
    t = NSRTrainer(model, beta=0.0, margin_weight=0.0)
    loss, z = t.compute_loss(x, y)
    assert [c[0] for c in model.calls] == [False] and set(t.last_terms) == {"mse"}
    assert loss.item() == pytest.approx(t.last_terms["mse"])


def test_method2_settings_and_recipes(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    t = NSRTrainer(MaskedLinear(), TrainConfig(epochs=4), out_dir=tmp_path, generator=gen)
    assert t.config.epochs == 4 and t.out_dir == tmp_path and t.generator is gen
    assert t.recipe == "mitdb" and t.hyperparameters() == {
        "method": 2, "recipe": "mitdb", "beta": 0.3, "e": 0.01, "margin": 1.0, "margin_weight": 1.0,
        "warmup_epochs": 0, "signal": "abs"}
    c = NSRTrainer(MaskedLinear(), TrainConfig(epochs=20), recipe="cpsc2018", margin_weight=0.25, warmup_epochs=2,
                   signal="abs", beta=0.0)
    assert (c.margin_weight, c.warmup_epochs, c.signal, c.beta) == (0.25, 2, "abs", 0.0)
    assert NSRTrainer(MaskedLinear(), signal="relu").signal == "relu"


@pytest.mark.parametrize("kw, msg", [
    ({"recipe": "cpsc"}, r"^recipe must be one of"),
    ({"beta": -0.1}, r"^beta must be >= 0\.0, got -0\.1\.$"),
    ({"e": 0.0}, r"^e must be > 0\.0, got 0\.0\.$"),
    ({"e": -1.0}, r"^e must be > 0\.0, got -1\.0\.$"),
    ({"signal": "square"}, r"^signal must be one of \('abs', 'relu'\), got 'square'\.$"),
    ({"margin": 0.0}, r"^margin must be > 0\.0, got 0\.0\.$"),
    ({"margin": -1.0}, r"^margin must be > 0\.0, got -1\.0\.$"),
    ({"margin_weight": -1.0}, r"^margin_weight must be >= 0\.0, got -1\.0\.$"),
    ({"warmup_epochs": -1}, r"^warmup_epochs must be an integer >= 0, got -1\.$"),
])
def test_bad_settings_name_the_argument(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        NSRTrainer(MaskedLinear(), **kw)
