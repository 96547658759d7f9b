"""Reliability flags: automatic checks that a robustness number can be trusted.

Each check returns a :class:`Flag` (or ``None`` when it stays silent). Every flag has a page under
``docs/flags/<code>.md`` saying what it means and what to do. The checks follow AutoAttack's
``checks.py`` (Croce & Hein, ICML 2020, arXiv 2003.01690), ART's
``SecurityCurve`` obfuscated-gradient test (Nicolae et al., arXiv 1807.01069) and RobustBench's
rules for a valid evaluation (non-zero input gradients, deterministic forward; Croce et al., NeurIPS Datasets and
Benchmarks 2021):

============================== ==================================================================
code                           fires when
============================== ==================================================================
``probability-outputs``        every output lies in [0, 1] (and rows sum to 1): the model returns
                               probabilities, not logits
``nondeterministic-forward``   repeated forward passes of the same batch in eval mode differ
``zero-gradients``             the input gradient of the logit margin is exactly zero for some
                               clean-correct sample, or the cross-entropy gradient vanishes
                               (underflows to zero) although the margin gradient does not
``few-classes-dlr``            an attack uses the DLR loss and the model has fewer than 4 classes
``no-collapse-large-eps``      PGD with a very large ε leaves more than 1/K of the clean-correct
                               samples correctly classified
``black-box-stronger``         a black-box attack breaks samples on which every white-box attack
                               of the ensemble ran and failed
``degenerate-model``           the model predicts one class on the evaluated samples, its clean
                               class-balanced accuracy is within 0.05 of chance (1/K), or its
                               model card records a collapse during training
``unverified-weights``         the checkpoint's weights were loaded without checking their SHA-256
============================== ==================================================================
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

FLAG_TITLES: dict[str, str] = {
    "probability-outputs": "the model returns probabilities, not logits",
    "nondeterministic-forward": "the forward pass is not deterministic",
    "zero-gradients": "zero or vanishing input gradients",
    "few-classes-dlr": "DLR loss with fewer than 4 classes",
    "no-collapse-large-eps": "accuracy does not collapse at a very large ε",
    "black-box-stronger": "a black-box attack is stronger than the white-box attacks",
    "degenerate-model": "degenerate model: its robust accuracy is not robustness",
    "unverified-weights": "the model's weights were not verified against their hash",
}

DEGENERATE_MARGIN = 0.05
"""A clean class-balanced accuracy within this distance of chance (1/K) marks a degenerate model."""


@dataclass(frozen=True)
class Flag:
    """A reliability warning.

    Attributes
    ----------
    code
        Stable identifier, also the doc page name (``docs/flags/<code>.md``).
    message
        One sentence for the report.
    details
        JSON-serialisable numbers behind the decision (counts, thresholds).
    """

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return FLAG_TITLES.get(self.code, self.code)

    @property
    def doc(self) -> str:
        return f"docs/flags/{self.code}.md"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "message": self.message, "details": self.details,
                "doc": self.doc}


def is_black_box(name: str) -> bool:
    """Whether the registered attack ``name`` is black-box (score- or decision-based): its class's ``black_box``.

    Unknown names are not black-box (the registry refuses them before any evaluation runs).
    """
    from medrobust.attacks import available_attacks
    from medrobust.attacks.registry import attack_class

    key = str(name).lower()
    return key in available_attacks() and bool(attack_class(key).black_box)


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not a tensor of logits")
    return out


def check_output_range(model: nn.Module, x: torch.Tensor) -> Flag | None:
    """``probability-outputs``: all outputs in [0, 1] (AutoAttack ``check_range_output``)."""
    z = _forward(model, x).double()
    if z.ndim != 2 or z.shape[1] < 2:
        return None
    lo, hi = float(z.min()), float(z.max())
    if lo < 0.0 or hi > 1.0:
        return None
    sums_to_one = bool(((z.sum(1) - 1.0).abs() < 1e-4).all())
    kind = "softmax" if sums_to_one else "sigmoid"
    return Flag(
        "probability-outputs",
        f"every output lies in [0, 1]{' and every row sums to 1' if sums_to_one else ''}: the model returns "
        f"{kind} probabilities. Attacks were run on log-probabilities; remove the final {kind} so that the "
        "model returns logits.",
        {"min_output": lo, "max_output": hi, "rows_sum_to_one": sums_to_one, "kind": kind, "n_checked": len(x)},
    )


class ProbabilitiesToLogits(nn.Module):
    """Wrap a model that returns probabilities so that it returns logits with the same argmax.

    ``softmax``: ``log p`` (``softmax(log p) = p``); ``sigmoid``: ``log p − log(1 − p)``.
    Probabilities are clamped to ``[1e-30, 1 − 1e-7]`` first; saturated outputs still have zero
    gradient, which is what the ``probability-outputs`` flag warns about.
    """

    def __init__(self, model: nn.Module, kind: str = "softmax") -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x)
        if self.kind == "softmax":
            return p.clamp_min(1e-30).log()
        p = p.clamp(1e-30, 1.0 - 1e-7)
        return p.log() - (1.0 - p).log()


def check_randomized(model: nn.Module, x: torch.Tensor, *, passes: int = 5, rtol: float = 1e-5) -> Flag | None:
    """``nondeterministic-forward``: outputs of ``passes`` forward passes differ (AutoAttack ``check_randomized``)."""
    ref = _forward(model, x).double()
    scale = 1.0 + float(ref.abs().max())
    worst = 0.0
    for _ in range(passes - 1):
        worst = max(worst, float((_forward(model, x).double() - ref).abs().max()))
    if worst <= rtol * scale:
        return None
    return Flag(
        "nondeterministic-forward",
        f"{passes} forward passes of the same batch in eval mode differ by up to {worst:.3g}: the model is "
        "randomised (dropout at test time, noise injection, stochastic defence). Plain attacks overestimate its "
        "robustness; evaluate with expectation over transformation (EOT) and report the randomness.",
        {"passes": passes, "max_abs_difference": worst, "tolerance": rtol * scale, "n_checked": len(x)},
    )


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    from medrobust.attacks import get_loss

    fn = get_loss(loss)
    with torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        z = model(xx)
        (g,) = torch.autograd.grad(fn(z, y, None).sum(), xx, allow_unused=True)
    return torch.zeros_like(x) if g is None else g.detach()


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Flag | None:
    """``zero-gradients``: zero input gradients of the logit margin, or vanishing cross-entropy gradients.

    Parameters
    ----------
    model
        Classifier returning logits (parameters need not require gradients).
    x, y
        Clean-correct samples and their labels.

    Notes
    -----
    AutoAttack ``check_zero_gradients`` fires when the gradient at the starting point is zero for
    some sample. The logit margin ``max_{j≠y} z_j − z_y`` does not saturate, so a zero margin
    gradient means a flat or masked model (quantisation, ``round``, non-differentiable layers). A
    zero cross-entropy gradient with a non-zero margin gradient means saturated softmax (very
    confident logits): CE-driven attacks cannot move and the evaluation should use the margin or
    DLR loss.
    """
    if len(x) == 0:
        return None
    params = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in params:
        p.requires_grad_(False)
    try:
        g_margin = _input_grad(model, x, y, "margin")
        g_ce = _input_grad(model, x, y, "ce")
    finally:
        for p, r in params:
            p.requires_grad_(r)
    zero = (g_margin.flatten(1).abs().amax(1) == 0)
    vanishing = (g_ce.flatten(1).abs().amax(1) == 0) & ~zero
    n_zero, n_van = int(zero.sum()), int(vanishing.sum())
    if n_zero == 0 and n_van == 0:
        return None
    parts = []
    if n_zero:
        parts.append(f"the logit-margin input gradient is exactly zero for {n_zero} of {len(x)} samples "
                     "(flat or masked model)")
    if n_van:
        parts.append(f"the cross-entropy gradient vanishes for {n_van} of {len(x)} samples (saturated softmax; "
                     "use the margin or DLR loss)")
    return Flag(
        "zero-gradients",
        "; ".join(parts) + ". Gradient attacks cannot make progress there, so robust accuracy may be overestimated.",
        {"n_checked": len(x), "n_zero_margin_gradient": n_zero, "n_vanishing_ce_gradient": n_van},
    )


def attack_loss(name: str, kwargs: dict[str, Any]) -> str | None:
    """The loss an attack will use: ``kwargs["loss"]`` or the class default (``None`` if it has none)."""
    from medrobust.attacks.registry import attack_class

    if "loss" in kwargs:
        return str(kwargs["loss"]).lower()
    try:
        param = inspect.signature(attack_class(name).__init__).parameters.get("loss")
    except Exception:  # an unregistered optional attack
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return str(param.default).lower()


def check_few_classes_dlr(num_classes: int, attacks: Iterable[tuple[str, str, dict[str, Any]]]) -> Flag | None:
    """``few-classes-dlr``: an attack uses DLR and ``num_classes < 4`` (AutoAttack ``check_n_classes``).

    Parameters
    ----------
    num_classes
        Number of model outputs.
    attacks
        ``(label, registry name, kwargs)`` of every attack of the evaluation.
    """
    if num_classes >= 4:
        return None
    users = [label for label, name, kw in attacks if attack_loss(name, kw) == "dlr"]
    if not users:
        return None
    return Flag(
        "few-classes-dlr",
        f"{', '.join(users)} use the DLR loss, which needs at least 4 classes (targeted DLR: 4, untargeted: 3), "
        f"but the model has {num_classes}; the attacks fell back to the logit margin loss.",
        {"num_classes": num_classes, "attacks": users},
    )


def no_collapse_flag(*, n: int, still_correct: int, num_classes: int, eps: float) -> Flag | None:
    """``no-collapse-large-eps`` from the outcome of a very-large-ε PGD run (ART ``SecurityCurve``).

    Parameters
    ----------
    n
        Clean-correct samples attacked.
    still_correct
        Of those, how many are still correctly classified.
    num_classes
        ``K``; the flag fires when ``still_correct / n > 1 / K``.
    eps
        The large radius used.
    """
    if n == 0:
        return None
    acc = still_correct / n
    if acc <= 1.0 / num_classes:
        return None
    return Flag(
        "no-collapse-large-eps",
        f"PGD with ε = {eps:g} (far beyond the evaluated radii) still leaves {still_correct} of {n} clean-correct "
        f"samples ({acc:.1%}) correct, more than chance (1/{num_classes}). With such a radius a working attack "
        "reaches any input; this points to gradient masking or a broken attack set-up.",
        {"eps": eps, "n": n, "still_correct": still_correct, "accuracy": acc, "threshold": 1.0 / num_classes},
    )


def black_box_stronger_flag(
    status: np.ndarray, labels: Sequence[str], black_box: Sequence[bool], eps: Sequence[float]
) -> Flag | None:
    """``black-box-stronger`` from per-sample attack outcomes (AutoAttack ``check_square_sr``).

    Parameters
    ----------
    status
        ``(E, M, N)`` int array over radii, attacks and samples: ``1`` success, ``0`` ran and failed,
        ``-1`` not run.
    labels, black_box
        Attack labels and whether each is black-box (length ``M``).
    eps
        The radii (length ``E``).

    Notes
    -----
    Fires when some sample was broken by a black-box attack although every white-box attack ran on
    it and failed: a gradient-free search beat the gradient attacks, a classic sign of gradient
    masking. Needs at least one white-box and one black-box attack.
    """
    bb = np.asarray(black_box, dtype=bool)
    if not bb.any() or bb.all():
        return None
    st = np.asarray(status)
    white_failed = (st[:, ~bb, :] == 0).all(axis=1)
    bb_success = (st[:, bb, :] == 1).any(axis=1)
    hits = white_failed & bb_success
    if not hits.any():
        return None
    per_eps = {f"{float(e):g}": int(h.sum()) for e, h in zip(eps, hits)}
    total = int(hits.any(axis=0).sum())
    return Flag(
        "black-box-stronger",
        f"black-box attacks ({', '.join(l for l, b in zip(labels, bb) if b)}) broke {total} sample(s) on which "
        f"every white-box attack failed (per ε: {per_eps}); the white-box attacks are not working on this model "
        "(gradient masking?).",
        {"samples": total, "per_eps": per_eps},
    )


def _find_degenerate(obj: Any, path: str, depth: int) -> str | None:
    """The dotted path of the first truthy ``degenerate`` key in ``obj`` (nested mappings, depth <= 3)."""
    if not isinstance(obj, Mapping) or depth > 3:
        return None
    if obj.get("degenerate"):
        return f"{path}.degenerate"
    for k, v in obj.items():
        hit = _find_degenerate(v, f"{path}.{k}", depth + 1)
        if hit:
            return hit
    return None


def _training_collapse(model_card: Mapping[str, Any] | None) -> str | None:
    """Where the model card records a collapse during training (a truthy ``degenerate`` key under its
    ``training`` or ``metrics`` section, at any depth up to 3), e.g. ``"training.degenerate"``; else ``None``."""
    if not isinstance(model_card, Mapping):
        return None
    for section in ("training", "metrics"):
        hit = _find_degenerate(model_card.get(section), section, 1)
        if hit:
            return hit
    return None


def degenerate_model(y: Any, clean_pred: Any, classes: Sequence[str], *,
                     model_card: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The card's ``degenerate_model`` section, or ``None`` for a model that is not degenerate.

    Degenerate: the evaluated samples hold ``K >= 2`` classes and the model predicts one class on all
    of them, or its clean class-balanced accuracy (mean recall over the ``K`` classes present) is within
    :data:`DEGENERATE_MARGIN` of chance ``1/K``, or the model card records a collapse during training.
    A constant predictor keeps the accuracy of its class at every ε, so its robust accuracy looks like
    robustness while it is the class frequency.
    """
    y, p = np.asarray(y, dtype=np.int64), np.asarray(clean_pred, dtype=np.int64)
    present = np.unique(y)
    k = len(present)
    recall = [float((p[y == c] == c).mean()) for c in present]
    ba = float(np.mean(recall)) if k else 0.0
    predicted = np.unique(p)
    one = k >= 2 and len(predicted) == 1
    near = k >= 2 and abs(ba - 1.0 / k) <= DEGENERATE_MARGIN
    training = _training_collapse(model_card)
    if not (one or near or training):
        return None
    name = str(classes[int(predicted[0])]) if one and 0 <= int(predicted[0]) < len(classes) else None
    if one:
        headline = f"degenerate model: predicts one class ({name})"
    elif near:
        headline = (f"degenerate model: clean class-balanced accuracy {ba:.3f} is within {DEGENERATE_MARGIN} of "
                    f"chance (1/{k})")
    else:
        headline = f"degenerate model: its model card records a collapse during training ({training})"
    return {"headline": headline, "predicts_one_class": bool(one), "predicted_class": name,
            "balanced_accuracy": ba, "chance": (1.0 / k) if k else None, "classes_present": k,
            "near_chance": bool(near), "training_collapse": training}


def degenerate_model_flag(y: Any, clean_pred: Any, classes: Sequence[str], *,
                          model_card: Mapping[str, Any] | None = None) -> Flag | None:
    """``degenerate-model`` (see :func:`degenerate_model`)."""
    d = degenerate_model(y, clean_pred, classes, model_card=model_card)
    if d is None:
        return None
    return Flag(
        "degenerate-model",
        f"{d['headline']}. Its robust accuracy is not robustness: a constant predictor keeps the accuracy of its "
        "class at every ε. Retrain (class balancing) before reading any robustness number of this run.",
        d,
    )


def unverified_weights_flag(model_card: Mapping[str, Any] | None) -> Flag | None:
    """``unverified-weights``: the model card says ``weights_verified: false`` (loaded with ``--trust-unverified``)."""
    if not isinstance(model_card, Mapping) or model_card.get("weights_verified") is not False:
        return None
    return Flag(
        "unverified-weights",
        "the checkpoint's weights were loaded without checking them against a SHA-256 hash (--trust-unverified): "
        "the results may belong to other weights than the model card describes.",
        {"weights_sha256": model_card.get("weights_sha256")},
    )
