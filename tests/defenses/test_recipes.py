"""Paper recipes and the defaults they pin: class balancing, Ma & Liang's PGD-AT mix and step, decay,
dead-unit re-initialisation, ADT's fresh teacher and its bounded adversary."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from medrobust.defenses import (
    ADT,
    AdversarialTraining,
    available_recipes,
    get_defense,
    get_recipe,
    recipe_config,
    recipe_model,
)
from medrobust.defenses.distillation import fresh_initialisation
from medrobust.errors import ConfigError
from medrobust.models import build_model
from medrobust.train import TrainConfig

from .conftest import TinyNet


def test_recipe_names() -> None:
    assert available_recipes() == ["han2020", "ma2020", "ma2022-cpsc", "shao2022"]
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("ma2021")
    with pytest.raises(ConfigError, match="defines no defence 'trades'"):
        recipe_config("ma2020", "trades")


def test_ma2020_settings() -> None:
    train, opts = recipe_config("ma2020", "nsr", model="cnn1")
    assert (train["optimizer"], train["lr"], train["batch_size"], train["epochs"]) == ("adamax", 1e-3, 128, 50)
    assert train["class_balance"] == "oversample" and train["select"] == "last" and train["reinit_dead_units"]
    assert train.get("decoupled_decay", 0.0) == 0.0 and opts == {"recipe": "mitdb"}  # MSE-based: no decay
    for name in ("ce", "jacobian"):
        assert recipe_config("ma2020", name)[0]["decoupled_decay"] == 0.01
    assert recipe_model("ma2020", "nsr") == ("cnn1", {"weight_norm": True})
    assert recipe_model("ma2020", "nsr_align", model="mlp1") == ("mlp1", {"weight_norm": True, "bias": False})


def test_ma2020_adversarial_training_per_model() -> None:
    """CNN: 0.5·CE + 0.5·CE_adv with decay; MLP1: CE + 1.0·CE_adv, no decay, no kernel normalisation."""
    train, opts = recipe_config("ma2020", "pgd_at", model="cnn1")
    assert opts["step_size"] == 0.01 and opts["steps"] == 10 and opts["eps"] == 0.1
    assert (opts["clean_weight"], opts["adv_weight"], train["decoupled_decay"]) == (0.5, 0.5, 0.01)
    train, opts = recipe_config("ma2020", "pgd_at", model="mlp1")
    assert (opts["clean_weight"], opts["adv_weight"], train["decoupled_decay"]) == (1.0, 1.0, 0.0)
    assert train["reinit_dead_units"] is False
    assert recipe_model("ma2020", "pgd_at", model="mlp1")[1]["weight_norm"] is False
    t = get_defense("pgd_at", build_model("mlp1"), recipe="ma2020")
    assert (t.step_size, t.rel_step_size, t.clean_weight, t.adv_weight) == (0.01, None, 1.0, 1.0)
    assert (t.config.optimizer, t.config.class_balance, t.config.decoupled_decay) == ("adamax", "oversample", 0.0)
    t = get_defense("pgd_at", build_model("cnn1", weight_norm=True), recipe="ma2020", eps=0.2)  # option overrides
    assert (t.eps, t.clean_weight, t.config.decoupled_decay, t.config.reinit_dead_units) == (0.2, 0.5, 0.01, True)


def test_other_recipes() -> None:
    train, opts = recipe_config("ma2022-cpsc", "pgd_at")
    assert (train["optimizer"], train["epochs"], train["batch_size"]) == ("adam", 70, 64)
    assert opts["attack_loss"] == "soft_margin" and opts["attack_correct_only"] and opts["eps_ramp"]
    assert opts["warmup_epochs"] == 10 and opts["steps"] == 20 and opts["rel_step_size"] == 0.2
    assert recipe_config("ma2022-cpsc", "nsr")[1] == {"recipe": "cpsc2018"}
    train, opts = recipe_config("shao2022", "adt")
    assert (train["batch_size"], train["epochs"], train["monitor"]) == (16, 100, "accuracy")
    assert (opts["eps"], opts["step_size"], opts["pgd_steps"], opts["smooth_steps"], opts["temperature"]) == \
        (10.0, 1.0, 5, 5, 1.0)
    assert recipe_config("han2020", "ce")[0]["epochs"] == 200


@pytest.mark.parametrize("name,balance", [
    ("ce", "none"), ("trades", "none"), ("smoothing", "none"), ("distillation", "none"),
    ("nsr", "oversample"), ("mse", "oversample"), ("jacobian", "oversample"), ("pgd_at", "oversample"),
    ("adt", "oversample"),
])
def test_default_class_balance_is_the_papers(name: str, balance: str) -> None:
    t = get_defense(name, build_model("mlp1"), TrainConfig())
    assert t.config.class_balance == balance
    t = get_defense(name, build_model("mlp1"), TrainConfig(class_balance="weights"))
    assert t.config.class_balance == "weights"  # an explicit choice wins


def test_pgd_at_default_mix_follows_the_model(beats) -> None:
    assert AdversarialTraining(build_model("cnn1")).clean_weight == 0.5
    net = build_model("mlp1")
    t = AdversarialTraining(net, TrainConfig(epochs=2), eps=0.05, steps=2, step_size=0.01)
    assert (t.clean_weight, t.adv_weight) == (1.0, 1.0)
    x, y = beats[0].x[:16], beats[0].y[:16]
    t.generator.manual_seed(3)
    loss, _ = t.compute_loss(x, y)
    t.generator.manual_seed(3)
    x_adv = t.attack(x, y, 0.05)
    expect = F.cross_entropy(net(x), y) + F.cross_entropy(net(x_adv), y)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="not both"):
        AdversarialTraining(net, adv_ratio=0.5, clean_weight=1.0)


def test_fresh_initialisation_differs_from_the_student() -> None:
    torch.manual_seed(0)
    model = build_model("cnn1", weight_norm=True)
    a, reset = fresh_initialisation(model, 1)
    b, _ = fresh_initialisation(model, 1)
    assert reset
    for (k, p), q, r in zip(model.state_dict().items(), a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(q, r), k  # seeded
        if k.endswith("weight"):
            assert not torch.allclose(p, q), k
    rows = a.conv0.weight.flatten(1).norm(dim=1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)  # Ma & Liang's unit-norm units kept


def test_adt_teacher_starts_from_a_fresh_initialisation(beats) -> None:
    train, val = beats
    torch.manual_seed(0)
    model = build_model("mlp1")
    initial = copy.deepcopy(model)
    cfg = TrainConfig(epochs=1, lr=1e-9, progress=False, max_batches_per_epoch=1, batch_size=16)
    t = ADT(model, cfg, eps=0.05, step_size=0.01, pgd_steps=1, smooth_steps=1)
    t.fit(train, val)
    fresh, _ = fresh_initialisation(initial, cfg.seed + 1)
    assert torch.allclose(t.teacher.fc1.weight, fresh.fc1.weight, atol=1e-6)
    assert not torch.allclose(t.teacher.fc1.weight, initial.fc1.weight, atol=1e-2)
    assert "fresh initialisation" in t.hyperparameters()["teacher"]


@pytest.mark.parametrize("units,bounds", [
    ("normalized [0, 1]", (0.0, 1.0)), ("max-abs scaled [-1, 1]", (-1.0, 1.0)), ("mV", None), ("adc", None),
])
def test_auto_bounds_follow_the_units(units: str, bounds) -> None:
    for cls in (ADT, AdversarialTraining):
        t = cls(TinyNet(4, 2), eps=0.05)
        t.data_units = units
        assert t.resolve_bounds("auto") == bounds


@pytest.mark.parametrize("defense,variant", [("nsr", "mitdb"), ("jacobian", "cpsc2018")])
def test_a_defences_own_recipe_option_is_not_taken_for_a_paper_recipe(defense: str, variant: str) -> None:
    """``medrobust train --recipe ma2020 --defense nsr`` fills NSR's own option ``recipe="mitdb"`` and hands it to
    get_defense, whose ``recipe=`` also names paper recipes: the variant must reach the defence, a paper name must
    still select the paper's options, and an unknown name must still be refused."""
    from medrobust.defenses import get_defense

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(187, 5))
    trainer = get_defense(defense, net, recipe=variant)
    assert trainer.hyperparameters()["recipe"] == variant
    by_paper = get_defense(defense, net, recipe="ma2022-cpsc")
    assert by_paper.hyperparameters()["recipe"] == "cpsc2018"
    with pytest.raises(ConfigError, match="recipe"):
        get_defense(defense, net, recipe="ma2099")
