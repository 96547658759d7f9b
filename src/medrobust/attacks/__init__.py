"""Attacks on any input shape: white-box FGSM, PGD (L∞/L2), SAP (smooth ECG perturbations), APGD;
black-box SPSA, Square, the smoothed boundary attack and noise baselines; transfer evaluation.

>>> import torch
>>> from medrobust.attacks import PGD, get_attack
>>> atk = PGD(model, eps=0.05, steps=100, step_size=0.01, norm="linf", random_start=True,
...           generator=torch.Generator().manual_seed(0))                     # doctest: +SKIP
>>> res = atk(x, y)                       # res.x_adv, res.success, res.norms, res.grad_evals  # doctest: +SKIP
>>> atk = get_attack("sap", model, eps=0.05, steps=100, step_size=0.01)      # doctest: +SKIP

Every attack shares one threat model (:class:`ThreatModel`: norm, absolute/relative ε, bounds,
mask) and the final template :meth:`Attack.__call__`; see ``docs/attacks.md``.
"""

from medrobust.attacks.apgd import APGD
from medrobust.attacks.ascent import AdamaxRule, AdamRule, AscentRule, SignRule, make_rule
from medrobust.attacks.base import Attack, AttackContext, AttackResult, ThreatArgs, frozen_eval
from medrobust.attacks.boundary import Boundary
from medrobust.attacks.fgsm import FGSM
from medrobust.attacks.losses import LOSSES, BinaryLogitWrapper, get_loss
from medrobust.attacks.noise import (
    GaussianNoise, PhysioNoise, UniformNoise, add_noise, noise, physiological_noise,
)
from medrobust.attacks.pgd import PGD
from medrobust.attacks.registry import attack_class, available_attacks, get_attack, register_attack
from medrobust.attacks.sap import SAP
from medrobust.attacks.sap_filter import sap_kernel, smooth
from medrobust.attacks.spsa import SPSA
from medrobust.attacks.square import Square
from medrobust.attacks.threat import ThreatModel
from medrobust.attacks.universal import UAPResult, UniversalPerturbation
from medrobust.attacks.universal_attack import UniversalAttack
from medrobust.attacks.universal import random_control as uap_random_control
from medrobust.attacks.band import Band, adversarial_band, concatenation_check, uniform_band_check
from medrobust.attacks.transfer import transfer_attack

__all__ = [
    "Attack",
    "AttackContext",
    "AttackResult",
    "ThreatArgs",
    "AscentRule",
    "SignRule",
    "AdamRule",
    "AdamaxRule",
    "make_rule",
    "ThreatModel",
    "PGD",
    "FGSM",
    "SAP",
    "APGD",
    "SPSA",
    "Square",
    "Boundary",
    "UniformNoise",
    "GaussianNoise",
    "PhysioNoise",
    "noise",
    "add_noise",
    "physiological_noise",
    "transfer_attack",
    "BinaryLogitWrapper",
    "get_attack",
    "available_attacks",
    "attack_class",
    "register_attack",
    "get_loss",
    "LOSSES",
    "sap_kernel",
    "smooth",
    "frozen_eval",
    "UniversalPerturbation",
    "UAPResult",
    "UniversalAttack",
    "uap_random_control",
    "Band",
    "adversarial_band",
    "uniform_band_check",
    "concatenation_check",
]
