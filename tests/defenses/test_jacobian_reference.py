"""Jacobian regularisation against hand computations on a linear model (its input Jacobian is its weight).

For ``z = W·flatten(x) + b`` every sample's Jacobian is ``J_i = W`` (``K × D``), so each variant of
Ma & Liang (arXiv 2005.09134 / 2110.09759) and the random-projection estimator of Hoffman, Roberts &
Yaida (arXiv 1908.02729, 2019) has a closed form in ``W``, the padding mask and the projection draws;
the regulariser's gradient w.r.t. ``W`` (double back-propagation, Drucker & LeCun 1992) is the autograd
of that closed form.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from medrobust.defenses import JacobianTrainer, jacobian_norm
from medrobust.errors import ConfigError
from medrobust.train import TrainConfig

from .conftest import Linear

N, K, D = 4, 3, 5
W0 = torch.tensor([[0.5, -1.0, 0.25, 0.0, 0.3],
                   [0.1, 0.2, -0.3, 0.4, -0.6],
                   [-0.7, 0.0, 0.6, 0.1, 0.9]], dtype=torch.float64)
# per-sample valid lengths 5, 3, 1, 4 (padding mask of variable-length records, (N, 1, D))
MASK = (torch.arange(D)[None, None, :] < torch.tensor([5, 3, 1, 4])[:, None, None]).to(torch.float64)


def _x(n: int = N, shape: tuple[int, ...] = (1, D), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _setup(n: int = N, shape: tuple[int, ...] = (1, D)) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    model = Linear(W0, torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    x = _x(n, shape).requires_grad_(True)
    return model, x, model(x)


def _hand_exact(w: torch.Tensor, variant: str, mask: torch.Tensor | None, n: int) -> torch.Tensor:
    """``R`` from ``J_i = W``: per-sample counts of valid input positions weight each column of ``W``."""
    d = w.shape[1]
    valid = torch.ones(n, d, dtype=w.dtype) if mask is None else mask.reshape(n, d).to(w.dtype)
    cols = valid.sum(0)  # how many samples see input position j
    if variant == "l1":
        return (w.abs() * cols).sum() / (n * d)
    total = (w**2 * cols).sum()
    if variant == "frobenius":
        return torch.sqrt(total + 1e-20) / (n * w.shape[0])
    return total / n


def _hand_projection(w: torch.Tensor, variant: str, mask: torch.Tensor | None, n: int, p: int,
                     gen: torch.Generator) -> torch.Tensor:
    """``(1/P) Σ_p Σ_i ‖mask_i ⊙ (v_{p,i}ᵀ W)‖²`` with ``v_p`` drawn as float32 ``(N, K)`` normals from ``gen``."""
    d = w.shape[1]
    valid = torch.ones(n, d, dtype=w.dtype) if mask is None else mask.reshape(n, d).to(w.dtype)
    total = w.new_zeros(())
    for _ in range(p):
        v = torch.randn((n, w.shape[0]), generator=gen, dtype=torch.float32).to(w.dtype)
        total = total + ((v @ w) ** 2 * valid).sum()
    total = total / p
    if variant == "frobenius":
        return torch.sqrt(total + 1e-20) / (n * w.shape[0])
    return total / n


def _err(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ---------------------------------------------------------------------------------------- exact method
@pytest.mark.parametrize("variant", ["l1", "frobenius", "squared"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_exact_norms_and_their_weight_gradients_match_the_hand_formula(variant: str, use_mask: bool) -> None:
    model, x, z = _setup()
    mask = MASK if use_mask else None
    r = jacobian_norm(x, z, variant=variant, mask=mask)
    w = W0.clone().requires_grad_(True)
    hand = _hand_exact(w, variant, mask, N)
    assert r.item() == pytest.approx(hand.item(), rel=1e-12)
    # create_graph=True by default: R is differentiable w.r.t. the weights (double back-propagation)
    assert r.requires_grad
    (gw,) = torch.autograd.grad(r, model.weight)
    (gh,) = torch.autograd.grad(hand, w)
    assert torch.allclose(gw, gh, rtol=1e-12, atol=1e-15)
    assert gw.abs().sum() > 0


def test_mask_changes_the_value_and_the_default_variant_is_l1() -> None:
    _, x, z = _setup()
    assert jacobian_norm(x, z).item() == pytest.approx(_hand_exact(W0, "l1", None, N).item(), rel=1e-12)
    full = jacobian_norm(x, z, variant="squared").item()
    part = jacobian_norm(x, z, variant="squared", mask=MASK).item()
    assert part < 0.8 * full


def test_exact_without_create_graph_is_detached_and_keeps_the_logits_graph() -> None:
    model, x, z = _setup()
    r = jacobian_norm(x, z, variant="squared", create_graph=False)
    assert not r.requires_grad
    assert r.item() == pytest.approx(_hand_exact(W0, "squared", None, N).item(), rel=1e-12)
    # every class's backward retained the graph: the logits can still be back-propagated
    z.sum().backward()
    assert torch.allclose(model.weight.grad, x.detach().flatten(1).sum(0).expand(K, D))


def test_batch_of_one_and_two_dimensional_inputs() -> None:
    _, x1, z1 = _setup(n=1)
    assert jacobian_norm(x1, z1, variant="l1").item() == pytest.approx(float(W0.abs().sum()) / D, rel=1e-12)
    model, x2, z2 = _setup(shape=(D,))  # (N, D) features, no channel axis
    m2 = MASK.reshape(N, D)
    for variant in ("l1", "frobenius", "squared"):
        r = jacobian_norm(x2, z2, variant=variant, mask=m2, create_graph=False)
        assert r.item() == pytest.approx(_hand_exact(W0, variant, m2, N).item(), rel=1e-12)
    gen = torch.Generator().manual_seed(3)
    r = jacobian_norm(x2, z2, variant="squared", method="projection", projections=2, mask=m2,
                      generator=gen, create_graph=False)
    ref = _hand_projection(W0, "squared", m2, N, 2, torch.Generator().manual_seed(3))
    assert r.item() == pytest.approx(ref.item(), rel=1e-12)


def test_frobenius_of_a_zero_jacobian_is_finite_with_a_zero_gradient() -> None:
    model, x, z = _setup()
    zero = torch.zeros_like(MASK)
    r = jacobian_norm(x, z, variant="frobenius", mask=zero)
    # sqrt(0 + 1e-20) / (N·K): the epsilon keeps the square root (and its gradient) finite
    assert r.item() == pytest.approx(1e-10 / (N * K), rel=1e-9)
    (gw,) = torch.autograd.grad(r, model.weight)
    assert torch.isfinite(gw).all() and float(gw.abs().max()) == 0.0


# ---------------------------------------------------------------------------------------- projections
@pytest.mark.parametrize("variant", ["frobenius", "squared"])
def test_projection_equals_the_hand_estimate_with_the_same_draws(variant: str) -> None:
    model, x, z = _setup()
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(99)  # the global generator must not be used
    r = jacobian_norm(x, z, variant=variant, method="projection", projections=3, generator=gen, mask=MASK)
    w = W0.clone().requires_grad_(True)
    ref_gen = torch.Generator().manual_seed(7)
    hand = _hand_projection(w, variant, MASK, N, 3, ref_gen)
    assert r.item() == pytest.approx(hand.item(), rel=1e-12)
    # the injected generator advanced by exactly the three float32 (N, K) draws
    assert torch.equal(gen.get_state(), ref_gen.get_state())
    # differentiable w.r.t. the weights by default, with the hand formula's gradient
    (gw,) = torch.autograd.grad(r, model.weight)
    (gh,) = torch.autograd.grad(hand, w)
    assert torch.allclose(gw, gh, rtol=1e-10, atol=1e-14)
    # the mask matters: without it the same draws give a different (larger) value
    no_mask = jacobian_norm(x, z, variant=variant, method="projection", projections=3,
                            generator=torch.Generator().manual_seed(7), create_graph=False)
    assert no_mask.item() == pytest.approx(
        _hand_projection(W0, variant, None, N, 3, torch.Generator().manual_seed(7)).item(), rel=1e-12)
    assert no_mask.item() > r.item()


def test_projection_defaults_one_draw_from_a_generator_seeded_zero() -> None:
    _, x, z = _setup()
    torch.manual_seed(12345)
    r = jacobian_norm(x, z, variant="squared", method="projection", create_graph=False)
    ref = _hand_projection(W0, "squared", None, N, 1, torch.Generator().manual_seed(0))
    assert r.item() == pytest.approx(ref.item(), rel=1e-12)
    ref2 = _hand_projection(W0, "squared", None, N, 2, torch.Generator().manual_seed(0))
    assert abs(ref2.item() - ref.item()) > 1e-6 * ref.item()  # P=2 would be told apart


def test_projection_draws_are_float32_whatever_the_default_dtype() -> None:
    _, x, z = _setup()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        r = jacobian_norm(x, z, variant="squared", method="projection", projections=2,
                          generator=torch.Generator().manual_seed(4), create_graph=False)
    finally:
        torch.set_default_dtype(old)
    ref = _hand_projection(W0, "squared", None, N, 2, torch.Generator().manual_seed(4))
    assert r.item() == pytest.approx(ref.item(), rel=1e-12)


def test_projection_draws_live_on_the_generator_device_then_follow_the_logits() -> None:
    # a default device other than the generator's must not move the draws (here: the meta device)
    _, x, z = _setup()
    with torch.device("meta"):
        r = jacobian_norm(x, z, variant="squared", method="projection", projections=2,
                          generator=torch.Generator().manual_seed(5), create_graph=False)
    ref = _hand_projection(W0, "squared", None, N, 2, torch.Generator().manual_seed(5))
    assert r.device.type == "cpu" and r.item() == pytest.approx(ref.item(), rel=1e-12)
    # logits on another device than the (CPU) generator: the draws are moved to the logits' device
    wm = W0.to("meta")
    xm = torch.empty(N, 1, D, dtype=torch.float64, device="meta").requires_grad_(True)
    zm = xm.flatten(1) @ wm.T
    rm = jacobian_norm(xm, zm, variant="frobenius", method="projection", generator=torch.Generator().manual_seed(5))
    assert rm.device.type == "meta" and rm.dtype == torch.float64 and rm.shape == ()


# ---------------------------------------------------------------------------------------- errors
def test_jacobian_norm_error_messages_name_the_argument() -> None:
    _, x, z = _setup()
    with pytest.raises(ConfigError, match=_err("variant must be one of ('l1', 'frobenius', 'squared'), got 'L2'.")):
        jacobian_norm(x, z, variant="L2")
    with pytest.raises(ConfigError, match=_err("method must be one of ('exact', 'projection'), got 'hutch'.")):
        jacobian_norm(x, z, method="hutch")
    with pytest.raises(ConfigError, match=_err(
            "jacobian_norm needs x with requires_grad=True and logits computed from it.")):
        jacobian_norm(x.detach(), z)
    with pytest.raises(ConfigError, match=_err(
            "random projections estimate squared Frobenius norms only; use method='exact' for variant='l1', "
            "or variant='frobenius' / 'squared'.")):
        jacobian_norm(x, z, variant="l1", method="projection")
    with pytest.raises(ConfigError, match=_err("projections must be an integer >= 1, got 0.")):
        jacobian_norm(x, z, variant="squared", method="projection", projections=0)


# ---------------------------------------------------------------------------------------- trainer
def _model() -> Linear:
    return Linear(W0, torch.zeros(K, dtype=torch.float64))


def test_trainer_passes_config_out_dir_and_generator_to_the_base(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=70, seed=11, lr=3e-4)
    gen = torch.Generator().manual_seed(2)
    t = JacobianTrainer(_model(), cfg, out_dir=tmp_path / "run", generator=gen)
    assert (t.config.epochs, t.config.seed, t.config.lr) == (70, 11, 3e-4)
    assert t.config.class_balance == "oversample"  # Ma & Liang's tiled sampler
    assert t.out_dir == tmp_path / "run"
    assert t.generator is gen
    # without a generator: seeded from the passed config's seed
    t2 = JacobianTrainer(_model(), cfg)
    assert t2.generator.initial_seed() == 11 and t2.out_dir is None


def test_trainer_defaults_recipes_and_hyperparameters() -> None:
    t = JacobianTrainer(_model())
    assert (t.recipe, t.variant, t.weight, t.warmup_epochs, t.method, t.projections) == (
        "mitdb", "l1", 0.7, 0, "exact", 1)
    assert t.last_terms == {}
    assert t.hyperparameters() == {"recipe": "mitdb", "variant": "l1", "weight": 0.7, "warmup_epochs": 0,
                                   "method": "exact", "projections": None}
    p = JacobianTrainer(_model(), recipe="icmla2020", method="projection")
    assert p.projections == 1
    assert p.hyperparameters() == {"recipe": "icmla2020", "variant": "frobenius", "weight": 44.0,
                                   "warmup_epochs": 0, "method": "projection", "projections": 1}
    # explicit arguments override the recipe
    e = JacobianTrainer(_model(), recipe="cpsc2018", variant="squared", weight=0.0, warmup_epochs=3,
                        method="projection", projections=4)
    assert e.hyperparameters() == {"recipe": "cpsc2018", "variant": "squared", "weight": 0.0,
                                   "warmup_epochs": 3, "method": "projection", "projections": 4}
    assert (e.recipe, e.projections) == ("cpsc2018", 4)


def test_trainer_error_messages_name_the_argument() -> None:
    m = _model()
    cases = [
        (dict(recipe="mit"), "recipe must be one of ('mitdb', 'cpsc2018', 'icmla2020', 'cardiodefense'), got 'mit'."),
        (dict(variant="l2"), "variant must be one of ('l1', 'frobenius', 'squared'), got 'l2'."),
        (dict(weight=-0.5), "weight must be >= 0.0, got -0.5."),
        (dict(warmup_epochs=-1), "warmup_epochs must be an integer >= 0, got -1."),
        (dict(method="hutch"), "method must be one of ('exact', 'projection'), got 'hutch'."),
        (dict(variant="squared", method="projection", projections=0), "projections must be an integer >= 1, got 0."),
        (dict(method="projection"), "method='projection' estimates squared norms; use variant='frobenius' or "
                                    "'squared' (or method='exact' for the L1 variant)."),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ConfigError, match=_err(msg)):
            JacobianTrainer(m, **kwargs)


class _MaskedLinear(Linear):
    """A linear model with masked input (``forward(x, mask)``), like the masked-pooling ECG models."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if mask is None else x * mask)


def test_trainer_loss_with_mask_class_weights_and_projections() -> None:
    gen = torch.Generator().manual_seed(5)
    t = JacobianTrainer(_MaskedLinear(W0, torch.zeros(K, dtype=torch.float64)), recipe="cardiodefense",
                        weight=2.5, warmup_epochs=0, method="projection", projections=3, generator=gen)
    t.loss_weights = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    x, y = _x(seed=8), torch.tensor([0, 1, 2, 1])
    t.on_epoch_start(0)
    loss, z = t.compute_loss(x, y, MASK)
    z_ref = (x * MASK).flatten(1) @ W0.T
    assert torch.allclose(z, z_ref, rtol=1e-12)
    ce = torch.nn.functional.cross_entropy(z_ref, y, weight=t.loss_weights).item()
    r = _hand_projection(W0, "squared", MASK, N, 3, torch.Generator().manual_seed(5)).item()
    assert t.last_terms["ce"] == pytest.approx(ce, rel=1e-12)
    assert t.last_terms["regularizer"] == pytest.approx(r, rel=1e-12)
    assert loss.item() == pytest.approx(ce + 2.5 * r, rel=1e-12)


def test_trainer_masks_the_jacobian_of_a_model_without_masked_pooling() -> None:
    # the model sees the padded samples, but padded positions must not enter the regulariser
    t = JacobianTrainer(_model(), recipe="icmla2020")
    x, y = _x(seed=10), torch.tensor([1, 1, 0, 2])
    loss, z = t.compute_loss(x, y, MASK)
    r = _hand_exact(W0, "frobenius", MASK, N).item()
    assert t.last_terms["regularizer"] == pytest.approx(r, rel=1e-12)
    assert r < 0.9 * _hand_exact(W0, "frobenius", None, N).item()
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item() + 44.0 * r, rel=1e-12)


def test_trainer_regulariser_is_off_for_zero_weight_and_on_for_small_weights() -> None:
    x, y = _x(seed=9), torch.tensor([2, 0, 1, 1])
    off = JacobianTrainer(_model(), weight=0.0)
    loss, z = off.compute_loss(x, y)
    assert set(off.last_terms) == {"ce"}
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), rel=1e-12)
    on = JacobianTrainer(_model(), weight=0.5)
    loss, z = on.compute_loss(x, y)
    r = float(W0.abs().sum()) / D  # every sample's L1 Jacobian norm, averaged over N·D
    assert on.last_terms["regularizer"] == pytest.approx(r, rel=1e-12)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item() + 0.5 * r, rel=1e-12)
    assert math.isfinite(loss.item())
