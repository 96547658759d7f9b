"""Ascent rules: how an attack turns a gradient (or a gradient estimate) into an update.

One home for the update rules shared by the iterative attacks (PGD, SAP, SPSA):

* :class:`SignRule` — steepest ascent for the threat model's norm: ``sign(g)`` for L∞ and ``g / ‖g‖₂``
  for L2 (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
  arXiv 1706.06083; Goodfellow et al., ICLR 2015, arXiv 1412.6572).
* :class:`AdamRule` — Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
  arXiv 1412.6980, Algorithm 1), as used by SPSA (Uesato et al., ICML 2018, arXiv 1802.05666).
* :class:`AdamaxRule` — Adamax (Kingma & Ba, ICLR 2015, §7.1, Algorithm 2), as used by Ma & Liang's
  PGD evaluation (ICLR 2020 AI4AH workshop, arXiv 2005.09134).

A rule is created for a whole batch of ``n`` samples and keeps its per-sample state (moments, step
counter) as ``(n, ...)`` tensors. :meth:`AscentRule.step` receives the gradient of the *active* samples
and their row indices ``rows`` in the full batch, so samples that leave the active set (early stop)
simply stop being updated, and the state of the others is untouched: a sample's updates never depend
on which other samples are still active.

>>> import torch
>>> rule = make_rule("adamax", n=4, shape=(1, 8), device="cpu", dtype=torch.float64, normalize="linf")
>>> g = torch.randn(2, 1, 8, dtype=torch.float64)
>>> inc = rule.step(g, torch.tensor([0, 3]), scale=torch.full((2,), 0.01, dtype=torch.float64))
>>> inc.shape
torch.Size([2, 1, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from medrobust.attacks.threat import bview, canonical_norm, steepest_direction
from medrobust.checks import check_float
from medrobust.errors import ConfigError

RULES: tuple[str, ...] = ("sign", "adam", "adamax")


def _betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ConfigError(f"betas must be a pair (beta1, beta2) in [0, 1), got {betas!r}.")
    b1 = check_float(betas[0], "betas[0]", minimum=0.0)
    b2 = check_float(betas[1], "betas[1]", minimum=0.0)
    if b1 >= 1.0 or b2 >= 1.0:
        raise ConfigError(f"betas must be in [0, 1), got {betas!r}.")
    return b1, b2


class AscentRule:
    """Base class: an update direction for some rows of a batch, with per-row state.

    Parameters
    ----------
    n, shape, device, dtype
        Batch size, shape of one sample and the tensors' device and dtype (for the state).
    """

    name = "rule"

    def __init__(self, *, n: int, shape: tuple[int, ...], device: Any, dtype: torch.dtype) -> None:
        self.n, self.shape, self.device, self.dtype = int(n), tuple(shape), device, dtype
        self.t = torch.zeros(self.n, dtype=torch.long, device=device)

    def _zeros(self) -> torch.Tensor:
        return torch.zeros((self.n, *self.shape), device=self.device, dtype=self.dtype)

    def step(self, grad: torch.Tensor, rows: torch.Tensor, *, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The update of ``rows`` (indices into the batch) for their gradient ``grad`` ``(len(rows), ...)``.

        ``scale`` ``(len(rows),)``: per-row step size multiplying the update (``None``: 1).
        """
        self.t[rows] += 1
        out = self._direction(grad, rows)
        if scale is None:
            return out
        return out * bview(scale.to(out.dtype), out)

    def _direction(self, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SignRule(AscentRule):
    """Steepest ascent of the norm: ``sign(g)`` (L∞) or ``g / ‖g‖₂`` (L2); stateless."""

    name = "sign"

    def __init__(self, *, norm: str = "linf", **kw: Any) -> None:
        super().__init__(**kw)
        self.norm = canonical_norm(norm)

    def _direction(self, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return steepest_direction(grad, self.norm)


class _MomentRule(AscentRule):
    """Shared parts of Adam and Adamax: betas, ε and the optional normalisation of the input."""

    def __init__(self, *, betas: Any = (0.9, 0.999), eps: float = 1e-8, normalize: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.beta1, self.beta2 = _betas(betas)
        self.eps = check_float(eps, "eps", minimum=0.0, strict=True)
        self.normalize = None if normalize is None else canonical_norm(normalize)
        self.m = self._zeros()

    def _input(self, grad: torch.Tensor) -> torch.Tensor:
        return grad if self.normalize is None else steepest_direction(grad, self.normalize)


class AdamRule(_MomentRule):
    """Adam on the ascent direction ``d`` (Kingma & Ba, ICLR 2015, Algorithm 1).

    ``m ← β1·m + (1−β1)·d``; ``v ← β2·v + (1−β2)·d²``; update ``m̂ / (sqrt(v̂) + ε)`` with the bias
    corrections ``m̂ = m/(1−β1^t)``, ``v̂ = v/(1−β2^t)`` (``t`` counted per row). ``normalize="linf"``
    feeds ``sign(g)`` instead of ``g`` (``"l2"``: ``g/‖g‖₂``).
    """

    name = "adam"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.v = self._zeros()

    def _direction(self, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        d = self._input(grad)
        m = self.m[rows].mul_(self.beta1).add_(d, alpha=1.0 - self.beta1)
        v = self.v[rows].mul_(self.beta2).addcmul_(d, d, value=1.0 - self.beta2)
        self.m[rows], self.v[rows] = m, v
        t = self.t[rows].to(torch.float64)
        c1 = bview((1.0 - self.beta1**t).to(d.dtype), d)
        c2 = bview((1.0 - self.beta2**t).to(d.dtype), d)
        return (m / c1) / ((v / c2).sqrt() + self.eps)


class AdamaxRule(_MomentRule):
    """Adamax on the ascent direction ``d`` (Kingma & Ba, ICLR 2015, §7.1; ``torch.optim.Adamax``).

    ``m ← β1·m + (1−β1)·d``; ``u ← max(β2·u, |d| + ε)``; update ``m / u / (1−β1^t)`` (``t`` per row).
    ``normalize="linf"`` feeds ``sign(g)`` (Ma & Liang's PGD), ``"l2"`` ``g/‖g‖₂``.
    """

    name = "adamax"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.u = self._zeros()

    def step(self, grad: torch.Tensor, rows: torch.Tensor, *, scale: torch.Tensor | None = None) -> torch.Tensor:
        # the bias correction is folded into the step size (m/u · lr/(1−β1^t)), as torch.optim.Adamax does
        self.t[rows] += 1
        d = self._input(grad)
        m = self.m[rows].mul_(self.beta1).add_(d, alpha=1.0 - self.beta1)
        u = torch.maximum(self.u[rows] * self.beta2, d.abs() + self.eps)
        self.m[rows], self.u[rows] = m, u
        corr = (1.0 - self.beta1 ** self.t[rows].to(torch.float64)).to(d.dtype)
        lr = corr.new_ones(corr.shape) if scale is None else scale.to(d.dtype)
        return m / u * bview(lr / corr, d)


_RULES: dict[str, type[AscentRule]] = {"sign": SignRule, "adam": AdamRule, "adamax": AdamaxRule}


def make_rule(name: str, *, n: int, shape: tuple[int, ...], device: Any, dtype: torch.dtype,
              **kw: Any) -> AscentRule:
    """The rule ``name`` (``"sign"``, ``"adam"``, ``"adamax"``) for a batch of ``n`` samples of ``shape``.

    Extra keywords go to the rule: ``norm`` (sign), ``betas``, ``eps``, ``normalize`` (Adam, Adamax).
    """
    if name not in _RULES:
        raise ConfigError(f"unknown ascent rule {name!r}; choose one of {RULES}.")
    try:
        return _RULES[name](n=n, shape=tuple(shape), device=device, dtype=dtype, **kw)
    except TypeError as exc:
        raise ConfigError(f"ascent rule {name!r}: invalid arguments {sorted(kw)}: {exc}") from None
