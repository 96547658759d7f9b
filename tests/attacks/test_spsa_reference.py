"""SPSA on a one-coordinate cubic, where the estimator and every update can be computed by hand.

With a single coordinate every Rademacher probe is ``v = ±1`` and the two-sided difference
``(f(x + δv) − f(x − δv)) / (2δ) · v`` equals ``(f(x + δ) − f(x − δ)) / (2δ)`` whatever ``v`` is; for the
cubic ``f(x) = −(x − c)² + k·x³`` that is exactly ``f'(x) + k·δ²``. SPSA's estimate is therefore known
in closed form, and its iterates follow Adamax / Adam (Kingma & Ba, ICLR 2015, Algorithms 1 and 2) of
that gradient, projected on the ε-interval (Uesato et al., ICML 2018, Algorithm 1).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medrobust.attacks import SPSA
from medrobust.attacks.base import AttackContext
from medrobust.attacks.losses import get_loss

from ._blackbox import Recorder, Spy

C, K = 0.01, 100.0


class Cubic(torch.nn.Module):
    """Logits ``[0, f(x)]`` with ``f(x) = −(x − c)² + k·x³`` of the single coordinate: margin loss ``f`` (y = 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.flatten(1).sum(1)
        f = -((u - C) ** 2) + K * u**3 - 1.0  # − 1: class 0 everywhere near the start (no early success)
        return torch.stack([torch.zeros_like(f), f], 1)


def estimate(x: torch.Tensor, delta: float) -> torch.Tensor:
    return -2.0 * (x - C) + 3.0 * K * x**2 + K * delta**2


def reference(x0: torch.Tensor, x: torch.Tensor, *, eps: float, steps: int, lr: float, delta: float, update: str,
              sign: bool) -> torch.Tensor:
    b1, b2, e = 0.9, 0.999, 1e-8
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    xa = x0.clone()
    for t in range(1, steps + 1):
        g = estimate(xa, delta)
        d = g.sign() if sign else g
        m = b1 * m + (1 - b1) * d
        if update == "adamax":
            v = torch.maximum(b2 * v, d.abs() + e)
            inc = lr * m / v / (1 - b1**t)
        else:
            v = b2 * v + (1 - b2) * d * d
            inc = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + e)
        xa = x + (xa - x + inc).clamp(-eps, eps)
    return xa


@pytest.fixture()
def points() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([-0.03, -0.012, -0.004, 0.0, 0.006, 0.015, 0.024, 0.04], dtype=torch.float64).view(-1, 1, 1)
    return x, torch.zeros(len(x), dtype=torch.long)


def test_estimate_is_the_central_difference(points) -> None:  # type: ignore[no-untyped-def]
    x, y = points
    model = Cubic()
    for kw in ({"nb_samples": 5, "delta": 0.01}, {"nb_samples": 7, "delta": 0.05, "max_batch_size": 6}):
        atk = SPSA(model, eps=0.1, **kw)  # type: ignore[arg-type]
        ctx = AttackContext(model=model, threat=atk.threat, x=x, y=y, target=None,
                            eps=torch.full((len(x),), 0.1, dtype=x.dtype), mask=None, bounds=None,
                            loss_fn=get_loss("margin"), clean_logits=model(x), generator=torch.Generator().manual_seed(0))
        g = atk.estimate_gradient(ctx, ctx.active(), x)
        torch.testing.assert_close(g, estimate(x, float(kw["delta"])), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kw", [
    {},  # Ma & Liang's defaults: Adamax of sign(ĝ), lr = δ = 0.01, random start
    {"update": "adam", "sign": False, "lr": 0.004, "delta": 0.03, "random_start": False},
    {"update": "adam", "sign": True, "random_start": False},
    {"update": "adamax", "sign": False, "lr": 0.02, "random_start": False, "max_batch_size": 4},
], ids=["defaults", "adam-raw", "adam-sign", "adamax-raw"])
def test_iterates_follow_the_optimiser_of_the_exact_estimate(kw: dict[str, Any], points) -> None:  # type: ignore[no-untyped-def]
    x, y = points
    rec = Recorder(Cubic())
    steps, nb, eps = 6, 3, 0.1  # ε above 6 steps of lr: the projection never hides a wrong step size
    res = SPSA(rec, eps=eps, steps=steps, nb_samples=nb, early_stop=False, **kw)(x, y)
    x0 = rec.inputs[1]  # the first point queried after the clean forward: the start
    if kw.get("random_start", True):
        assert bool(((x0 - x).abs() > 0).all()) and bool(((x0 - x).abs() <= eps).all())
    else:
        assert torch.equal(x0, x)
    want = reference(x0, x, eps=eps, steps=steps, lr=kw.get("lr", 0.01), delta=kw.get("delta", 0.01),
                     update=kw.get("update", "adamax"), sign=kw.get("sign", True))
    torch.testing.assert_close(res.x_adv, want, rtol=0, atol=1e-12)
    assert res.queries_per_sample.tolist() == [1 + (steps + 1) + steps * 2 * nb] * len(x)


def test_probes_are_start_plus_minus_delta(points) -> None:  # type: ignore[no-untyped-def]
    x, y = points
    spy = Spy(Cubic())
    rec = Recorder(spy)
    SPSA(rec, eps=0.02, steps=1, nb_samples=3, delta=0.005, random_start=False, early_stop=False)(x, y)
    # clean, start, one block of 2·3 probes per sample (sample-major: + then −), final check
    assert [len(r) for r in rec.inputs] == [8, 8, 48, 8]
    probes = rec.inputs[2].view(8, 2, 3)
    torch.testing.assert_close((probes[:, 0] - x.view(8, 1)).abs(), torch.full((8, 3), 0.005, dtype=x.dtype))
    torch.testing.assert_close(probes[:, 0] + probes[:, 1], 2 * x.view(8, 1).expand(8, 3))
    assert spy.largest == 48  # the default forward bound (8192 inputs) is not reached here


def test_early_stop_ends_a_sample_at_its_first_adversarial_iterate() -> None:
    x = torch.tensor([0.2, 0.05], dtype=torch.float64).view(-1, 1, 1)  # f > 0 (class 1) from u ≈ 0.2154
    y = torch.zeros(2, dtype=torch.long)
    rec = Recorder(Cubic())
    res = SPSA(rec, eps=0.1, steps=8, nb_samples=2, lr=0.01, random_start=False)(x, y)
    assert int(res.queries_per_sample[0]) < 1 + 9 + 8 * 4
    assert bool(res.success[0])
    with torch.no_grad():
        assert float(Cubic()(res.x_adv[:1])[0, 1]) > 0
    # sample 0 crosses after 2 steps (0.20 → 0.22): clean, 3 checks, 2 estimates; sample 1 runs all 8 steps
    assert res.queries_per_sample.tolist() == [1 + 3 + 2 * 4, 1 + 9 + 8 * 4]
    torch.testing.assert_close(res.x_adv[0], x[0] + 0.02, rtol=0, atol=1e-9)


def test_success_at_the_last_check_and_samples_wrong_when_clean() -> None:
    """Sample 0 crosses on its 2nd (= last) step, found by the final check; sample 1 is misclassified when
    clean and never queried; a batch of one sample is attacked like any other."""
    x = torch.tensor([0.2, 0.05], dtype=torch.float64).view(-1, 1, 1)
    y = torch.tensor([0, 1])  # Cubic() says class 0 at 0.05: sample 1 is wrong when clean
    res = SPSA(Cubic(), eps=0.1, steps=2, nb_samples=2, random_start=False)(x, y)
    assert res.success.tolist() == [True, True]
    torch.testing.assert_close(res.x_adv[0], x[0] + 0.02, rtol=0, atol=1e-9)
    assert torch.equal(res.x_adv[1], x[1]) and res.queries_per_sample.tolist() == [1 + 3 + 2 * 4, 1]
    one = SPSA(Cubic(), eps=0.1, steps=2, nb_samples=2, random_start=False, early_stop=False)(x[1:], y[:1])
    torch.testing.assert_close(one.x_adv[0], x[1] + 0.02, rtol=0, atol=1e-9)


def test_default_probe_blocks_hold_about_256_mb_of_float32_inputs() -> None:
    """max_batch_size=None: min(8192, 2^26 / inputs per sample) inputs per forward, in (probes, samples) blocks."""
    def blocks(d: int, nb: int) -> tuple[int, int]:
        out = SPSA(Cubic(), eps=0.1, nb_samples=nb)._blocks(torch.zeros(1).expand(1, d))
        assert all(type(v) is int for v in out)  # noqa: E721 (block sizes feed range())
        return out

    assert blocks(1, 2048) == (2048, 2)  # 8192 inputs: 4096 (sample, probe) pairs
    assert blocks(10_000, 100) == (100, 33)  # 2^26 // 10^4 = 6710 inputs: 3355 pairs
    assert blocks(10_000, 5000) == (3355, 1)
    assert blocks(1 << 26, 16) == (1, 1)  # at least one pair
    assert blocks(1, 1) == (1, 4096)


class Cubic3(torch.nn.Module):
    """Three logits ``[0, f(x), 3x − 2]``: near 0, ``f ≈ −1`` so the untargeted margin (y = 0) is ``f`` and the
    margin towards class 2 is ``3x − 2 − max(0, f) = 3x − 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = Cubic()(x)
        u = x.flatten(1).sum(1)
        return torch.cat([z, (3.0 * u - 2.0).unsqueeze(1)], 1)


def test_targeted_estimate_is_the_derivative_of_the_target_margin(points) -> None:  # type: ignore[no-untyped-def]
    x, y = points
    model = Cubic3()
    atk = SPSA(model, eps=0.1, nb_samples=3)
    target = torch.full_like(y, 2)
    ctx = AttackContext(model=model, threat=atk.threat, x=x, y=y, target=target,
                        eps=torch.full((len(x),), 0.1, dtype=x.dtype), mask=None, bounds=None,
                        loss_fn=get_loss("margin"), clean_logits=model(x), generator=torch.Generator().manual_seed(0))
    g = atk.estimate_gradient(ctx, ctx.active(), x)
    torch.testing.assert_close(g, torch.full_like(x, 3.0), rtol=1e-9, atol=1e-9)


def _names(arg: str) -> str:
    return rf"(^|[^\w]){arg}([^\w]|$)"


def test_argument_errors_name_the_argument() -> None:
    from medrobust.errors import ConfigError

    model = Cubic()
    for kw, name in (({"steps": 0}, "steps"), ({"nb_samples": 0}, "nb_samples"), ({"delta": None}, "delta"),
                     ({"delta": 0.0}, "delta"), ({"lr": None}, "lr"), ({"lr": -1.0}, "lr"), ({"update": "sgd"}, "update"),
                     ({"sign": "yes"}, "sign"), ({"random_start": 1}, "random_start"), ({"early_stop": "no"}, "early_stop"),
                     ({"max_batch_size": 1}, "max_batch_size")):
        with pytest.raises(ConfigError, match=_names(name)):
            SPSA(model, eps=0.1, **kw)
    assert SPSA(model, eps=0.1, max_batch_size=2).max_batch_size == 2


def test_ma_and_liang_defaults_100_steps_of_2048_probes() -> None:
    x = torch.tensor([[[0.0]]], dtype=torch.float64)
    res = SPSA(Cubic(), eps=0.01, early_stop=False)(x, torch.zeros(1, dtype=torch.long))
    assert res.queries_per_sample.tolist() == [1 + 101 + 100 * 2 * 2048]


def test_multi_lead_mask_and_raw_estimates(beats_x: torch.Tensor) -> None:
    """Two leads, a different mask per lead: probes and iterates leave every masked coordinate alone, also
    with raw (unnormalised) estimates fed to Adam."""
    x = beats_x[:4].double().repeat(1, 2, 1)[..., :40]  # (4, 2, 40)
    w = torch.linspace(-1, 1, 80, dtype=torch.float64).view(1, 2, 40)

    class Lin(torch.nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            s = (inp * w).flatten(1).sum(1)
            return torch.stack([torch.zeros_like(s), s - 100.0], 1)

    mask = torch.ones_like(x)
    mask[:, 0, :10] = 0
    mask[:, 1, 30:] = 0
    rec = Recorder(Lin())
    res = SPSA(rec, eps=0.05, steps=3, nb_samples=4, update="adam", sign=False, lr=0.01,
               early_stop=False)(x, torch.zeros(4, dtype=torch.long), mask=mask)
    assert bool(torch.isfinite(res.x_adv).all())
    off = mask == 0
    assert torch.equal(res.x_adv[off], x[off])
    for q in rec.inputs:  # every query, probes included, equals x on the masked coordinates of its sample
        n = len(q) // len(x)
        qq = q.view(len(x), n, 2, 40)
        assert torch.equal(qq[off.unsqueeze(1).expand_as(qq)], x.unsqueeze(1).expand_as(qq)[off.unsqueeze(1).expand_as(qq)])
    assert bool((res.x_adv[~off] != x[~off]).any())


def test_one_hot_soft_labels_give_the_hard_label_attack(points) -> None:  # type: ignore[no-untyped-def]
    x, y = points
    kw = dict(eps=0.1, steps=3, nb_samples=3, random_start=False, early_stop=False)
    hard = SPSA(Cubic(), **kw)(x, y)  # type: ignore[arg-type]
    soft = SPSA(Cubic(), **kw)(x, torch.nn.functional.one_hot(y, 2).double())  # type: ignore[arg-type]
    torch.testing.assert_close(soft.x_adv, hard.x_adv, rtol=0, atol=0)
