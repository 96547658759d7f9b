"""Named training recipes: each seed paper's settings as a :class:`~medrobust.train.TrainConfig` plus defence options.

>>> from medrobust.defenses import get_defense, recipe_config
>>> train_kwargs, options = recipe_config("ma2020", "nsr", model="cnn1")
>>> train_kwargs["optimizer"], train_kwargs["class_balance"], options["recipe"]
('adamax', 'oversample', 'mitdb')
>>> trainer = get_defense("nsr", model, recipe="ma2020")     # doctest: +SKIP

=============== ================================================================================
recipe          paper
=============== ================================================================================
``ma2020``      Ma & Liang, "Improve robustness of DNN for ECG signal classification: a
                noise-to-signal ratio perspective", ICLR 2020 AI4AH workshop (arXiv 2005.09134):
                MIT-BIH beats (Kachuee et al. 2018 format), CNN1 / MLP1.
``ma2022-cpsc`` Ma & Liang, "Enhancing adversarial robustness of DNN-based ECG classifiers with an
                NSR regularisation", Comput. Biol. Med. 2022 (arXiv 2110.09759): CPSC 2018 part,
                8-lead 1-D ResNet-18 with masked pooling.
``shao2022``    Shao et al., "Defending against adversarial attack in ECG classification with
                adversarial distillation training" (CardioDefense), arXiv 2203.09487: CinC 2017, 30 s.
``han2020``     Han et al., "Deep learning models for electrocardiograms are susceptible to
                adversarial attack", Nature Medicine 26:360-363, 2020: the attacked CinC 2017 CNN (CE).
=============== ================================================================================

Each recipe gives common training settings, per-defence options and training overrides, and per-model
overrides (Ma & Liang train MLP1 adversarially without kernel normalisation or decay). Where our
toolkit-wide default differs from a paper, the recipe holds the paper's value; ``docs/defenses.md``
lists both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from medrobust.errors import ConfigError


@dataclass(frozen=True)
class DefenseRecipe:
    """One defence inside a recipe: its options, training overrides and model arguments."""

    options: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    per_model: Mapping[str, "DefenseRecipe"] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A paper's training recipe."""

    name: str
    paper: str
    dataset: str
    dataset_options: Mapping[str, Any]
    model: str
    model_kwargs: Mapping[str, Any]
    train: Mapping[str, Any]
    defenses: Mapping[str, DefenseRecipe]
    notes: str = ""


_MA_TRAIN = {"epochs": 50, "batch_size": 128, "lr": 1e-3, "optimizer": "adamax", "class_balance": "oversample",
             "select": "last", "patience": None, "monitor": "balanced_accuracy", "reinit_dead_units": True}
_MA_DECAY = {"decoupled_decay": 0.01}
_NO_UNIT_LAYERS = DefenseRecipe(train={"decoupled_decay": 0.0, "reinit_dead_units": False},
                                model_kwargs={"weight_norm": False})

RECIPES: dict[str, Recipe] = {
    "ma2020": Recipe(
        name="ma2020",
        paper="Ma & Liang, ICLR 2020 AI4AH workshop (arXiv 2005.09134)",
        dataset="mitdb",
        dataset_options={"format": "kachuee"},
        model="cnn1",
        model_kwargs={"weight_norm": True},
        train=_MA_TRAIN,
        defenses={
            "ce": DefenseRecipe(train=_MA_DECAY),
            "jacobian": DefenseRecipe(options={"recipe": "mitdb"}, train=_MA_DECAY),
            "mse": DefenseRecipe(),
            "mse_margin": DefenseRecipe(),
            "nsr": DefenseRecipe(options={"recipe": "mitdb"}),
            "nsr_align": DefenseRecipe(model_kwargs={"bias": False}),
            "pgd_at": DefenseRecipe(
                options={"eps": 0.1, "steps": 10, "step_size": 0.01, "random_start": True, "bounds": "auto",
                         "attack_loss": "ce", "clean_weight": 0.5, "adv_weight": 0.5},
                train=_MA_DECAY,
                per_model={"mlp1": DefenseRecipe(options={"clean_weight": 1.0, "adv_weight": 1.0},
                                                 train=_NO_UNIT_LAYERS.train, model_kwargs=_NO_UNIT_LAYERS.model_kwargs)},
            ),
        },
        notes="Adamax lr 1e-3, batch 128, 50 epochs, final epoch kept; Ma & Liang's class-balanced tiled sampler; "
              "kernel normalisation and dead-unit re-initialisation; decoupled decay 0.01 for CE, Jacobian and "
              "CNN adversarial training. PGD-AT: ε ∈ {0.1, 0.2, 0.3}, 10 sign steps of 0.01 from a random start; "
              "CNN 0.5·CE(clean) + 0.5·CE(adv), MLP1 CE(clean) + CE(adv) without decay or kernel normalisation.",
    ),
    "ma2022-cpsc": Recipe(
        name="ma2022-cpsc",
        paper="Ma & Liang, Comput. Biol. Med. 2022 (arXiv 2110.09759), CPSC 2018 part",
        dataset="cpsc2018",
        dataset_options={"leads": "8", "scale": "maxabs", "drop_multilabel": True, "pad": "left"},
        model="resnet18_12lead",
        model_kwargs={"in_channels": 8},
        train={"epochs": 70, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "class_balance": "oversample",
               "select": "last", "patience": None, "monitor": "balanced_accuracy"},
        defenses={
            "ce": DefenseRecipe(),
            "nsr": DefenseRecipe(options={"recipe": "cpsc2018"}),
            "jacobian": DefenseRecipe(options={"recipe": "cpsc2018"}),
            "pgd_at": DefenseRecipe(options={
                "eps": 0.01, "warmup_epochs": 10, "eps_ramp": True, "steps": 20, "rel_step_size": 0.2,
                "attack_loss": "soft_margin", "attack_correct_only": True, "random_start": True,
                "clean_weight": 0.5, "adv_weight": 0.5, "bounds": "auto"}),
        },
        notes="Adam lr 1e-3, batch 64, 70 epochs, final epoch kept, class-balanced sampler; masks reach the "
              "model's masked pooling, the regularisers and the adversary. PGD-AT 'advls_ε': ε ∈ {0.01, 0.05, 0.1}. "
              "Ma & Liang also pad training records at a random offset; our loader pads on the left.",
    ),
    "shao2022": Recipe(
        name="shao2022",
        paper="Shao et al., arXiv 2203.09487 (CardioDefense)",
        dataset="cinc2017",
        dataset_options={"seconds": 30},
        model="han_cnn",
        model_kwargs={},
        train={"epochs": 100, "batch_size": 16, "lr": 1e-3, "optimizer": "adam", "class_balance": "oversample",
               "select": "best", "monitor": "accuracy", "patience": None},
        defenses={
            "ce": DefenseRecipe(),
            "adt": DefenseRecipe(options={"temperature": 1.0, "eps": 10.0, "step_size": 1.0, "pgd_steps": 5,
                                          "smooth_steps": 5, "ablation": "none"}),
            "distillation": DefenseRecipe(options={"temperature": 1.0}),
            "jacobian": DefenseRecipe(options={"recipe": "cardiodefense"}),
            "nsr": DefenseRecipe(options={"recipe": "cardiodefense"}),
            "pgd_at": DefenseRecipe(options={"eps": 10.0, "steps": 10, "step_size": 1.0, "random_start": False,
                                             "clean_weight": 0.5, "adv_weight": 0.5, "bounds": None}),
        },
        notes="Adam lr 1e-3, batch 16, 100 epochs, best validation accuracy; the paper duplicates Noisy ×6 and "
              "AF ×2 (we tile every class to the majority count). ADT: SAP adversary ε = 10, α = 1 ADC units, "
              "5 + 5 steps, T = 1, teacher and student from independent initialisations. AT: Shao et al.'s baseline "
              "is ADT's first stage (SAP adversary, 5 + 5 steps); ours runs 10 PGD steps of 1 ADC unit at the same "
              "ε = 10 with the same ½ clean + ½ adversarial loss.",
    ),
    "han2020": Recipe(
        name="han2020",
        paper="Han et al., Nature Medicine 2020",
        dataset="cinc2017",
        dataset_options={"seconds": 60},
        model="han_cnn",
        model_kwargs={},
        train={"epochs": 200, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "class_balance": "oversample",
               "select": "best", "monitor": "accuracy", "patience": None},
        defenses={"ce": DefenseRecipe()},
        notes="The attacked model: Adam lr 1e-3, batch 64, 200 epochs, best validation accuracy; the paper "
              "duplicates Noisy ×5 extra and AF ×1 extra (we tile every class to the majority count).",
    ),
}


def available_recipes() -> list[str]:
    """Names of the recipes, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name`` (:class:`ConfigError` listing the names otherwise)."""
    key = str(name).lower()
    if key not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(available_recipes())}.")
    return RECIPES[key]


def recipe_config(recipe: str, defense: str, *, model: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TrainConfig keyword arguments, defence options)`` of ``defense`` in ``recipe`` for architecture ``model``.

    Parameters
    ----------
    recipe
        A name from :func:`available_recipes`.
    defense
        A defence the recipe defines (e.g. ``"nsr"``); others raise :class:`ConfigError` listing them.
    model
        Registered architecture name (default: the recipe's), for per-model settings (Ma & Liang's MLP1).
    """
    r = get_recipe(recipe)
    d = _defense(r, defense)
    sub = d.per_model.get(model or r.model, DefenseRecipe())
    return {**r.train, **d.train, **sub.train}, {**d.options, **sub.options}


def recipe_model(recipe: str, defense: str, *, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(architecture name, build_model keyword arguments)`` of ``defense`` in ``recipe``."""
    r = get_recipe(recipe)
    d = _defense(r, defense)
    name = model or r.model
    sub = d.per_model.get(name, DefenseRecipe())
    base = dict(r.model_kwargs) if (name == r.model or r.name == "ma2020") else {}
    return name, {**base, **d.model_kwargs, **sub.model_kwargs}


def _defense(r: Recipe, defense: str) -> DefenseRecipe:
    key = str(defense).lower()
    if key not in r.defenses:
        raise ConfigError(f"recipe {r.name!r} defines no defence {defense!r}; it defines: {', '.join(sorted(r.defenses))}.")
    return r.defenses[key]
