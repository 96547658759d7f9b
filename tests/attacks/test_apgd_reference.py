"""APGD against a hand-written loop of Croce & Hein's Algorithm 1 (ICML 2020, arXiv 2003.01690).

The reference runs every sample for all ``N`` iterations (``early_stop=False``) and returns ``x_max``, the
highest-loss point: the first step ``x1 = P(x0 + η·dir(∇))`` with ``η = 2ε``; then
``z = P(xk + η·dir(∇))``, ``x_{k+1} = P(xk + α(z − xk) + (1 − α)(xk − x_{k−1}))``; at every checkpoint
``w_j`` the step is halved and the iterate reset to ``x_max`` (with its gradient) where (1) the loss
increased in at most ``ρ·(w_j − w_{j−1})`` of the steps since the last checkpoint, or (2) the step was
not halved at the last checkpoint and the best loss did not improve since.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import APGD
from medrobust.attacks.apgd import checkpoints
from medrobust.errors import ConfigError

from .conftest import SmallECGNet


def _dir(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1)


def _proj(x: torch.Tensor, xa: torch.Tensor, eps: float, norm: str, bounds: Any, mask: Any = None) -> torch.Tensor:
    d = xa - x if mask is None else (xa - x) * mask
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1)
        d = torch.where(n > eps, d * eps / n, d)
    out = x + d
    return out if bounds is None else out.clamp(*bounds)


def algorithm1(model, x, y, *, eps, steps, norm, rho=0.75, alpha=0.75, initial_step=2.0,
               bounds=None, mask=None):  # type: ignore[no-untyped-def]
    def f(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = xa.clone().requires_grad_(True)
        loss = F.cross_entropy(model(leaf), y, reduction="none")
        g = torch.autograd.grad(loss.sum(), leaf)[0]
        return loss.detach(), g if mask is None else g * mask

    def rows(c: torch.Tensor) -> torch.Tensor:
        return c.view(-1, 1, 1)

    n = len(x)
    eta = torch.full((n,), initial_step * eps, dtype=x.dtype)
    x_cur = x_old = x_best = x.clone()
    loss, grad = f(x)
    loss_best, grad_best, loss_prev = loss, grad, loss
    n_incr = torch.zeros(n, dtype=x.dtype)
    reduced_last = torch.zeros(n, dtype=torch.bool)
    loss_best_last = loss.clone()
    ckpts, last = checkpoints(steps), 0
    for k in range(steps):
        z = _proj(x, x_cur + rows(eta) * _dir(grad, norm), eps, norm, bounds, mask)
        x_new = z if k == 0 else _proj(x, x_cur + alpha * (z - x_cur) + (1 - alpha) * (x_cur - x_old), eps, norm,
                                       bounds, mask)
        x_old, x_cur = x_cur, x_new
        loss, grad = f(x_cur)
        n_incr = n_incr + (loss > loss_prev).to(x.dtype)
        loss_prev = loss
        better = loss > loss_best
        x_best = torch.where(rows(better), x_cur, x_best)
        grad_best = torch.where(rows(better), grad, grad_best)
        loss_best = torch.where(better, loss, loss_best)
        if k + 1 in ckpts:
            reduce = (n_incr <= rho * (k + 1 - last)) | (~reduced_last & (loss_best <= loss_best_last))
            eta = torch.where(reduce, eta / 2, eta)
            x_cur = torch.where(rows(reduce), x_best, x_cur)
            grad = torch.where(rows(reduce), grad_best, grad)
            reduced_last, loss_best_last, n_incr, last = reduce, loss_best.clone(), torch.zeros_like(n_incr), k + 1
    return x_best, loss_best


@pytest.mark.parametrize("norm, eps, bounds, kw", [
    ("linf", 0.01, (0.0, 1.0), {}),  # the paper's constants: ρ = α = 0.75, η = 2ε
    ("linf", 0.01, None, {"rho": 0.8, "momentum": 0.4, "initial_step": 1.0}),  # ρ·w1 = 4 vs ρ·(w1 − 1) = 3.2 differ
    ("l2", 0.2, None, {}),
    ("l2", 0.2, None, {"mask": True}),  # the gradient is masked before it is normalised
], ids=["linf-defaults", "linf-custom", "l2", "l2-mask"])
def test_apgd_equals_algorithm_1(norm: str, eps: float, bounds: Any, kw: dict[str, Any], centred) -> None:
    model, x, y = centred
    kw = dict(kw)
    mask = None
    if kw.pop("mask", False):
        mask = torch.ones_like(x)
        mask[..., 150:] = 0
        kw["mask"] = mask
    steps = 25  # checkpoints 5, 9, 12, 14, 15, ..., 25: halving and resets happen
    res = APGD(model, eps=eps, norm=norm, steps=steps, bounds=bounds, random_start=False, early_stop=False, **kw)(x, y)
    ref_kw = {"rho": kw.get("rho", 0.75), "alpha": kw.get("momentum", 0.75), "initial_step": kw.get("initial_step", 2.0)}
    ref, loss_best = algorithm1(model, x, y, eps=eps, steps=steps, norm=norm, bounds=bounds, mask=mask, **ref_kw)
    torch.testing.assert_close(res.x_adv, ref, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(F.cross_entropy(model(res.x_adv), y, reduction="none"), loss_best)
    assert bool((res.grad_evals_per_sample == steps).all())  # N − 1 iterates + the start point


def test_the_reference_run_halves_and_resets(centred) -> None:
    """The schedule in the equality test is not vacuous: momentum-free, never-halving or never-resetting
    variants of the reference end at other points."""
    model, x, y = centred
    base, _ = algorithm1(model, x, y, eps=0.01, steps=25, norm="linf")
    for kw in ({"alpha": 1.0}, {"rho": -1.0}):  # no momentum; (with ρ < 0 only condition 2 can halve)
        other, _ = algorithm1(model, x, y, eps=0.01, steps=25, norm="linf", **kw)
        assert not torch.allclose(base, other, atol=1e-9), kw


def test_early_stop_returns_the_first_adversarial_iterate(centred) -> None:
    model, x, y = centred
    res = APGD(model, eps=0.05, steps=10, random_start=False)(x, y)
    assert bool(res.success.any())
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y)[res.success].all())
    assert bool((res.grad_evals_per_sample[res.success] < 10).all())
    # misclassified when clean: not attacked
    none = APGD(model, eps=0.05, steps=10, random_start=False)(x, (y + 1) % 5)
    assert torch.equal(none.x_adv, x) and int(none.grad_evals) == 0


def test_restarts_run_only_on_the_samples_still_robust(centred) -> None:
    model, x, y = centred
    one = APGD(model, eps=0.004, steps=5, generator=torch.Generator().manual_seed(0))(x, y)
    three = APGD(model, eps=0.004, steps=5, restarts=3, generator=torch.Generator().manual_seed(0))(x, y)
    assert 0 < int(one.success.sum()) < len(x)
    assert bool((three.success >= one.success).all())
    # each robust sample pays for every restart; the first run's successes never restart
    assert bool((three.grad_evals_per_sample[~three.success] == 3 * 5).all())
    first = one.success
    assert torch.equal(three.grad_evals_per_sample[first], one.grad_evals_per_sample[first])


def test_checkpoints_for_short_runs() -> None:
    assert checkpoints(25) == [5, 9, 12, 14, *range(15, 26)]  # intervals 5, 4, 3, 2, then ⌊0.06 N⌋ = 1
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # every interval at least 1 iteration
    assert checkpoints(4) == [1, 2, 3, 4]
    assert checkpoints(1) == [1]


def _names(arg: str) -> str:
    return rf"(^|[^\w]){arg}([^\w]|$)"


def test_argument_errors() -> None:
    model = SmallECGNet(1)
    for kw, name in (({"momentum": 0.0}, "momentum"), ({"momentum": 1.5}, "momentum"), ({"rho": 0.0}, "rho"),
                     ({"initial_step": 0.0}, "initial_step"), ({"initial_step": None}, "initial_step"),
                     ({"restarts": 0}, "restarts"), ({"steps": 0}, "steps")):
        with pytest.raises(ConfigError, match=_names(name)):
            APGD(model, eps=0.1, **kw)
    with pytest.raises(ConfigError, match=r"^restarts > 1 repeats the same deterministic run; set random_start=True\.$"):
        APGD(model, eps=0.1, restarts=2, random_start=False)
    assert APGD(model, eps=0.1, momentum=1.0, rho=1.0).momentum == 1.0  # the upper ends are allowed


def test_one_sample_one_step_and_the_default_100_steps(centred) -> None:
    model, x, y = centred
    one = APGD(model, eps=0.01, steps=1, random_start=False, early_stop=False)(x[:1], y[:1])
    ref, _ = algorithm1(model, x[:1], y[:1], eps=0.01, steps=1, norm="linf")
    torch.testing.assert_close(one.x_adv, ref, rtol=0, atol=1e-12)
    assert not torch.equal(one.x_adv, x[:1])
    full = APGD(model, eps=0.001, random_start=False, early_stop=False)(x[:2], y[:2])
    assert bool((full.grad_evals_per_sample == 100).all())


def test_random_start_success_ends_the_sample_at_once(centred) -> None:
    """Default random start; a sample already adversarial at its start point is recorded there and dropped."""
    model, x, y = centred
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append(inp.detach().clone())
            return model(inp)

    res = APGD(Spy(), eps=0.05, steps=6, generator=torch.Generator().manual_seed(0))(x, y)
    start = seen[1]  # after the clean forward
    assert bool(((start - x).abs().amax(dim=(1, 2)) > 0.025).all())
    with torch.no_grad():
        at_start = model(start).argmax(1) != y
    assert bool(at_start.any()) and not bool(at_start.all())
    torch.testing.assert_close(res.x_adv[at_start], start[at_start], rtol=0, atol=0)
    assert bool((res.grad_evals_per_sample[at_start] == 1).all())
    assert bool((res.grad_evals_per_sample[~at_start] > 1).all())


def test_without_early_stop_restarts_skip_the_samples_already_broken(centred) -> None:
    model, x, y = centred
    kw = dict(eps=0.004, steps=5, early_stop=False, generator=torch.Generator().manual_seed(0))
    one = APGD(model, **kw)(x, y)
    two = APGD(model, restarts=2, **kw)(x, y)
    assert 0 < int(one.success.sum()) < len(x)
    assert torch.equal(two.grad_evals_per_sample[one.success], one.grad_evals_per_sample[one.success])
    assert bool((two.grad_evals_per_sample[~one.success] == 10).all())
