"""The units of work of an evaluation, each a top-level function of one :class:`WorkContext`.

Every unit returns a dict of numpy arrays that :class:`~medrobust.evaluation.card.RunState` records
(and reads back on resume); a unit is seeded from the run seed and its own name only, so it gives the
same arrays whenever it runs:

* :func:`preflight_unit` — the reliability checks on a small batch (:mod:`medrobust.evaluation.flags`);
* :func:`clean_unit` — clean predictions of every sample;
* :func:`sweep_unit` — one batch at one ε through the ensemble;
* :func:`mineps_unit` — one batch's minimal adversarial ε: binary search over the ε grid, then
  ``refine_steps`` bisection steps, each step one early-stopped ensemble run with a per-sample radius;
* :func:`large_eps_unit` — PGD (margin loss) far beyond the sweep (ART ``SecurityCurve``; Nicolae et
  al., arXiv 1807.01069);
* :func:`examples_unit` — every attack alone at every ε on a few records, kept for the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from medrobust.evaluation import flags as flagmod
from medrobust.evaluation.card import RunState
from medrobust.evaluation.ensemble import (
    EnsembleContext,
    derive_seed,
    has_universal,
    metrics_arrays,
    run_attack,
    run_ensemble,
    subset_mask,
)
from medrobust.evaluation.perturbation import METRICS
from medrobust.models.inference import forward
from medrobust.evaluation.spec import AttackSpec, ProtocolConfig

Arrays = dict[str, np.ndarray]


@dataclass
class WorkContext:
    """What the units of one evaluation share (the evaluated samples, the ensemble, the clean outcome)."""

    config: ProtocolConfig
    ens: EnsembleContext
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None
    batches: list[np.ndarray]
    num_classes: int
    ids: np.ndarray | None = None
    """Dataset index of every evaluated row (keys each sample's random stream in the attacks)."""
    clean_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def members(self) -> tuple[AttackSpec, ...]:
        return self.ens.members

    @property
    def correct(self) -> np.ndarray:
        return self.clean_pred == self.y.numpy()

    def sample_ids(self, rows: np.ndarray) -> torch.Tensor:
        """The dataset indices of ``rows`` (the rows themselves when the evaluation was given none)."""
        r = np.asarray(rows, dtype=np.int64)
        return torch.as_tensor(r if self.ids is None else np.asarray(self.ids, dtype=np.int64)[r])

    def rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``x``, ``y`` and mask of the given rows, on the device."""
        t = torch.as_tensor(rows, dtype=torch.long)
        dev = self.ens.device
        return self.x[t].to(dev), self.y[t].to(dev), None if self.mask is None else self.mask[t].to(dev)


class UnitRunner:
    """Runs a unit unless the state already holds it; records it and advances the progress bar."""

    def __init__(self, state: RunState, bar: Any) -> None:
        self.state, self.bar, self.computed = state, bar, 0

    def __call__(self, key: str, fn: Callable[..., Arrays], *args: Any) -> Arrays:
        if self.state.has(key):
            return self.state.get(key)
        t0 = time.perf_counter()
        arrays = fn(*args)
        res = self.state.put(key, arrays, time.perf_counter() - t0)
        self.computed += 1
        self.bar.update(1)
        self.bar.set_postfix_str(key)
        return res


# ------------------------------------------------------------------------------------------ preflight, clean
def preflight_unit(w: WorkContext) -> Arrays:
    """Reliability checks on the first 64 samples; ``flags`` (JSON) and ``probability_kind``."""
    model = w.ens.model
    xb, yb, _ = w.rows(np.arange(min(64, len(w.y))))
    flags: list[dict[str, Any]] = []
    f = flagmod.check_output_range(model, xb)
    kind = ""
    if f is not None:
        flags.append(f.to_dict())
        kind = f.details["kind"]
    mdl = flagmod.ProbabilitiesToLogits(model, kind) if kind else model
    f = flagmod.check_randomized(mdl, xb)
    if f is not None:
        flags.append(f.to_dict())
    with torch.no_grad():
        cc = (mdl(xb).argmax(1) == yb)
    f = flagmod.check_gradients(mdl, xb[cc], yb[cc])
    if f is not None:
        flags.append(f.to_dict())
    f = flagmod.check_few_classes_dlr(w.num_classes, [(s.label, s.name, dict(s.kwargs)) for s in w.members])
    if f is not None:
        flags.append(f.to_dict())
    return {"flags": np.array(json.dumps(flags)), "probability_kind": np.array(kind)}


def clean_unit(w: WorkContext) -> Arrays:
    """Clean predictions of every evaluated sample."""
    preds = []
    with torch.no_grad():
        for b in w.batches:
            xb, _, mb = w.rows(b)
            preds.append(forward(w.ens.model, xb, mb).argmax(1).cpu())
    return {"clean_pred": torch.cat(preds).numpy().astype(np.int64)}


# ------------------------------------------------------------------------------------------ sweep
def sweep_unit(w: WorkContext, e: int, b: int) -> Arrays:
    """Batch ``b`` at radius ``config.eps[e]``: per-member status and predictions, ensemble outcome, metrics."""
    bi, m_count = w.batches[b], len(w.members)
    status = np.full((m_count, len(bi)), -1, dtype=np.int8)
    mpred = np.full((m_count, len(bi)), -1, dtype=np.int64)
    adv_pred = w.clean_pred[bi].copy()
    broken_by = np.full(len(bi), -1, dtype=np.int64)
    ens = {k: np.full(len(bi), np.nan) for k in METRICS}
    mem = {k: np.full((m_count, len(bi)), np.nan) for k in METRICS}
    grads = np.zeros(m_count, dtype=np.int64)
    queries = np.zeros(m_count, dtype=np.int64)
    loc = np.nonzero(w.correct[bi])[0]
    if len(loc):
        cfg = w.config
        xb, yb, mb = w.rows(bi[loc])
        r = run_ensemble(w.ens, xb, yb, float(cfg.eps[e]), seed_parts=(cfg.seed, "sweep", e), mask=mb,
                         mode=cfg.mode, sample_ids=w.sample_ids(bi[loc]))
        status[:, loc], mpred[:, loc] = r["status"], r["pred"]
        broken_by[loc] = r["broken_by"]
        hit = r["broken_by"] >= 0
        adv_pred[loc] = np.where(hit, r["pred"][np.clip(r["broken_by"], 0, None), np.arange(len(loc))],
                                 yb.cpu().numpy())
        for k, v in metrics_arrays(xb, r["x_ens"], hit, w.ens.fs, cfg.hf_cutoff_hz).items():
            ens[k][loc] = v
        for m in range(m_count):
            mm = metrics_arrays(xb, r["x_member"][m], r["status"][m] == 1, w.ens.fs, cfg.hf_cutoff_hz)
            for k, v in mm.items():
                mem[k][m, loc] = v
        grads, queries = r["grad_evals"], r["queries"]
    out = {"status": status, "member_pred": mpred, "adv_pred": adv_pred, "broken_by": broken_by,
           "grad_evals": grads, "queries": queries}
    out.update({f"ens_{k}": v for k, v in ens.items()})
    out.update({f"mem_{k}": v for k, v in mem.items()})
    return out


# ------------------------------------------------------------------------------------------ minimal ε
@dataclass
class _Bisection:
    """One batch's clean-correct samples under bisection (the attempts are numbered for their seeds)."""

    w: WorkContext
    b: int
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None
    ids: torch.Tensor | None = None
    step: int = 0

    def attempt(self, which: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the early-stopped ensemble on samples ``which`` with per-sample ``radii``: (broken, by whom)."""
        self.step += 1
        sel = torch.as_tensor(which).to(self.w.ens.device)
        r = run_ensemble(self.w.ens, self.x[sel], self.y[sel], torch.as_tensor(radii, dtype=torch.float64),
                         seed_parts=(self.w.config.seed, "mineps", self.b, self.step),
                         mask=subset_mask(self.mask, sel), mode="sequential", extra={"early_stop": True},
                         sample_ids=None if self.ids is None else self.ids[sel.cpu()])
        return r["broken_by"] >= 0, r["broken_by"]


def _grid_search(bis: _Bisection, grid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binary search over the ε grid: (broken at the largest ε, lower grid index, upper grid index, broken by)."""
    lo_i = np.full(k, -1)
    hi_i = np.full(k, len(grid))
    ok, who = bis.attempt(np.arange(k), np.full(k, grid[-1]))
    hi_i[ok] = len(grid) - 1
    bb = np.full(k, -1)
    bb[ok] = who[ok]
    while True:
        need = np.nonzero(ok & (hi_i - lo_i > 1))[0]
        if len(need) == 0:
            break
        mid = (lo_i[need] + hi_i[need]) // 2
        s, w = bis.attempt(need, grid[mid])
        hi_i[need[s]], bb[need[s]] = mid[s], w[s]
        lo_i[need[~s]] = mid[~s]
    return ok, lo_i, hi_i, bb


def _refine(bis: _Bisection, ok: np.ndarray, a: np.ndarray, z: np.ndarray, bb: np.ndarray, steps: int) -> None:
    """``steps`` bisection steps of the brackets ``[a, z]`` of the broken samples (in place)."""
    for _ in range(steps):
        need = np.nonzero(ok)[0]
        if len(need) == 0:
            break
        mid = (a[need] + z[need]) / 2.0
        s, w = bis.attempt(need, mid)
        z[need[s]], bb[need[s]] = mid[s], w[s]
        a[need[~s]] = mid[~s]


def mineps_unit(w: WorkContext, b: int) -> Arrays:
    """Batch ``b``'s minimal adversarial ε brackets ``lo < ε* <= hi`` (``hi = inf``: not broken at the largest ε)."""
    bi = w.batches[b]
    correct = w.correct[bi]
    lo = np.zeros(len(bi))
    hi = np.where(correct, np.inf, 0.0)
    by = np.full(len(bi), -1, dtype=np.int64)
    loc = np.nonzero(correct)[0]
    if len(loc) == 0:
        return {"lo": lo, "hi": hi, "broken_by": by}
    grid = np.asarray(w.config.eps, dtype=np.float64)
    bis = _Bisection(w, b, *w.rows(bi[loc]), ids=w.sample_ids(bi[loc]))
    ok, lo_i, hi_i, bb = _grid_search(bis, grid, len(loc))
    a = np.where(lo_i >= 0, grid[np.clip(lo_i, 0, None)], 0.0)
    z = np.where(ok, grid[np.clip(hi_i, 0, len(grid) - 1)], np.inf)
    _refine(bis, ok, a, z, bb, w.config.refine_steps)
    lo[loc], hi[loc], by[loc] = a, z, bb
    return {"lo": lo, "hi": hi, "broken_by": by}


# ------------------------------------------------------------------------------------------ large ε, examples
def large_eps(config: ProtocolConfig) -> float:
    """The large-ε check's radius: ``factor × max ε`` (``min ε − 40 dB`` for ``snr_db``)."""
    if config.eps_mode == "snr_db":
        return float(config.eps[0]) - 40.0
    return float(config.large_eps_factor * config.eps[-1])


def large_eps_unit(w: WorkContext) -> Arrays:
    """PGD (margin loss, early-stopped) at :func:`large_eps` on up to ``large_eps_samples`` clean-correct samples."""
    cfg = w.config
    eps_large = large_eps(cfg)
    rows = np.nonzero(w.correct)[0][: cfg.large_eps_samples]
    if len(rows) == 0:
        return {"n": np.array(0), "still_correct": np.array(0), "eps": np.array(eps_large)}
    spec = AttackSpec("pgd", {"steps": cfg.large_eps_steps, "loss": "margin", "random_start": False,
                              "early_stop": True})
    xb, yb, mb = w.rows(rows)
    res = run_attack(w.ens, spec, xb, yb, eps_large, seed=derive_seed(cfg.seed, "large-eps"), mask=mb,
                     sample_ids=w.sample_ids(rows))
    return {"n": np.array(len(rows)), "still_correct": np.array(int((~res.success).sum())),
            "eps": np.array(eps_large)}


def pick_examples(y: np.ndarray, correct: np.ndarray, num_classes: int, k: int) -> list[int]:
    """Up to ``k`` clean-correct positions, round-robin over classes (first occurrences first)."""
    pools = [list(np.nonzero(correct & (y == c))[0]) for c in range(num_classes)]
    out: list[int] = []
    depth = 0
    while len(out) < k and any(len(p) > depth for p in pools):
        for p in pools:
            if len(p) > depth and len(out) < k:
                out.append(int(p[depth]))
        depth += 1
    return out


def _example_run(w: WorkContext, single: Any, chosen: list[int], e: int, xd: torch.Tensor, yd: torch.Tensor,
                 md: torch.Tensor | None) -> dict[str, Any]:
    """One member alone at ``config.eps[e]`` on the ``chosen`` records. A universal attack is run as the sweep
    ran it (every clean-correct sample, the sweep's seed), so the records show the perturbation that was
    evaluated, not one fitted on the few records; its rows of ``chosen`` are returned."""
    cfg = w.config
    if not has_universal(single.members):
        return run_ensemble(single, xd, yd, float(cfg.eps[e]), seed_parts=(cfg.seed, "examples", e), mask=md,
                            mode="individual", sample_ids=w.sample_ids(np.asarray(chosen)))
    pos = np.nonzero(w.correct)[0]
    xa, ya, ma = w.rows(pos)
    r = run_ensemble(single, xa, ya, float(cfg.eps[e]), seed_parts=(cfg.seed, "sweep", e), mask=ma,
                     mode="individual", sample_ids=w.sample_ids(pos))
    at = np.searchsorted(pos, np.asarray(chosen))
    sel = torch.as_tensor(at, dtype=torch.long)
    return {"x_member": [r["x_member"][0][sel.to(r["x_member"][0].device)]], "status": r["status"][:, at],
            "pred": r["pred"][:, at]}


def examples_unit(w: WorkContext, meta: Any, idx: np.ndarray) -> Arrays:
    """Every member alone at every ε on a few clean-correct records (one per class first), for the report."""
    cfg, members = w.config, w.members
    chosen = pick_examples(w.y.numpy().astype(np.int64), w.correct, w.num_classes, cfg.n_examples)
    t = torch.as_tensor(chosen, dtype=torch.long)
    xe, ye = w.x[t], w.y[t]
    shape = (len(members), len(cfg.eps), len(chosen))
    x_adv = np.zeros((*shape, *xe.shape[1:]), dtype=np.float32)
    adv_pred = np.full(shape, -1, dtype=np.int64)
    success = np.zeros(shape, dtype=bool)
    if len(chosen):
        xd, yd, md = w.rows(np.asarray(chosen))
        for m, spec in enumerate(members):
            single = replace(w.ens, members=(spec,))
            for e, eps in enumerate(cfg.eps):
                r = _example_run(w, single, chosen, e, xd, yd, md)
                x_adv[m, e] = r["x_member"][0].cpu().numpy()
                adv_pred[m, e] = np.where(r["status"][0] >= 0, r["pred"][0], w.clean_pred[chosen])
                success[m, e] = r["status"][0] == 1
    extra = {} if w.mask is None else {"mask": w.mask[t].numpy().astype(np.float32)}
    for key in ("uv_scale", "uv_offset"):  # per-sample µV map of scaled beats (the report draws them in mV)
        if getattr(meta, key, None) is not None:
            extra[key] = np.asarray(getattr(meta, key), dtype=np.float64)[idx[chosen]]
    return {
        **extra,
        "index": idx[chosen].astype(np.int64), "position": np.asarray(chosen, dtype=np.int64),
        "x": xe.numpy().astype(np.float32), "y": ye.numpy().astype(np.int64),
        "clean_pred": w.clean_pred[chosen], "x_adv": x_adv, "adv_pred": adv_pred, "success": success,
        "ids": np.asarray([str(meta.ids[i]) for i in idx[chosen]], dtype=str),
        "labels": np.asarray([s.label for s in members], dtype=str),
        "eps": np.asarray(cfg.eps, dtype=np.float64),
        "classes": np.asarray(list(meta.classes), dtype=str),
        "fs": np.array(float(meta.fs or 0.0)), "units": np.array(str(meta.units)),
        "leads": np.asarray(list(meta.leads), dtype=str),
    }


def model_for_attacks(model: nn.Module, probability_kind: str) -> nn.Module:
    """The model the attacks see: wrapped to return logits when the pre-flight found probability outputs."""
    return flagmod.ProbabilitiesToLogits(model, probability_kind).eval() if probability_kind else model
