"""Properties every registered attack must have, on 12-lead ECG, single-lead beats and images."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import Attack, AttackContext, AttackResult, attack_class, available_attacks, get_attack
from medrobust.attacks.threat import lp_norm

from .conftest import Case, small_kwargs

ATTACKS = [a for a in available_attacks() if not getattr(attack_class(a), "universal", False)]
"""Per-sample attacks: the properties below (batch independence, per-sample radii, targets) do not hold for a
universal perturbation, whose sample outcomes depend on the call's other samples (tests/attacks/test_universal_attack.py)."""


def test_registry_lists_the_core_attacks() -> None:
    assert {"fgsm", "pgd", "sap", "apgd"} <= set(ATTACKS)


def _run(name: str, case: Case, norm: str, **extra: object) -> tuple[AttackResult, float]:
    eps = case.eps_linf if norm == "linf" else case.eps_l2
    kw = {**small_kwargs(name), **extra}
    atk = get_attack(name, case.model, eps=eps, norm=norm, bounds=case.bounds,
                     generator=torch.Generator().manual_seed(0), **kw)
    assert isinstance(atk, Attack)
    return atk(case.x, case.y), eps


class RawSpy:
    """Captures the attack's own output (``ctx.x_out``) before ``Attack._finalize`` could repair it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raw: torch.Tensor | None = None
        orig = Attack._finalize

        def spy(atk: Attack, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor]:
            self.raw = ctx.x_out.clone()
            return orig(atk, ctx)

        monkeypatch.setattr(Attack, "_finalize", spy)


def _case_mask(case: Case) -> torch.Tensor:
    if case.name == "ecg12":
        mask = torch.zeros(1, 12, 1)
        mask[:, :6] = 1  # limb leads only
    elif case.name == "beat":
        mask = torch.zeros(1, 1, 187)
        mask[..., 40:120] = 1  # one time segment
    else:
        mask = torch.zeros(1, 1, 28, 28)
        mask[..., 7:21, 7:21] = 1  # central patch
    return mask


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS)
def test_raw_iterate_is_admissible_before_finalize(name: str, norm: str, case: Case,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack itself stays in the ball, the mask and the bounds: checked before the final re-projection."""
    spy = RawSpy(monkeypatch)
    mask = _case_mask(case)
    res, eps = _run(name, case, norm, mask=mask)
    raw = spy.raw
    assert raw is not None and raw.shape == case.x.shape and raw.dtype == case.x.dtype
    delta = raw - case.x
    ulp = 4 * torch.finfo(case.x.dtype).eps * float(case.x.abs().max().clamp_min(1.0))
    assert float(lp_norm(delta, norm, exact=True).max()) <= eps * (1 + 1e-6) + ulp
    outside = (mask == 0).expand_as(case.x)
    assert torch.equal(raw[outside], case.x[outside])
    if case.bounds is not None:
        assert float(raw.min()) >= case.bounds[0] and float(raw.max()) <= case.bounds[1]
    assert bool((delta.abs() > 0).any())  # something was perturbed


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS)
def test_result_is_consistent_with_a_fresh_forward(name: str, norm: str, case: Case) -> None:
    res, eps = _run(name, case, norm)
    x_adv = res.x_adv
    assert x_adv.shape == case.x.shape and x_adv.dtype == case.x.dtype
    torch.testing.assert_close(res.norms, lp_norm(x_adv - case.x, norm, exact=True))
    # every sample is clean-correct (labels = clean predictions), so all are attacked
    assert bool(res.clean_correct.all())
    if getattr(attack_class(name), "black_box", False):  # query-only attacks: no gradient, at least one query each
        assert res.grad_evals == 0 and bool((res.queries_per_sample >= 2).all())
    else:
        assert bool((res.grad_evals_per_sample >= 1).all())
    # success and predictions agree with a fresh forward pass of the returned examples
    with torch.no_grad():
        pred = case.model(x_adv).argmax(1)
    assert torch.equal(pred, res.adv_pred)
    assert torch.equal(res.success, pred != case.y)
    assert res.queries >= res.grad_evals >= (0 if getattr(attack_class(name), "black_box", False) else 1)
    assert res.config["attack"] == name


@pytest.mark.parametrize("name", ATTACKS)
def test_same_generator_same_output(name: str, case: Case) -> None:
    a, _ = _run(name, case, "linf")
    b, _ = _run(name, case, "linf")
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", ATTACKS)
def test_lead_and_segment_masks(name: str, case: Case) -> None:
    x = case.x
    mask = _case_mask(case)
    res, _ = _run(name, case, "linf", mask=mask)
    outside = (mask == 0).expand_as(x)
    assert torch.equal(res.x_adv[outside], x[outside])
    assert bool(((res.x_adv - x).abs() > 0)[~outside].any())  # something was perturbed inside


@pytest.mark.parametrize("name", ATTACKS)
def test_per_sample_padding_mask_at_call(name: str, ecg12_x: torch.Tensor) -> None:
    """Variable-length records: the part after each record's end must stay exactly as it was (zeros)."""
    from .conftest import SmallECGNet

    torch.manual_seed(1)
    model = SmallECGNet(12)
    lengths = torch.tensor([1000, 900, 800, 700, 600, 500, 1000, 950, 850, 750, 650, 550])
    mask = (torch.arange(1000).view(1, 1, -1) < lengths.view(-1, 1, 1)).float()
    x = ecg12_x * mask  # zero padding after the end
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = get_attack(name, model, eps=0.1, generator=torch.Generator().manual_seed(0), **small_kwargs(name))
    res = atk(x, y, mask=mask)
    pad = (mask == 0).expand_as(x)
    assert bool((res.x_adv[pad] == 0).all())
    assert bool((res.norms <= 0.1).all())


@pytest.mark.parametrize("name", ATTACKS)
def test_model_modes_restored(name: str, beats_x: torch.Tensor) -> None:
    from .conftest import SmallECGNet

    torch.manual_seed(0)
    model = torch.nn.Sequential(SmallECGNet(1, classes=5), torch.nn.Dropout(0.5))
    model.train()
    model[0].net[0].eval()  # a sub-module deliberately in eval mode
    model[0].net[-1].weight.requires_grad_(False)  # a frozen parameter
    seen: list[bool] = []
    model[1].register_forward_hook(lambda mod, inp, out: seen.append(mod.training))
    y = torch.zeros(len(beats_x), dtype=torch.long)
    get_attack(name, model, eps=0.05, **small_kwargs(name))(beats_x, y)
    assert seen and not any(seen)  # dropout was off during the attack
    assert model.training and model[1].training and model[0].training
    assert not model[0].net[0].training
    assert model[0].net[2].weight.requires_grad and not model[0].net[-1].weight.requires_grad
    assert model[0].net[2].weight.grad is None  # parameters never accumulate gradients


@pytest.mark.parametrize("name", ATTACKS)
def test_float64_batch_keeps_dtype(name: str, beats_x: torch.Tensor) -> None:
    from .conftest import SmallECGNet

    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5).double()
    x = beats_x.double()
    with torch.no_grad():
        y = model(x).argmax(1)
    res = get_attack(name, model, eps=0.05, bounds=(0, 1), **small_kwargs(name))(x, y)
    assert res.x_adv.dtype == torch.float64
    assert bool(((res.x_adv - x).abs().flatten(1).amax(1) <= 0.05).all())


@pytest.mark.parametrize("name", ATTACKS)
def test_relative_eps_modes(name: str, ecg12_x: torch.Tensor) -> None:
    """ε as a fraction of each record's peak-to-peak amplitude and as a target SNR."""
    from .conftest import SmallECGNet

    torch.manual_seed(0)
    model = SmallECGNet(12)
    x = ecg12_x
    with torch.no_grad():
        y = model(x).argmax(1)
    ptp = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    res = get_attack(name, model, eps=0.01, eps_mode="ptp", **small_kwargs(name))(x, y)
    torch.testing.assert_close(res.eps, 0.01 * ptp)
    assert bool((res.norms <= res.eps).all())
    res = get_attack(name, model, eps=30.0, eps_mode="snr_db", norm="l2", **small_kwargs(name))(x, y)
    noise = (res.x_adv - x).double().pow(2).flatten(1).mean(1)
    signal = x.double().pow(2).flatten(1).mean(1)
    assert bool((10 * torch.log10(signal / noise.clamp_min(1e-30)) >= 30.0 - 1e-4).all())


@pytest.mark.parametrize("name", ATTACKS)
def test_targeted_mode_reaches_targets(name: str, beats_x: torch.Tensor) -> None:
    """A targeted attack really attacks: white-box attacks reach the target on most beats at this budget."""
    from .conftest import SmallECGNet

    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    with torch.no_grad():  # centred logits: every class is reachable
        model.net[-1].bias -= model(beats_x).mean(0)
        logits = model(beats_x)
    y = logits.argmax(1)
    target = logits.argsort(1)[:, -2]  # the runner-up class
    kw = small_kwargs(name)
    res = get_attack(name, model, eps=0.3, bounds=(0, 1), **kw)(beats_x, y, target=target)
    assert res.targeted
    with torch.no_grad():
        fresh = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, fresh == target)
    if not getattr(attack_class(name), "black_box", False) and name in {"fgsm", "pgd", "apgd", "sap"}:
        assert int(res.success.sum()) >= len(y) // 2
