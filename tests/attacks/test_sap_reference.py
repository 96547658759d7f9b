"""SAP against a hand-written loop of Han et al.'s algorithm, and its argument checks and options.

The reference below is the algorithm of Han et al. (Nature Medicine 2020, Methods) written out step by
step with autograd: ``T`` PGD steps from ``x`` (sign of the masked gradient, α, projection on the ball,
the mask and the bounds), then ``2T`` steps on ``θ`` with ``x + S(θ)`` as the model input (gradient
with respect to ``θ``, not masked), and the output ``x + S(θ_2T)``. SAP with ``output="final"`` must
return exactly this point.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import SAP
from medrobust.attacks.sap_filter import sap_kernel, smooth
from medrobust.errors import ConfigError

from .conftest import SmallECGNet


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1)


def _ball(d: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return d.clamp(-eps, eps)
    n = d.flatten(1).norm(dim=1).view(-1, 1, 1)
    return torch.where(n > eps, d * eps / n, d)


def _admissible(x, d, eps, norm, mask, bounds):  # type: ignore[no-untyped-def]
    d = _ball(d * mask if mask is not None else d, eps, norm)
    out = x + d
    return out if bounds is None else out.clamp(*bounds)


def han_sap(model, x, y, *, eps, alpha, steps, smooth_steps, norm="linf", mask=None, bounds=None,
            kernel):  # type: ignore[no-untyped-def]
    def grad(inp: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(F.cross_entropy(model(inp), y, reduction="sum"), leaf)[0]

    xa = x.clone()
    for _ in range(steps):  # warm start: PGD without random start
        leaf = xa.clone().requires_grad_(True)
        g = grad(leaf, leaf)
        if mask is not None:
            g = g * mask
        xa = _admissible(x, (xa - x) + alpha * _direction(g, norm), eps, norm, mask, bounds)
    theta = xa - x
    for _ in range(smooth_steps):
        leaf = theta.clone().requires_grad_(True)
        d = smooth(leaf, kernel)
        if mask is not None:
            d = d * mask
        inp = x + d if bounds is None else (x + d).clamp(*bounds)
        g = grad(inp, leaf)
        theta = _ball(theta + alpha * _direction(g, norm), eps, norm)
    return _admissible(x, smooth(theta, kernel), eps, norm, mask, bounds)


# L2 without bounds: where x + δ lies exactly on a bound, the subgradient of the clip is a convention
# (torch.clamp passes 1, SAP's max/min pair 0.5), which changes g/‖g‖ but never sign(g).
@pytest.mark.parametrize("norm, eps, bounds, kw", [
    ("linf", 0.02, (0.0, 1.0), {}),  # default step: 0.1 ε; default smoothed stage: 2T steps
    ("l2", 0.3, None, {"step_size": 0.05, "smooth_steps": 5}),
], ids=["linf-defaults", "l2"])
def test_sap_equals_hans_algorithm_step_by_step(norm: str, eps: float, bounds: Any, kw: dict[str, Any],
                                                centred) -> None:
    model, x, y = centred
    mask = torch.ones_like(x)
    mask[..., 150:] = 0  # a padded tail: never perturbed, yet θ there still feeds S(θ) near the edge
    steps = 4
    res = SAP(model, eps=eps, norm=norm, steps=steps, mask=mask, bounds=bounds, output="final", **kw)(x, y)
    alpha = kw.get("step_size", 0.1 * eps)
    ref = han_sap(model, x, y, eps=eps, alpha=alpha, steps=steps, smooth_steps=kw.get("smooth_steps", 2 * steps),
                  norm=norm, mask=mask, bounds=bounds, kernel=sap_kernel())
    torch.testing.assert_close(res.x_adv, ref, rtol=0, atol=1e-12)
    assert torch.equal(res.x_adv[..., 150:], x[..., 150:])
    assert float((res.x_adv - x).abs().max()) > 0.1 * eps  # the attack moved
    if bounds is not None:
        assert bool(((res.x_adv >= 0) & (res.x_adv <= 1)).all())
        assert bool((res.x_adv == 0).any())  # the bounds were active: some coordinates were clipped


def test_zero_warm_start_is_the_smoothed_stage_from_theta_zero(centred) -> None:
    model, x, y = centred
    res = SAP(model, eps=0.02, steps=0, smooth_steps=3, warm_start="zero", output="final")(x, y)
    ref = han_sap(model, x, y, eps=0.02, alpha=0.002, steps=0, smooth_steps=3, kernel=sap_kernel())
    torch.testing.assert_close(res.x_adv, ref, rtol=0, atol=1e-12)


def test_random_start_moves_the_first_warm_start_point(centred) -> None:
    model, x, y = centred
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            seen.append(inp.detach().clone())
            return model(inp)

    SAP(Spy(), eps=0.02, steps=2, random_start=True, generator=torch.Generator().manual_seed(0))(x, y)
    d = seen[1] - x  # after the clean forward: the warm start's first point
    assert bool((d.abs().amax(dim=(1, 2)) > 0.01).all()) and float(d.abs().max()) <= 0.02
    seen.clear()
    SAP(Spy(), eps=0.02, steps=2)(x, y)  # Han: no random start
    assert torch.equal(seen[1], x)


def test_early_stop_drops_successful_samples_from_the_smoothed_stage(centred) -> None:
    model, x, y = centred
    kw = dict(eps=0.05, steps=2, smooth_steps=6, rel_step_size=0.5)
    full = SAP(model, **kw)(x, y)
    stop = SAP(model, early_stop=True, **kw)(x, y)
    assert bool((full.grad_evals_per_sample == 8).all())
    assert bool(stop.success.any())
    assert bool((stop.grad_evals_per_sample[stop.success] < 8).all())
    # samples misclassified when clean are not attacked at all
    wrong = (y + 1) % 5
    none = SAP(model, early_stop=True, **kw)(x, wrong)
    assert torch.equal(none.x_adv, x) and int(none.grad_evals) == 0


def _names(arg: str) -> str:
    """A message naming ``arg`` as a word (not inside another name)."""
    return rf"(^|[^\w]){arg}([^\w]|$)"


def test_argument_errors() -> None:
    model = SmallECGNet(1)
    with pytest.raises(ConfigError, match=_names("steps")):
        SAP(model, eps=0.1, steps=0, smooth_steps=3)  # the PGD warm start needs at least one step
    assert SAP(model, eps=0.1, steps=0, warm_start="zero", smooth_steps=1).steps == 0
    with pytest.raises(ConfigError, match=_names("smooth_steps")):
        SAP(model, eps=0.1, steps=2, smooth_steps=0)
    with pytest.raises(ConfigError, match=_names("warm_start")):
        SAP(model, eps=0.1, warm_start="fgsm")
    with pytest.raises(ConfigError, match=_names("output")):
        SAP(model, eps=0.1, output="last")
    with pytest.raises(ConfigError, match=_names("fs")):
        SAP(model, eps=0.1, fs=-125.0)
    with pytest.raises(ConfigError, match=_names("reference_fs")):
        SAP(model, eps=0.1, fs=125.0, reference_fs=-300.0)
    with pytest.raises(ConfigError, match="^reference_fs needs fs"):
        SAP(model, eps=0.1, reference_fs=300.0)
    with pytest.raises(ConfigError, match="step_size"):
        SAP(model, eps=0.1, step_size=0.01, rel_step_size=0.1)
    sap = SAP(model, eps=0.1, fs=150.0, reference_fs=300.0)  # half the rate: kernels in seconds, halved
    assert sap.kernel_sizes == [3, 3, 5, 7, 9] and sap.kernel_sigmas == [0.5, 1.5, 2.5, 3.5, 5.0]
    assert SAP(model, eps=0.1, fs=600.0).reference_fs == 300.0


def test_custom_kernels_are_used(centred) -> None:
    model, x, y = centred
    sap = SAP(model, eps=0.02, steps=1, sizes=(3, 9), sigmas=(0.5, 4.0), output="final")
    want = sap_kernel(sizes=(3, 9), sigmas=(0.5, 4.0))
    assert sap.kernel.numel() == 9
    torch.testing.assert_close(sap.kernel, want, rtol=0, atol=0)
    ref = han_sap(model, x, y, eps=0.02, alpha=0.002, steps=1, smooth_steps=2, kernel=want)
    torch.testing.assert_close(sap(x, y).x_adv, ref, rtol=0, atol=1e-12)


def test_han_defaults_20_pgd_then_40_smoothed_steps(centred) -> None:
    model, x, y = centred
    res = SAP(model, eps=0.01, output="final")(x[:2], y[:2])
    assert bool((res.grad_evals_per_sample == 60).all())


def test_zero_reference_fs_is_rejected() -> None:
    with pytest.raises(ConfigError, match="reference_fs"):
        SAP(SmallECGNet(1), eps=0.1, fs=125.0, reference_fs=0.0)


def test_long_records_use_the_convolution_and_give_the_same_algorithm(centred) -> None:
    """Records longer than 1024 samples are smoothed by convolution instead of the banded matrix."""
    model, x, y = centred
    long = x.repeat(1, 1, 6)  # 1122 samples
    res = SAP(model, eps=0.02, steps=2, output="final")(long, y)
    ref = han_sap(model, long, y, eps=0.02, alpha=0.002, steps=2, smooth_steps=4, kernel=sap_kernel())
    torch.testing.assert_close(res.x_adv, ref, rtol=0, atol=1e-12)
    single = SAP(model.float(), eps=0.02, steps=1)(long.float(), y)  # float32 data: the kernel follows its dtype
    assert single.x_adv.dtype == torch.float32 and bool((single.norms <= 0.02 * (1 + 1e-6)).all())


def test_without_early_stop_every_sample_is_attacked(centred) -> None:
    """Han runs every record, including those misclassified when clean (``early_stop=False``, the default)."""
    model, x, y = centred
    wrong = (y + 1) % 5
    res = SAP(model, eps=0.02, steps=2)(x, wrong)
    assert bool((res.grad_evals_per_sample == 6).all())
    assert bool(((res.x_adv - x).abs().amax(dim=(1, 2)) > 0).all())


def test_best_output_never_returns_an_unsmoothed_warm_start_point(beats_x: torch.Tensor) -> None:
    """A model that flags high-frequency energy: the (random-start) PGD warm start is adversarial at once,
    no smoothed iterate is. ``output="best"`` reports smoothed iterates only, so it returns the last one."""
    x = beats_x.double()

    class HighFrequency(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            d = (inp - x).diff(dim=-1)
            z1 = 10.0 * (d**2).flatten(1).sum(1) - 1.0
            return torch.stack([torch.zeros_like(z1), z1], 1)

    spy: list[torch.Tensor] = []
    model = HighFrequency()

    class Spy(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            spy.append(inp.detach().clone())
            return model(inp)

    y = torch.zeros(len(x), dtype=torch.long)
    res = SAP(Spy(), eps=0.05, steps=2, smooth_steps=2, random_start=True, step_size=0.05,
              generator=torch.Generator().manual_seed(0))(x, y)
    with torch.no_grad():
        assert bool((model(spy[1]).argmax(1) == 1).all())  # the warm start's first point is adversarial
    assert not bool(res.success.any())
    torch.testing.assert_close(res.x_adv, spy[-1], rtol=0, atol=0)
