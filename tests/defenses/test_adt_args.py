"""ADT's arguments: Shao et al.'s defaults, every bad value refused naming its argument, the per-sample tempered
soft cross-entropy its SAP adversary ascends, and the pieces handed to the two-stage base."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrobust.defenses.adt import ADT, TemperedSoftCE
from medrobust.errors import ConfigError
from medrobust.models import build_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp1")


def test_defaults_are_shao_et_al_cardiodefense_settings() -> None:
    """CardioDefense (Shao et al., arXiv 2203.09487): T = 1, SAP with ε 10 and step 1 (ADC units), 5 PGD warm-start
    steps and 5 smoothed steps, both stages adversarial, eval-mode soft labels and adversary."""
    adt = ADT(_model())
    hp = adt.hyperparameters()
    assert (adt.temperature, adt.eps, adt.step_size, adt.pgd_steps, adt.smooth_steps) == (1.0, 10.0, 1.0, 5, 5)
    assert (hp["eps"], hp["step_size"], hp["pgd_steps"], hp["smooth_steps"]) == (10.0, 1.0, 5, 5)
    assert hp["ablation"] == "none" and hp["attack_mode"] == "eval" and hp["attack"] == "sap"
    assert adt.adversarial_teacher and adt.adversarial_student
    assert adt.soft_labels_train_mode is False and adt.attack_train_mode is False
    assert adt.bounds_arg == "auto" and adt.bounds is None and adt.reference_fs is None
    assert adt.teacher_init == "fresh" and hp["teacher"] == "trained in stage 1 from a fresh initialisation"


def test_given_pieces_reach_the_two_stage_base() -> None:
    g = torch.Generator().manual_seed(7)
    teacher = _model()
    adt = ADT(_model(), generator=g, teacher=teacher, soft_labels_train_mode=True, attack_train_mode=True,
              temperature=3.0, bounds=(0.0, 1.0), reference_fs=300.0, ablation="dist")
    assert adt.generator is g and adt.teacher is teacher and adt.soft_labels_train_mode is True
    assert adt.attack_train_mode is True and adt.temperature == 3.0 and adt.bounds == (0.0, 1.0)
    assert adt.reference_fs == 300.0 and not adt.adversarial_teacher and adt.adversarial_student
    assert ADT(_model(), ablation="init").adversarial_teacher and not ADT(_model(), ablation="init").adversarial_student
    tuned = ADT(_model(), teacher_init="student")  # fine-tuning: stage 1 starts from the student's weights
    assert tuned.teacher_init == "student" and tuned.hyperparameters()["teacher_init"] == "student"


@pytest.mark.parametrize(("kw", "name"), [
    ({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"), ({"eps": float("nan")}, "eps"),
    ({"step_size": 0.0}, "step_size"), ({"step_size": -0.5}, "step_size"),
    ({"pgd_steps": -1}, "pgd_steps"), ({"pgd_steps": 1.5}, "pgd_steps"),
    ({"smooth_steps": -1}, "smooth_steps"), ({"smooth_steps": "5"}, "smooth_steps"),
    ({"pgd_steps": 0, "smooth_steps": 0}, "pgd_steps \\+ smooth_steps"),
    ({"reference_fs": 0.0}, "reference_fs"), ({"temperature": 0.0}, "temperature"),
    ({"ablation": "both"}, "ablation"), ({"bounds": (1.0, 0.0)}, "bounds"), ({"teacher_init": "copy"}, "teacher_init"),
])
def test_bad_arguments_are_refused_naming_the_argument(kw: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"(^|\W){name}\W"):
        ADT(_model(), **kw)


def test_zero_warm_start_or_zero_smoothed_steps_are_allowed() -> None:
    assert ADT(_model(), pgd_steps=0, smooth_steps=3).pgd_steps == 0
    assert ADT(_model(), pgd_steps=3, smooth_steps=0).smooth_steps == 0


def test_tempered_soft_cross_entropy_is_per_sample_by_hand() -> None:
    torch.manual_seed(1)
    z = torch.randn(5, 4, dtype=torch.float64)
    q = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1)
    loss = TemperedSoftCE(2.0)
    out = loss(z, q)
    assert out.shape == (5,)
    torch.testing.assert_close(out, -(q * F.log_softmax(z / 2.0, dim=1)).sum(1))
    assert loss.__qualname__ == "soft_ce(T=2)" and loss.temperature == 2.0


def _prepared(**kw: object) -> ADT:
    """ADT with a given teacher (no stage-1 training), prepared on synthetic Kachuee beats (125 Hz, [0, 1])."""
    from medrobust.data import load_dataset

    train = load_dataset("synthetic", split="train", n_per_class=4)
    adt = ADT(_model(), teacher=_model(), **{"eps": 0.05, "step_size": 0.01, **kw})  # type: ignore[arg-type]
    adt.setup(train)
    return adt


def test_prepare_resolves_bounds_and_kernel_rate_from_the_training_data() -> None:
    adt = _prepared(reference_fs=300.0)
    assert adt.bounds == (0.0, 1.0) and adt.fs == 125.0
    hp = adt.hyperparameters()
    assert hp["bounds"] == [0.0, 1.0] and hp["bounds_arg"] == "auto" and hp["kernel_reference_fs"] == 300.0
    assert hp["padding"] == "untouched (mask)" and hp["attack_mode"] == "eval"
    assert _prepared().fs is None  # kernels in samples unless a reference rate is given
    assert _prepared(attack_train_mode=True).hyperparameters()["attack_mode"] == "train"
    with pytest.raises(ConfigError, match=r"(^|\W)eps\W"):
        _prepared(eps=5.0, step_size=0.5)  # a radius as large as the beats' amplitude is refused


def test_the_adversary_is_sap_configured_as_cardiodefense() -> None:
    from medrobust.attacks import PGD, SAP

    adt = _prepared(reference_fs=300.0, pgd_steps=3, smooth_steps=4)
    atk = adt.adversary(adt.model)
    assert type(atk) is SAP and atk.steps == 3 and atk.smooth_steps == 4 and atk.warm_start == "pgd"
    assert atk.output == "final" and atk.early_stop is False and atk.random_start is False
    assert atk.fs == 125.0 and atk.reference_fs == 300.0 and atk.step_size == 0.01 and atk.loss == "ce"
    assert atk.threat.norm == "linf" and atk.threat.eps == 0.05 and atk.threat.bounds == (0.0, 1.0)
    assert atk.generator is adt.generator
    assert _prepared(pgd_steps=0, smooth_steps=2).adversary(adt.model).warm_start == "zero"
    assert _prepared(pgd_steps=1, smooth_steps=2).adversary(adt.model).warm_start == "pgd"
    plain = _prepared(pgd_steps=2, smooth_steps=0).adversary(adt.model)
    assert type(plain) is PGD and plain.steps == 2 and plain.early_stop is False
    tempered = _prepared(temperature=2.0).adversary(adt.model)
    assert isinstance(tempered.loss, TemperedSoftCE) and tempered.loss.temperature == 2.0


def test_the_adversary_leaves_padding_untouched() -> None:
    adt = _prepared(pgd_steps=2, smooth_steps=2)
    x = torch.rand(4, 1, 187) * 0.8 + 0.1
    mask = torch.ones(4, 1, 187)
    mask[:, :, 150:] = 0
    with torch.no_grad():
        q = torch.softmax(adt.model(x), 1)
    x_adv = adt._adversarial(adt.model, x, q, mask)
    assert torch.equal(x_adv[..., 150:], x[..., 150:]) and not torch.equal(x_adv[..., :150], x[..., :150])
