"""Fast gradient (sign) method: one step to the boundary of the ε-ball.

Goodfellow, I., Shlens, J. & Szegedy, C. "Explaining and Harnessing Adversarial Examples",
ICLR 2015 (arXiv 1412.6572): ``x_adv = x + ε·sign(∇_x L)`` (L∞). The L2 version is the fast
gradient method ``x + ε·∇L/‖∇L‖₂`` (Miyato et al., arXiv 1507.00677; Kurakin et al., arXiv
1607.02533). The gradient is masked before it is normalised; the result is projected onto the
threat model (mask, ball, bounds).
"""

from __future__ import annotations

from medrobust.attacks.base import Attack, AttackContext
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import bview, steepest_direction


@register_attack("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., ICLR 2015, arXiv 1412.6572); L2: fast gradient method.

    Parameters
    ----------
    model
        Classifier returning logits.
    eps, norm, eps_mode, bounds, mask, threat, loss, generator, units
        The shared arguments (:class:`~medrobust.attacks.base.ThreatArgs`); FGSM has no others and
        draws no random numbers.

    Notes
    -----
    Every sample is attacked, including those misclassified when clean; a sample keeps ``x_adv = x``
    if it was misclassified when clean and the step would make it correct. Cost: one forward and
    input-gradient backward plus one forward to evaluate the result.
    """

    name = "fgsm"

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=False)
        _, _, _, g = ctx.evaluate(act, act.x, need_grad=True)
        assert g is not None
        if act.mask is not None:
            g = g * act.mask
        delta = steepest_direction(g, ctx.norm) * bview(act.eps, g)
        x_adv = ctx.constrain(act, delta)
        x_in, logits, _, _ = ctx.evaluate(act, x_adv, need_grad=False)
        ctx.record(act, x_in, logits)
        ctx.record_final(act, x_in, logits)
