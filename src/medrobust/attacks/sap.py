"""SAP: smooth adversarial perturbations for ECG (Han et al., Nature Medicine 2020).

Han, X., Hu, Y., Foschini, L., Chinitz, L., Jankelson, L. & Ranganath, R. "Deep learning models
for electrocardiograms are susceptible to adversarial attack", Nature Medicine 26, 360–363 (2020);
arXiv 1905.05163. Algorithm (Methods, "Smooth adversarial perturbations"):

1. Warm start: ``T`` steps of PGD (no random start by default) give ``δ_PGD``; ``θ_0 = δ_PGD``.
2. ``2T`` smoothed ascent steps on ``θ``: ``θ ← Π_ε(θ + α·sign(∇_θ L(f(x + S(θ)), y)))`` where ``S``
   is the filter of :mod:`medrobust.attacks.sap_filter` (the average of 25 Gaussian kernels) and the
   projection is on ``θ`` (``‖S(θ)‖ ≤ ‖θ‖ ≤ ε`` because ``K ≥ 0`` and ``ΣK = 1``).
3. Output ``x + S(θ)``, with the padding / masked region re-zeroed.

Output convention (``output=``): Han returns the **final** iterate ``x + S(θ_2T)``. The default here is
``"best"``: every sample's latest successful (admissible, misclassified) smoothed iterate, the final
iterate for the others. Any admissible misclassified point is a valid counterexample, and reporting it
is the evaluation convention of Croce & Hein (ICML 2020, arXiv 2003.01690): a robustness evaluation
must not count a sample as robust when the attack did find an adversarial example on the way. Han's
convention can only report fewer successes; ``output="final"`` reproduces it.

Kernels (``fs=``): Han's sizes and widths are in samples of his 300 Hz data. When the data's ``fs`` is
given they are defined in seconds (sizes/300 s) and converted to ``fs`` (sizes to the nearest odd
integer, widths exactly; ``reference_fs`` changes the 300 Hz), so that the smoothing has the same
cut-off at 125, 300, 360 or 500 Hz. With ``fs=None`` the kernels stay in samples (Han's literal filter,
which smooths 125 Hz beats far more strongly than 300 Hz records).

Other differences from Han's script, all optional or harmless: the mask (e.g. the padding of a
variable-length record) is applied at every step, so the model is attacked with exactly the signal
that is returned; with ``bounds`` the input is clipped; per-sample early stop can be switched on for the
smoothed stage. Ma & Liang (Comput. Biol. Med. 2022, arXiv 2110.09759) use SAP on MIT-BIH with
ε ∈ {0.01 … 0.3}, α = 0.01, T = 100.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext, as_step
from medrobust.attacks.pgd import OUTPUTS, check_steps, pgd_project, projected_ascent
from medrobust.attacks.registry import register_attack
from medrobust.attacks.sap_filter import HAN_FS, HAN_SIGMAS, HAN_SIZES, sap_kernel, scaled_kernels, smooth, smoothing_matrix
from medrobust.attacks.threat import project
from medrobust.checks import check_choice, check_int, check_positive
from medrobust.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs

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
    output
        ``"best"`` (default): each sample's latest successful smoothed iterate, else the final one;
        ``"final"``: Han's final iterate for every sample (see the module docstring for why).
    fs, reference_fs
        Sampling rate of the data and the rate at which ``sizes``/``sigmas`` are defined (default
        ``reference_fs = 300`` Hz, Han's data, whenever ``fs`` is given): kernels in seconds, rescaled
        by ``fs / reference_fs`` (:func:`~medrobust.attacks.sap_filter.scaled_kernels`). ``fs=None``:
        kernels in samples, exactly Han's filter whatever the data's rate.
    sizes, sigmas
        Gaussian kernel sizes and widths (Han: 5, 7, 11, 15, 19 × 1, 3, 5, 7, 10 samples at 300 Hz).
    loss, generator, units
        Shared arguments (:class:`~medrobust.attacks.base.ThreatArgs`); Han uses ``"ce"``. The random
        start (``random_start=True``) comes from per-sample streams.

    Attributes
    ----------
    kernel_sizes, kernel_sigmas
        The sizes and widths in samples at the data's rate after rescaling.

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
        steps: int = 20,
        smooth_steps: int | None = None,
        step_size: float | torch.Tensor | None = None,
        rel_step_size: float | None = None,
        warm_start: str = "pgd",
        random_start: bool = False,
        early_stop: bool = False,
        output: str = "best",
        fs: float | None = None,
        reference_fs: float | None = None,
        sizes: Sequence[int] = HAN_SIZES,
        sigmas: Sequence[float] = HAN_SIGMAS,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.warm_start = check_choice(warm_start, "warm_start", WARM_STARTS)
        self.steps = check_int(steps, "steps", minimum=1 if warm_start == "pgd" else 0)
        self.smooth_steps = check_int(2 * self.steps if smooth_steps is None else smooth_steps, "smooth_steps",
                                      minimum=1)
        self.step_size, self.rel_step_size = check_steps(step_size, rel_step_size, 0.1)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.output = check_choice(output, "output", OUTPUTS)
        self.fs = None if fs is None else float(check_positive(fs, "fs"))
        if reference_fs is not None and fs is None:
            raise ConfigError("reference_fs needs fs (the data's sampling rate); pass both or neither.")
        self.reference_fs = None if fs is None else float(check_positive(HAN_FS if reference_fs is None else reference_fs, "reference_fs"))
        self.sizes, self.sigmas = tuple(int(s) for s in sizes), tuple(float(s) for s in sigmas)
        self.kernel = sap_kernel(sizes=self.sizes, sigmas=self.sigmas, fs=self.fs, reference_fs=self.reference_fs)
        scale = 1.0 if self.fs is None or self.reference_fs is None else self.fs / self.reference_fs
        self.kernel_sizes, self.kernel_sigmas = scaled_kernels(self.sizes, self.sigmas, scale)
        super().__init__(model, **threat_kwargs)

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
            # ‖S(θ)‖ <= ‖θ‖ <= ε holds exactly; float rounding (of the filter or of x + δ) can exceed it by
            # an ulp. The forward value is therefore the threat model's admissible point, the gradient
            # that of x + S(θ) (the correction is a few ulps and detached).
            delta = smooth(th, kernel, matrix=matrix)
            if a.mask is not None:
                delta = delta * a.mask
            x_in = ctx.clip(a.x + delta)
            return x_in + (ctx.constrain(a, delta.detach()) - x_in).detach()

        def project_theta(a: Active, th: torch.Tensor, inc: torch.Tensor) -> torch.Tensor:
            return project(th + inc, a.eps, ctx.norm)

        projected_ascent(ctx, act, theta, steps=self.smooth_steps, project_v=project_theta, transform=transform,
                         early_stop=self.early_stop, output=self.output, mask_grad=False)
