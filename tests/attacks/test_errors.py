"""Bad input gets a clear ConfigError / DataError for every attack; the registry checks its arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import PGD, AttackResult, ThreatModel, attack_class, available_attacks, get_attack
from medrobust.errors import ConfigError, DataError

from .conftest import SmallECGNet, small_kwargs

ATTACKS = available_attacks()


@pytest.fixture()
def model_xy(beats_x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallECGNet(1, classes=5)
    return model, beats_x, torch.zeros(len(beats_x), dtype=torch.long)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("eps", [0.0, -0.1])
def test_non_positive_eps(name: str, eps: float, model_xy) -> None:
    with pytest.raises(ConfigError, match="eps"):
        get_attack(name, model_xy[0], eps=eps, **small_kwargs(name))


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "fgsm"])
def test_steps_below_one(name: str, model_xy) -> None:
    kw = {"steps": 0}
    if name == "sap":
        kw["smooth_steps"] = 0
    with pytest.raises(ConfigError, match="steps"):
        get_attack(name, model_xy[0], eps=0.1, **kw)


@pytest.mark.parametrize("name", ATTACKS)
def test_probability_output_model(name: str, model_xy) -> None:
    model, x, y = model_xy
    prob_model = nn.Sequential(model, nn.Softmax(dim=1))
    with pytest.raises(ConfigError, match="probabilities"):
        get_attack(name, prob_model, eps=0.1, **small_kwargs(name))(x, y)


@pytest.mark.parametrize("name", ATTACKS)
def test_nan_in_batch(name: str, model_xy) -> None:
    model, x, y = model_xy
    x = x.clone()
    x[3, 0, 10] = float("nan")
    with pytest.raises(DataError, match=r"NaN.*samples \[3\]"):
        get_attack(name, model, eps=0.1, **small_kwargs(name))(x, y)


@pytest.mark.parametrize("name", ATTACKS)
def test_mismatched_lengths(name: str, model_xy) -> None:
    model, x, y = model_xy
    with pytest.raises(DataError, match="len"):
        get_attack(name, model, eps=0.1, **small_kwargs(name))(x, y[:-1])
    with pytest.raises(DataError, match="len"):
        get_attack(name, model, eps=0.1, **small_kwargs(name))(x, y, target=y[:3])


def test_other_bad_inputs(model_xy) -> None:
    model, x, y = model_xy
    atk = PGD(model, eps=0.1, steps=2)
    with pytest.raises(DataError, match="integer class indices"):
        atk(x, y.float())
    with pytest.raises(DataError, match=r"outside \[0, 5\)"):
        atk(x, y + 7)
    with pytest.raises(DataError, match="floating-point"):
        atk((x * 100).long(), y)
    with pytest.raises(DataError, match="bounds"):
        PGD(model, eps=0.1, bounds=(0.0, 0.5))(x, y)  # beats reach 1.0
    with pytest.raises(ConfigError, match="BinaryLogitWrapper"):
        PGD(nn.Sequential(nn.Flatten(), nn.Linear(187, 1)), eps=0.1)(x, y)
    with pytest.raises(ConfigError, match="either threat"):
        PGD(model, eps=0.1, threat=ThreatModel(eps=0.1))
    with pytest.raises(ConfigError, match="needs eps"):
        PGD(model)
    with pytest.raises(ConfigError, match="generator"):
        PGD(model, eps=0.1, generator=0)  # type: ignore[arg-type]


def test_threat_object_is_accepted(model_xy) -> None:
    model, x, y = model_xy
    res = PGD(model, threat=ThreatModel(eps=0.02, norm="l2"), steps=2)(x, y)
    assert res.norm == "l2" and bool((res.norms <= 0.02).all())


def test_registry_errors(model_xy) -> None:
    model = model_xy[0]
    with pytest.raises(ConfigError, match="unknown attack 'cw'"):
        get_attack("cw", model, eps=0.1)
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['alpha'\]"):
        get_attack("pgd", model, eps=0.1, alpha=0.01)
    assert isinstance(get_attack("PGD", model, eps=0.1), PGD)


def test_result_summary_is_consistent(model_xy) -> None:
    model, x, _ = model_xy
    with torch.no_grad():
        y = model(x).argmax(1)
    res = PGD(model, eps=0.2, steps=5, bounds=(0, 1))(x, y)
    assert isinstance(res, AttackResult)
    assert res.robust_accuracy == pytest.approx(float((res.adv_pred == y).float().mean()))
    assert res.clean_accuracy == 1.0
    assert res.attack_success_rate == pytest.approx(float(res.success.float().mean()))
    s = res.summary()
    assert s["attack"] == "pgd" and s["n"] == len(x) and s["grad_evals"] == res.grad_evals
    assert "PGD(" in repr(PGD(model, eps=0.2))


def test_declared_input_shape_is_checked_before_the_first_forward(model_xy) -> None:
    model, x, y = model_xy
    calls: list[int] = []
    model.register_forward_hook(lambda *a: calls.append(1))
    model.input_shape = (1, 360)  # type: ignore[assignment]
    with pytest.raises(DataError, match=r"\[1, 360\].*\[1, 187\]"):
        PGD(model, eps=0.1, steps=2)(x, y)
    del model.input_shape
    model.card = {"input_shape": [12, 187]}  # as load_checkpoint sets it
    with pytest.raises(DataError, match=r"\[12, 187\].*\[1, 187\]"):
        PGD(model, eps=0.1, steps=2)(x, y)
    assert calls == []  # refused before any forward
    model.card = {"input_shape": [1, 187]}
    assert PGD(model, eps=0.1, steps=2)(x, y).x_adv.shape == x.shape


def test_model_that_cannot_take_the_batch_gives_a_data_error(model_xy) -> None:
    _, x, y = model_xy
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(360, 5))
    with pytest.raises(DataError, match=r"Sequential cannot take a batch of shape \(8, 1, 187\)"):
        PGD(wrong, eps=0.1, steps=2)(x, y)


def test_bounds_auto_uses_the_units(model_xy) -> None:
    model, x, y = model_xy
    assert PGD(model, eps=0.1, bounds="auto", units="normalized [0, 1]").threat.bounds == (0.0, 1.0)
    assert PGD(model, eps=0.1, bounds="auto", units="max-abs scaled [-1, 1]").threat.bounds == (-1.0, 1.0)
    assert PGD(model, eps=0.1, bounds="auto", units="mV").threat.bounds is None
    with pytest.raises(ConfigError, match="units="):
        PGD(model, eps=0.1, bounds="auto")
    with pytest.raises(ConfigError, match="bounds"):
        PGD(model, eps=0.1, bounds="full", units="mV")


def test_soft_label_errors(model_xy) -> None:
    model, x, _ = model_xy
    atk = PGD(model, eps=0.1, steps=2)
    with pytest.raises(DataError, match="sum to 1"):
        atk(x, torch.full((len(x), 5), 0.3))
    with pytest.raises(DataError, match="5 logits"):
        atk(x, torch.full((len(x), 4), 0.25))
    with pytest.raises(DataError, match="sample_ids"):
        atk(x, torch.zeros(len(x), dtype=torch.long), sample_ids=torch.arange(3))


@pytest.mark.parametrize("name", ATTACKS)
def test_every_attack_builds_by_name_with_derived_hyperparameters(name: str, model_xy) -> None:
    import json

    from medrobust.attacks.registry import accepted_arguments

    model = model_xy[0]
    common = {"eps": 0.1, "norm": "linf", "bounds": (0, 1), "loss": "ce", "generator": torch.Generator().manual_seed(0)}
    accepted = accepted_arguments(attack_class(name))
    atk = get_attack(name, model, **{k: v for k, v in common.items() if k in accepted}, **small_kwargs(name))
    hp = atk.hyperparameters()
    json.dumps(atk.config())
    own = type(atk).own_parameters()
    assert set(own) <= set(hp)
    assert not {"eps", "norm", "bounds", "mask", "threat", "generator", "units", "model"} & set(own)
    for k, v in small_kwargs(name).items():
        if k in own:
            assert hp[k] == (list(v) if isinstance(v, tuple) else v)


def test_subclass_of_an_attack_inherits_its_arguments(model_xy) -> None:
    from medrobust.attacks.registry import accepted_arguments

    class Tuned(PGD):
        def __init__(self, model: nn.Module, *, extra: int = 1, **kw: object) -> None:
            self.extra = extra
            super().__init__(model, **kw)  # type: ignore[arg-type]

    acc = accepted_arguments(Tuned)
    assert acc[:2] == ["extra", "steps"] and {"eps", "loss", "units", "rel_step_size"} <= set(acc)
    hp = Tuned(model_xy[0], eps=0.1, steps=3, extra=2).hyperparameters()
    assert hp["extra"] == 2 and hp["steps"] == 3 and "eps" not in hp
