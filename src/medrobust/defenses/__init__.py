"""Defences: trainers that override one loss method of :class:`~medrobust.train.Trainer`.

>>> from medrobust.defenses import get_defense
>>> trainer = get_defense("nsr", model, TrainConfig(epochs=50, optimizer="adamax"))   # doctest: +SKIP
>>> trainer = get_defense("nsr", model, recipe="ma2020")     # the paper's settings    # doctest: +SKIP
>>> result = trainer.fit(train, val)                                                  # doctest: +SKIP

=================== ================================ ==========================================
name                class                            reference
=================== ================================ ==========================================
``ce``              :class:`~medrobust.train.Trainer` standard cross-entropy training
``pgd_at``          :class:`AdversarialTraining`     Madry et al. 2018; Ma & Liang 2020/2022 (pgd_at.py)
``trades``          :class:`TRADES`                  Zhang et al. 2019
``nsr``             :class:`NSRTrainer` (Method 2)   Ma & Liang 2020/2022
``mse``/``mse_margin`` :class:`NSRTrainer` (β = 0)   Ma & Liang's baselines
``nsr_align``       :class:`NSRAlignTrainer` (Method 1) Ma & Liang 2020
``jacobian``        :class:`JacobianTrainer`         Ma & Liang; Shao et al.; Hoffman et al. 2019
``distillation``    :class:`DefensiveDistillation`   Papernot et al. 2016
``adt``             :class:`ADT`                     Shao et al. 2022 (CardioDefense; adt.py)
``uap_retraining``  :class:`UAPRetraining`           Moosavi-Dezfooli et al. 2017
``smoothing``       :class:`GaussianNoiseTraining`   Cohen et al. 2019 (+ :class:`SmoothedClassifier`)
=================== ================================ ==========================================

See ``docs/defenses.md``.
"""

from medrobust.defenses.registry import available_defenses, defense_class, defense_options, get_defense, register_defense
from medrobust.train.trainer import Trainer

register_defense("ce")(Trainer)

from medrobust.defenses.adt import ADT  # noqa: E402
from medrobust.defenses.base import DefenseTrainer  # noqa: E402
from medrobust.defenses.distillation import DefensiveDistillation, soft_cross_entropy  # noqa: E402
from medrobust.defenses.pgd_at import AdversarialTraining  # noqa: E402
from medrobust.defenses.recipes import RECIPES, available_recipes, get_recipe, recipe_config, recipe_model  # noqa: E402
from medrobust.defenses.jacobian import JacobianTrainer, jacobian_norm  # noqa: E402
from medrobust.defenses.nsr import (  # noqa: E402
    NSRAlignTrainer,
    NSRTrainer,
    alignment_loss,
    mse_onehot_loss,
    nsr_loss,
    within_margin_loss,
)
from medrobust.defenses.smoothing import (  # noqa: E402
    CertifyResult,
    GaussianNoiseTraining,
    SmoothedClassifier,
    certified_radius,
    clopper_pearson_lower,
)
from medrobust.defenses.trades import TRADES, trades_kl  # noqa: E402
from medrobust.defenses.uap_retraining import UAPRetraining  # noqa: E402

__all__ = [
    "get_defense",
    "RECIPES",
    "available_recipes",
    "get_recipe",
    "recipe_config",
    "recipe_model",
    "available_defenses",
    "defense_class",
    "defense_options",
    "register_defense",
    "DefenseTrainer",
    "AdversarialTraining",
    "TRADES",
    "NSRTrainer",
    "NSRAlignTrainer",
    "JacobianTrainer",
    "DefensiveDistillation",
    "ADT",
    "UAPRetraining",
    "GaussianNoiseTraining",
    "SmoothedClassifier",
    "CertifyResult",
    "trades_kl",
    "mse_onehot_loss",
    "within_margin_loss",
    "nsr_loss",
    "alignment_loss",
    "jacobian_norm",
    "soft_cross_entropy",
    "clopper_pearson_lower",
    "certified_radius",
]
