"""PGD specifics: active-set early stop, restarts, the Adamax update, targeted mode."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import PGD
from medrobust.attacks.base import AttackContext
from medrobust.attacks.ascent import make_rule
from medrobust.errors import ConfigError

from .conftest import SmallECGNet


@pytest.fixture()
def beat_model(beats_x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():
        y = model(beats_x).argmax(1)
    return model, beats_x, y


def test_early_stop_skips_misclassified_and_stops_successes(beat_model) -> None:
    model, x, y = beat_model
    y = y.clone()
    y[:2] = (y[:2] + 1) % 5  # two samples misclassified when clean
    res = PGD(model, eps=0.3, steps=20, bounds=(0, 1), generator=torch.Generator().manual_seed(0))(x, y)
    assert bool((res.grad_evals_per_sample[:2] == 0).all())  # never attacked
    assert torch.equal(res.x_adv[:2], x[:2]) and bool(res.success[:2].all())
    full = PGD(model, eps=0.3, steps=20, bounds=(0, 1), early_stop=False,
               generator=torch.Generator().manual_seed(0))(x, y)
    assert bool((full.grad_evals_per_sample == 20).all())
    assert res.grad_evals < full.grad_evals
    # early stop keeps every success that the full run finds on the attacked samples
    assert bool((res.success | ~full.success).all())


def test_restarts_draw_new_starts_and_keep_the_best(beat_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each restart starts from a new random point; a sample succeeds iff some iterate of some restart did,
    and its output is that successful iterate."""
    model, x, y = beat_model
    with torch.no_grad():  # centred logits: small margins, some samples need a second or third restart
        model.net[-1].bias -= model(x).mean(0)
        y = model(x).argmax(1)
    starts: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    orig_start, orig_eval = AttackContext.random_start, AttackContext.evaluate

    def spy_start(ctx: AttackContext, act):  # type: ignore[no-untyped-def]
        x0 = orig_start(ctx, act)
        starts.append((act.idx.clone(), x0.clone()))
        return x0

    def spy_eval(ctx: AttackContext, act, leaf, **kw):  # type: ignore[no-untyped-def]
        out = orig_eval(ctx, act, leaf, **kw)
        seen.append((act.idx.clone(), out[0].clone(), out[1].argmax(1)))
        return out

    monkeypatch.setattr(AttackContext, "random_start", spy_start)
    monkeypatch.setattr(AttackContext, "evaluate", spy_eval)
    eps = 0.004
    res = PGD(model, eps=eps, steps=3, rel_step_size=0.5, restarts=4, bounds=(0, 1),
              generator=torch.Generator().manual_seed(5))(x, y)
    assert len(starts) >= 2
    for i in range(len(x)):
        firsts = [x0[(idx == i).nonzero()[0, 0]] for idx, x0 in starts if bool((idx == i).any())]
        for a in firsts:
            assert not torch.equal(a, x[i]) and float((a - x[i]).abs().max()) <= eps + 1e-7
        for a, b in zip(firsts, firsts[1:]):
            assert not torch.equal(a, b)  # a new random start for every restart
        hits = [xin[(idx == i).nonzero()[0, 0]] for idx, xin, pred in seen
                if bool((idx == i).any()) and int(pred[(idx == i).nonzero()[0, 0]]) != int(y[i])]
        assert bool(res.success[i]) == bool(hits)
        if hits:
            assert torch.equal(res.x_adv[i], hits[0])  # early stop: the first successful iterate is kept
    n_attacked = [sum(bool((idx == i).any()) for idx, _ in starts) for i in range(len(x))]
    assert max(n_attacked) >= 2 and bool(res.success.any())  # some sample needed a restart; some succeeded
    with pytest.raises(ConfigError, match="random_start"):
        PGD(model, eps=0.1, restarts=2, random_start=False)


@pytest.mark.parametrize("name", ["adamax", "adam"])
def test_ascent_rules_match_torch_optim_row_by_row(name: str) -> None:
    """Adam/Adamax rules equal torch.optim on every row, with rows updated a different number of times."""
    g = torch.Generator().manual_seed(0)
    opt_cls = torch.optim.Adamax if name == "adamax" else torch.optim.Adam
    ps = [torch.zeros(3, 7, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    opts = [opt_cls([p], lr=0.01) for p in ps]
    ours = torch.zeros(3, 3, 7, dtype=torch.float64)
    rule = make_rule(name, n=3, shape=(3, 7), device="cpu", dtype=torch.float64)
    for it in range(6):
        rows = torch.tensor([0, 1, 2]) if it < 3 else torch.tensor([0, 2])  # row 1 stops early
        d = torch.randn(len(rows), 3, 7, generator=g, dtype=torch.float64)
        for k, r in enumerate(rows.tolist()):
            ps[r].grad = -d[k]  # the optimiser minimises -d
            opts[r].step()
        ours[rows] += rule.step(d, rows, scale=torch.full((len(rows),), 0.01, dtype=torch.float64))
    for r in range(3):
        torch.testing.assert_close(ours[r], ps[r].detach(), rtol=1e-12, atol=1e-15)


def test_sign_rule_is_the_steepest_direction() -> None:
    g = torch.tensor([[3.0, -4.0, 0.0]])
    lin = make_rule("sign", n=1, shape=(3,), device="cpu", dtype=torch.float32, norm="linf")
    l2 = make_rule("sign", n=1, shape=(3,), device="cpu", dtype=torch.float32, norm="l2")
    assert lin.step(g, torch.tensor([0])).tolist() == [[1.0, -1.0, 0.0]]
    torch.testing.assert_close(l2.step(g, torch.tensor([0]), scale=torch.tensor([2.0])), torch.tensor([[1.2, -1.6, 0.0]]))
    with pytest.raises(ConfigError, match="ascent rule"):
        make_rule("rmsprop", n=1, shape=(3,), device="cpu", dtype=torch.float32)


def test_adamax_update_runs_and_stays_in_ball(beat_model) -> None:
    model, x, y = beat_model
    res = PGD(model, eps=0.05, steps=10, step_size=0.01, update="adamax", bounds=(0, 1),
              generator=torch.Generator().manual_seed(0))(x, y)
    assert bool((res.norms <= 0.05).all())
    with pytest.raises(ConfigError, match="update"):
        PGD(model, eps=0.05, update="adam")


def test_targeted_linear_reaches_the_target() -> None:
    """Three-class linear model: a target class is reachable with a large enough budget."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 3))
    x = torch.randn(16, 1, 20)
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1) % 3
    res = PGD(model, eps=5.0, steps=50, rel_step_size=0.05, loss="margin")(x, y, target=target)
    assert bool(res.success.all()) and torch.equal(res.adv_pred, target)


def test_step_size_argument_checks(beat_model) -> None:
    model, _, _ = beat_model
    with pytest.raises(ConfigError, match="not both"):
        PGD(model, eps=0.1, step_size=0.01, rel_step_size=0.1)
    with pytest.raises(ConfigError, match="step_size"):
        PGD(model, eps=0.1, step_size=-0.01)
    assert PGD(model, eps=0.1, steps=10).rel_step_size == pytest.approx(0.25)


def test_without_early_stop_the_final_iterate_is_returned_even_after_a_success() -> None:
    """On the bump model fixed-step PGD enters and leaves the small adversarial ball; with
    ``early_stop=False`` the output is the last iterate (adversarial training's example), not a success."""
    from .test_apgd import Bump

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 4, generator=g, dtype=torch.float64) * 0.6 - 0.3
    model = Bump(torch.zeros(1, 1, 4, dtype=torch.float64), r=0.05)
    y = torch.zeros(16, dtype=torch.long)
    eps, alpha, steps = 0.5, 0.04, 30
    res = PGD(model, eps=eps, steps=steps, step_size=alpha, random_start=False, early_stop=False)(x, y)
    xa, hit_then_lost = x.clone(), torch.zeros(16, dtype=torch.bool)
    for _ in range(steps):
        xa.requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = x + (xa.detach() + alpha * grad.sign() - x).clamp(-eps, eps)
        hit_then_lost |= model(xa).argmax(1) == 1
    final_adv = model(xa).argmax(1) == 1
    hit_then_lost &= ~final_adv
    assert bool(hit_then_lost.any())  # some sample was adversarial on the way but not at the end
    torch.testing.assert_close(res.x_adv, xa, rtol=0, atol=1e-12)
    assert torch.equal(res.success, final_adv)


@pytest.mark.parametrize("init_std", [None, 0.02])
def test_gaussian_start_is_x_plus_scaled_noise_in_the_ball(init_std, monkeypatch: pytest.MonkeyPatch) -> None:
    """``random_start="gaussian"``: the first iterate is ``x + init_std·N(0, I)`` (default 0.001, Zhang et al.)
    projected on the ε-ball and the bounds, drawn from the samples' streams (``randn``); one plain sign step
    follows. Kills: the uniform start, the wrong scale, no projection, no start."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 8, generator=g, dtype=torch.float64) * 0.98 + 0.01
    noise = torch.randn(6, 1, 8, generator=g, dtype=torch.float64) * 3.0  # large: some coordinates leave the ball
    monkeypatch.setattr(AttackContext, "randn", lambda self, act, *shape: noise[act.idx].to(self.x.dtype))
    w = torch.randn(2, 8, generator=g, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2, bias=False).double())
    with torch.no_grad():
        model[1].weight.copy_(w)
    y = torch.zeros(6, dtype=torch.long)
    eps, step = 0.05, 0.004
    kw = {} if init_std is None else {"init_std": init_std}
    atk = PGD(model, eps=eps, steps=1, step_size=step, random_start="gaussian", early_stop=False, bounds=(0, 1), **kw)
    res = atk(x, y)
    std = 0.001 if init_std is None else init_std
    x0 = (x + (std * noise).clamp(-eps, eps)).clamp(0, 1)
    grad_sign = (w[1] - w[0]).sign().view(1, 1, 8)  # CE gradient direction of a linear two-class model
    expect = (x + (x0 + step * grad_sign - x).clamp(-eps, eps)).clamp(0, 1)
    torch.testing.assert_close(res.x_adv, expect, rtol=0, atol=1e-12)
    assert atk.hyperparameters()["init_std"] == std and atk.hyperparameters()["random_start"] == "gaussian"


def test_random_start_names_and_init_std_errors(beat_model) -> None:
    model, _, _ = beat_model
    assert PGD(model, eps=0.1, random_start="uniform").random_start is True
    assert PGD(model, eps=0.1, random_start="none").random_start is False
    assert PGD(model, eps=0.1).hyperparameters()["init_std"] is None  # a number only where it is used
    with pytest.raises(ConfigError, match=r"random_start must be .*'gaussian', got 'normal'"):
        PGD(model, eps=0.1, random_start="normal")
    with pytest.raises(ConfigError, match=r"^init_std=0.01 is the Gaussian start's scale; pass "
                                          r"random_start='gaussian' with it, or drop it\.$"):
        PGD(model, eps=0.1, init_std=0.01)
    with pytest.raises(ConfigError, match=r"^init_std must be >= 0.0, got -1.0\.$"):
        PGD(model, eps=0.1, random_start="gaussian", init_std=-1.0)


@pytest.mark.parametrize("start", [True, False, "gaussian"])
def test_the_first_iterate_is_the_chosen_start(start) -> None:
    """One step of 1e-9: the output is (almost) the start. Uniform: somewhere in the box, not x; none: x itself;
    Gaussian (init_std 0.02, the real per-sample normal draws): every coordinate moved, inside the ball."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 2, 6, generator=g, dtype=torch.float64) * 0.5 + 0.25
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3).double())
    y = model(x).argmax(1)
    kw = {"init_std": 0.02} if start == "gaussian" else {}
    res = PGD(model, eps=0.05, steps=1, step_size=1e-9, random_start=start, early_stop=False,
              generator=torch.Generator().manual_seed(1), **kw)(x, y)
    d = (res.x_adv - x).abs()
    assert float(d.max()) <= 0.05 + 1e-9
    if start is False:
        assert float(d.max()) <= 2e-9
    else:
        assert float(d.max()) > 0.01 and bool((d > 1e-6).all())
