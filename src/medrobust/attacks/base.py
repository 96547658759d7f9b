"""Shared machinery of all attacks: the :class:`Attack` template, :class:`AttackContext` and :class:`AttackResult`.

Design (Foolbox 3-style template method, torchattacks-style one-line use): :meth:`Attack.__call__`
is final. It validates the batch, freezes the model (eval mode, parameters without gradients) and
restores it afterwards, resolves the per-sample radius of the :class:`~medrobust.attacks.threat.ThreatModel`,
runs the clean forward pass (checking that the model returns logits), calls the subclass's
:meth:`Attack._run`, verifies the threat model on the output and packs an :class:`AttackResult`.

**Writing an attack.** A subclass overrides :meth:`Attack._run` and declares its own settings as keyword
arguments; the shared threat arguments (:class:`ThreatArgs`: ``eps, norm, eps_mode, bounds, mask, threat,
loss, generator, units``) pass through ``**threat_kwargs``::

    class MyAttack(Attack):
        name = "mine"
        def __init__(self, model, *, steps: int = 10, **threat_kwargs: Unpack[ThreatArgs]) -> None:
            self.steps = check_int(steps, "steps", minimum=1)
            super().__init__(model, **threat_kwargs)

:meth:`Attack.hyperparameters` is derived from that signature: every keyword parameter of the concrete
class's ``__init__`` (along the MRO, except ``model`` and the shared ones) is read from ``self.<name>``.

**Active set.** Attacks work on a subset of the batch, selected by index, that is still being attacked.
Samples that are already adversarial (per-sample early stop) leave the active set and are never
forwarded again, which is where most of the speed of a robust-accuracy curve comes from (AutoAttack's
``ind_to_fool``, Croce & Hein, ICML 2020).

**Losses and soft labels** (the hook of Foolbox's ``get_loss_fn``). ``loss=`` is a name (``"ce"``,
``"margin"``, ``"soft_margin"``, ``"dlr"``, ``"kl"``) or a callable ``loss(logits, y, target) -> (n,)``
giving the per-sample objective to *maximise*; the callable receives ``y`` exactly as passed to
``__call__``. ``y`` may be integer labels ``(N,)`` or soft labels ``(N, K)`` (probabilities, rows summing
to 1): then ``"ce"`` is the soft cross-entropy ``−Σ_k y_k log softmax(z)_k``, ``"kl"`` is
``KL(y ‖ softmax(z))`` and success / early stop use ``argmax(y)`` as the label. Iterative attacks take
``early_stop``; with ``early_stop=False`` every sample runs every step and the output is the final
iterate. TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
ICML 2019, eq. 5) builds its adversary so::

    p_clean = model(x).softmax(1).detach()                        # soft labels (N, K)
    atk = PGD(model, eps=0.03, steps=10, rel_step_size=0.25, loss="kl", early_stop=False,
              random_start=True, bounds=(0, 1), generator=gen)
    x_adv = atk(x, p_clean).x_adv                                 # maximises KL(p_clean ‖ f(x'))
    loss = ce(model(x), y) + beta * kl(p_clean, model(x_adv))

**Randomness** (per sample). At every call one base seed is drawn from the attack's ``generator``;
every random draw of a sample comes from its own stream: a generator seeded with a SplitMix64 hash of
(base seed, ``sample_ids[i]``, the sample's draw counter) (:meth:`AttackContext.rand`, ``randn``,
``randint``, ``generators``). A
sample's result therefore does not depend on which other samples share its batch or stop early, and a
seeded generator reproduces a run exactly. Pass ``sample_ids`` (e.g. dataset indices) to keep
this true across batch splits.

**Masks.** ``mask=`` at call time (e.g. the padding mask of variable-length records, ``(N, 1, L)``) both
limits the perturbation and is handed to models whose ``forward`` takes ``mask=`` (masked pooling), via
:func:`medrobust.models.inference.forward`, in every forward of the attack.

References
----------
Rauber, J. et al. "Foolbox Native", JOSS 5(53), 2020 — template attack classes, ``get_loss_fn``.
Kim, H. "Torchattacks: A PyTorch Repository for Adversarial Attacks", arXiv 2010.01950.
Croce, F. & Hein, M. ICML 2020 (arXiv 2003.01690) — per-sample bookkeeping, logits check.
Steele, G. et al. "Fast splittable pseudorandom number generators", OOPSLA 2014 — the SplitMix64 mixer
that derives each stream's seed.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, TypedDict, final

import torch
from torch import nn

from medrobust.atomic import jsonable
from medrobust.attacks.fastpath import StaticLossGrad, cuda_graph_capture, resolve_fast_path
from medrobust.attacks.losses import LossFn, get_loss, is_success, loss_name
from medrobust.attacks.threat import ThreatModel, bview, lp_norm
from medrobust.errors import ConfigError, DataError
from medrobust.models.inference import forward
from medrobust.units import resolve_bounds


class ThreatArgs(TypedDict, total=False):
    """The keyword arguments shared by every attack (see :class:`Attack`)."""

    eps: float | torch.Tensor | None
    norm: str
    eps_mode: str
    bounds: tuple[Any, Any] | str | None
    mask: torch.Tensor | None
    threat: ThreatModel | None
    loss: str | LossFn
    generator: torch.Generator | None
    units: str | None


COMMON_ARGS: frozenset[str] = frozenset(ThreatArgs.__annotations__)
"""Names of the shared threat arguments (excluded from :meth:`Attack.hyperparameters`)."""


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
        The integer labels (``argmax`` of soft labels) and targets the attack was called with.
    soft_y
        The soft labels ``(N, K)`` when the attack was called with soft labels, else ``None``.
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
    soft_y: torch.Tensor | None = None

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


# ------------------------------------------------------------------------------------ per-sample random streams
def _s64(c: int) -> int:
    return c - (1 << 64) if c >= (1 << 63) else c


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_MIX1 = _s64(0xBF58476D1CE4E5B9)
_MIX2 = _s64(0x94D049BB133111EB)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (two's complement) values."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (Steele et al., OOPSLA 2014) on int64 tensors (wrapping arithmetic)."""
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


_MASK63 = (1 << 63) - 1


def stream_keys(seed: int, ids: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """One int64 key per (base seed, sample id, draw counter)."""
    base = _mix(torch.full_like(ids, _s64(seed % (1 << 64))))
    return _mix(_mix(base + ids * _GOLDEN) + counters)


class Active:
    """The active set: the samples of the batch still being attacked, with their per-sample data.

    Attributes
    ----------
    idx
        ``(n,)`` indices into the full batch (the rows of per-sample state such as ascent rules).
    x, y, label, target, eps, step
        The active samples' clean inputs, labels as given to the loss (integer ``(n,)`` or soft
        ``(n, K)``), integer labels ``(n,)`` (``argmax`` of soft labels), targets, radii ``(n,)`` and
        step sizes ``(n,)``.
    mask
        The perturbation mask (leading dim ``n``, or ``1`` when shared by all samples).
    model_mask
        The padding mask handed to the model (leading dim ``n`` or ``1``), or ``None``.
    """

    def __init__(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 eps: torch.Tensor, step: torch.Tensor | None, mask: torch.Tensor | None, mask_per_sample: bool,
                 *, label: torch.Tensor | None = None, model_mask: torch.Tensor | None = None) -> None:
        self.idx, self.x, self.y, self.target = idx, x, y, target
        self.label = y if label is None else label
        self.eps, self.step, self.mask, self.mask_per_sample = eps, step, mask, mask_per_sample
        self.model_mask = model_mask

    def __len__(self) -> int:
        return int(self.idx.numel())

    def select(self, keep: torch.Tensor) -> "Active":
        """A new active set with the samples where ``keep`` (bool ``(n,)`` or index tensor) holds."""
        k = keep

        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            return t[k] if (t is not None and t.shape[0] == len(self) and len(self) > 1) else t

        return Active(
            self.idx[k], self.x[k], self.y[k], None if self.target is None else self.target[k], self.eps[k],
            None if self.step is None else self.step[k],
            self.mask[k] if (self.mask is not None and self.mask_per_sample) else self.mask,
            self.mask_per_sample, label=self.label[k], model_mask=rows(self.model_mask),
        )


class AttackContext:
    """Per-call state handed to :meth:`Attack._run`: the batch, the threat model and the bookkeeping.

    ``record`` keeps, for every sample, the latest successful adversarial input (and its logits);
    ``record_final`` stores the fallback output of samples that never succeeded (or, with
    ``keep="final"``, every sample's final iterate).

    Attributes
    ----------
    y
        Labels as given (integer ``(N,)`` or soft ``(N, K)``), passed to the loss.
    label
        Integer labels ``(N,)`` used for success.
    sample_ids
        ``(N,)`` int64 identities of the samples (default ``arange(N)``) keying the random streams.
    seed
        The call's base seed (one draw from the attack's generator).
    """

    def __init__(self, *, model: nn.Module, threat: ThreatModel, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, eps: torch.Tensor, mask: torch.Tensor | None,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None, loss_fn: LossFn, clean_logits: torch.Tensor,
                 generator: torch.Generator, label: torch.Tensor | None = None,
                 model_mask: torch.Tensor | None = None, sample_ids: torch.Tensor | None = None) -> None:
        self.model, self.threat = model, threat
        self.x, self.y, self.target, self.eps = x, y, target, eps
        self.label = y if label is None else label
        self.mask, self.bounds, self.loss_fn = mask, bounds, loss_fn
        self.model_mask = model_mask
        self.generator = generator
        self.norm = threat.norm
        n = x.shape[0]
        self.mask_per_sample = mask is not None and mask.shape[0] == n and n > 1
        self.clean_logits = clean_logits
        self.success = is_success(clean_logits, self.label, target)
        self.x_out = x.clone()
        self.logits_out = clean_logits.clone()
        self.n_fwd = torch.ones(n, dtype=torch.long, device=x.device)  # the clean forward
        self.n_grad = torch.zeros(n, dtype=torch.long, device=x.device)
        self.sample_ids = (torch.arange(n, device=x.device) if sample_ids is None
                           else sample_ids.to(device=x.device, dtype=torch.int64))
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        self._draws = torch.zeros(n, dtype=torch.int64, device=x.device)
        self._nan_warned = False
        self.engine: StaticLossGrad | None = None   # the GPU fast path's captured step, when on

    # ---------------------------------------------------------------- active sets
    def active(self, *, step: torch.Tensor | None = None, only_unsuccessful: bool = True) -> Active:
        """The active set of all not-yet-successful samples (or all samples)."""
        n = self.x.shape[0]
        full = Active(torch.arange(n, device=self.x.device), self.x, self.y, self.target, self.eps, step, self.mask,
                      self.mask_per_sample, label=self.label, model_mask=self.model_mask)
        if not only_unsuccessful:
            return full
        idx = (~self.success).nonzero().squeeze(1)
        return full if len(idx) == n else full.select(idx)

    # ---------------------------------------------------------------- randomness
    def generators(self, act: Active) -> list[torch.Generator]:
        """One fresh generator per active sample, seeded from (base seed, sample id, draw counter).

        Each call advances the samples' draw counters by one. CPU generators for CPU batches, CUDA
        generators (Philox) for CUDA batches.
        """
        rows = act.idx
        keys = stream_keys(self.seed, self.sample_ids[rows], self._draws[rows])
        self._draws[rows] += 1
        dev = self.x.device if self.x.device.type == "cuda" else torch.device("cpu")
        return [torch.Generator(device=dev).manual_seed(k & _MASK63) for k in keys.tolist()]

    def _draw(self, act: Active, shape: tuple[int, ...], dtype: torch.dtype,
              fill: Callable[[torch.Tensor, torch.Generator], Any]) -> torch.Tensor:
        gens = self.generators(act)
        dev = self.x.device if self.x.device.type == "cuda" else torch.device("cpu")
        out = torch.empty((len(act), *shape), dtype=dtype, device=dev)
        for i, g in enumerate(gens):
            fill(out[i], g)
        return out.to(self.x.device)

    def _float(self) -> torch.dtype:
        return self.x.dtype if self.x.dtype in (torch.float32, torch.float64) else torch.float32

    def rand(self, act: Active, *shape: int) -> torch.Tensor:
        """``U[0, 1)`` values ``(len(act), *shape)`` (x's dtype and device), each row from its sample's stream."""
        out = self._draw(act, shape, self._float(), lambda t, g: t.uniform_(0.0, 1.0, generator=g))
        return out.to(self.x.dtype)

    def randn(self, act: Active, *shape: int) -> torch.Tensor:
        """Standard normal values ``(len(act), *shape)``, each row from its sample's stream."""
        out = self._draw(act, shape, self._float(), lambda t, g: t.normal_(0.0, 1.0, generator=g))
        return out.to(self.x.dtype)

    def randint(self, act: Active, high: int, *shape: int) -> torch.Tensor:
        """Integers uniform on ``[0, high)`` ``(len(act), *shape)`` (int64), each row from its sample's stream."""
        return self._draw(act, shape, torch.int64, lambda t, g: t.random_(0, int(high), generator=g))

    # ---------------------------------------------------------------- model evaluation
    def forward(self, x_in: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """The model's logits on ``x_in``, passing the padding mask of the ``owners`` rows (full-batch indices)."""
        m = self.model_mask
        if m is not None and m.shape[0] != 1:
            m = m[owners]
        return forward(self.model, x_in, m)

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
        with torch.enable_grad() if need_grad else torch.no_grad():
            if need_grad:
                leaf = leaf.detach().requires_grad_(True)
            x_in = leaf if transform is None else transform(leaf)
            fast = None if self.engine is None or act.model_mask is not None else \
                self.engine(x_in.detach(), act.y, act.target, need_grad=need_grad)
            if fast is not None:   # the captured step (attacks.fastpath); a transform's gradient is chained
                logits, loss, grad = fast
                if grad is not None and transform is not None:
                    (grad,) = torch.autograd.grad(x_in, leaf, grad_outputs=grad)
            else:
                logits = forward(self.model, x_in, act.model_mask)
                loss = self.loss_fn(logits, act.y, act.target)
                if need_grad:
                    (grad,) = torch.autograd.grad(loss.sum(), leaf)
        if grad is not None:
            grad = self._finite(grad)
            self.n_grad[act.idx] += 1
        self.n_fwd[act.idx] += 1
        return x_in.detach(), logits.detach(), loss.detach(), grad

    def _finite(self, grad: torch.Tensor) -> torch.Tensor:
        if bool(torch.isfinite(grad).all()):
            return grad
        if not self._nan_warned:
            warnings.warn("non-finite input gradients were set to zero; the model may be numerically "
                          "unstable at the perturbed inputs.", RuntimeWarning, stacklevel=4)
            self._nan_warned = True
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    # ---------------------------------------------------------------- bookkeeping
    def record(self, act: Active, x_in: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Store successful samples' inputs as their current best; return the per-sample success ``(n,)``."""
        succ = is_success(logits, act.label, act.target)
        if bool(succ.any()):
            gi = act.idx[succ]
            self.x_out[gi] = x_in[succ]
            self.logits_out[gi] = logits[succ]
            self.success[gi] = True
        return succ

    def record_final(self, act: Active, x_in: torch.Tensor, logits: torch.Tensor, *, overwrite: bool = False) -> None:
        """Store ``x_in`` as the output of the active samples that have never succeeded (all with ``overwrite``)."""
        if overwrite:
            self.x_out[act.idx] = x_in
            self.logits_out[act.idx] = logits
            self.success[act.idx] = is_success(logits, act.label, act.target)
            return
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
        """A uniformly random admissible point of the active samples' balls, from each sample's stream.

        L∞: ``δ ~ U[−ε, ε]`` per coordinate. L2: a uniformly random point of the ball (Gaussian
        direction, radius ``ε·u^(1/d)``). Both are masked and clipped to the bounds.
        """
        x = act.x
        feat = tuple(x.shape[1:])
        if self.norm == "linf":
            delta = (2.0 * self.rand(act, *feat) - 1.0) * bview(act.eps, x)
        else:
            g = self.randn(act, *feat)
            if act.mask is not None:
                g = g * act.mask
            d = max(1, x[0].numel())
            u = self.rand(act).view(-1) ** (1.0 / d)
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


def _json_value(v: Any) -> Any:
    """A JSON-serialisable form of a hyper-parameter value."""
    if isinstance(v, torch.Tensor):
        return v.tolist() if v.numel() <= 16 else f"tensor{tuple(v.shape)}"
    if isinstance(v, (list, tuple)):
        return [_json_value(e) for e in v]
    if isinstance(v, dict):
        return {str(k): _json_value(e) for k, e in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return jsonable(v)
    if callable(v):
        return getattr(v, "__qualname__", None) or type(v).__name__
    return repr(v)


def _declared_input_shape(model: Any) -> tuple[int, ...] | None:
    """The input shape a model declares (``model.input_shape`` or ``model.card["input_shape"]``)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        card = getattr(model, "card", None)
        shape = card.get("input_shape") if isinstance(card, dict) else None
    if shape is None or isinstance(shape, torch.Tensor):
        return None
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        return None


def _labels(y: Any, x: torch.Tensor, name: str, *, soft_ok: bool) -> torch.Tensor:
    """Integer labels ``(N,)`` (long, on x's device) or, when allowed, soft labels ``(N, K)`` (x's dtype)."""
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(y)
        except Exception:
            raise DataError(f"{name} must be a tensor of class indices, got {type(y).__name__}.") from None
    if y.ndim == 0:
        raise DataError(f"{name} must be a tensor of class indices (N,), got a scalar; pass one label per sample.")
    if len(y) != len(x):
        raise DataError(f"len(x) = {len(x)} but len({name}) = {len(y)}; pass one label per sample.")
    if soft_ok and y.ndim == 2 and y.is_floating_point():
        yd = y.detach().double()
        if not bool(torch.isfinite(yd).all()) or bool((yd < 0).any()) or bool(((yd.sum(1) - 1).abs() > 1e-4).any()):
            raise DataError(f"soft labels {name} (N, K) must be finite probabilities whose rows sum to 1.")
        return y.detach().to(device=x.device, dtype=x.dtype)
    if y.ndim != 1:
        raise DataError(
            f"{name} must be class indices (N,){' or soft labels (N, K)' if soft_ok else ''}, got shape "
            f"{tuple(y.shape)}; multi-label targets are not supported by these attacks."
        )
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{name} must hold integer class indices, got dtype {y.dtype}; use {name}.long().")
    return y.to(device=x.device, dtype=torch.long)


class Attack(ABC):
    """Base class of every attack: a final ``__call__`` around the subclass's :meth:`_run`.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, K)``, ``K >= 2`` (wrap single-logit heads with
        :class:`~medrobust.attacks.BinaryLogitWrapper`). It is put in eval mode with frozen
        parameters during the attack; both are restored afterwards. If it declares an input shape
        (``model.input_shape`` or ``model.card["input_shape"]``, as :func:`~medrobust.models.load_checkpoint`
        sets), batches of another shape are refused.
    eps, norm, eps_mode, bounds, mask
        The threat model (see :class:`~medrobust.attacks.threat.ThreatModel`); or pass ``threat``.
        ``bounds="auto"`` takes the natural range of ``units`` (:func:`medrobust.units.resolve_bounds`):
        ``(0, 1)`` for ``"normalized [0, 1]"``, ``(-1, 1)`` for ``"max-abs scaled [-1, 1]"``, ``None`` for mV.
    threat
        A ready :class:`ThreatModel` (then ``eps`` etc. must not be given).
    loss
        A name (``"ce"``, ``"margin"``, ``"soft_margin"``, ``"dlr"``, ``"kl"``; see
        :mod:`medrobust.attacks.losses`) or a callable ``loss(logits, y, target) -> (n,)`` to maximise.
    generator
        Source of all randomness (one base seed is drawn from it per call). ``None`` uses a generator
        seeded with 0 at every call, so results are reproducible by default.
    units
        The data's units string (``dataset.meta.units``), used to resolve ``bounds="auto"``.
    """

    name: ClassVar[str] = "attack"
    black_box: ClassVar[bool] = False
    default_loss: ClassVar[str] = "ce"
    """The loss used when ``loss`` is not given (query-based attacks use the logit margin)."""
    """``True`` for attacks that only query the model (read by the evaluation's reliability flags)."""
    _own_params: ClassVar[tuple[str, ...]] = ()
    fast_path: str = "auto"
    """The GPU fast path (:mod:`medrobust.attacks.fastpath`): ``"auto"`` (a CUDA graph of the gradient step on
    CUDA inputs, the eager path elsewhere), ``"off"`` or ``"cuda_graph"``; set it on an instance to change it."""
    capture: ClassVar[Any] = staticmethod(cuda_graph_capture)
    """How the step is captured (tests replace it with :func:`~medrobust.attacks.fastpath.eager_capture`)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | torch.Tensor | None = None,
        norm: str = "linf",
        eps_mode: str = "abs",
        bounds: tuple[Any, Any] | str | None = None,
        mask: torch.Tensor | None = None,
        threat: ThreatModel | None = None,
        loss: str | LossFn | None = None,
        generator: torch.Generator | None = None,
        units: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise ConfigError(f"model must be a torch.nn.Module (or callable), got {type(model).__name__}.")
        self.model = model
        self.units = units
        if isinstance(bounds, str):
            if bounds == "auto" and units is None:
                raise ConfigError("bounds='auto' needs units= (the dataset's meta.units), e.g. units='normalized [0, 1]'.")
            bounds = resolve_bounds(bounds, units)
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
        if loss is None:
            loss = type(self).default_loss
        get_loss(loss)  # validates the name (or that it is callable)
        self.loss = loss.lower() if isinstance(loss, str) else loss
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Record the subclass's own keyword arguments; give ``__init__`` its full signature.

        A subclass written as ``__init__(self, model, *, <own args>, **threat_kwargs)`` gets an
        ``inspect.signature`` listing its own arguments followed by the shared :class:`ThreatArgs`, so
        introspection (``help``, the registry, the evaluation protocol) sees every accepted argument.
        """
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        params = list(sig.parameters.values())
        cls._own_params = tuple(p.name for p in params if p.name not in ("self", "model") and p.name not in COMMON_ARGS
                                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        if any(p.kind == p.VAR_KEYWORD for p in params):
            head = [p for p in params if p.kind != p.VAR_KEYWORD and p.name not in COMMON_ARGS]
            names = {p.name for p in head}
            parent = inspect.signature(cls.__mro__[1].__init__).parameters.values()  # already completed
            rest = [p.replace(default=cls.default_loss) if p.name == "loss" else p
                    for p in parent if p.kind == p.KEYWORD_ONLY and p.name not in names]
            init.__signature__ = sig.replace(parameters=[*head, *rest])

    @classmethod
    def own_parameters(cls) -> list[str]:
        """Names of the keyword arguments of the class's ``__init__`` chain, except ``model`` and :class:`ThreatArgs`."""
        names: list[str] = []
        for klass in cls.__mro__:
            for name in klass.__dict__.get("_own_params", ()):
                if name not in names:
                    names.append(name)
        return names

    def hyperparameters(self) -> dict[str, Any]:
        """The attack's own settings, derived from its ``__init__`` signature (JSON-serialisable), plus the loss."""
        out = {k: _json_value(getattr(self, k)) for k in self.own_parameters() if hasattr(self, k)}
        out["loss"] = loss_name(self.loss)
        return out

    def config(self) -> dict[str, Any]:
        """All settings (attack and threat model), JSON-serialisable."""
        return {"attack": self.name, **self.threat.describe(), **self.hyperparameters()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------------------------
    def _validate(self, x: Any, y: Any, target: Any, sample_ids: Any
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"x must be a torch.Tensor of shape (N, ...), got {type(x).__name__}.")
        if not x.is_floating_point():
            raise DataError(f"x must be a floating-point tensor, got dtype {x.dtype}; convert with x.float().")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"x must be a non-empty batch of shape (N, ...) with ndim >= 2, got {tuple(x.shape)}.")
        if not bool(torch.isfinite(x).all()):
            bad = (~torch.isfinite(x.flatten(1))).any(1).nonzero().squeeze(1)[:5].tolist()
            raise DataError(f"x contains NaN or inf (samples {bad} ...); clean or drop those samples before attacking.")
        declared = _declared_input_shape(self.model)
        if declared is not None and declared != tuple(x.shape[1:]):
            raise DataError(f"the model expects inputs of shape {list(declared)} per sample but x has "
                            f"{list(x.shape[1:])}; load the data with the options used for training.")
        y = _labels(y, x, "y", soft_ok=True)
        if target is not None:
            target = _labels(target, x, "target", soft_ok=False)
        if sample_ids is not None:
            sample_ids = _labels(sample_ids, x, "sample_ids", soft_ok=False)
        return x.detach(), y, target, sample_ids

    def _model_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The per-call mask as the model's padding mask (time axis expanded), or ``None``."""
        if mask is None:
            return None
        m = _PLAIN.combined_mask(x, mask)
        assert m is not None
        if m.shape[-1] == 1 and x.shape[-1] != 1:
            m = m.expand(*m.shape[:-1], x.shape[-1])
        return m

    def _clean_logits(self, x: torch.Tensor, model_mask: torch.Tensor | None) -> torch.Tensor:
        try:
            with torch.no_grad():
                z = forward(self.model, x, model_mask)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"the model {type(self.model).__name__} cannot take a batch of shape {tuple(x.shape)}: "
                            f"{first}") from None
        return check_logits(z, len(x)).detach()

    @final
    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        sample_ids: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Parameters
        ----------
        x
            Clean inputs ``(N, ...)`` (``(N, leads, samples)`` for ECG, ``(N, C, H, W)`` for images).
        y
            True labels ``(N,)``, or soft labels ``(N, K)`` (probabilities; see the module docstring).
        target
            Target labels ``(N,)`` for a targeted attack (``None``: untargeted).
        mask
            Optional per-call mask (e.g. ``dataset.mask`` for padded records), combined with the
            threat model's mask, and handed to models whose ``forward`` takes ``mask=``.
        sample_ids
            ``(N,)`` int64 identities keying each sample's random stream (default ``arange(N)``).

        Returns
        -------
        AttackResult
        """
        x, y, target, sample_ids = self._validate(x, y, target, sample_ids)
        self.threat.check_inside(x)
        m = self.threat.combined_mask(x, mask)
        model_mask = self._model_mask(x, mask)
        bounds = self.threat.bounds_for(x)
        eps = self.threat.resolve_eps(x, m)
        gen = self.generator if self.generator is not None else torch.Generator().manual_seed(0)
        with frozen_eval(self.model) if isinstance(self.model, nn.Module) else contextlib.nullcontext():
            clean_logits = self._clean_logits(x, model_mask)
            k = clean_logits.shape[1]
            label = self._check_labels(y, target, k)
            loss = self._resolve_loss(k)
            ctx = AttackContext(
                model=self.model, threat=self.threat, x=x, y=y, target=target, eps=eps, mask=m, bounds=bounds,
                loss_fn=get_loss(loss), clean_logits=clean_logits, generator=gen, label=label,
                model_mask=model_mask, sample_ids=sample_ids,
            )
            ctx.engine = self._engine(x, loss, model_mask)
            self._run(ctx)
            x_adv, adv_logits = self._finalize(ctx)
        cfg = self.config()
        cfg["loss"] = loss_name(loss)
        return AttackResult(
            x_adv=x_adv, success=is_success(adv_logits, label, target),
            norms=lp_norm(x_adv - x, self.threat.norm, exact=True), eps=eps,
            clean_pred=clean_logits.argmax(1), adv_pred=adv_logits.argmax(1), y=label, target=target,
            grad_evals=int(ctx.n_grad.sum()), queries=int(ctx.n_fwd.sum()),
            grad_evals_per_sample=ctx.n_grad, queries_per_sample=ctx.n_fwd,
            attack=self.name, norm=self.threat.norm, targeted=target is not None, config=cfg,
            soft_y=y if y.ndim == 2 else None,
        )

    def _engine(self, x: torch.Tensor, loss: str | LossFn, model_mask: torch.Tensor | None) -> StaticLossGrad | None:
        """The captured step of :mod:`medrobust.attacks.fastpath` for this batch (kept across calls of one loss
        and batch size), or ``None`` for the eager path (off CUDA, query-only attacks, masked models)."""
        if resolve_fast_path(self.fast_path, x.device) == "off" or self.black_box or model_mask is not None \
                or not isinstance(self.model, nn.Module):
            return None
        key = (id(self.model), x.shape[0], loss_name(loss) if isinstance(loss, str) else id(loss))  # kept alive by the cache
        cache = self.__dict__.setdefault("_engines", {})
        if key not in cache:
            cache[key] = StaticLossGrad(self.model, get_loss(loss), rows=x.shape[0], capture=self.capture)
        return cache[key]

    @staticmethod
    def _check_labels(y: torch.Tensor, target: torch.Tensor | None, k: int) -> torch.Tensor:
        """Integer labels (``argmax`` of soft labels), after checking them against the ``k`` logits."""
        if y.ndim == 2:
            if y.shape[1] != k:
                raise DataError(f"soft labels y have {y.shape[1]} columns but the model has {k} logits.")
            label = y.argmax(1)
        else:
            label = y
        for name, lab in (("y", label), ("target", target)):
            if lab is not None and (bool((lab < 0).any()) or bool((lab >= k).any())):
                raise DataError(f"{name} holds class indices outside [0, {k}) for a model with {k} logits.")
        return label

    def _resolve_loss(self, num_classes: int) -> str | LossFn:
        if not isinstance(self.loss, str):
            return self.loss
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
            rows = bad.nonzero().squeeze(1)
            with torch.no_grad():
                ctx.logits_out[bad] = ctx.forward(x_adv[bad], rows).detach()
            ctx.n_fwd[bad] += 1
        return x_adv.to(x.dtype), ctx.logits_out

    @abstractmethod
    def _run(self, ctx: AttackContext) -> None:
        """Attack the batch in ``ctx``: call ``ctx.record`` / ``ctx.record_final`` for every sample."""


_PLAIN = ThreatModel(eps=1.0)
