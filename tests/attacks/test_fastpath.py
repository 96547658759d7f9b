"""The GPU fast path's logic, on CPU: static buffers, padding, chunking, the capture check, the attack hook.

The CUDA graph itself needs a GPU; here the capture is the identity (or a deliberately broken stand-in), which
exercises every line that decides, pads, slices, chains a transform's gradient and falls back.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

import medrobust.attacks.base as base
from medrobust.attacks import APGD, FGSM, PGD, SAP, SPSA
from medrobust.attacks.fastpath import StaticLossGrad, eager_capture, resolve_fast_path
from medrobust.attacks.losses import get_loss
from medrobust.errors import ConfigError
from medrobust.evaluation.ensemble import EnsembleContext
from medrobust.evaluation.spec import AttackSpec


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 24, 3)).double().eval()


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, 1, 24, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


def _direct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_(True)
    z = model(leaf)
    loss = get_loss("ce")(z, y, None)
    return z.detach(), loss.detach(), torch.autograd.grad(loss.sum(), leaf)[0]


def test_resolve_fast_path() -> None:
    assert resolve_fast_path("auto", torch.device("cpu")) == "off"
    assert resolve_fast_path("auto", torch.device("cuda")) == "cuda_graph"
    assert resolve_fast_path("off", torch.device("cuda")) == "off"
    assert resolve_fast_path("cuda_graph", torch.device("cuda", 0)) == "cuda_graph"
    with pytest.raises(ConfigError, match=r"fast_path='cuda_graph' needs CUDA inputs, got inputs on cpu; use "
                                          r"fast_path='auto' \(the eager path off CUDA\) or 'off'\.$"):
        resolve_fast_path("cuda_graph", torch.device("cpu"))
    with pytest.raises(ConfigError, match="fast_path must be one of"):
        resolve_fast_path("graphs", torch.device("cpu"))


@pytest.mark.parametrize("n", [1, 5, 8, 19])
def test_padded_and_chunked_rows_equal_the_direct_step(n: int) -> None:
    model = _model()
    eng = StaticLossGrad(model, get_loss("ce"), rows=8, capture=eager_capture)
    x, y = _batch(n)
    logits, loss, grad = eng(x, y, None, need_grad=True)
    z, ell, g = _direct(model, x, y)
    assert logits.shape == (n, 3) and loss.shape == (n,) and grad.shape == x.shape
    torch.testing.assert_close(logits, z)
    torch.testing.assert_close(loss, ell)
    torch.testing.assert_close(grad, g)
    assert eng.replays == -(-n // 8) and not eng.disabled
    fwd = eng(x, y, None, need_grad=False)
    assert fwd is not None and fwd[2] is None
    torch.testing.assert_close(fwd[0], z)


def test_padding_repeats_the_first_row_and_outputs_are_copies() -> None:
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return torch.cat([x.sum((1, 2))[:, None], -x.sum((1, 2))[:, None]], 1)

    eng = StaticLossGrad(Spy(), get_loss("ce"), rows=4, capture=eager_capture, check=False)
    x = torch.arange(6, dtype=torch.float64).reshape(2, 1, 3)
    out = eng(x, torch.tensor([0, 1]), None, need_grad=False)
    assert out is not None
    assert seen[-1].shape == (4, 1, 3)
    torch.testing.assert_close(seen[-1], torch.stack([x[0], x[1], x[0], x[0]]))
    first = out[0].clone()
    eng(x + 1, torch.tensor([0, 1]), None, need_grad=False)     # a second replay reuses the static outputs
    torch.testing.assert_close(out[0], first)


def test_one_capture_per_shape_and_mode() -> None:
    calls: list[int] = []

    def counting(step: Callable[[], Any]) -> Callable[[], Any]:
        calls.append(1)
        return step

    eng = StaticLossGrad(_model(), get_loss("ce"), rows=8, capture=counting)
    x, y = _batch(8)
    for _ in range(3):
        eng(x, y, None, need_grad=True)
        eng(x[:3], y[:3], None, need_grad=True)
    assert len(calls) == 1
    eng(x, y, None, need_grad=False)
    eng(x, y, y, need_grad=True)                     # a target is another static buffer
    assert len(calls) == 3


def test_a_graph_that_disagrees_is_dropped_with_a_warning() -> None:
    def broken(step: Callable[[], Any]) -> Callable[[], Any]:
        def replay() -> Any:
            z, loss, g = step()
            return z, loss, torch.zeros_like(g)
        return replay

    eng = StaticLossGrad(_model(), get_loss("ce"), rows=8, capture=broken)
    x, y = _batch(8)
    with pytest.warns(RuntimeWarning, match=r"disagrees with the eager one \(gradient"):
        assert eng(x, y, None, need_grad=True) is None
    assert eng.disabled and eng(x, y, None, need_grad=True) is None


def test_a_model_mixing_samples_is_caught_by_the_check() -> None:
    class BatchCentred(nn.Module):   # depends on the other rows of the batch: padding would change it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum((1, 2))
            return torch.stack([s - s.mean(), s.mean() - s], 1)

    eng = StaticLossGrad(BatchCentred(), get_loss("ce"), rows=8, capture=eager_capture)
    x, y = _batch(3)[0], torch.tensor([0, 1, 0])
    with pytest.warns(RuntimeWarning, match=r"disagrees with the eager one \(logits, .*\(the model may mix samples of a "
                                            r"batch, e\.g\. batch statistics in eval mode\)\.$"):
        assert eng(x, y, None, need_grad=False) is None


@pytest.fixture()
def forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path as on a GPU, with the identity capture."""
    monkeypatch.setattr(base, "resolve_fast_path", lambda option, device: "cuda_graph" if option != "off" else "off")
    monkeypatch.setattr(base.Attack, "capture", staticmethod(eager_capture))


ATTACKS = [(PGD, {"steps": 6, "rel_step_size": 0.3, "random_start": True}), (SAP, {"steps": 4, "smooth_steps": 4}),
           (APGD, {"steps": 6}), (FGSM, {})]


@pytest.mark.parametrize("cls,kw", ATTACKS, ids=[c.__name__ for c, _ in ATTACKS])
def test_attacks_through_the_captured_step_equal_the_eager_path(forced: None, cls: Any, kw: dict[str, Any]) -> None:
    model = _model()
    x, _ = _batch(13)
    y = model(x).argmax(1)
    off = cls(model, eps=0.4, bounds=(0, 1), generator=torch.Generator().manual_seed(3), **kw)
    off.fast_path = "off"
    on = cls(model, eps=0.4, bounds=(0, 1), generator=torch.Generator().manual_seed(3), **kw)
    a, b = off(x, y), on(x, y)
    (eng,) = on._engines.values()
    assert eng.replays > 0 and not eng.disabled and "_engines" not in off.__dict__
    assert bool(a.success.any())                        # the attack did something worth comparing
    torch.testing.assert_close(b.x_adv, a.x_adv)
    assert torch.equal(a.success, b.success) and a.grad_evals == b.grad_evals and a.queries == b.queries


def test_query_attacks_and_masked_models_keep_the_eager_path(forced: None) -> None:
    model = _model()
    x, _ = _batch(4)
    y = model(x).argmax(1)
    spsa = SPSA(model, eps=0.1, nb_samples=4, steps=2, bounds=(0, 1))
    spsa(x, y)
    assert spsa.__dict__.get("_engines", {}) == {}

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _model()

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            return self.inner(x * (1 if mask is None else mask))

    masked = Masked().eval()
    pgd = PGD(masked, eps=0.1, steps=2, bounds=(0, 1))
    pgd(x, masked(x).argmax(1), mask=torch.ones_like(x))
    assert pgd.__dict__.get("_engines", {}) == {}


def test_the_evaluation_shares_one_captured_step_per_model_and_loss(forced: None) -> None:
    model, other = _model(), _model()
    ctx = EnsembleContext(model=model, members=(), norm="linf", eps_mode="abs", bounds=(0.0, 1.0), fs=None,
                          device=torch.device("cpu"))
    spec = AttackSpec(name="pgd", kwargs={"steps": 2, "random_start": False})
    x, _ = _batch(6)
    y = model(x).argmax(1)
    for eps in (0.05, 0.1, 0.2):
        ctx.attack(spec, eps, seed=0)(x, y)
    assert len(ctx.engines) == 1
    ctx2 = EnsembleContext(model=other, members=(), norm="linf", eps_mode="abs", bounds=(0.0, 1.0), fs=None,
                           device=torch.device("cpu"), engines=ctx.engines)
    ctx2.attack(spec, 0.1, seed=0)(x, y)
    assert len(ctx.engines) == 2                       # another model never reuses the first one's graph
    ctx.fast_path = "off"
    atk = ctx.attack(spec, 0.1, seed=0)
    assert atk.fast_path == "off"


def test_rows_are_checked_and_one_row_works() -> None:
    with pytest.raises(ConfigError, match=r"^rows must be"):
        StaticLossGrad(_model(), get_loss("ce"), rows=0, capture=eager_capture)
    eng = StaticLossGrad(_model(), get_loss("ce"), rows=1, capture=eager_capture)
    assert eng.disabled is False and eng.replays == 0
    x, y = _batch(3)
    out = eng(x, y, None, need_grad=True)
    assert out is not None and eng.replays == 3
    torch.testing.assert_close(out[2], _direct(_model(), x, y)[2])
    assert eng(x[:0], y[:0], None, need_grad=True) is None and eng.replays == 3   # an empty batch: the eager path


def test_a_target_reaches_the_captured_step_and_its_check() -> None:
    model = _model()
    eng = StaticLossGrad(model, get_loss("ce"), rows=8, capture=eager_capture)
    x, y = _batch(5)
    target = (y + 1) % 3
    out = eng(x, y, target, need_grad=True)
    assert out is not None and not eng.disabled
    leaf = x.clone().requires_grad_(True)
    loss = get_loss("ce")(model(leaf), y, target)
    torch.testing.assert_close(out[1], loss.detach())
    torch.testing.assert_close(out[2], torch.autograd.grad(loss.sum(), leaf)[0])
    assert not torch.allclose(out[1], get_loss("ce")(model(x), y, None).detach())   # the target changes the loss


def test_other_feature_and_label_shapes_get_their_own_buffers() -> None:
    class Sum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum((1, 2))
            return torch.stack([s, -s, 0 * s], 1)

    eng = StaticLossGrad(Sum(), get_loss("ce"), rows=4, capture=eager_capture)
    x, y = _batch(3)
    for xi in (x, torch.cat([x, x], 1)):                       # 1 lead, then 2 leads of the same length
        out = eng(xi, y, None, need_grad=True)
        assert out is not None and out[2].shape == xi.shape
    soft = torch.nn.functional.one_hot(y, 3).double()          # soft labels after integer ones
    out = eng(x, soft, None, need_grad=True)
    assert out is not None and len(eng._slots) == 3
    torch.testing.assert_close(out[1], get_loss("ce")(Sum()(x), soft, None))


def _noisy(field: int, amount: float) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def capture(step: Callable[[], Any]) -> Callable[[], Any]:
        def replay() -> Any:
            out = list(step())
            out[field] = out[field] + amount
            return tuple(out)
        return replay
    return capture


@pytest.mark.parametrize("field,name", [(0, "logits"), (1, "loss"), (2, "gradient")])
def test_the_warning_names_the_output_and_its_difference(field: int, name: str) -> None:
    eng = StaticLossGrad(_model(), get_loss("ce"), rows=8, capture=_noisy(field, 1.0))
    x, y = _batch(4)
    with pytest.warns(RuntimeWarning, match=rf"disagrees with the eager one \({name}, max difference 1\)"):
        assert eng(x, y, None, need_grad=True) is None


class Scaled(nn.Module):
    """Logits ``scale · tanh(w·x)`` with some exactly-zero logits, gradients as small as ``scale`` makes them."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.tanh(x.sum((1, 2)) - 12.0)
        return self.scale * torch.stack([s, -s, 0 * s], 1)


@pytest.mark.parametrize("scale,noise,agrees", [
    (100.0, 5e-4, True),     # atol = 1e-5 x 100 = 1e-3 covers the zero logits; rtol 1e-3 the others
    (100.0, 2e-3, False),    # beyond both
    (0.01, 5e-6, True),      # small outputs: atol is at least 1e-5
    (0.01, 1.5e-5, False),   # ... and not more
])
def test_the_check_tolerance_scales_with_each_output(scale: float, noise: float, agrees: bool) -> None:
    eng = StaticLossGrad(Scaled(scale), get_loss("ce"), rows=8, capture=_noisy(0, noise))
    x, y = _batch(4)
    if agrees:
        assert eng(x, y, None, need_grad=False) is not None and not eng.disabled
    else:
        with pytest.warns(RuntimeWarning, match="logits"):
            assert eng(x, y, None, need_grad=False) is None


def test_relative_tolerance_on_large_logits() -> None:
    class Big(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum((1, 2))
            return torch.stack([1e4 + s, 1e4 - s, 1e4 + 0 * s], 1)

    def scaled_noise(step: Callable[[], Any]) -> Callable[[], Any]:
        def replay() -> Any:
            z, loss, g = step()
            return z * (1 + 5e-4), loss, g                     # 5 units on 1e4: rtol 1e-3 allows it (atol 0.1 does not)
        return replay

    eng = StaticLossGrad(Big(), get_loss("ce"), rows=8, capture=scaled_noise)
    x, y = _batch(4)
    assert eng(x, y, None, need_grad=False) is not None


def test_targeted_attacks_keep_their_target_through_the_captured_step(forced: None) -> None:
    model = _model()
    x, _ = _batch(24)
    y = model(x).argmax(1)
    target = 2 - y                                     # classes 0 and 2 are both reached inside the box
    keep = y != 1
    x, y, target = x[keep], y[keep], target[keep]
    off = PGD(model, eps=1.0, steps=20, rel_step_size=0.1, bounds=(0, 1))
    off.fast_path = "off"
    on = PGD(model, eps=1.0, steps=20, rel_step_size=0.1, bounds=(0, 1))
    a, b = off(x, y, target=target), on(x, y, target=target)
    assert bool(a.success.any())
    torch.testing.assert_close(b.x_adv, a.x_adv)
    assert torch.equal(a.success, b.success)


def test_one_engine_per_batch_size_and_per_loss(forced: None) -> None:
    model = _model()
    x, _ = _batch(6)
    y = model(x).argmax(1)
    shared: dict[Any, Any] = {}
    for n, loss in ((6, "ce"), (4, "ce"), (6, "margin")):
        atk = PGD(model, eps=0.1, steps=2, bounds=(0, 1), loss=loss)
        atk._engines = shared
        atk(x[:n], y[:n])
    assert sorted(e.rows for e in shared.values()) == [4, 6, 6] and len(shared) == 3
    first = lambda z, yy, t: -torch.nn.functional.cross_entropy(z, yy, reduction="none")  # noqa: E731
    second = lambda z, yy, t: torch.nn.functional.cross_entropy(z, yy, reduction="none")  # noqa: E731
    for fn in (first, second):                    # two callables: never one engine for both
        atk = PGD(model, eps=0.1, steps=2, bounds=(0, 1), loss=fn)
        atk._engines = shared
        atk(x, y)
    assert len(shared) == 5
