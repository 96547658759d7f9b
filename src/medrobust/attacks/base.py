"""Shared machinery of all white-box attacks: the :class:`Attack` template and :class:`AttackResult`.

Design (Foolbox 3-style template method, torchattacks-style one-line use): :meth:`Attack.__call__`
is final. It validates the batch, freezes the model (eval mode, parameters without gradients) and
restores it afterwards, resolves the per-sample radius of the :class:`~medrobust.attacks.threat.ThreatModel`,
runs the clean forward pass (checking that the model returns logits), calls the subclass's
:meth:`Attack._run`, verifies the threat model on the output and packs an :class:`AttackResult`.

Attacks work on an *active set*: a subset of the batch, selected by index, that is still being
attacked. Samples that are already adversarial (per-sample early stop) leave the active set and
are never forwarded again, which is where most of the speed of a robust-accuracy curve comes from
(AutoAttack's ``ind_to_fool``; Ma & Liang's per-sample stop, methods-ecg.md §3.6).

References
----------
Rauber, J. et al. "Foolbox Native", JOSS 5(53), 2020 — template attack classes.
Kim, H. "Torchattacks: A PyTorch Repository for Adversarial Attacks", arXiv 2010.01950.
Croce, F. & Hein, M. ICML 2020 (arXiv 2003.01690) — per-sample bookkeeping, logits check.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, final

import torch
from torch import nn

from medrobust.attacks.losses import LossFn, get_loss, is_success
from medrobust.attacks.threat import ThreatModel, bview, lp_norm
from medrobust.errors import ConfigError, DataError


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes
    ----------
    x_adv
        Adversarial batch, same shape, dtype and device as the input.
    success
        ``(N,)`` bool: the model's prediction on ``x_adv`` differs from ``y`` (untargeted) or equals
        ``target`` (targeted). Samples misclassified when clean are successes with ``x_adv == x``.
    norms
        ``(N,)`` perturbation norm ``‖x_adv − x‖`` in the declared norm.
    eps
        ``(N,)`` absolute radius each sample was attacked with.
    clean_pred, adv_pred
        ``(N,)`` predicted classes on ``x`` and ``x_adv``.
    y, target
        The labels (and targets) the attack was called with.
    grad_evals, queries
        Total per-sample input-gradient evaluations and forward evaluations (a forward of a batch
        of ``n`` samples counts ``n``; the clean forward is included in ``queries``).
    grad_evals_per_sample, queries_per_sample
        The same counts per sample ``(N,)``.
    attack, norm, targeted
        Attack name, norm and mode.
    config
        Every hyper-parameter of the attack and the threat model (JSON-serialisable).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    norms: torch.Tensor
    eps: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    grad_evals: int
    queries: int
    grad_evals_per_sample: torch.Tensor
    queries_per_sample: torch.Tensor
    attack: str
    norm: str
    targeted: bool
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_correct(self) -> torch.Tensor:
        """``(N,)`` bool: clean prediction equals the true label."""
        return self.clean_pred == self.y

    @property
    def robust_accuracy(self) -> float:
        """Accuracy under attack over all samples: fraction with ``adv_pred == y``."""
        return float((self.adv_pred == self.y).double().mean())

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy of the batch."""
        return float(self.clean_correct.double().mean())

    @property
    def attack_success_rate(self) -> float:
        """Successes among clean-correct samples / clean-correct samples (``nan`` if none is correct)."""
        cc = self.clean_correct
        if not bool(cc.any()):
            return float("nan")
        return float((self.success & cc).double().sum() / cc.double().sum())

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no per-sample tensors)."""
        return {
            "attack": self.attack,
            "norm": self.norm,
            "targeted": self.targeted,
            "n": int(self.success.numel()),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attack_success_rate": self.attack_success_rate,
            "success_rate": float(self.success.double().mean()),
            "max_norm": float(self.norms.max()) if self.norms.numel() else 0.0,
            "grad_evals": self.grad_evals,
            "queries": self.queries,
            "config": self.config,
        }


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` for every parameter; both restored on exit.

    The training flag of every sub-module is restored individually, so a model that was in train mode
    with some sub-modules deliberately in eval mode comes back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req in flags:
            p.requires_grad_(req)


def check_logits(z: Any, n: int) -> torch.Tensor:
    """Raise :class:`ConfigError` unless ``z`` looks like an ``(n, K >= 2)`` logit matrix (not probabilities)."""
    if not isinstance(z, torch.Tensor):
        raise ConfigError(
            f"the model must return a logits tensor of shape (N, K), got {type(z).__name__}; "
            "wrap models that return tuples or dicts so that forward returns logits only."
        )
    if z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 1):
        raise ConfigError(
            "the model returns a single logit per sample; wrap it with "
            "medrobust.attacks.BinaryLogitWrapper(model) to get two logits [0, s]."
        )
    if z.ndim != 2 or z.shape[0] != n:
        raise ConfigError(f"the model must return logits of shape (N={n}, K), got {tuple(z.shape)}.")
    if not torch.isfinite(z).all():
        raise DataError("the model returned NaN or inf logits on the clean batch; check the model and the input scale.")
    zd = z.detach().double()
    if bool((zd >= 0).all()) and bool(((zd.sum(1) - 1.0).abs() < 1e-4).all()):
        raise ConfigError(
            "the model seems to return probabilities (every row is non-negative and sums to one), not logits; "
            "remove the final softmax/sigmoid (attacks on probabilities suffer vanishing gradients)."
        )
    return z


def rand_uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``U[0, 1)`` samples drawn from ``generator`` (on its device), returned on ``like``'s device and dtype."""
    dt = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    r = torch.rand(shape, generator=generator, device=generator.device, dtype=dt)
    return r.to(device=like.device, dtype=like.dtype)


def rand_normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal samples drawn from ``generator``, returned on ``like``'s device and dtype."""
    dt = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    r = torch.randn(shape, generator=generator, device=generator.device, dtype=dt)
    return r.to(device=like.device, dtype=like.dtype)


class Active:
    """The active set: the samples of the batch still being attacked, with their per-sample data.

    Attributes
    ----------
    idx
        ``(n,)`` indices into the full batch.
    x, y, target, eps, step
        The active samples' clean inputs, labels, targets, radii ``(n,)`` and step sizes ``(n,)``.
    mask
        The mask (leading dim ``n``, or ``1`` when shared by all samples).
    """

    def __init__(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        eps: torch.Tensor,
        step: torch.Tensor | None,
        mask: torch.Tensor | None,
        mask_per_sample: bool,
    ) -> None:
        self.idx, self.x, self.y, self.target = idx, x, y, target
        self.eps, self.step, self.mask, self.mask_per_sample = eps, step, mask, mask_per_sample

    def __len__(self) -> int:
        return int(self.idx.numel())

    def select(self, keep: torch.Tensor) -> "Active":
        """A new active set with the samples where ``keep`` (bool ``(n,)`` or index tensor) holds."""
        k = keep
        return Active(
            self.idx[k],
            self.x[k],
            self.y[k],
            None if self.target is None else self.target[k],
            self.eps[k],
            None if self.step is None else self.step[k],
            self.mask[k] if (self.mask is not None and self.mask_per_sample) else self.mask,
            self.mask_per_sample,
        )


class AttackContext:
    """Per-call state handed to :meth:`Attack._run`: the batch, the threat model and the bookkeeping.

    ``record`` keeps, for every sample, the latest successful adversarial input (and its logits);
    ``record_final`` stores the fallback output of samples that never succeeded.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        threat: ThreatModel,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        eps: torch.Tensor,
        mask: torch.Tensor | None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None,
        loss_fn: LossFn,
        clean_logits: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        self.model, self.threat = model, threat
        self.x, self.y, self.target, self.eps = x, y, target, eps
        self.mask, self.bounds, self.loss_fn = mask, bounds, loss_fn
        self.generator = generator
        self.norm = threat.norm
        n = x.shape[0]
        self.mask_per_sample = mask is not None and mask.shape[0] == n and n > 1
        self.clean_logits = clean_logits
        self.success = is_success(clean_logits, y, target)
        self.x_out = x.clone()
        self.logits_out = clean_logits.clone()
        self.n_fwd = torch.ones(n, dtype=torch.long, device=x.device)  # the clean forward
        self.n_grad = torch.zeros(n, dtype=torch.long, device=x.device)
        self._nan_warned = False

    # ---------------------------------------------------------------- active sets
    def active(self, *, step: torch.Tensor | None = None, only_unsuccessful: bool = True) -> Active:
        """The active set of all not-yet-successful samples (or all samples)."""
        n = self.x.shape[0]
        if only_unsuccessful:
            idx = (~self.success).nonzero().squeeze(1)
        else:
            idx = torch.arange(n, device=self.x.device)
        full = Active(
            torch.arange(n, device=self.x.device), self.x, self.y, self.target, self.eps, step, self.mask,
            self.mask_per_sample,
        )
        return full if len(idx) == n else full.select(idx)

    # ---------------------------------------------------------------- model evaluation
    def evaluate(
        self,
        act: Active,
        leaf: torch.Tensor,
        *,
        need_grad: bool,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Forward (and input-gradient backward) of the active samples.

        Parameters
        ----------
        act
            Active set.
        leaf
            The optimisation variable (``x_adv`` itself, or SAP's ``θ``).
        need_grad
            Compute ``∇_leaf Σ loss``.
        transform
            Maps ``leaf`` to the model input (``None``: the leaf is the input).

        Returns
        -------
        x_in, logits, loss, grad
            Detached model input, logits, per-sample loss, and the gradient (``None`` unless requested).
        """
        grad = None
        if need_grad:
            with torch.enable_grad():
                leaf = leaf.detach().requires_grad_(True)
                x_in = leaf if transform is None else transform(leaf)
                logits = self.model(x_in)
                loss = self.loss_fn(logits, act.y, act.target)
                (grad,) = torch.autograd.grad(loss.sum(), leaf)
            if not bool(torch.isfinite(grad).all()):
                if not self._nan_warned:
                    warnings.warn("non-finite input gradients were set to zero; the model may be numerically "
                                  "unstable at the perturbed inputs.", RuntimeWarning, stacklevel=3)
                    self._nan_warned = True
                grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            self.n_grad[act.idx] += 1
        else:
            with torch.no_grad():
                x_in = leaf if transform is None else transform(leaf)
                logits = self.model(x_in)
                loss = self.loss_fn(logits, act.y, act.target)
        self.n_fwd[act.idx] += 1
        return x_in.detach(), logits.detach(), loss.detach(), grad

    # ---------------------------------------------------------------- bookkeeping
    def record(self, act: Active, x_in: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Store successful samples' inputs as their current best; return the per-sample success ``(n,)``."""
        succ = is_success(logits, act.y, act.target)
        if bool(succ.any()):
            gi = act.idx[succ]
            self.x_out[gi] = x_in[succ]
            self.logits_out[gi] = logits[succ]
            self.success[gi] = True
        return succ

    def record_final(self, act: Active, x_in: torch.Tensor, logits: torch.Tensor) -> None:
        """Store ``x_in`` as the output of the active samples that have never succeeded."""
        fail = ~self.success[act.idx]
        if bool(fail.any()):
            gi = act.idx[fail]
            self.x_out[gi] = x_in[fail]
            self.logits_out[gi] = logits[fail]

    # ---------------------------------------------------------------- threat model helpers
    def constrain(self, act: Active, delta: torch.Tensor) -> torch.Tensor:
        """Admissible ``x_adv`` for the active samples from a raw perturbation."""
        return self.threat.constrain(act.x, delta, act.eps, act.mask, self.bounds)

    def clip(self, x_in: torch.Tensor) -> torch.Tensor:
        """Clip to the bounds (identity when unbounded); differentiable."""
        if self.bounds is None:
            return x_in
        return torch.maximum(torch.minimum(x_in, self.bounds[1]), self.bounds[0])

    def random_start(self, act: Active) -> torch.Tensor:
        """A uniformly random admissible perturbation of the active samples (L∞ box or L2 ball).

        L∞: ``δ ~ U[−ε, ε]`` per coordinate. L2: a uniformly random point of the ball (Gaussian
        direction, radius ``ε·u^(1/d)``). Both are masked and clipped to the bounds.
        """
        x = act.x
        if self.norm == "linf":
            delta = (2.0 * rand_uniform(tuple(x.shape), x, self.generator) - 1.0) * bview(act.eps, x)
        else:
            g = rand_normal(tuple(x.shape), x, self.generator)
            if act.mask is not None:
                g = g * act.mask
            d = max(1, x[0].numel())
            u = rand_uniform((x.shape[0],), x, self.generator) ** (1.0 / d)
            delta = g / bview(lp_norm(g, "l2").clamp_min(1e-30), x) * bview(act.eps * u, x)
        return self.constrain(act, delta)


def as_step(
    step_size: float | torch.Tensor | None, rel_step_size: float | None, eps: torch.Tensor
) -> torch.Tensor:
    """Per-sample step ``(N,)``: ``step_size`` (absolute, scalar or per-sample) or ``rel_step_size · ε``."""
    if step_size is not None:
        s = torch.as_tensor(step_size, dtype=eps.dtype, device=eps.device)
        if s.numel() == 1:
            return s.reshape(1).expand_as(eps).clone()
        if s.numel() != eps.numel():
            raise DataError(f"step_size has {s.numel()} values but the batch has {eps.numel()} samples.")
        return s.reshape(-1).clone()
    assert rel_step_size is not None
    return eps * rel_step_size


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """An ``int >= minimum`` or :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_positive(value: Any, name: str, *, allow_none: bool = True) -> Any:
    """A positive float (or tensor of positive values), ``None`` if allowed, else :class:`ConfigError`."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name} is required.")
    if isinstance(value, torch.Tensor):
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ConfigError(f"{name} must be > 0 and finite everywhere.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) or value == float("inf"):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


class Attack(ABC):
    """Base class of every attack: a final ``__call__`` around the subclass's :meth:`_run`.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, K)``, ``K >= 2`` (wrap single-logit heads with
        :class:`~medrobust.attacks.BinaryLogitWrapper`). It is put in eval mode with frozen
        parameters during the attack; both are restored afterwards.
    eps, norm, eps_mode, bounds, mask
        The threat model (see :class:`~medrobust.attacks.threat.ThreatModel`); or pass ``threat``.
    threat
        A ready :class:`ThreatModel` (then ``eps`` etc. must not be given).
    loss
        ``"ce"``, ``"margin"``, ``"soft_margin"`` or ``"dlr"`` (see :mod:`medrobust.attacks.losses`).
    generator
        Source of all randomness. ``None`` uses a generator seeded with 0 at every call, so results
        are reproducible by default.
    """

    name: ClassVar[str] = "attack"
    uses_steps: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        norm: str = "linf",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        loss: str = "ce",
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise ConfigError(f"model must be a torch.nn.Module (or callable), got {type(model).__name__}.")
        self.model = model
        if threat is not None:
            if not isinstance(threat, ThreatModel):
                raise ConfigError(f"threat must be a ThreatModel, got {type(threat).__name__}.")
            if eps is not None or bounds is not None or mask is not None or eps_mode != "abs":
                raise ConfigError("pass either threat=ThreatModel(...) or eps/eps_mode/bounds/mask, not both.")
            self.threat = threat
        else:
            if eps is None:
                raise ConfigError(f"{type(self).__name__} needs eps (the perturbation radius), e.g. eps=0.05.")
            self.threat = ThreatModel(eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds, mask=mask)
        self.loss = str(loss).lower()
        get_loss(self.loss)  # validates the name
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        self.generator = generator

    @property
    def norm(self) -> str:
        """The threat model's norm (``"linf"`` or ``"l2"``)."""
        return self.threat.norm

    @property
    def eps(self) -> float | torch.Tensor:
        """The threat model's ε (as given)."""
        return self.threat.eps

    def hyperparameters(self) -> dict[str, Any]:
        """Attack-specific settings for logs (subclasses extend)."""
        return {"loss": self.loss}

    def config(self) -> dict[str, Any]:
        """All settings (attack and threat model), JSON-serialisable."""
        return {"attack": self.name, **self.threat.describe(), **self.hyperparameters()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------------------------
    def _validate(
        self, x: Any, y: Any, target: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"x must be a torch.Tensor of shape (N, ...), got {type(x).__name__}.")
        if not x.is_floating_point():
            raise DataError(f"x must be a floating-point tensor, got dtype {x.dtype}; convert with x.float().")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"x must be a non-empty batch of shape (N, ...) with ndim >= 2, got {tuple(x.shape)}.")
        if not bool(torch.isfinite(x).all()):
            bad = (~torch.isfinite(x.flatten(1))).any(1).nonzero().squeeze(1)[:5].tolist()
            raise DataError(f"x contains NaN or inf (samples {bad} ...); clean or drop those samples before attacking.")
        y = self._labels(y, x, "y")
        if target is not None:
            target = self._labels(target, x, "target")
        return x.detach(), y, target

    @staticmethod
    def _labels(y: Any, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            try:
                y = torch.as_tensor(y)
            except Exception:
                raise DataError(f"{name} must be a tensor of class indices, got {type(y).__name__}.") from None
        if y.ndim != 1:
            raise DataError(
                f"{name} must be a 1-D tensor of class indices (N,), got shape {tuple(y.shape)}; "
                "multi-label targets are not supported by these attacks."
            )
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise DataError(f"{name} must hold integer class indices, got dtype {y.dtype}; use {name}.long().")
        if len(y) != len(x):
            raise DataError(f"len(x) = {len(x)} but len({name}) = {len(y)}; pass one label per sample.")
        return y.to(device=x.device, dtype=torch.long)

    @final
    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Parameters
        ----------
        x
            Clean inputs ``(N, ...)`` (``(N, leads, samples)`` for ECG, ``(N, C, H, W)`` for images).
        y
            True labels ``(N,)``.
        target
            Target labels ``(N,)`` for a targeted attack (``None``: untargeted).
        mask
            Optional per-call mask (e.g. ``dataset.mask`` for padded records), combined with the
            threat model's mask.

        Returns
        -------
        AttackResult
        """
        x, y, target = self._validate(x, y, target)
        self.threat.check_inside(x)
        m = self.threat.combined_mask(x, mask)
        bounds = self.threat.bounds_for(x)
        eps = self.threat.resolve_eps(x, m)
        gen = self.generator if self.generator is not None else torch.Generator().manual_seed(0)
        with frozen_eval(self.model) if isinstance(self.model, nn.Module) else contextlib.nullcontext():
            with torch.no_grad():
                clean_logits = check_logits(self.model(x), len(x)).detach()
            k = clean_logits.shape[1]
            for name, lab in (("y", y), ("target", target)):
                if lab is not None and (bool((lab < 0).any()) or bool((lab >= k).any())):
                    raise DataError(f"{name} holds class indices outside [0, {k}) for a model with {k} logits.")
            loss_name = self._resolve_loss(k)
            ctx = AttackContext(
                model=self.model, threat=self.threat, x=x, y=y, target=target, eps=eps, mask=m, bounds=bounds,
                loss_fn=get_loss(loss_name), clean_logits=clean_logits, generator=gen,
            )
            self._run(ctx)
            x_adv, adv_logits = self._finalize(ctx)
        norms = lp_norm(x_adv - x, self.threat.norm, exact=True)
        cfg = self.config()
        cfg["loss"] = loss_name
        return AttackResult(
            x_adv=x_adv,
            success=is_success(adv_logits, y, target),
            norms=norms,
            eps=eps,
            clean_pred=clean_logits.argmax(1),
            adv_pred=adv_logits.argmax(1),
            y=y,
            target=target,
            grad_evals=int(ctx.n_grad.sum()),
            queries=int(ctx.n_fwd.sum()),
            grad_evals_per_sample=ctx.n_grad,
            queries_per_sample=ctx.n_fwd,
            attack=self.name,
            norm=self.threat.norm,
            targeted=target is not None,
            config=cfg,
        )

    def _resolve_loss(self, num_classes: int) -> str:
        if self.loss == "dlr" and num_classes < 4:
            warnings.warn(
                f"the DLR loss needs at least 4 classes and the model has {num_classes}; "
                "using the logit margin loss instead (Croce & Hein 2020; AutoAttack check_n_classes).",
                UserWarning,
                stacklevel=3,
            )
            return "margin"
        return "margin" if self.loss == "cw" else self.loss

    def _finalize(self, ctx: AttackContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Verify the threat model on the output (re-projecting and re-evaluating only if violated)."""
        x, x_adv, eps = ctx.x, ctx.x_out, ctx.eps
        delta = x_adv - x
        bad = lp_norm(delta, self.threat.norm, exact=True) > eps
        if ctx.mask is not None:
            bad |= (delta * (1 - ctx.mask)).flatten(1).abs().amax(1) > 0
        if ctx.bounds is not None:
            lo, hi = ctx.bounds
            bad |= ((x_adv < lo) | (x_adv > hi)).flatten(1).any(1)
        if bool(bad.any()):
            fixed = ctx.threat.constrain(x, delta, eps, ctx.mask, ctx.bounds)
            x_adv = torch.where(bview(bad, x), fixed, x_adv)
            with torch.no_grad():
                ctx.logits_out[bad] = self.model(x_adv[bad]).detach()
            ctx.n_fwd[bad] += 1
        return x_adv.to(x.dtype), ctx.logits_out

    @abstractmethod
    def _run(self, ctx: AttackContext) -> None:
        """Attack the batch in ``ctx``: call ``ctx.record`` / ``ctx.record_final`` for every sample."""
