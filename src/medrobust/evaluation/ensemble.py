"""The attack ensemble: building an attack with the protocol's threat model, and running the ensemble.

:func:`run_attack` is the **only** place where evaluation calls into :mod:`medrobust.attacks` (builds
one attack and runs it on one batch); :func:`run_ensemble` runs the members one after another with
AutoAttack's semantics (Croce & Hein, ICML 2020, arXiv 2003.01690): in ``"sequential"`` mode each
attack runs only on the samples still robust, in ``"individual"`` mode on every sample, and a sample
counts as broken when any member broke it (the pointwise worst case). Each member may have
``restarts``: further independently seeded runs on the samples it has not broken yet.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from medrobust.evaluation.perturbation import METRICS, perturbation_metrics
from medrobust.evaluation.spec import AttackSpec


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the run seed and a unit's name (stable across processes and platforms)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def build_attack(
    model: nn.Module,
    spec: AttackSpec,
    *,
    eps: float | torch.Tensor,
    norm: str,
    eps_mode: str,
    bounds: tuple[float, float] | None,
    generator: torch.Generator,
    fs: float | None,
    units: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``spec``'s attack for ``model`` with the protocol's threat model and a seeded generator."""
    from medrobust.attacks import ThreatModel, get_attack
    from medrobust.attacks.registry import attack_class

    cls = attack_class(spec.name)
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = dict(spec.kwargs)
    for k, v in (extra or {}).items():
        if k in params:
            kw[k] = v
    if kw.get("fs") == "auto" or ("fs" in params and "fs" not in kw and fs):
        kw["fs"] = float(fs) if fs else None  # fs-aware attacks (SAP kernels in seconds, physio noise) get the data's fs
    if units is not None and "units" in params and "units" not in kw:
        kw["units"] = units
    if "threat" in params:
        kw["threat"] = ThreatModel(eps=eps, norm=norm, eps_mode=eps_mode, bounds=bounds)
    else:
        kw.update({k: v for k, v in (("eps", eps), ("norm", norm), ("eps_mode", eps_mode), ("bounds", bounds))
                   if k in params})
    if "generator" in params:
        kw["generator"] = generator
    return get_attack(spec.name, model, **kw)


@dataclass
class EnsembleContext:
    """The model, the ensemble and the threat model shared by every attack run of an evaluation."""

    model: nn.Module
    members: tuple[AttackSpec, ...]
    norm: str
    eps_mode: str
    bounds: tuple[float, float] | None
    fs: float | None
    device: torch.device
    units: str | None = None
    fast_path: str = "auto"
    """The attacks' GPU fast path (:mod:`medrobust.attacks.fastpath`); ``"auto"`` is the eager path on CPU."""
    engines: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    """Captured steps shared by every attack of the run (they depend on the model, loss and batch size only)."""

    def attack(self, spec: AttackSpec, eps: float | torch.Tensor, seed: int, extra: Mapping[str, Any] | None = None
               ) -> Any:
        """``spec``'s attack with radius ``eps`` and a generator seeded with ``seed`` (built, not run)."""
        gen = torch.Generator().manual_seed(seed)
        if isinstance(eps, torch.Tensor):
            eps = eps.to(self.device)
        atk = build_attack(self.model, spec, eps=eps, norm=self.norm, eps_mode=self.eps_mode,
                           bounds=self.bounds, generator=gen, fs=self.fs, units=self.units, extra=extra)
        atk.fast_path = self.fast_path
        atk._engines = self.engines
        return atk


_Context = EnsembleContext  # the former private name


def run_attack(
    ctx: EnsembleContext,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    seed: int,
    mask: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    sample_ids: torch.Tensor | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``spec``'s attack (seeded with ``seed``) and run it on ``x`` (on ``ctx.device``).

    ``sample_ids`` (the samples' indices in the dataset) key each sample's own random stream, so a sample's
    result does not depend on which other samples share its batch or on early stop.

    The one call from the evaluation into :mod:`medrobust.attacks`; returns the attack's result
    (``x_adv``, ``adv_pred``, ``success``, ``grad_evals``, ``queries``).
    """
    atk = ctx.attack(spec, eps, seed, extra)
    return atk(x, y, target=target, mask=mask, sample_ids=sample_ids)


def subset_mask(mask: torch.Tensor | None, sel: torch.Tensor) -> torch.Tensor | None:
    """The rows ``sel`` of a per-sample mask (a shared ``(1, ...)`` mask is kept as is)."""
    if mask is None:
        return None
    return mask[sel] if mask.shape[0] > 1 else mask


_subset_mask = subset_mask


@dataclass
class _Outcome:
    """Per-member outcome arrays of one ensemble run (filled member by member)."""

    status: np.ndarray
    pred: np.ndarray
    grads: np.ndarray
    queries: np.ndarray


def _run_member(ctx: EnsembleContext, m: int, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor,
                eps: float | torch.Tensor, todo: torch.Tensor, out: _Outcome, *, seed_parts: tuple[Any, ...],
                mask: torch.Tensor | None, extra: Mapping[str, Any] | None,
                sample_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Member ``m`` with its restarts on the samples ``todo``; returns (its outputs, which samples it broke)."""
    done = torch.zeros(len(x), dtype=torch.bool)
    xm = x.clone()
    for r in range(spec.restarts):
        sel = (todo & ~done).nonzero().squeeze(1)
        if len(sel) == 0:
            break
        e = eps[sel] if isinstance(eps, torch.Tensor) else eps
        sel_d = sel.to(x.device)
        res = run_attack(ctx, spec, x[sel_d], y[sel_d], e, seed=derive_seed(*seed_parts, spec.label, r),
                         mask=subset_mask(mask, sel_d), extra=extra,
                         sample_ids=None if sample_ids is None else sample_ids[sel])
        succ = res.success.cpu()
        s_np = sel.numpy()
        out.status[m, s_np] = np.maximum(out.status[m, s_np], succ.numpy().astype(np.int8))
        out.pred[m, s_np] = res.adv_pred.cpu().numpy()
        out.grads[m] += int(res.grad_evals)
        out.queries[m] += int(res.queries)
        # the attack's output for every sample it ran on: successes, and the final attempt of the
        # others (samples already broken by an earlier restart are not in ``sel``)
        xm[sel_d] = res.x_adv.to(x.dtype)
        hit = sel[succ]
        if len(hit):
            done[hit] = True
    return xm, done


def has_universal(members: Any) -> bool:
    """Whether a member is a universal attack (one perturbation for all samples of a call, e.g. ``uap``): the
    evaluation then gives it every sample at once (one work unit per radius)."""
    from medrobust.attacks.registry import attack_class

    return any(getattr(attack_class(s.name), "universal", False) for s in members)


def run_ensemble(
    ctx: EnsembleContext,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    seed_parts: tuple[Any, ...],
    mask: torch.Tensor | None = None,
    mode: str = "sequential",
    extra: Mapping[str, Any] | None = None,
    sample_ids: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Run the ensemble on clean-correct samples ``x`` (all on ``ctx.device``).

    ``sample_ids`` ``(n,)``: the samples' dataset indices, which key their random streams (see :func:`run_attack`).

    Returns
    -------
    dict
        ``status`` ``(M, n)`` int8 (1 success, 0 failed, -1 not run), ``pred`` ``(M, n)`` adversarial
        predictions (-1 where not run), ``x_member`` (list of ``(n, ...)`` tensors: each attack's output,
        successful or not, ``x`` where it did not run), ``broken_by`` ``(n,)`` first member that broke each sample in
        ensemble order (-1), ``x_ens`` the worst-case examples, ``grad_evals`` and ``queries`` ``(M,)``.
    """
    n, m_count = len(x), len(ctx.members)
    out = _Outcome(status=np.full((m_count, n), -1, dtype=np.int8), pred=np.full((m_count, n), -1, dtype=np.int64),
                   grads=np.zeros(m_count, dtype=np.int64), queries=np.zeros(m_count, dtype=np.int64))
    robust = torch.ones(n, dtype=torch.bool)
    broken_by = np.full(n, -1, dtype=np.int64)
    x_ens = x.clone()
    x_member: list[torch.Tensor] = []
    for m, spec in enumerate(ctx.members):
        todo = robust.clone() if mode == "sequential" else torch.ones(n, dtype=torch.bool)
        xm, done = _run_member(ctx, m, spec, x, y, eps, todo, out, seed_parts=seed_parts, mask=mask, extra=extra,
                               sample_ids=sample_ids)
        new = done & robust
        if bool(new.any()):
            x_ens[new.to(x.device)] = xm[new.to(x.device)]
            broken_by[new.numpy()] = m
        robust &= ~done
        x_member.append(xm)
    return {"status": out.status, "pred": out.pred, "x_member": x_member, "broken_by": broken_by, "x_ens": x_ens,
            "grad_evals": out.grads, "queries": out.queries}


def metrics_arrays(x: torch.Tensor, x_adv: torch.Tensor, success: np.ndarray, fs: float | None,
                   cutoff: float) -> dict[str, np.ndarray]:
    """Per-sample perturbation metrics where ``success`` (``nan`` elsewhere)."""
    out = {k: np.full(len(x), np.nan) for k in METRICS}
    idx = np.nonzero(success)[0]
    if len(idx):
        t = torch.as_tensor(idx)
        pm = perturbation_metrics(x[t.to(x.device)].cpu(), x_adv[t.to(x_adv.device)].cpu(), fs=fs, cutoff_hz=cutoff)
        for k in METRICS:
            out[k][idx] = pm[k]
    return out
