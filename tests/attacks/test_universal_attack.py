"""``get_attack("uap")``: one perturbation for every sample of the call, checked against a linear oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import UniversalAttack, get_attack
from medrobust.attacks.registry import attack_class
from medrobust.errors import ConfigError

from .test_uap import Linear2


def _linear_batch(n: int = 40, d: int = 16, seed: int = 0) -> tuple[Linear2, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear binary classifier ``s = w·x + b`` (‖w‖ = 2) and ``n`` inputs of class 0 whose scores ``s`` are
    spread over [-3, -0.05]: the best universal L2 step of radius ε is ``ε·w/‖w‖``, which raises every score
    by ``2ε`` and flips exactly the samples with ``s > -2ε``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, d, generator=g)
    w = 2.0 * w / w.norm()
    model = Linear2(w, b=0.0)
    base = torch.randn(n, 1, d, generator=g)
    base = base - (base.flatten(1) @ w.flatten() / 4.0).view(-1, 1, 1) * w   # remove the w component
    s = -torch.linspace(0.05, 3.0, n)
    x = base + (s / 4.0).view(-1, 1, 1) * w                                  # now w·x = s
    return model, x, torch.zeros(n, dtype=torch.long), s


def test_is_registered_as_universal() -> None:
    assert attack_class("uap") is UniversalAttack and UniversalAttack.universal is True


@pytest.mark.parametrize("eps", [0.3, 0.8])
def test_finds_the_optimal_universal_step_of_a_linear_model(eps: float) -> None:
    model, x, y, s = _linear_batch()
    res = get_attack("uap", model, eps=eps, norm="l2", passes=30, batch_size=16,
                     generator=torch.Generator().manual_seed(0))(x, y)
    delta = (res.x_adv - x).flatten(1)
    torch.testing.assert_close(delta, delta[:1].expand_as(delta))            # one perturbation for all
    assert float(delta[0].norm()) <= eps * (1 + 1e-6)
    w = model.w.detach().flatten()
    cos = float(delta[0] @ w / (delta[0].norm() * w.norm()))
    assert cos > 0.99 and float(delta[0].norm()) > 0.99 * eps               # the oracle's step, whole budget
    assert torch.equal(res.success, s + float(delta[0] @ w) > 0)            # every sample got that one step
    oracle = s > -2 * eps
    assert int((res.success != oracle).sum()) <= 1                          # ≤ 1 borderline sample differs
    assert 0 < int(res.success.sum()) < len(x)                              # both outcomes occur at this ε


def test_stronger_than_a_random_vector_of_the_same_norm() -> None:
    model, x, y, _ = _linear_batch(n=60, d=64, seed=1)
    res = get_attack("uap", model, eps=0.5, norm="l2", passes=10)(x, y)
    r = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(3))
    r = 0.5 * r / r.norm()
    with torch.no_grad():
        random_flips = int((model(x + r).argmax(1) != 0).sum())
    assert int(res.success.sum()) >= random_flips + 10


def test_masked_coordinates_and_samples_stay_clean() -> None:
    model, x, y, _ = _linear_batch()
    mask = torch.ones_like(x)
    mask[:5] = 0.0                    # five samples may not change at all
    mask[5:, :, :4] = 0.0             # the first four coordinates of the others neither
    res = get_attack("uap", model, eps=0.8, norm="l2", passes=10)(x, y, mask=mask)
    delta = res.x_adv - x
    assert bool((delta[:5] == 0).all()) and bool((delta[:, :, :4] == 0).all())
    assert float(delta[5:].abs().sum()) > 0


def test_bounds_clip_each_sample_but_not_the_shared_vector() -> None:
    model, x, y, _ = _linear_batch()
    x = (x - x.min()) / (x.max() - x.min())        # in [0, 1]; the scores change, the model stays linear
    res = get_attack("uap", model, eps=2.0, norm="l2", bounds=(0.0, 1.0), passes=5)(x, y)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool((res.norms <= 2.0 + 1e-6).all())


def test_same_generator_same_perturbation() -> None:
    model, x, y, _ = _linear_batch(d=32, seed=2)
    runs = [get_attack("uap", model, eps=0.4, norm="l2", passes=4, batch_size=8,
                       generator=torch.Generator().manual_seed(7))(x, y).x_adv for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_refusals_name_the_argument() -> None:
    model, x, y, _ = _linear_batch()
    with pytest.raises(ConfigError, match="eps_mode='abs'"):
        get_attack("uap", model, eps=0.01, eps_mode="ptp")
    with pytest.raises(ConfigError, match="passes"):
        get_attack("uap", model, eps=0.1, passes=0)
    with pytest.raises(ConfigError, match="kappa"):
        get_attack("uap", model, eps=0.1, kappa=-1.0)
    with pytest.raises(ConfigError, match="one radius"):
        get_attack("uap", model, eps=torch.full((len(x),), 0.1).index_fill(0, torch.tensor([0]), 0.2))(x, y)
    with pytest.raises(ConfigError, match="untargeted"):
        get_attack("uap", model, eps=0.1)(x, y, target=torch.ones(len(x), dtype=torch.long))


def test_is_not_an_nn_module_trap() -> None:
    """A plain callable model works like any attack's (the solver does not need an ``nn.Module``)."""
    model, x, y, _ = _linear_batch()
    res = get_attack("uap", lambda z: model(z), eps=0.8, norm="l2", passes=5)(x, y)
    assert isinstance(model, nn.Module) and int(res.success.sum()) > 0


# ------------------------------------------------------------------------------------------ settings reach the solver
def test_settings_reach_the_solver_and_its_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack hands its radius, norm, passes, mini-batch, κ, step, bounds, seed and the call's mask to the
    batched solver (a spy around the real class records them)."""
    import medrobust.attacks.universal_attack as ua

    seen: dict = {}

    class Spy(ua.UniversalPerturbation):
        def __init__(self, model, **kw):
            seen["init"] = kw
            super().__init__(model, **kw)

        def fit(self, x, *, mask=None):
            seen["fit_mask"] = mask
            return super().fit(x, mask=mask)

        def apply(self, x, delta, *, mask=None):
            seen["apply_mask"] = mask
            return super().apply(x, delta, mask=mask)

    monkeypatch.setattr(ua, "UniversalPerturbation", Spy)
    model, x, y, _ = _linear_batch()
    x = (x - x.min()) / (x.max() - x.min())
    mask = torch.ones_like(x)
    mask[0] = 0.0
    get_attack("uap", model, eps=0.3, norm="linf", bounds=(0.0, 1.0), passes=3, batch_size=8, kappa=0.5,
               step_size=0.01, generator=torch.Generator().manual_seed(1))(x, y, mask=mask)
    gen, eps = seen["init"].pop("generator"), seen["init"].pop("eps")
    assert isinstance(gen, torch.Generator) and eps == pytest.approx(0.3, rel=1e-6)
    assert seen["init"] == {"norm": "linf", "zeta": None, "method": "batched", "max_iter": 3,
                            "batch_size": 8, "kappa": 0.5, "step_size": 0.01, "bounds": (0.0, 1.0)}
    assert torch.equal(seen["fit_mask"], mask) and torch.equal(seen["apply_mask"], mask)


def test_defaults_and_hyperparameters() -> None:
    model, _, _, _ = _linear_batch()
    assert get_attack("uap", model, eps=0.1).hyperparameters() == {
        "passes": 20, "batch_size": 64, "kappa": 3.0, "step_size": None, "loss": "ce"}
    atk = get_attack("uap", model, eps=0.1, passes=1, batch_size=1, kappa=0, step_size=0.5)
    assert (atk.passes, atk.batch_size, atk.kappa, atk.step_size) == (1, 1, 0.0, 0.5)


@pytest.mark.parametrize("kw, message", [
    ({"passes": 0}, r"^passes must be an integer >= 1, got 0\.$"),
    ({"batch_size": 0}, r"^batch_size must be an integer >= 1, got 0\.$"),
    ({"kappa": -0.5}, r"^kappa must be a number >= 0, got -0\.5\.$"),
    ({"kappa": True}, r"^kappa must be a number >= 0, got True\.$"),
    ({"kappa": "3"}, r"^kappa must be a number >= 0, got '3'\.$"),
    ({"step_size": -1.0}, r"^step_size must be a positive finite number, got -1\.0\.$"),
])
def test_bad_settings_name_the_argument(kw: dict, message: str) -> None:
    model, _, _, _ = _linear_batch()
    with pytest.raises(ConfigError, match=message):
        get_attack("uap", model, eps=0.1, **kw)


def test_call_refusals_say_why() -> None:
    model, x, y, _ = _linear_batch()
    with pytest.raises(ConfigError, match=r"^the universal attack is untargeted here \(one perturbation away from "
                                          r"each sample's clean prediction\); for a targeted UAP use "
                                          r"UniversalPerturbation\(target=t\)\.$"):
        get_attack("uap", model, eps=0.1)(x, y, target=torch.ones(len(x), dtype=torch.long))
    eps = torch.full((len(x),), 0.1)
    eps[-1] = 0.2
    with pytest.raises(ConfigError, match=r"^the universal attack applies one perturbation to every sample: pass one "
                                          r"radius \(a scalar eps\), not per-sample radii\.$"):
        get_attack("uap", model, eps=eps)(x, y)


# ------------------------------------------------------------------------------------------ behaviour
def test_counts_one_gradient_per_pass_and_its_forwards() -> None:
    """ξ too small to flip anything: every pass runs. Per sample: one gradient per pass; forwards = the clean one,
    one per pass, the solver's re-score and the final one (no re-projection: the output is inside the bounds)."""
    model, x, y, _ = _linear_batch()
    x = (x - x.min()) / (x.max() - x.min())
    for passes in (3, None):
        kw = {} if passes is None else {"passes": passes}
        res = get_attack("uap", model, eps=1e-4, norm="l2", bounds=(0.0, 1.0), **kw)(x, y)
        p = 20 if passes is None else passes
        assert not bool(res.success.any())
        assert torch.equal(res.grad_evals_per_sample, torch.full((len(x),), p))
        assert torch.equal(res.queries_per_sample, torch.full((len(x),), p + 3))


def test_a_batch_of_one_and_misclassified_samples_get_the_perturbation() -> None:
    model, x, y, _ = _linear_batch()
    one = get_attack("uap", model, eps=0.8, norm="l2", passes=3)(x[-1:], y[-1:])
    assert 0.1 < float((one.x_adv - x[-1:]).norm()) <= 0.8
    y = y.clone()
    y[:3] = 1                                   # three samples misclassified before the attack
    res = get_attack("uap", model, eps=0.8, norm="l2", passes=5)(x, y)
    delta = (res.x_adv - x).flatten(1)
    torch.testing.assert_close(delta, delta[:1].expand_as(delta))      # those three are perturbed too


def test_linf_radius_and_step_size_are_used() -> None:
    model, x, y, _ = _linear_batch()
    res = get_attack("uap", model, eps=0.1, norm="linf", passes=30, batch_size=8)(x, y)
    d = (res.x_adv - x)[0]
    assert float(d.abs().max()) == pytest.approx(0.1, rel=1e-4) and float(d.norm()) > 0.2   # sign steps: a corner
    tiny = get_attack("uap", model, eps=0.8, norm="l2", passes=2, step_size=1e-4)(x, y)
    assert float((tiny.x_adv - x)[0].norm()) <= 2 * 3 * 1e-4                                  # ≤ steps × step


def test_another_seed_gives_another_perturbation() -> None:
    model, x, y, _ = _linear_batch(n=64, d=32, seed=4)
    out = [get_attack("uap", model, eps=0.4, norm="l2", passes=2, batch_size=4, kappa=0.0,
                      generator=torch.Generator().manual_seed(s))(x, y).x_adv for s in (1, 2)]
    assert not torch.equal(out[0], out[1])


class _MaskedLinear(Linear2):
    """A linear binary classifier that takes the padding mask (``forward(x, mask=)``) and zeroes padded inputs."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert mask is None or mask.shape == x.shape, "the model gets one mask row per input row"
        return super().forward(x if mask is None else x * mask)


def test_a_model_that_takes_the_padding_mask_gets_its_rows() -> None:
    lin, x, y, _ = _linear_batch()
    model = _MaskedLinear(lin.w.detach(), b=0.0)
    mask = torch.ones_like(x)
    mask[:, :, -3:] = 0.0
    mask[0] = 0.0
    res = get_attack("uap", model, eps=0.8, norm="l2", passes=3)(x, y, mask=mask)
    delta = res.x_adv - x
    assert bool((delta[0] == 0).all()) and bool((delta[:, :, -3:] == 0).all())
    assert int(res.success.sum()) > 0
