"""PGD against a hand-written loop of Madry et al. (ICLR 2018, arXiv 1706.06083), eq. 2 of §2.1.

``x_{k+1} = Π(x_k + α·dir(∇ L))`` with ``dir = sign`` (L∞) or ``g/‖g‖₂`` (L2), the gradient masked before
it is normalised, ``Π`` = mask, ball, bounds. Without early stop PGD returns the final iterate; with
early stop every sample's first adversarial iterate (and it is never queried again).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import PGD
from medrobust.errors import ConfigError


def _dir(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1)


def _constrain(x, d, eps, norm, mask, bounds):  # type: ignore[no-untyped-def]
    if mask is not None:
        d = d * mask
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1)
        d = torch.where(n > eps, d * eps / n, d)
    out = x + d
    return out if bounds is None else out.clamp(*bounds)


def madry(model, x, y, *, eps, alpha, steps, norm, mask=None, bounds=None,
          adamax=False):  # type: ignore[no-untyped-def]
    """Iterates ``x_0 .. x_steps`` of PGD from ``x`` (no random start).

    ``adamax``: the step is Adamax's (Kingma & Ba 2015, Algorithm 2; β = (0.9, 0.999), ε = 1e-8) fed
    with ``dir(g)``, learning rate α: ``m ← β1 m + (1 − β1) d``, ``u ← max(β2 u, |d| + ε)``,
    step ``α/(1 − β1^t) · m/u`` (Ma & Liang's 100-PGD).
    """
    xs = [x.clone()]
    m = torch.zeros_like(x)
    u = torch.zeros_like(x)
    for t in range(1, steps + 1):
        leaf = xs[-1].clone().requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)[0]
        if mask is not None:
            g = g * mask
        d = _dir(g, norm)
        if adamax:
            m = 0.9 * m + 0.1 * d
            u = torch.maximum(0.999 * u, d.abs() + 1e-8)
            d = m / u / (1 - 0.9**t)
        xs.append(_constrain(x, xs[-1] - x + alpha * d, eps, norm, mask, bounds))
    return xs


@pytest.mark.parametrize("norm, eps, bounds, kw", [
    ("linf", 0.01, (0.0, 1.0), {}),  # default step 2.5 ε / steps
    ("linf", 0.01, None, {"step_size": 0.002}),
    ("l2", 0.2, None, {"rel_step_size": 0.3}),
    ("linf", 0.01, None, {"update": "adamax", "step_size": 0.002}),
    ("l2", 0.2, None, {"update": "adamax", "step_size": 0.05}),
], ids=["linf-default-step", "linf-abs-step", "l2", "linf-adamax", "l2-adamax"])
def test_final_iterate_equals_madrys_loop(norm: str, eps: float, bounds: Any, kw: dict[str, Any], centred) -> None:
    model, x, y = centred
    mask = torch.ones_like(x)
    mask[..., 160:] = 0
    steps = 6
    res = PGD(model, eps=eps, norm=norm, steps=steps, bounds=bounds, mask=mask, random_start=False, early_stop=False,
              **kw)(x, y)
    alpha = kw.get("step_size", kw.get("rel_step_size", 2.5 / steps) * eps)
    xs = madry(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, mask=mask, bounds=bounds,
               adamax=kw.get("update") == "adamax")
    torch.testing.assert_close(res.x_adv, xs[-1], rtol=0, atol=1e-12)
    assert torch.equal(res.x_adv[..., 160:], x[..., 160:])
    assert bool((res.grad_evals_per_sample == steps).all())
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)


def test_early_stop_returns_each_samples_first_adversarial_iterate(centred) -> None:
    model, x, y = centred
    eps, steps = 0.004, 8  # successes after 2, 3 and 5 steps, and robust samples
    res = PGD(model, eps=eps, steps=steps, random_start=False, rel_step_size=0.25)(x, y)
    xs = madry(model, x, y, eps=eps, alpha=0.25 * eps, steps=steps, norm="linf")
    with torch.no_grad():
        adv = torch.stack([model(xi).argmax(1) != y for xi in xs])  # (steps + 1, N)
    assert 0 < int(res.success.sum()) < len(x)
    for i in range(len(x)):
        hits = adv[:, i].nonzero()
        if len(hits):
            k = int(hits[0])
            torch.testing.assert_close(res.x_adv[i], xs[k][i], rtol=0, atol=1e-12)
            # the forward that finds x_k adversarial also took its gradient (except the last, gradient-free one)
            assert int(res.grad_evals_per_sample[i]) == min(k + 1, steps)
        else:
            torch.testing.assert_close(res.x_adv[i], xs[-1][i], rtol=0, atol=1e-12)
            assert int(res.grad_evals_per_sample[i]) == steps


def test_random_start_and_restarts(centred) -> None:
    model, x, y = centred
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append(inp.detach().clone())
            return model(inp)

    res = PGD(Spy(), eps=0.004, steps=3, restarts=3, generator=torch.Generator().manual_seed(0))(x, y)
    first = seen[1] - x  # the default: a random start in the ball
    assert float(first.abs().max()) <= 0.004 and bool((first.abs().amax(dim=(1, 2)) > 0.002).all())
    robust = ~res.success
    assert bool(robust.any())
    assert bool((res.grad_evals_per_sample[robust] == 9).all())  # 3 runs of 3 steps
    with pytest.raises(ConfigError, match="restarts"):
        PGD(model, eps=0.1, restarts=0)
    with pytest.raises(ConfigError, match="random_start"):
        PGD(model, eps=0.1, restarts=2, random_start=False)
    with pytest.raises(ConfigError, match="update"):
        PGD(model, eps=0.1, update="adam")


def _names(arg: str) -> str:
    return rf"(^|[^\w]){arg}([^\w]|$)"


def test_argument_errors_and_the_default_100_steps(centred) -> None:
    model, x, y = centred
    for kw, name in (({"steps": 0}, "steps"), ({"restarts": 0}, "restarts"), ({"update": "adam"}, "update")):
        with pytest.raises(ConfigError, match=_names(name)):
            PGD(model, eps=0.1, **kw)
    with pytest.raises(ConfigError, match=r"^restarts > 1 repeats the same deterministic run; set random_start=True\.$"):
        PGD(model, eps=0.1, restarts=2, random_start=False)
    for kw, name in (({"step_size": -0.01}, "step_size"), ({"rel_step_size": 0.0}, "rel_step_size")):
        with pytest.raises(ConfigError, match=_names(name)):
            PGD(model, eps=0.1, **kw)
    with pytest.raises(ConfigError, match=r"^pass step_size \(absolute\) or rel_step_size \(fraction of eps\), not both\.$"):
        PGD(model, eps=0.1, step_size=0.01, rel_step_size=0.1)
    one = PGD(model, eps=0.01, steps=1, random_start=False, early_stop=False, rel_step_size=0.5)(x, y)
    torch.testing.assert_close(one.x_adv, madry(model, x, y, eps=0.01, alpha=0.005, steps=1, norm="linf")[-1],
                               rtol=0, atol=1e-12)
    full = PGD(model, eps=0.0005, random_start=False, early_stop=False)(x[:2], y[:2])
    assert bool((full.grad_evals_per_sample == 100).all())


def test_without_early_stop_restarts_skip_the_samples_already_broken(centred) -> None:
    model, x, y = centred
    kw = dict(eps=0.004, steps=4, early_stop=False, generator=torch.Generator().manual_seed(0))
    one = PGD(model, **kw)(x, y)
    two = PGD(model, restarts=2, **kw)(x, y)
    assert 0 < int(one.success.sum()) < len(x)
    assert torch.equal(two.grad_evals_per_sample[one.success], one.grad_evals_per_sample[one.success])
    assert bool((two.grad_evals_per_sample[~one.success] == 8).all())
