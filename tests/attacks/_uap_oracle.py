"""Test oracle: the plain method a universal-perturbation solver must never lose to.

Projected stochastic gradient ascent on a clipped cross-entropy (the stochastic UAP solver of Shafahi,
Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial training", AAAI 2020, arXiv 1811.11304,
Algorithm 1 with its clipped loss): shuffled mini-batches of the fitting set; the per-sample cross-entropy
against the clean prediction is capped at ``ceiling`` (a sample already fooled that far stops pulling);
``v`` steps by ``step`` along the normalised gradient of the batch mean (L2) or its sign (L∞) and is
projected back onto the ball ``‖v‖_p ≤ ξ``. No schedule, no best-iterate: the last ``v`` is the answer.

Written from that description for the tests and ``benchmarks/uap_solver_vs_plain.py``; it is not part of
the library (it must stay independent of :mod:`medrobust.attacks.universal`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def plain_uap(model: nn.Module, x: torch.Tensor, *, xi: float, norm: str = "l2", step: float | None = None,
              passes: int = 10, batch_size: int = 64, ceiling: float = 2.0,
              bounds: tuple[float, float] | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Fit ``v`` (sample shape) on ``x``; returns ``(v, grad_evals)`` (rows back-propagated).

    ``step`` defaults to ``ξ/5``; ``ceiling`` is the CE cap in nats.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    with torch.no_grad():
        clean = torch.cat([model(c).argmax(1) for c in x.split(1024)])
    step = xi / 5 if step is None else step
    v = torch.zeros(x.shape[1:], dtype=x.dtype)
    evals = 0
    for _ in range(passes):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            v.requires_grad_(True)
            ce = F.cross_entropy(model((x[idx] + v).clamp(lo, hi)), clean[idx], reduction="none")
            (g,) = torch.autograd.grad(ce.clamp(max=ceiling).mean(), v)
            evals += len(idx)
            with torch.no_grad():
                d = g.sign() if norm == "linf" else g / g.norm().clamp_min(1e-30)
                v = v + step * d
                v = v.clamp(-xi, xi) if norm == "linf" else v * min(1.0, xi / max(float(v.norm()), 1e-300))
    return v.detach(), evals
