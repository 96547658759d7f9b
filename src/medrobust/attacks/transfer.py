"""Transfer evaluation: craft adversarial examples on a source model A, evaluate them on a model B.

The grey-box "situation I" of the CardioDefense evaluation (Shao et al., arXiv 2203.09487): adversarial
examples are crafted once on the undefended model and fed to every defended model. Transfer rates
follow Papernot, McDaniel & Goodfellow, "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples", arXiv 1605.07277 (2016): the fraction of the examples
that fool A which also fool B.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackResult, check_logits, frozen_eval
from medrobust.checks import check_int
from medrobust.errors import ConfigError, DataError
from medrobust.models.inference import predict_logits


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int | None, mask: torch.Tensor | None) -> torch.Tensor:
    """Model B's classes (eval mode, frozen), checking that it returns logits."""
    with frozen_eval(model):
        z = predict_logits(model, x, batch_size=batch_size or len(x), mask=mask)
    return check_logits(z, len(x)).argmax(1)


def _rate(num: torch.Tensor, den: torch.Tensor) -> float:
    d = int(den.sum())
    return float("nan") if d == 0 else int((num & den).sum()) / d


def transfer_attack(
    attack: Attack,
    model_b: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    sample_ids: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Craft with ``attack`` (built on model A) and evaluate the adversarial examples on ``model_b``.

    Parameters
    ----------
    attack
        Any :class:`~medrobust.attacks.Attack` built on the source model A.
    model_b
        The model the examples are transferred to (returns logits).
    x, y
        Clean inputs and true labels.
    target
        Target labels for a targeted transfer (success on B = B predicts the target).
    mask
        Padding / perturbation mask of the batch: limits the attack on A and is handed to B when its
        ``forward`` takes ``mask=``.
    sample_ids
        Identities keying the attack's per-sample random streams (see :class:`~medrobust.attacks.Attack`).
    batch_size
        Batch size of B's forwards (``None``: one batch).

    Returns
    -------
    dict
        ``n``; ``clean_accuracy_a``, ``clean_accuracy_b``; ``robust_accuracy_a``, ``robust_accuracy_b``
        (accuracy under the transferred examples, w.r.t. ``y``); ``success_rate_a``, ``success_rate_b``
        (over all samples); ``transfer_rate`` (B fooled among the A-successes that B classified
        correctly when clean, the usual definition); ``transfer_rate_all`` (B fooled among all
        A-successes); per-sample tensors ``success_a``, ``success_b``, ``clean_pred_b``, ``adv_pred_b``;
        ``x_adv`` and the source ``result`` (:class:`~medrobust.attacks.AttackResult`).

    Examples
    --------
    >>> out = transfer_attack(PGD(model_a, eps=0.05, steps=20), model_b, x, y)   # doctest: +SKIP
    >>> out["transfer_rate"], out["robust_accuracy_b"]                          # doctest: +SKIP
    """
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack must be a medrobust Attack built on the source model, got {type(attack).__name__}.")
    if not isinstance(model_b, nn.Module):
        raise ConfigError(f"model_b must be a torch.nn.Module, got {type(model_b).__name__}.")
    if attack.model is model_b:
        raise ConfigError("model_b is the attack's own model; a transfer needs a different target model.")
    if batch_size is not None:
        check_int(batch_size, "batch_size", minimum=1)
    res: AttackResult = attack(x, y, target=target, mask=mask, sample_ids=sample_ids)
    clean_b = _predict(model_b, x.detach().to(res.x_adv.dtype), batch_size, mask)
    adv_b = _predict(model_b, res.x_adv, batch_size, mask)
    if clean_b.shape != res.y.shape:
        raise DataError("model_b returned a different number of predictions than samples.")
    return _summary(res, clean_b, adv_b)


def _summary(res: AttackResult, clean_b: torch.Tensor, adv_b: torch.Tensor) -> dict[str, Any]:
    """The rates of :func:`transfer_attack` from A's result and B's clean and adversarial predictions."""
    y, tgt = res.y, res.target
    succ_b = adv_b != y if tgt is None else adv_b == tgt
    succ_a = res.success
    correct_b = clean_b == y
    return {
        "n": int(len(y)), "attack": res.attack, "targeted": tgt is not None,
        "clean_accuracy_a": res.clean_accuracy, "clean_accuracy_b": float(correct_b.double().mean()),
        "robust_accuracy_a": res.robust_accuracy, "robust_accuracy_b": float((adv_b == y).double().mean()),
        "success_rate_a": float(succ_a.double().mean()), "success_rate_b": float(succ_b.double().mean()),
        "transfer_rate": _rate(succ_b, succ_a & correct_b), "transfer_rate_all": _rate(succ_b, succ_a),
        "success_a": succ_a, "success_b": succ_b, "clean_pred_b": clean_b, "adv_pred_b": adv_b,
        "x_adv": res.x_adv, "result": res,
    }
