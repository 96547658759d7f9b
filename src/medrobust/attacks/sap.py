"""SAP: smooth adversarial perturbations for ECG (Han et al., Nature Medicine 2020).

Han, X., Hu, Y., Foschini, L., Chinitz, L., Jankelson, L. & Ranganath, R. "Deep learning models
for electrocardiograms are susceptible to adversarial attack", Nature Medicine 26, 360–363 (2020);
arXiv 1905.05163. Algorithm as specified in methods-ecg.md §2.6:

1. Warm start: ``T`` steps of PGD (no random start by default) give ``δ_PGD``; ``θ_0 = δ_PGD``.
2. ``2T`` smoothed ascent steps on ``θ``: ``θ ← Π_ε(θ + α·sign(∇_θ L(f(x + S(θ)), y)))`` where ``S``
   is the 19-tap filter of :mod:`medrobust.attacks.smoothing` (the average of 25 Gaussian kernels) and
   the projection is on ``θ`` (``‖S(θ)‖ ≤ ‖θ‖ ≤ ε`` because ``K ≥ 0`` and ``ΣK = 1``).
3. Output ``x + S(θ)``, with the padding / masked region re-zeroed.

Differences from Han's script, all optional or harmless: the mask (e.g. the padding of a
variable-length record) is applied at every step, so the model is attacked with exactly the
signal that is returned; with ``bounds`` the input is clipped; each sample's latest successful
smoothed iterate is kept (otherwise the last iterate, as in Han); per-sample early stop can be
switched on for the smoothed stage; the kernels can be defined in seconds (``fs`` plus
``reference_fs``) so that the smoothing has the same cut-off at 125, 300, 360 or 500 Hz.
Ma & Liang use SAP on MIT-BIH with ε ∈ {0.01 … 0.3}, α = 0.01, T = 100 (methods-ecg.md §4.2).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext, as_step, check_int, check_positive
from medrobust.attacks.pgd import pgd_project, projected_ascent
from medrobust.attacks.registry import register_attack
from medrobust.attacks.smoothing import HAN_SIGMAS, HAN_SIZES, sap_kernel, smooth, smoothing_matrix
from medrobust.attacks.threat import ThreatModel, project
from medrobust.errors import ConfigError

WARM_STARTS: tuple[str, ...] = ("pgd", "zero")
_MATRIX_MAX_LEN = 1024  # below this length the filter runs as one banded matrix product


@register_attack("sap")
class SAP(Attack):
    """Smooth adversarial perturbation (Han et al., Nature Medicine 2020, arXiv 1905.05163).

    Parameters
    ----------
    model
        Classifier returning logits.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`). Han: ε = 10 ADC units, no bounds.
    steps
        ``T``: PGD warm-start steps (Han: 20; Ma & Liang: 100).
    smooth_steps
        Smoothed steps on ``θ`` (default ``2·steps``; CardioDefense's training adversary uses ``T``).
    step_size
        Absolute step α for both stages (Han: 1 ADC unit; Ma & Liang: 0.01). Default:
        ``rel_step_size · ε``.
    rel_step_size
        Step as a fraction of each sample's ε when ``step_size`` is None (default 0.1, Han's α/ε).
    warm_start
        ``"pgd"`` (Han) or ``"zero"`` (``θ_0 = 0``, no warm-start steps).
    random_start
        Random start of the warm-start PGD (Han: off).
    early_stop
        Drop samples from the smoothed stage once adversarial (Han: off).
    fs, reference_fs
        Sampling rate of the data and the rate at which the kernel sizes/widths are defined. Both
        ``None``: kernels in samples (Han's original). E.g. ``fs=500, reference_fs=300`` stretches
        Han's kernels so that they smooth 500 Hz data as they smoothed his 300 Hz data.
    sizes, sigmas
        Gaussian kernel sizes and widths (Han: 5, 7, 11, 15, 19 × 1, 3, 5, 7, 10 samples).
    loss
        ``"ce"`` (Han), ``"margin"``, ``"soft_margin"`` or ``"dlr"``.
    generator
        Random generator (used only with ``random_start=True``).

    Notes
    -----
    Smoothing runs along the last axis (time), lead by lead; on images it smooths along rows.
    Gradient evaluations: ``steps + smooth_steps`` per sample (plus one final forward).
    """

    name = "sap"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        steps: int = 20,
        smooth_steps: int | None = None,
        step_size: float | torch.Tensor | None = None,
        rel_step_size: float | None = None,
        norm: str = "linf",
        warm_start: str = "pgd",
        random_start: bool = False,
        early_stop: bool = False,
        fs: float | None = None,
        reference_fs: float | None = None,
        sizes: Sequence[int] = HAN_SIZES,
        sigmas: Sequence[float] = HAN_SIGMAS,
        loss: str = "ce",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask, threat=threat,
                         loss=loss, generator=generator)
        if warm_start not in WARM_STARTS:
            raise ConfigError(f"warm_start must be one of {WARM_STARTS}, got {warm_start!r}.")
        self.warm_start = warm_start
        self.steps = check_int(steps, "steps", minimum=1 if warm_start == "pgd" else 0)
        self.smooth_steps = check_int(2 * self.steps if smooth_steps is None else smooth_steps, "smooth_steps",
                                      minimum=1)
        self.step_size = check_positive(step_size, "step_size")
        self.rel_step_size = check_positive(rel_step_size, "rel_step_size")
        if self.step_size is not None and self.rel_step_size is not None:
            raise ConfigError("pass step_size (absolute) or rel_step_size (fraction of eps), not both.")
        if self.step_size is None and self.rel_step_size is None:
            self.rel_step_size = 0.1
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.fs = None if fs is None else float(check_positive(fs, "fs"))
        self.reference_fs = None if reference_fs is None else float(check_positive(reference_fs, "reference_fs"))
        self.sizes, self.sigmas = tuple(int(s) for s in sizes), tuple(float(s) for s in sigmas)
        self.kernel = sap_kernel(sizes=self.sizes, sigmas=self.sigmas, fs=self.fs, reference_fs=self.reference_fs)

    def hyperparameters(self) -> dict[str, Any]:
        step = self.step_size
        return {
            "steps": self.steps,
            "smooth_steps": self.smooth_steps,
            "step_size": step.tolist() if isinstance(step, torch.Tensor) else step,
            "rel_step_size": self.rel_step_size,
            "warm_start": self.warm_start,
            "random_start": self.random_start,
            "early_stop": self.early_stop,
            "fs": self.fs,
            "reference_fs": self.reference_fs,
            "kernel_taps": int(self.kernel.numel()),
            "loss": self.loss,
        }

    def _run(self, ctx: AttackContext) -> None:
        step = as_step(self.step_size, self.rel_step_size, ctx.eps)
        act = ctx.active(step=step, only_unsuccessful=self.early_stop)
        if len(act) == 0:
            return
        if self.warm_start == "pgd":
            x0 = ctx.random_start(act) if self.random_start else act.x.clone()
            _, x_pgd = projected_ascent(ctx, act, x0, steps=self.steps, project_v=pgd_project(ctx), record=False,
                                        early_stop=False)
            theta = x_pgd - act.x
        else:
            theta = torch.zeros_like(act.x)
        kernel = self.kernel.to(device=act.x.device, dtype=act.x.dtype)
        length = act.x.shape[-1]
        matrix = (smoothing_matrix(self.kernel, length, dtype=act.x.dtype, device=act.x.device)
                  if length <= _MATRIX_MAX_LEN else None)

        def transform(a: Active, th: torch.Tensor) -> torch.Tensor:
            # ‖S(θ)‖ <= ‖θ‖ <= ε holds exactly; a float-rounding excess of one ulp is caught and
            # re-projected by the final threat-model check of Attack.__call__.
            delta = smooth(th, kernel, matrix=matrix)
            if a.mask is not None:
                delta = delta * a.mask
            return ctx.clip(a.x + delta)

        def project_theta(a: Active, th: torch.Tensor, inc: torch.Tensor) -> torch.Tensor:
            return project(th + inc, a.eps, ctx.norm)

        projected_ascent(ctx, act, theta, steps=self.smooth_steps, project_v=project_theta, transform=transform,
                         early_stop=self.early_stop, mask_grad=False)
