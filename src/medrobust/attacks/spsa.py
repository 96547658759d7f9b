"""SPSA: a score-based black-box attack with independent Rademacher probes for every sample.

Uesato, J., O'Donoghue, B., van den Oord, A. & Kohli, P. "Adversarial Risk and the Dangers of
Evaluating Against Weak Attacks", ICML 2018 (arXiv 1802.05666), Algorithm 1; the gradient estimator
is Spall's simultaneous perturbation stochastic approximation (Spall, IEEE TAC 37(3), 1992).

Each iteration estimates the gradient of a per-sample loss ``f`` (default: the logit margin
``max_{j≠y} z_j − z_y``, which the attack increases) from ``nb_samples`` two-sided finite
differences along random Rademacher vectors ``v ∈ {−1, +1}^d``::

    ĝ = (1 / nb_samples) Σ_v (f(x + δ·v) − f(x − δ·v)) / (2δ) · v       (1/v = v for ±1 entries)

and moves the perturbation with Adam (Uesato et al.) or Adamax fed with ``sign(ĝ)`` (Ma & Liang's
MIT-BIH evaluation, ICLR 2020 AI4AH workshop, arXiv 2005.09134), followed by projection onto the threat
model. Differences to torchattacks / advertorch:

* **independent probes per sample**: the ``nb_samples`` vectors are drawn separately for every sample
  of the batch, from the sample's own random stream (torchattacks and advertorch draw one set and
  reuse it for the whole batch, which correlates the samples' estimates);
* all active samples and a chunk of their probes go through the model in one forward of at most
  ``max_batch_size`` inputs (memory bound), instead of one batch per probe chunk;
* **per-sample early stop**: a sample leaves the active set as soon as it is adversarial and is never
  queried again;
* **exact query accounting**: every forwarded input counts one query for its sample
  (``2·nb_samples`` per estimate plus one forward per iteration to test success).

Defaults follow Ma & Liang's SPSA evaluation (arXiv 2005.09134): 100 iterations, 2048 probes, δ = 0.01,
learning rate 0.01, sign-normalised estimate, Adamax, random start ``U[−ε, ε]``, margin loss, stop
as soon as the label changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.ascent import make_rule
from medrobust.attacks.base import Active, Attack, AttackContext
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.checks import check_bool, check_choice, check_int, check_positive

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs

SPSA_UPDATES: tuple[str, ...] = ("adamax", "adam")


def rademacher(ctx: AttackContext, act: Active, *shape: int) -> torch.Tensor:
    """Independent ``±1`` entries (probability 1/2 each) ``(len(act), *shape)`` from each sample's own stream."""
    return torch.where(ctx.rand(act, *shape) < 0.5, -1.0, 1.0).to(act.x.dtype)


@register_attack("spsa")
class SPSA(Attack):
    """SPSA black-box attack (Uesato et al., ICML 2018, arXiv 1802.05666), L∞ or L2.

    Parameters
    ----------
    model
        Classifier returning logits; only queried (no gradients, no backward).
    steps
        Iterations (Ma & Liang: 100).
    nb_samples
        Rademacher probes per sample and iteration (Ma & Liang: 2048); each costs 2 queries.
    delta
        Finite-difference scale δ (Ma & Liang: 0.01, in input units).
    lr
        Learning rate of the optimiser (Ma & Liang: 0.01, in input units per step).
    update
        ``"adamax"`` (Ma & Liang) or ``"adam"`` (Uesato et al., cleverhans, torchattacks); the rules of
        :mod:`medrobust.attacks.ascent`.
    sign
        Feed the optimiser the steepest-ascent direction of the estimate (sign for L∞, unit L2 direction
        for L2) instead of the raw estimate (Ma & Liang: ``True``; torchattacks: ``False``).
    random_start
        Start from ``U[−ε, ε]`` (L∞) / a uniform point of the L2 ball, drawn from each sample's own
        random stream (Ma & Liang: ``True``).
    early_stop
        Drop adversarial samples from the active set at every iteration and return the first adversarial
        iterate (``True``); ``False`` runs every iteration for every sample and returns the final iterate.
    max_batch_size
        Largest number of inputs per model forward; the probes are processed in blocks so that
        ``2 · (samples in the chunk) · (probes in the block) <= max_batch_size``. ``None`` (default):
        ``min(8192, 2^26 / (inputs per sample))``, i.e. at most ~256 MB of float32 inputs.
    **threat_kwargs
        ``eps, norm, eps_mode, bounds, mask, threat, loss, generator, units`` (see
        :class:`~medrobust.attacks.base.Attack`); ``loss`` defaults to ``"margin"`` here.

    Notes
    -----
    The probes ``x ± δ·v`` are passed to the model as they are (not clipped to the bounds), as in
    Uesato et al.; only the iterates are projected. With a mask, the probes are masked too.
    Queries per sample: 1 (clean) + per iteration ``2·nb_samples + 1`` while active, + 1 final check.
    Every random draw (start, probes) comes from the sample's own stream, so a sample's result does not
    depend on the other samples of the batch, on the probe blocking or on early stop.

    Examples
    --------
    >>> atk = SPSA(model, eps=0.1, bounds=(0, 1), steps=100, nb_samples=2048,
    ...            generator=torch.Generator().manual_seed(0))            # doctest: +SKIP
    >>> res = atk(x, y); res.queries_per_sample                           # doctest: +SKIP
    """

    name = "spsa"
    black_box: ClassVar[bool] = True
    default_loss: ClassVar[str] = "margin"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 100,
        nb_samples: int = 2048,
        delta: float = 0.01,
        lr: float = 0.01,
        update: str = "adamax",
        sign: bool = True,
        random_start: bool = True,
        early_stop: bool = True,
        max_batch_size: int | None = None,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.steps = check_int(steps, "steps", minimum=1)
        self.nb_samples = check_int(nb_samples, "nb_samples", minimum=1)
        self.delta = float(check_positive(delta, "delta", allow_none=False))
        self.lr = float(check_positive(lr, "lr", allow_none=False))
        self.update = check_choice(update, "update", SPSA_UPDATES)
        self.sign = check_bool(sign, "sign")
        self.random_start = check_bool(random_start, "random_start")
        self.early_stop = check_bool(early_stop, "early_stop")
        self.max_batch_size = None if max_batch_size is None else check_int(max_batch_size, "max_batch_size",
                                                                              minimum=2)
        super().__init__(model, **threat_kwargs)

    # ------------------------------------------------------------------------------------
    def _blocks(self, x: torch.Tensor) -> tuple[int, int]:
        """``(probes per block, samples per forward)``: fixed by the settings and the input size only."""
        mb = self.max_batch_size
        if mb is None:  # about 256 MB of float32 inputs per forward, at most 8192 inputs
            mb = min(8192, max(2, (1 << 26) // max(1, x[0].numel())))
        rows = mb // 2  # (sample, probe) pairs per forward
        pb = max(1, min(self.nb_samples, rows))
        return pb, max(1, rows // pb)

    def estimate_gradient(self, ctx: AttackContext, act: Active, x_adv: torch.Tensor) -> torch.Tensor:
        """SPSA estimate ``ĝ`` ``(n, ...)`` of ``∇ f`` at ``x_adv`` for the active samples.

        Every sample gets its own ``nb_samples`` Rademacher probes from its own stream, drawn in blocks
        whose size does not depend on the batch. Costs ``2·nb_samples`` queries per sample, forwarded
        in chunks of at most ``max_batch_size`` inputs.
        """
        n = len(act)
        feat = tuple(x_adv.shape[1:])
        grad = torch.zeros_like(x_adv)
        pb, s_chunk = self._blocks(x_adv)
        for s0 in range(0, n, s_chunk):
            sub = act.select(torch.arange(s0, min(n, s0 + s_chunk), device=x_adv.device))
            ns = len(sub)
            xa = x_adv[s0:s0 + ns]
            for p0 in range(0, self.nb_samples, pb):
                k = min(pb, self.nb_samples - p0)
                v = rademacher(ctx, sub, k, *feat)
                if sub.mask is not None:
                    v = v * sub.mask.unsqueeze(1)
                dv = v * self.delta
                both = torch.cat([xa.unsqueeze(1) + dv, xa.unsqueeze(1) - dv], 1).flatten(0, 1)  # (ns·2k, ...)
                z = query(ctx, sub.idx.repeat_interleave(2 * k), both).view(ns, 2 * k, -1)
                yy = sub.y.repeat_interleave(2 * k, dim=0)
                tt = None if sub.target is None else sub.target.repeat_interleave(2 * k)
                f = ctx.loss_fn(z.flatten(0, 1), yy, tt).view(ns, 2 * k)
                df = (f[:, :k] - f[:, k:]) / (2.0 * self.delta)  # (ns, k)
                grad[s0:s0 + ns] += (df.view(ns, k, *[1] * len(feat)) * v).sum(1)
        return grad / self.nb_samples

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=self.early_stop)
        if len(act) == 0:
            return
        x_adv = ctx.random_start(act) if self.random_start else act.x.clone()
        lr = torch.full((len(act),), self.lr, dtype=act.x.dtype, device=act.x.device)
        n = ctx.x.shape[0]
        rule = make_rule(self.update, n=n, shape=tuple(act.x.shape[1:]), device=act.x.device, dtype=act.x.dtype,
                         normalize=ctx.norm if self.sign else None)
        for it in range(self.steps + 1):
            logits = query(ctx, act.idx, x_adv)
            if it == self.steps:
                if self.early_stop:
                    ctx.record(act, x_adv, logits)
                ctx.record_final(act, x_adv, logits, overwrite=not self.early_stop)
                break
            if self.early_stop:
                succ = ctx.record(act, x_adv, logits)
                if bool(succ.any()):
                    keep = (~succ).nonzero().squeeze(1)
                    act, x_adv, lr = act.select(keep), x_adv[keep], lr[keep]
                    if len(act) == 0:
                        break
            g = self.estimate_gradient(ctx, act, x_adv)
            inc = rule.step(g, act.idx, scale=lr)
            x_adv = ctx.constrain(act, (x_adv - act.x) + inc)
