"""Gradient-masking check for a defended model: is its robustness real, or do its gradients just mislead PGD?

A defence can look robust under gradient attacks because it breaks the attack's gradients (shattered,
vanishing or noisy gradients) rather than because nearby adversarial examples are absent (Athalye,
Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018, §3; Carlini et al.,
"On Evaluating Adversarial Robustness", arXiv 1902.06705, 2019, §4 and Appendix checklist). This module
runs three of their checks on one batch:

1. **Black-box vs white-box.** A gradient-free attack (Square, Andriushchenko et al., ECCV 2020; or SPSA,
   Uesato et al., ICML 2018) must not find more adversarial examples than PGD (Madry et al., ICLR 2018)
   at the same ε: if it does, PGD's gradients are uninformative.
2. **Large ε.** With a radius far beyond the data's scale PGD must break (almost) every sample: an
   unbounded attack that fails signals a gradient problem (Carlini et al. 2019, §4.2).
3. **Loss landscape.** The loss along the gradient-sign direction must rise at least as fast as along
   random sign directions of the same L∞ size; a flat or falling profile along the gradient while random
   directions raise the loss indicates masked gradients (a first-order analogue of the landscape plots
   of Engstrom, Ilyas & Athalye, arXiv 1807.10272, 2018).

>>> from medrobust.evaluation.masking import gradient_masking_report
>>> report = gradient_masking_report(model, x, y, eps=0.03, large_eps=0.5, bounds=(0.0, 1.0))   # doctest: +SKIP
>>> report["masking_suspected"], report["flags"]                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import frozen_eval, get_attack
from medrobust.checks import check_choice, check_float, check_int
from medrobust.errors import ConfigError
from medrobust.models.inference import forward

BLACK_BOX = ("square", "spsa")


def _accuracy(res: Any) -> float:
    return float((res.adv_pred == res.y).double().mean())


def _clip(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def loss_landscape(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, points: int = 6,
                   directions: int = 8, bounds: tuple[float, float] | None = None,
                   mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Mean cross-entropy along ``x + r·d`` for ``r`` in ``[0, eps]``: ``d`` = sign of the input gradient, and
    ``directions`` random sign (Rademacher) vectors.

    Returns
    -------
    dict
        ``radii``; ``gradient`` (mean loss per radius along the gradient sign); ``random_mean`` and
        ``random_max`` (mean over samples of the mean / the largest loss over the random directions) per
        radius.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    radii = torch.linspace(0.0, eps, points).tolist()
    with frozen_eval(model):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(F.cross_entropy(forward(model, xg, mask), y, reduction="sum"), xg)
        d_grad = g.sign() if mask is None else g.sign() * mask
        rand = []
        for _ in range(directions):
            d = torch.randint(0, 2, tuple(x.shape), generator=gen, device=gen.device).to(x) * 2 - 1
            rand.append(d if mask is None else d * mask)

        def losses(d: torch.Tensor) -> list[torch.Tensor]:
            with torch.no_grad():
                return [F.cross_entropy(forward(model, _clip(x + r * d, bounds), mask), y, reduction="none")
                        for r in radii]

        along_grad = losses(d_grad)
        along_rand = torch.stack([torch.stack(losses(d)) for d in rand])  # (directions, points, N)
    return {
        "radii": radii,
        "gradient": [float(v.mean()) for v in along_grad],
        "random_mean": [float(v) for v in along_rand.mean(0).mean(1)],
        "random_max": [float(v) for v in along_rand.max(0).values.mean(1)],
    }


def gradient_masking_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    large_eps: float,
    steps: int = 50,
    black_box: str = "square",
    black_box_steps: int = 1000,
    bounds: tuple[float, float] | None = None,
    mask: torch.Tensor | None = None,
    directions: int = 8,
    tolerance: float = 0.02,
    large_eps_max_accuracy: float = 0.05,
    generator_seed: int = 0,
) -> dict[str, Any]:
    """Run the three gradient-masking checks of the module docstring on ``(x, y)``.

    Parameters
    ----------
    model
        The classifier (logits); attacked in eval mode with frozen parameters.
    x, y
        A batch and its labels.
    eps
        The radius at which the defence claims robustness (L∞, data units).
    large_eps
        A radius far beyond the data's scale (e.g. 0.5 for [0, 1] beats): PGD must break nearly everything.
    steps
        PGD steps (step ``2.5·ε/steps``, random start).
    black_box
        ``"square"`` (default) or ``"spsa"``, run through :func:`medrobust.attacks.get_attack`.
    black_box_steps
        Iterations of the black-box attack.
    bounds
        Data range (e.g. ``(0, 1)``), or ``None``.
    mask
        Padding mask (perturbations stay off the padding).
    directions
        Random directions of the landscape check.
    tolerance
        How much lower the black-box robust accuracy may be than PGD's before it is flagged.
    large_eps_max_accuracy
        Robust accuracy at ``large_eps`` above this is flagged.
    generator_seed
        Seed of every attack's and the landscape's randomness.

    Returns
    -------
    dict
        ``clean_accuracy``; ``pgd_accuracy`` and ``black_box_accuracy`` at ``eps`` (robust accuracy: the
        label still predicted), ``worst_case_accuracy`` (robust to both); ``large_eps_accuracy``;
        ``landscape`` (:func:`loss_landscape`); ``flags`` (human-readable findings) and
        ``masking_suspected`` (any flag).
    """
    eps = check_float(eps, "eps", minimum=0.0, strict=True)
    large_eps = check_float(large_eps, "large_eps", minimum=0.0, strict=True)
    if large_eps <= eps:
        raise ConfigError(f"large_eps ({large_eps}) must exceed eps ({eps}); e.g. large_eps = 10·eps.")
    settings = {"steps": check_int(steps, "steps", minimum=1), "black_box": check_choice(black_box, "black_box", BLACK_BOX),
                "black_box_steps": check_int(black_box_steps, "black_box_steps", minimum=1), "bounds": bounds,
                "mask": mask, "seed": generator_seed}
    report: dict[str, Any] = {"n": int(x.shape[0]), "eps": eps, "large_eps": large_eps, "pgd_steps": settings["steps"],
                              "black_box": settings["black_box"], "black_box_steps": settings["black_box_steps"]}
    report.update(_attacks(model, x, y, eps, large_eps, settings))
    report["landscape"] = loss_landscape(model, x, y, eps=eps, directions=check_int(directions, "directions", minimum=1),
                                         bounds=bounds, mask=mask, generator=torch.Generator().manual_seed(generator_seed))
    report["flags"] = _flags(report, tolerance, large_eps_max_accuracy)
    report["masking_suspected"] = bool(report["flags"])
    return report


def _attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, large_eps: float,
             s: dict[str, Any]) -> dict[str, float]:
    """PGD at ``eps`` and ``large_eps`` and the black-box attack at ``eps`` (public attack API only)."""

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(s["seed"])

    def pgd(radius: float) -> Any:
        atk = get_attack("pgd", model, eps=radius, steps=s["steps"], rel_step_size=2.5 / s["steps"],
                         random_start=True, bounds=s["bounds"], generator=gen())
        return atk(x, y, mask=s["mask"])

    white, large = pgd(eps), pgd(large_eps)
    black = get_attack(s["black_box"], model, eps=eps, steps=s["black_box_steps"], bounds=s["bounds"],
                       generator=gen())(x, y, mask=s["mask"])
    return {
        "clean_accuracy": white.clean_accuracy,
        "pgd_accuracy": _accuracy(white),
        "black_box_accuracy": _accuracy(black),
        "worst_case_accuracy": float(((white.adv_pred == y) & (black.adv_pred == y)).double().mean()),
        "large_eps_accuracy": _accuracy(large),
    }


def _flags(r: dict[str, Any], tolerance: float, large_max: float) -> list[str]:
    flags = []
    if r["black_box_accuracy"] < r["pgd_accuracy"] - tolerance:
        flags.append(f"black-box {r['black_box']} is stronger than PGD at ε = {r['eps']:g} "
                     f"({r['black_box_accuracy']:.3f} < {r['pgd_accuracy']:.3f}): PGD's gradients are uninformative")
    if r["large_eps_accuracy"] > large_max:
        flags.append(f"PGD at ε = {r['large_eps']:g} leaves robust accuracy {r['large_eps_accuracy']:.3f} "
                     f"(> {large_max:g}): an unbounded attack should break nearly everything")
    land = r["landscape"]
    rise_grad = land["gradient"][-1] - land["gradient"][0]
    rise_rand = land["random_max"][-1] - land["random_max"][0]
    if rise_grad < max(rise_rand, 0.0) - 1e-6:
        flags.append(f"the loss rises less along the gradient sign ({rise_grad:+.4f}) than along the best of "
                     f"the random sign directions ({rise_rand:+.4f}) at ε = {r['eps']:g}: masked gradients")
    return flags
