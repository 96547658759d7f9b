"""SPSA: a score-based black-box attack with independent Rademacher probes for every sample.

Uesato, J., O'Donoghue, B., van den Oord, A. & Kohli, P. "Adversarial Risk and the Dangers of
Evaluating Against Weak Attacks", ICML 2018 (arXiv 1802.05666), Algorithm 1; the gradient estimator
is Spall's simultaneous perturbation stochastic approximation (Spall, IEEE TAC 37(3), 1992).

Each iteration estimates the gradient of a per-sample loss ``f`` (default: the logit margin
``max_{j≠y} z_j − z_y``, which the attack increases) from ``nb_samples`` two-sided finite
differences along random Rademacher vectors ``v ∈ {−1, +1}^d``::

    ĝ = (1 / nb_samples) Σ_v (f(x + δ·v) − f(x − δ·v)) / (2δ) · v       (1/v = v for ±1 entries)

and moves the perturbation with Adam (Uesato et al.) or Adamax fed with ``sign(ĝ)`` (Ma & Liang's
MIT-BIH evaluation, arXiv 2005.09134, methods-ecg.md §3.6), followed by projection onto the threat
model. Differences to torchattacks / advertorch:

* **independent probes per sample**: the ``nb_samples`` vectors are drawn separately for every sample
  of the batch (torchattacks and advertorch draw one set and reuse it for the whole batch, which
  correlates the samples' estimates);
* all active samples and a chunk of their probes go through the model in one forward of at most
  ``max_batch_size`` inputs (memory bound), instead of one batch per probe chunk;
* **per-sample early stop**: a sample leaves the active set as soon as it is adversarial and is never
  queried again;
* **exact query accounting**: every forwarded input counts one query for its sample
  (``2·nb_samples`` per estimate plus one forward per iteration to test success).

Defaults follow the seed paper's SPSA (methods-ecg.md §3.6): 100 iterations, 2048 probes, δ = 0.01,
learning rate 0.01, sign-normalised estimate, Adamax, random start ``U[−ε, ε]``, margin loss, stop
as soon as the label changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext, check_int, check_positive
from medrobust.attacks.pgd import AdamaxState
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import ThreatModel, bview, steepest_direction
from medrobust.errors import ConfigError

SPSA_UPDATES: tuple[str, ...] = ("adamax", "adam")


class AdamState:
    """Per-coordinate Adam moments (Kingma & Ba, ICLR 2015, arXiv 1412.6980, Algorithm 1).

    ``m ← β1·m + (1−β1)·d``; ``v ← β2·v + (1−β2)·d²``; increment ``= lr · m̂ / (sqrt(v̂) + 1e-8)``
    with bias-corrected ``m̂``, ``v̂``; ``d`` is the ascent direction.
    """

    def __init__(self, like: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0

    def select(self, keep: torch.Tensor) -> None:
        """Keep the rows of the samples still active."""
        self.m, self.v = self.m[keep], self.v[keep]

    def increment(self, d: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """The update for ascent direction ``d`` with per-sample learning rate ``lr`` ``(n,)``."""
        self.t += 1
        self.m.mul_(self.beta1).add_(d, alpha=1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(d, d, value=1.0 - self.beta2)
        mh = self.m / (1.0 - self.beta1**self.t)
        vh = self.v / (1.0 - self.beta2**self.t)
        return mh / (vh.sqrt() + self.eps) * bview(lr, d)


def rademacher(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Independent ``±1`` entries (probability 1/2 each) drawn from ``generator``."""
    r = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=torch.int8)
    return (r.to(device=like.device, dtype=like.dtype) * 2.0 - 1.0)


@register_attack("spsa")
class SPSA(Attack):
    """SPSA black-box attack (Uesato et al., ICML 2018, arXiv 1802.05666), L∞ or L2.

    Parameters
    ----------
    model
        Classifier returning logits; only queried (no gradients, no backward).
    eps, norm, eps_mode, bounds, mask, threat
        Threat model (:class:`~medrobust.attacks.ThreatModel`).
    steps
        Iterations (seed paper: 100).
    nb_samples
        Rademacher probes per sample and iteration (seed paper: 2048); each costs 2 queries.
    delta
        Finite-difference scale δ (seed paper: 0.01, in input units).
    lr
        Learning rate of the optimiser (seed paper: 0.01, in input units per step).
    update
        ``"adamax"`` (seed paper) or ``"adam"`` (Uesato et al., cleverhans, torchattacks).
    sign
        Feed the optimiser the sign of the estimate (``steepest_direction``: sign for L∞, unit L2
        direction for L2) instead of the raw estimate (seed paper: ``True``; torchattacks: ``False``).
    random_start
        Start from ``U[−ε, ε]`` (L∞) / a uniform point of the L2 ball (seed paper: ``True``).
    early_stop
        Drop adversarial samples from the active set at every iteration (seed paper: ``True``).
    max_batch_size
        Largest number of inputs per model forward; the probes are processed in chunks so that
        ``2 · (active samples in the chunk) · (probes in the chunk) <= max_batch_size``. ``None``
        (default): ``min(8192, 2^26 / (inputs per sample))``, i.e. at most ~256 MB of float32 inputs.
    loss
        Per-sample objective to increase (``"margin"``, default, or ``"ce"``...).
    generator
        Source of the random start and of the probes.

    Notes
    -----
    The probes ``x ± δ·v`` are passed to the model as they are (not clipped to the bounds), as in
    Uesato et al.; only the iterates are projected. With a mask, the probes are masked too.
    Queries per sample: 1 (clean) + per iteration ``2·nb_samples + 1`` while active, + 1 final check.

    Examples
    --------
    >>> atk = SPSA(model, eps=0.1, bounds=(0, 1), steps=100, nb_samples=2048,
    ...            generator=torch.Generator().manual_seed(0))            # doctest: +SKIP
    >>> res = atk(x, y); res.queries_per_sample                           # doctest: +SKIP
    """

    name = "spsa"
    black_box: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        norm: str = "linf",
        steps: int = 100,
        nb_samples: int = 2048,
        delta: float = 0.01,
        lr: float = 0.01,
        update: str = "adamax",
        sign: bool = True,
        random_start: bool = True,
        early_stop: bool = True,
        max_batch_size: int | None = None,
        loss: str = "margin",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask, threat=threat,
                         loss=loss, generator=generator)
        self.steps = check_int(steps, "steps", minimum=1)
        self.nb_samples = check_int(nb_samples, "nb_samples", minimum=1)
        self.delta = check_positive(delta, "delta", allow_none=False)
        self.lr = check_positive(lr, "lr", allow_none=False)
        if isinstance(self.delta, torch.Tensor) or isinstance(self.lr, torch.Tensor):
            raise ConfigError("delta and lr must be floats.")
        if update not in SPSA_UPDATES:
            raise ConfigError(f"update must be one of {SPSA_UPDATES}, got {update!r}.")
        self.update = update
        self.sign = bool(sign)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.max_batch_size = None if max_batch_size is None else check_int(max_batch_size, "max_batch_size",
                                                                              minimum=2)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "nb_samples": self.nb_samples, "delta": self.delta, "lr": self.lr,
            "update": self.update, "sign": self.sign, "random_start": self.random_start,
            "early_stop": self.early_stop, "max_batch_size": self.max_batch_size, "loss": self.loss,
        }

    # ------------------------------------------------------------------------------------
    def estimate_gradient(self, ctx: AttackContext, act: Active, x_adv: torch.Tensor) -> torch.Tensor:
        """SPSA estimate ``ĝ`` ``(n, ...)`` of ``∇ f`` at ``x_adv`` for the active samples.

        Every sample gets its own ``nb_samples`` Rademacher probes. Costs ``2·nb_samples`` queries per
        sample, forwarded in chunks of at most ``max_batch_size`` inputs.
        """
        n = len(act)
        feat = tuple(x_adv.shape[1:])
        grad = torch.zeros_like(x_adv)
        mb = self.max_batch_size
        if mb is None:  # about 256 MB of float32 inputs per forward, at most 8192 inputs
            mb = min(8192, max(2, (1 << 26) // max(1, x_adv[0].numel())))
        rows = mb // 2  # (sample, probe) pairs per forward
        s_chunk = max(1, min(n, rows))
        for s0 in range(0, n, s_chunk):
            sl = slice(s0, min(n, s0 + s_chunk))
            ns = sl.stop - sl.start
            xa = x_adv[sl]
            ya = act.y[sl]
            ta = None if act.target is None else act.target[sl]
            m = None
            if act.mask is not None:
                m = act.mask[sl] if act.mask_per_sample else act.mask
            owners_s = act.idx[sl]
            p_chunk = max(1, rows // ns)
            for p0 in range(0, self.nb_samples, p_chunk):
                k = min(p_chunk, self.nb_samples - p0)
                v = rademacher((ns, k, *feat), xa, ctx.generator)
                if m is not None:
                    v = v * m.unsqueeze(1)
                dv = v * self.delta
                both = torch.cat([xa.unsqueeze(1) + dv, xa.unsqueeze(1) - dv], 1).flatten(0, 1)  # (ns·2k, ...)
                owners = owners_s.repeat_interleave(2 * k)
                z = query(ctx, owners, both).view(ns, 2 * k, -1)
                yy = ya.repeat_interleave(2 * k)
                tt = None if ta is None else ta.repeat_interleave(2 * k)
                f = ctx.loss_fn(z.flatten(0, 1), yy, tt).view(ns, 2 * k)
                df = (f[:, :k] - f[:, k:]) / (2.0 * self.delta)  # (ns, k)
                grad[sl] += (df.view(ns, k, *[1] * len(feat)) * v).sum(1)
        return grad / self.nb_samples

    def _run(self, ctx: AttackContext) -> None:
        act = ctx.active(only_unsuccessful=self.early_stop)
        if len(act) == 0:
            return
        x_adv = ctx.random_start(act) if self.random_start else act.x.clone()
        lr = torch.full((len(act),), self.lr, dtype=act.x.dtype, device=act.x.device)
        state: AdamState | AdamaxState = AdamState(x_adv) if self.update == "adam" else AdamaxState(x_adv)
        for it in range(self.steps + 1):
            logits = query(ctx, act.idx, x_adv)
            succ = ctx.record(act, x_adv, logits)
            if it == self.steps:
                ctx.record_final(act, x_adv, logits)
                break
            if self.early_stop and bool(succ.any()):
                keep = (~succ).nonzero().squeeze(1)
                act, x_adv, lr = act.select(keep), x_adv[keep], lr[keep]
                state.select(keep)
                if len(act) == 0:
                    break
            g = self.estimate_gradient(ctx, act, x_adv)
            d = steepest_direction(g, ctx.norm) if self.sign else g
            inc = state.increment(d, lr)
            x_adv = ctx.constrain(act, (x_adv - act.x) + inc)
