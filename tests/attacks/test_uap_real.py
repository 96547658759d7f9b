"""Universal adversarial perturbations on real data slices (MIT-BIH beats, BreastMNIST images, a trained
checkpoint): the ball and the bounds, masks, the batched solver's best pass, and a real UAP against its random
controls.

These load real data (seconds each) and are kept out of the mutation-testing map of ``attacks/universal.py``,
whose mapped tests (``test_uap.py``, ``test_uap_reference.py``, ``test_uap_props.py``) are synthetic and fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrobust.attacks import UniversalPerturbation

from .conftest import SmallECGNet, SmallImageNet
from .test_uap import gen

REPO = Path(__file__).resolve().parents[2]
CKPT = REPO / "benchmarks" / "checkpoints" / "mitdb_cnn1_intra"


@pytest.mark.parametrize("method", ["batched", "fgsm", "deepfool"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_perturbation_stays_in_ball_and_bounds(method: str, norm: str, beats_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    uap = UniversalPerturbation(model, norm=norm, zeta=0.3, method=method, max_iter=1, step_size=0.05,
                                bounds=(0.0, 1.0), deepfool_iter=3, num_candidates=2, generator=gen())
    res = uap.fit(beats_x)
    assert res.delta.shape == beats_x.shape[1:]
    assert res.xi == pytest.approx(0.3 * float(beats_x.flatten(1).norm(dim=1).mean() if norm == "l2"
                                                else beats_x.flatten(1).abs().amax(1).mean()), rel=1e-6)
    assert res.norms[norm] <= res.xi * (1 + 1e-6)
    assert res.queries > 0 and len(res.history) == 1
    ev = uap.evaluate(beats_x, None, res)
    assert 0.0 <= ev["fooling_rate"] <= 1.0 and ev["delta_norms"][norm] <= res.xi * (1 + 1e-6)


def test_image_shape_and_model_mode_restored(images_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SmallImageNet().train()
    uap = UniversalPerturbation(model, norm="l2", zeta=0.04, method="batched", max_iter=2, bounds=(0.0, 1.0),
                                generator=gen())
    res = uap.fit(images_x)
    assert res.delta.shape == (1, 28, 28) and res.norms["l2"] <= res.xi * (1 + 1e-6)
    assert model.training and all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ real model
def test_uap_beats_random_control_on_real_beats(shared_data: Path) -> None:
    from medrobust.data import load_dataset
    from medrobust.models import load_checkpoint

    model = load_checkpoint(CKPT)
    ds = load_dataset("mitdb", root=shared_data, split="test")
    idx = torch.randperm(len(ds), generator=gen(0))
    x_fit, x_test, y_test = ds.x[idx[:400]], ds.x[idx[400:1400]], ds.y[idx[400:1400]]
    uap = UniversalPerturbation(model, norm="l2", zeta=0.1, method="batched", max_iter=4, batch_size=100,
                                bounds=(0.0, 1.0), generator=gen(0))
    res = uap.fit(x_fit)
    assert res.norms["l2"] <= res.xi * (1 + 1e-6)
    ev = uap.evaluate(x_test, y_test, res)
    ctrl = [uap.evaluate(x_test, y_test, uap.random_control(kind=k, generator=gen(1)))["fooling_rate"]
            for k in ("uniform", "sign")]
    # measured: UAP 0.316 held-out fooling rate; controls 0.026 (uniform) and 0.021 (sign)
    assert ev["fooling_rate"] >= 0.15
    assert ev["fooling_rate"] >= 5 * max(max(ctrl), 0.01)
    assert ev["clean_accuracy"] > 0.9


# ------------------------------------------------------------------------------------------ bounds and masks
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_auto_bounds_from_the_datasets_units_keep_beats_in_unit_range(norm: str, shared_data: Path) -> None:
    """A ζ = 8 % UAP fitted on MIT-BIH beats ("normalized [0, 1]") keeps every perturbed beat in [0, 1] by
    default; the same δ applied without bounds leaves [0, 1] (so the check is not vacuous)."""
    from medrobust.data import load_dataset

    ds = load_dataset("mitdb", root=shared_data, split="test", records=["100"])
    ds = ds.subset(torch.arange(0, len(ds), max(1, len(ds) // 64))[:64])
    assert ds.meta.units == "normalized [0, 1]"
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    uap = UniversalPerturbation(model, norm=norm, zeta=0.08, max_iter=2, generator=gen())
    res = uap.fit(ds)
    assert uap.config()["resolved_bounds"] == [0.0, 1.0] and res.config["resolved_bounds"] == [0.0, 1.0]
    x_adv = uap.apply(ds, res)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    raw = ds.x + res.delta
    assert float(raw.min()) < 0.0 or float(raw.max()) > 1.0  # the clip is doing work
    free = UniversalPerturbation(model, norm=norm, zeta=0.08, bounds=None)
    assert torch.equal(free.apply(ds, res), raw)
    # units= resolves "auto" for plain tensors too; without units a tensor is unbounded
    assert torch.equal(UniversalPerturbation(model, zeta=0.08, units="normalized [0, 1]").apply(ds.x, res), x_adv)
    assert torch.equal(UniversalPerturbation(model, zeta=0.08).apply(ds.x, res), raw)


@pytest.mark.parametrize("method", ["batched", "fgsm", "deepfool"])
def test_masks_freeze_coordinates(method: str, beats_x: torch.Tensor) -> None:
    """The perturbation mask zeroes δ; a per-sample padding mask leaves the padded part of each input as it was."""
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    vmask = torch.ones(1, 187)
    vmask[:, 100:] = 0
    step = 1.0 if method == "fgsm" else 0.3  # the small random model needs a big FGSM step to flip a beat
    kw = dict(norm="linf", zeta=0.3, method=method, max_iter=1, step_size=step, deepfool_iter=3,
              num_candidates=2, generator=gen())
    res = UniversalPerturbation(model, mask=vmask, **kw).fit(beats_x)  # type: ignore[arg-type]
    assert bool((res.delta[:, 100:] == 0).all()) and bool((res.delta[:, :100] != 0).any())
    pad = torch.ones_like(beats_x)
    pad[::2, :, 150:] = 0  # every other beat padded after sample 150
    uap = UniversalPerturbation(model, **kw)  # type: ignore[arg-type]
    res = uap.fit(beats_x, mask=pad)
    x_adv = uap.apply(beats_x, res, mask=pad)
    assert torch.equal(x_adv[::2, :, 150:], beats_x[::2, :, 150:])
    assert not torch.equal(x_adv[1::2, :, 150:], beats_x[1::2, :, 150:])


def test_batched_solver_keeps_its_best_pass_and_clamps_fooled_inputs(shared_data: Path) -> None:
    """Two-class linear model on 32 MIT-BIH beats: one shared δ cannot push both classes, so the passes'
    fooling rates (read off each pass's own forwards) rise and fall. The result is the perturbation after the
    best pass (a run told to stop on reaching that rate ends there with the same δ), re-scored exactly; the
    margin clamp κ changes the path (κ = 0: fooled inputs stop pulling δ; κ huge: plain mean loss)."""
    from medrobust.data import load_dataset

    from ._blackbox import linear_problem

    ds = load_dataset("mitdb", root=shared_data, split="test", records=["100"])
    model, x, _, _ = linear_problem(ds.x[torch.arange(0, len(ds), len(ds) // 32)[:32]].float())
    kw = dict(norm="linf", zeta=0.05, max_iter=8, batch_size=8)
    res = UniversalPerturbation(model, kappa=0.0, **kw).fit(x)  # type: ignore[arg-type]
    rates = [h["rate"] for h in res.history]
    best = rates.index(max(rates))
    assert rates.count(max(rates)) == 1 and best < len(rates) - 1  # the rate falls after its best pass ...
    stop = UniversalPerturbation(model, kappa=0.0, fooling_goal=max(rates), **kw).fit(x)  # type: ignore[arg-type]
    assert len(stop.history) == best + 1 and torch.equal(stop.delta, res.delta)  # ... which is what is returned
    assert UniversalPerturbation(model, kappa=0.0, **kw).evaluate(x, None, res)["fooling_rate"] == res.fit_rate
    free = UniversalPerturbation(model, kappa=1e6, **kw).fit(x)  # type: ignore[arg-type]
    assert [h["rate"] for h in free.history] != rates and not torch.equal(free.delta, res.delta)
