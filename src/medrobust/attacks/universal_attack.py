"""The universal adversarial perturbation as an attack: one perturbation for every sample of the call.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR 2017 (arXiv
1610.08401): a single ``v`` with ``‖v‖_p ≤ ξ`` added to every input. Hirano, Minagi & Takemoto (BMC Med.
Imaging 21:9, 2021) showed that such perturbations fool medical image classifiers at ζ = 2–4 % of the inputs'
mean L2 norm. :class:`UniversalAttack` runs the library's fitting solver
(:class:`~medrobust.attacks.universal.UniversalPerturbation`, ``method="batched"``: projected steepest ascent on
the clipped cross-entropy against the clean prediction, Shafahi et al., AAAI 2020) on the samples of the call
and returns ``clip(x + v)`` for all of them, so that the evaluation protocol can report robust accuracy under a
universal perturbation with the same card as any per-sample attack.

The perturbation is fitted on the very samples it is applied to: the strongest universal adversary for that
set (a white-box worst case, as the protocol's other rows are), not a perturbation transferred from training
inputs as in the papers' held-out fooling rates. Because the result of one sample depends on the others in the
call, :attr:`universal` is ``True`` and :func:`medrobust.evaluation.evaluate` gives such an attack every
evaluated sample in one call (one perturbation per radius); the samples' own random streams do not apply.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from typing_extensions import Unpack

from medrobust.attacks.base import Attack, AttackContext, ThreatArgs
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import lp_norm
from medrobust.attacks.universal import UniversalPerturbation
from medrobust.checks import check_int, check_positive
from medrobust.errors import ConfigError


@register_attack("uap")
class UniversalAttack(Attack):
    """One universal perturbation fitted on the call's samples (Moosavi-Dezfooli et al., CVPR 2017).

    Parameters
    ----------
    model
        Classifier returning logits.
    passes
        Passes of the batched solver over the samples (the perturbation after the best pass is kept).
    batch_size
        Samples per solver step.
    kappa
        Logit margin beyond which a fooled sample stops pulling the perturbation.
    step_size
        Initial solver step in input units (default ξ/10, cosine-decayed to a tenth).
    eps, norm, eps_mode, bounds, mask, threat, generator, units
        The shared arguments (:class:`~medrobust.attacks.base.ThreatArgs`); ``eps`` is the perturbation's radius
        ξ (one radius for the whole call: ``eps_mode="abs"``), ``norm`` usually ``"l2"``. ``loss`` is not used:
        the solver maximises its clipped cross-entropy.

    Notes
    -----
    Success is judged against the labels like every attack; the solver pushes away from the *clean
    prediction* (the two agree on the clean-correct samples the evaluation attacks). Cost: ``passes``
    forward+backward per sample plus two forwards.
    """

    name = "uap"
    universal: ClassVar[bool] = True
    """The outcome of a sample depends on the other samples of the call (see the module docstring)."""

    def __init__(self, model: Any, *, passes: int = 20, batch_size: int = 64, kappa: float = 3.0,
                 step_size: float | None = None, **threat_kwargs: Unpack[ThreatArgs]) -> None:
        super().__init__(model, **threat_kwargs)
        self.passes = check_int(passes, "passes", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not kappa >= 0:
            raise ConfigError(f"kappa must be a number >= 0, got {kappa!r}.")
        self.kappa = float(kappa)
        self.step_size = check_positive(step_size, "step_size")
        if self.threat.eps_mode != "abs":
            raise ConfigError(f"the universal attack needs one radius in input units (eps_mode='abs'), got "
                              f"eps_mode={self.threat.eps_mode!r}.")

    def _run(self, ctx: AttackContext) -> None:
        if ctx.target is not None:
            raise ConfigError("the universal attack is untargeted here (one perturbation away from each sample's "
                              "clean prediction); for a targeted UAP use UniversalPerturbation(target=t).")
        eps = ctx.eps.detach().flatten()
        if not bool((eps == eps[0]).all()):
            raise ConfigError("the universal attack applies one perturbation to every sample: pass one radius "
                              "(a scalar eps), not per-sample radii.")
        act = ctx.active(only_unsuccessful=False)
        lo_hi = None if ctx.bounds is None else (float(ctx.bounds[0].min()), float(ctx.bounds[1].max()))
        gen = torch.Generator().manual_seed(ctx.seed)   # the solver's shuffles: the same on CPU and GPU
        solver = UniversalPerturbation(
            ctx.model, norm=ctx.norm, zeta=None, eps=float(eps[0]), method="batched",
            max_iter=self.passes, batch_size=self.batch_size, kappa=self.kappa, step_size=self.step_size,
            bounds=lo_hi, generator=gen)
        res = solver.fit(ctx.x, mask=ctx.mask)        # the mask (padding, threat) gates v and reaches the model
        x_in = self._inside(solver, ctx, res.delta)
        with torch.no_grad():
            logits = ctx.forward(x_in, act.idx).detach()
        ctx.n_grad += len(res.history)
        ctx.n_fwd += len(res.history) + 2
        ctx.record_final(act, x_in, logits, overwrite=True)

    @staticmethod
    def _inside(solver: UniversalPerturbation, ctx: AttackContext, v: torch.Tensor) -> torch.Tensor:
        """``clip(x + v)`` with the one ``v`` shrunk until every sample's exact perturbation is inside its radius:
        float32 rounding of ``x + v`` can leave a sample a hair outside, and the final check of
        :class:`~medrobust.attacks.base.Attack` would then re-project that sample alone (no longer universal)."""
        for k in range(8):
            x_in = solver.apply(ctx.x, v, mask=ctx.mask)
            if not bool((lp_norm(x_in - ctx.x, ctx.norm, exact=True) > ctx.eps).any()):
                break
            v = v * (1.0 - 1e-5 * 4.0 ** k)
        return x_in
