"""Ma & Liang's per-unit weight normalisation and dead-unit re-initialisation (their released training code).

Ma, L. & Liang, L. "Improve robustness of DNN for ECG signal classification: a noise-to-signal
ratio perspective", ICLR 2020 AI4AH workshop (arXiv 2005.09134).

* Initialisation: each output unit's weight vector has unit L2 norm, biases start at 0.
* ``normalize_kernels`` (called before every training step): each unit's weight vector is divided
  by its L2 norm and its bias by the same factor, which rescales the unit without changing its sign.
* Dead-unit re-initialisation: units whose absolute weight gradient summed over an epoch is exactly
  zero get a fresh random unit-norm weight vector and bias 0.

Unlike the reference code we normalise *every* listed layer (the reference skipped the last CNN
block through an off-by-one); pass ``layers`` explicitly to reproduce a different coverage.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def _units(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1)


@torch.no_grad()
def unit_norm_init(layers: Iterable[nn.Module], generator: torch.Generator | None = None) -> None:
    """Random weights rescaled to unit L2 norm per output unit; zero bias."""
    for layer in layers:
        w = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype)
        w = w / _units(w).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (w.ndim - 1))
        layer.weight.copy_(w)
        if layer.bias is not None:
            layer.bias.zero_()


@torch.no_grad()
def normalize_kernels(layers: Iterable[nn.Module], eps: float = 1e-12) -> None:
    """Divide each unit's weights and bias by the unit's weight L2 norm."""
    for layer in layers:
        norm = _units(layer.weight).norm(dim=1).clamp_min(eps)
        layer.weight.div_(norm.view(-1, *[1] * (layer.weight.ndim - 1)))
        if layer.bias is not None:
            layer.bias.div_(norm)


class KernelNormMixin:
    """Adds Ma & Liang's weight normalisation to a model listing its layers in ``norm_layers()``."""

    weight_norm: bool

    def norm_layers(self) -> list[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError

    def normalize_kernels(self) -> None:
        """Re-normalise every listed unit (no-op unless the model was built with ``weight_norm=True``)."""
        if self.weight_norm:
            normalize_kernels(self.norm_layers())

    @torch.no_grad()
    def reinit_dead_units(self, grad_abs_sums: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> int:
        """Re-initialise units whose accumulated |grad| is exactly 0; returns how many were reset."""
        count = 0
        named = {n: m for n, m in self.named_modules()}  # type: ignore[attr-defined]
        for name, acc in grad_abs_sums.items():
            layer = named[name]
            dead = _units(acc).sum(1) == 0
            if dead.any():
                fresh = torch.randn((int(dead.sum()), *layer.weight.shape[1:]), generator=generator)
                fresh = fresh / _units(fresh).norm(dim=1).view(-1, *[1] * (fresh.ndim - 1))
                layer.weight[dead] = fresh.to(layer.weight.dtype)
                if layer.bias is not None:
                    layer.bias[dead] = 0.0
                count += int(dead.sum())
        return count
