"""Helpers for the black-box attack tests: a breakable linear model with a known minimal distance,
a model that counts the inputs it forwards, and a model whose backward pass raises."""

from __future__ import annotations

import torch
from torch import nn

from medrobust.attacks import BinaryLogitWrapper


class Linear(nn.Module):
    """``s(x) = w·x + b`` on the flattened input."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


def linear_problem(x: torch.Tensor, seed: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A two-logit linear model splitting ``x`` in half; returns ``(model, x, y, scores)`` (float64).

    The minimal perturbation flipping sample ``i`` has norm ``|scores_i| / ‖w‖₁`` (L∞) or
    ``|scores_i| / ‖w‖₂`` (L2).
    """
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    w = torch.randn(x[0].numel(), generator=g, dtype=torch.float64)
    s = x.flatten(1) @ w
    mid = s.sort().values[len(s) // 2 - 1: len(s) // 2 + 1]
    b = float(-mid.mean())
    model = BinaryLogitWrapper(Linear(w, b)).double()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, s + b


def min_distance(model: nn.Module, scores: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal adversarial distance of the linear problem in ``norm``."""
    w = model.model.w.detach()
    return scores.abs() / (w.abs().sum() if norm == "linf" else w.norm())


class _RaiseOnBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return z.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        raise RuntimeError("a black-box attack called backward on the model")


class Spy(nn.Module):
    """Wraps a model: counts forwarded rows and the largest forward, records whether grad was enabled,
    and raises if anything back-propagates through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0
        self.largest = 0
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.largest = max(self.largest, x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled() or x.requires_grad)
        return _RaiseOnBackward.apply(self.model(x))


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every batch it is given (in call order)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def batch_invariant(attack: object, x: torch.Tensor, y: torch.Tensor, split: int, **call: object) -> tuple:
    """Results of ``attack`` on the whole batch and on ``x[split:]`` alone (with the same sample ids)."""
    full = attack(x, y, **call)  # type: ignore[operator]
    part_call = {k: (v[split:] if isinstance(v, torch.Tensor) else v) for k, v in call.items()}
    part = attack(x[split:], y[split:], sample_ids=torch.arange(split, len(x)), **part_call)  # type: ignore[operator]
    return full, part
