"""Projected gradient descent (PGD) under L∞ or L2, with restarts, active-set early stop and Adamax.

Madry, A., Makelov, A., Schmidt, L., Tsipras, D. & Vladu, A. "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018 (arXiv 1706.06083). Iteration (maximising a per-sample
loss ``L``)::

    x_{k+1} = Π_{B(x, ε) ∩ bounds}( x_k + α · dir(∇_x L(f(x_k), y)) ),

with ``dir(g) = sign(g)`` for L∞ and ``g / ‖g‖₂`` for L2 (the gradient is masked before it is
normalised), ``x_0 = x`` or a uniformly random point of the ball. Options:

* ``restarts``: further runs from new random starts on the samples that are still robust, keeping
  every sample's successful example (Ma & Liang's ``repeated_pgd_attack``, Comput. Biol. Med. 2022, arXiv 2110.09759).
* ``early_stop``: per-sample stop on an *active set*: a sample leaves the batch as soon as it is
  adversarial (and samples misclassified when clean are never attacked); only the remaining samples
  are forwarded (as AutoAttack's ``ind_to_fool``, Croce & Hein, ICML 2020).
* ``update="adamax"``: the perturbation is driven by an Adamax optimiser (Kingma & Ba, ICLR 2015,
  arXiv 1412.6980, §7.1) fed with the ascent direction, learning rate ``α``, β = (0.9, 0.999), as in
  Ma & Liang's 100-PGD evaluation ("Improve robustness of DNN for ECG signal classification: a
  noise-to-signal ratio perspective", ICLR 2020 AI4AH workshop, arXiv 2005.09134).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from medrobust.attacks.ascent import make_rule
from medrobust.attacks.base import Active, Attack, AttackContext, as_step
from medrobust.attacks.registry import register_attack
from medrobust.checks import check_choice, check_float, check_int, check_positive
from medrobust.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs

UPDATES: tuple[str, ...] = ("sign", "adamax")
OUTPUTS: tuple[str, ...] = ("best", "final")

Transform = Callable[[Active, torch.Tensor], torch.Tensor]
Project = Callable[[Active, torch.Tensor, torch.Tensor], torch.Tensor]


def projected_ascent(
    ctx: AttackContext,
    act: Active,
    v: torch.Tensor,
    *,
    steps: int,
    project_v: Project,
    transform: Transform | None = None,
    update: str = "sign",
    record: bool = True,
    early_stop: bool = True,
    output: str = "best",
    mask_grad: bool = True,
) -> tuple[Active, torch.Tensor]:
    """The PGD loop shared by :class:`PGD` and :class:`~medrobust.attacks.SAP`.

    Parameters
    ----------
    ctx, act
        Attack context and the active samples.
    v
        Optimisation variable: the adversarial input itself (PGD, ``transform=None``) or a
        parameter mapped to the input by ``transform`` (SAP's ``θ``).
    steps
        Gradient steps. With ``record=True`` one more forward evaluates the last iterate.
    project_v
        ``(act, v, increment) -> v``: applies the step and projects onto the feasible set.
    transform
        ``(act, v) -> model input`` (differentiable), ``None`` for the identity.
    update
        Ascent rule (:mod:`medrobust.attacks.ascent`): ``"sign"`` (steepest ascent of the norm) or
        ``"adamax"`` (Adamax fed with the steepest-ascent direction).
    record
        Record the attack's output; ``False`` for warm starts.
    early_stop
        Drop successful samples from the active set at once (their output is the successful iterate).
    output
        ``"best"``: every sample's latest successful iterate, the final iterate for the others;
        ``"final"``: the final iterate of every sample still active at the end.
    mask_grad
        Multiply the gradient by the mask before normalising it.

    Returns
    -------
    act, v
        Final active set and variable (useful for warm starts).
    """
    rule = make_rule(update, n=ctx.x.shape[0], shape=tuple(v.shape[1:]), device=v.device, dtype=v.dtype,
                     **({"norm": ctx.norm} if update == "sign" else {"normalize": ctx.norm}))
    track = record and (early_stop or output == "best")
    for it in range(steps + 1):
        need_grad = it < steps
        if not need_grad and not record:
            break
        tf = None if transform is None else (lambda leaf, a=act: transform(a, leaf))
        x_in, logits, _, g = ctx.evaluate(act, v, need_grad=need_grad, transform=tf)
        succ = ctx.record(act, x_in, logits) if track else None
        if not need_grad:
            ctx.record_final(act, x_in, logits, overwrite=output == "final")
            break
        if early_stop and succ is not None and bool(succ.any()):
            keep = (~succ).nonzero().squeeze(1)
            act, v, g = act.select(keep), v[keep], g[keep]
            if len(act) == 0:
                break
        assert g is not None and act.step is not None
        if mask_grad and act.mask is not None:
            g = g * act.mask
        v = project_v(act, v, rule.step(g, act.idx, scale=act.step))
    return act, v


def pgd_project(ctx: AttackContext) -> Project:
    """PGD's step on the adversarial input: ``x_adv ← Π(x_adv + inc)`` (ball, mask, bounds)."""

    def _p(act: Active, x_adv: torch.Tensor, inc: torch.Tensor) -> torch.Tensor:
        return ctx.constrain(act, (x_adv - act.x) + inc)

    return _p


def check_start(random_start: Any) -> bool | str:
    """``random_start`` as ``True`` (uniform), ``False`` (none) or ``"gaussian"``."""
    if isinstance(random_start, bool):
        return random_start
    named = {"uniform": True, "none": False, "gaussian": "gaussian"}
    if isinstance(random_start, str) and random_start in named:
        return named[random_start]
    raise ConfigError(f"random_start must be True/'uniform', False/'none' or 'gaussian', got {random_start!r}.")


def check_steps(step_size: Any, rel_step_size: Any, default_rel: float) -> tuple[Any, float | None]:
    """Validate ``step_size`` / ``rel_step_size`` (at most one); ``default_rel`` when neither is given."""
    step_size = check_positive(step_size, "step_size")
    rel_step_size = check_positive(rel_step_size, "rel_step_size")
    if step_size is not None and rel_step_size is not None:
        raise ConfigError("pass step_size (absolute) or rel_step_size (fraction of eps), not both.")
    if step_size is None and rel_step_size is None:
        rel_step_size = default_rel
    return step_size, rel_step_size


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al., ICLR 2018, arXiv 1706.06083), L∞ or L2.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`).
    steps
        Gradient steps per run (Ma & Liang's evaluation: 100).
    step_size
        Absolute step α (scalar or per-sample tensor). Default: ``rel_step_size · ε``.
    rel_step_size
        Step as a fraction of each sample's ε when ``step_size`` is None (default ``2.5 / steps``,
        Madry et al.'s choice).
    random_start
        ``True`` (or ``"uniform"``): start from a uniformly random point of the ε-ball (L∞ box / L2
        ball), Madry et al.'s start; ``"gaussian"``: from ``x + init_std·N(0, I)`` projected on the ball
        and the bounds (TRADES' start, Zhang et al., ICML 2019, Algorithm 1; it matters for a KL loss,
        whose gradient is exactly zero at ``x``); ``False`` (or ``"none"``): from ``x``.
    init_std
        Standard deviation of the Gaussian start (default 0.001, Zhang et al.'s value); only with
        ``random_start="gaussian"``.
    restarts
        Number of runs (``>= 1``); runs after the first start again from random points on the
        samples not yet adversarial. Needs ``random_start=True`` when ``> 1``.
    early_stop
        Per-sample early stop on an active set (default). ``False`` runs every step on every sample
        and returns the final iterate (what adversarial training needs: TRADES, PGD-AT).
    update
        ``"sign"`` (steepest ascent) or ``"adamax"`` (Ma & Liang's Adamax-driven update).
    loss, generator, units
        Shared arguments (:class:`~medrobust.attacks.base.ThreatArgs`); random starts come from
        per-sample streams (:meth:`~medrobust.attacks.base.AttackContext.rand`).

    Examples
    --------
    >>> atk = PGD(model, eps=0.05, steps=100, step_size=0.01, norm="linf", random_start=True,
    ...           generator=torch.Generator().manual_seed(0))            # doctest: +SKIP
    >>> res = atk(x, y)                                                   # doctest: +SKIP
    >>> res.robust_accuracy, res.norms.max() <= 0.05                      # doctest: +SKIP
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 100,
        step_size: float | torch.Tensor | None = None,
        rel_step_size: float | None = None,
        random_start: bool | str = True,
        init_std: float | None = None,
        restarts: int = 1,
        early_stop: bool = True,
        update: str = "sign",
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.steps = check_int(steps, "steps", minimum=1)
        self.step_size, self.rel_step_size = check_steps(step_size, rel_step_size, 2.5 / self.steps)
        self.random_start = check_start(random_start)
        self.init_std: float | None = None  # used (and recorded as a number) only by the Gaussian start
        if self.random_start == "gaussian":
            self.init_std = check_float(0.001 if init_std is None else init_std, "init_std", minimum=0.0)
        elif init_std is not None:
            raise ConfigError(f"init_std={init_std!r} is the Gaussian start's scale; pass random_start='gaussian' "
                              "with it, or drop it.")
        self.restarts = check_int(restarts, "restarts", minimum=1)
        if self.restarts > 1 and not self.random_start:
            raise ConfigError("restarts > 1 repeats the same deterministic run; set random_start=True.")
        self.early_stop = bool(early_stop)
        self.update = check_choice(update, "update", UPDATES)
        super().__init__(model, **threat_kwargs)

    def _run(self, ctx: AttackContext) -> None:
        step = as_step(self.step_size, self.rel_step_size, ctx.eps)
        for r in range(self.restarts):
            act = ctx.active(step=step, only_unsuccessful=self.early_stop or r > 0)
            if len(act) == 0:
                return
            projected_ascent(
                ctx, act, self._start(ctx, act), steps=self.steps, project_v=pgd_project(ctx), update=self.update,
                early_stop=self.early_stop, output="best" if self.early_stop else "final",
            )

    def _start(self, ctx: AttackContext, act: Active) -> torch.Tensor:
        """The first iterate: uniform in the ball, ``x`` + Gaussian noise (constrained), or ``x`` itself."""
        if self.random_start == "gaussian":
            return ctx.constrain(act, float(self.init_std) * ctx.randn(act, *act.x.shape[1:]))
        return ctx.random_start(act) if self.random_start else act.x.clone()
