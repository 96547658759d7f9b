"""The result card's numbers, assembled from the recorded work units.

* :func:`stack_sweep` joins the per-batch sweep units into ``(E, M, N)`` / ``(E, N)`` arrays;
* :func:`results` gives the clean metrics, the per-ε results (numerators and denominators, per attack
  and for the ensemble) and the accuracy-versus-ε curves with their AUC (Ma & Liang 2022);
* :func:`minimal_section` the continuous curve read from each sample's minimal adversarial ε;
* :func:`collect_flags` every reliability flag of the run (:mod:`medrobust.evaluation.flags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from medrobust.evaluation import flags as flagmod
from medrobust.evaluation.metrics import confusion_matrix, metrics_from_confusion
from medrobust.evaluation.perturbation import METRICS, summarize
from medrobust.evaluation.robustness import (
    attack_success_rate,
    curve_auc,
    curve_from_minimal_eps,
    fooling_rate,
    ratio,
    robust_accuracy,
)
from medrobust.evaluation.spec import AttackSpec, ProtocolConfig
from medrobust.units import Units


@dataclass
class Sweep:
    """The sweep's per-sample outcome over radii ``E``, members ``M`` and samples ``N``."""

    status: np.ndarray          # (E, M, N) int8: 1 success, 0 failed, -1 not run
    adv_pred: np.ndarray        # (E, N) ensemble worst-case prediction
    broken_by: np.ndarray       # (E, N) first member that broke the sample (-1)
    member_pred: np.ndarray     # (E, M, N)
    ens_m: dict[str, np.ndarray]
    mem_m: dict[str, np.ndarray]
    costs: dict[int, tuple[np.ndarray, np.ndarray]]


def _cat(units: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([u[key] for u in units], axis=-1)


def stack_sweep(units: Sequence[Sequence[Mapping[str, np.ndarray]]]) -> Sweep:
    """Join ``units[e][b]`` (radius ``e``, batch ``b``) along the sample axis."""
    radii = range(len(units))
    cat = _cat
    return Sweep(
        status=np.stack([cat(units[e], "status") for e in radii]),
        adv_pred=np.stack([cat(units[e], "adv_pred") for e in radii]),
        broken_by=np.stack([cat(units[e], "broken_by") for e in radii]),
        member_pred=np.stack([cat(units[e], "member_pred") for e in radii]),
        ens_m={k: np.stack([cat(units[e], f"ens_{k}") for e in radii]) for k in METRICS},
        mem_m={k: np.stack([cat(units[e], f"mem_{k}") for e in radii]) for k in METRICS},
        costs={e: (np.sum([u["grad_evals"] for u in units[e]], axis=0),
                   np.sum([u["queries"] for u in units[e]], axis=0)) for e in radii},
    )


def _sel(a: np.ndarray | None, which: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[which]


def _member_entry(config: ProtocolConfig, spec: AttackSpec, m: int, e: int, sw: Sweep, correct: np.ndarray,
                  units: str, uv_scale: np.ndarray | None = None) -> dict[str, Any]:
    st = sw.status[e, m]
    succ = st == 1
    n = len(correct)
    bb = sw.broken_by[e]
    entry: dict[str, Any] = {
        "label": spec.label, "name": spec.name,
        "success_rate": ratio(int(succ.sum()), int((st >= 0).sum())),
        "broken_first": int((bb == m).sum()),
        "robust_accuracy_after": ratio(int((correct & ~((bb >= 0) & (bb <= m))).sum()), n),
        "grad_evals": int(sw.costs[e][0][m]), "queries": int(sw.costs[e][1][m]),
        "perturbation": summarize({kk: sw.mem_m[kk][e, m][succ] for kk in METRICS}, units=units,
                                  cutoff_hz=config.hf_cutoff_hz, uv_scale=_sel(uv_scale, succ)),
    }
    if config.mode == "individual":
        entry["robust_accuracy_alone"] = ratio(int((correct & ~succ).sum()), n)
    return entry


def _curves(config: ProtocolConfig, members: Sequence[AttackSpec], per_eps: list[dict[str, Any]],
            clean_acc: float) -> dict[str, Any]:
    grid = [0.0] + [float(e) for e in config.eps] if config.eps_mode != "snr_db" else None
    curves: dict[str, Any] = {"eps": grid if grid else [float(e) for e in config.eps]}
    ens_acc = [p["robust_accuracy"]["value"] for p in per_eps]
    curves["ensemble"] = {"accuracy": ([clean_acc] + ens_acc) if grid else ens_acc,
                          "auc": curve_auc(config.eps, ens_acc, clean_accuracy=clean_acc) if grid else None}
    kind = "alone" if config.mode == "individual" else "after"
    curves["kind"] = "standalone" if kind == "alone" else "cumulative (robust after this attack and those before it)"
    curves["attacks"] = {}
    for m, spec in enumerate(members):
        acc = [p["attacks"][m][f"robust_accuracy_{kind}"]["value"] for p in per_eps]
        curves["attacks"][spec.label] = {
            "accuracy": ([clean_acc] + acc) if grid else acc,
            "auc": curve_auc(config.eps, acc, clean_accuracy=clean_acc) if grid else None,
        }
    return curves


def sample_uv_scale(meta: Any, idx: np.ndarray) -> np.ndarray | None:
    """µV per data unit of each evaluated sample (``meta.uv_scale[idx]``, float64), or ``None``.

    ``None`` when the dataset records no per-sample scale, or when its units already convert with one
    physical factor (mV, ADC counts: :attr:`medrobust.units.Units.uv_per_unit`), which then wins.
    """
    scale = getattr(meta, "uv_scale", None)
    if scale is None or Units.parse(meta.units, fs=meta.fs).physical:
        return None
    return np.asarray(scale, dtype=np.float64)[np.asarray(idx, dtype=np.int64)]


def _range(v: np.ndarray) -> dict[str, float] | None:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def results(*, config: ProtocolConfig, members: Sequence[AttackSpec], y: np.ndarray, clean_pred: np.ndarray,
            sweep: Sweep, classes: list[str], units: str, uv_scale: np.ndarray | None = None) -> dict[str, Any]:
    """``{"clean", "per_eps", "curves"}`` sections of the card.

    ``uv_scale`` (one value per evaluated sample, :func:`sample_uv_scale`) adds each perturbation summary's
    per-sample µV norms (``l2_uv_per_sample``, ``linf_uv_per_sample``; see
    :func:`medrobust.evaluation.perturbation.summarize`).
    """
    k, n = len(classes), len(y)
    correct = clean_pred == y
    clean = {"accuracy": ratio(int(correct.sum()), n),
             "metrics": metrics_from_confusion(confusion_matrix(y, clean_pred, k), classes)}
    per_eps = []
    for e, eps in enumerate(config.eps):
        adv = sweep.adv_pred[e]
        hit = sweep.broken_by[e] >= 0
        per_eps.append({
            "eps": float(eps),
            "robust_accuracy": robust_accuracy(y, adv),
            "attack_success_rate": attack_success_rate(y, clean_pred, adv),
            "fooling_rate": fooling_rate(clean_pred, adv),
            "metrics": metrics_from_confusion(confusion_matrix(y, adv, k), classes),
            "attacks": [_member_entry(config, spec, m, e, sweep, correct, units, uv_scale)
                        for m, spec in enumerate(members)],
            "perturbation": summarize({kk: sweep.ens_m[kk][e][hit] for kk in METRICS}, units=units,
                                      cutoff_hz=config.hf_cutoff_hz, uv_scale=_sel(uv_scale, hit)),
        })
    curves = _curves(config, members, per_eps, clean["accuracy"]["value"] or 0.0)
    return {"clean": clean, "per_eps": per_eps, "curves": curves}


def minimal_section(lo: np.ndarray, hi: np.ndarray, correct: np.ndarray, config: ProtocolConfig,
                    res: dict[str, Any], uv_scale: np.ndarray | None = None) -> dict[str, Any]:
    """The card's ``minimal_eps`` section from the per-sample brackets ``lo < ε* <= hi``.

    With ``uv_scale`` (µV per data unit of each sample) and absolute radii, ``quantiles_of_broken_uv`` holds the
    quantiles of each broken sample's own ``ε*_i · uv_scale_i``.
    """
    n = len(hi)
    eps_max = float(config.eps[-1])
    dense = np.linspace(0.0, eps_max, 101)
    curve = curve_from_minimal_eps(hi, dense, n)
    acc = [c["value"] for c in curve]
    at_grid = curve_from_minimal_eps(hi, config.eps, n)
    agreement = [{"eps": float(e), "bisection": g, "sweep": p["robust_accuracy"],
                  "difference": g["numerator"] - p["robust_accuracy"]["numerator"]}
                 for e, g, p in zip(config.eps, at_grid, res["per_eps"])]
    broken = correct & np.isfinite(hi)
    width = (hi - lo)[broken]
    levels, names = [0.1, 0.25, 0.5, 0.75, 0.9], ["q10", "q25", "median", "q75", "q90"]
    q = np.quantile(hi[broken], levels).tolist() if broken.any() else None
    q_uv = None
    if uv_scale is not None and config.eps_mode == "abs":
        per = (hi * np.asarray(uv_scale, dtype=np.float64))[broken]
        per = per[np.isfinite(per)]
        q_uv = dict(zip(names, np.quantile(per, levels).tolist())) if per.size else None
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return {
        "method": (f"binary search over the ε grid, then {config.refine_steps} bisection steps; ensemble in "
                   "sequential mode with early-stopped attacks; the value is an upper bound (an adversarial "
                   "example was found there)"),
        "eps_max": eps_max,
        "n_clean_correct": int(correct.sum()),
        "n_broken_within_eps_max": int(broken.sum()),
        "quantiles_of_broken": None if q is None else dict(zip(names, q)),
        "quantiles_of_broken_uv": q_uv,
        "max_bracket_width": float(width.max()) if width.size else None,
        "curve": {"eps": dense.tolist(), "accuracy": acc, "numerators": [c["numerator"] for c in curve],
                  "denominator": n},
        "auc": float(trapezoid(acc, dense) / eps_max),
        "agreement_with_sweep": agreement,
    }


def collect_flags(*, preflight: Mapping[str, np.ndarray], large: Mapping[str, np.ndarray] | None, sweep: Sweep,
                  members: Sequence[AttackSpec], config: ProtocolConfig, classes: Sequence[str], y: np.ndarray,
                  clean_pred: np.ndarray, model_card: Mapping[str, Any] | None) -> list[flagmod.Flag]:
    """Every reliability flag of the run, in a fixed order."""
    flags = [flagmod.Flag(f["code"], f["message"], f["details"]) for f in json.loads(str(preflight["flags"]))]
    candidates = [
        None if large is None else flagmod.no_collapse_flag(
            n=int(large["n"]), still_correct=int(large["still_correct"]), num_classes=len(classes),
            eps=float(large["eps"])),
        flagmod.black_box_stronger_flag(sweep.status, [s.label for s in members],
                                        [flagmod.is_black_box(s.name) for s in members], config.eps),
        flagmod.degenerate_model_flag(y, clean_pred, classes, model_card=model_card),
        flagmod.unverified_weights_flag(model_card),
    ]
    return flags + [f for f in candidates if f is not None]


@dataclass
class RunRecord:
    """What the card records beside the numbers: the run's inputs and its provenance."""

    config: ProtocolConfig
    members: Sequence[AttackSpec]
    skipped: Sequence[str]
    meta: Any
    n_total: int
    idx: np.ndarray
    idx_hash: str
    bounds: tuple[float, float] | None
    has_mask: bool
    model_name: str
    model_card: Mapping[str, Any] | None
    checkpoint: str | None
    selection: Mapping[str, Any] | None
    wrapped: Mapping[str, Any]
    notes: Sequence[str]
    command: str | None


def _data_section(r: RunRecord, y: np.ndarray) -> dict[str, Any]:
    meta = r.meta
    return {
        **meta.card(),
        "evaluated": {"n": len(r.idx), "n_total_split": r.n_total, "indices_sha256": r.idx_hash,
                      "selection": dict(r.selection or {"method": "all samples"}),
                      "class_counts": np.bincount(y, minlength=len(meta.classes)).tolist()},
        "class_resampled": bool(meta.class_resampled),
        "class_resampled_note": ("the evaluation set repeats samples to balance classes (Ma & Liang); accuracy "
                                 "is then a class-balanced figure" if meta.class_resampled else
                                 "the evaluation set is not class-resampled (natural class frequencies)"),
    }


UV_SCALE_NOTE = ("µV per data unit of each evaluated sample, recorded by the loader (min-max scaled beats: the "
                 "scaled window's max − min in µV before scaling)")


def _threat_section(r: RunRecord) -> dict[str, Any]:
    """The threat model; radii in µV with the units' one factor (``eps_uv``) or, for data scaled per sample, per
    evaluated sample (``eps_uv_per_sample``: median, min and max of ``ε · uv_scale_i`` over the samples)."""
    cfg, units = r.config, Units.parse(r.meta.units, fs=r.meta.fs)
    eps_uv = [units.to_uv(e) for e in cfg.eps] if units.physical and cfg.eps_mode == "abs" else None
    per = sample_uv_scale(r.meta, r.idx)
    scale = None if per is None else _range(per)
    per_eps = [_range(float(e) * per) for e in cfg.eps] if scale is not None and cfg.eps_mode == "abs" else None
    return {"norm": cfg.norm, "eps_mode": cfg.eps_mode, "eps": list(cfg.eps), "eps_uv": eps_uv,
            "eps_uv_per_sample": per_eps,
            "uv_scale_per_sample": None if scale is None else {
                **scale, "n": int(np.isfinite(per).sum()), "what": UV_SCALE_NOTE},
            "bounds": list(r.bounds) if r.bounds else None, "units": r.meta.units,
            "mask": "dataset mask" if r.has_mask else None}


def build_card(r: RunRecord, *, res: dict[str, Any], flags: Sequence[flagmod.Flag], degenerate: dict[str, Any] | None,
               minimal: dict[str, Any] | None, large: Mapping[str, np.ndarray] | None, y: np.ndarray,
               has_examples: bool, timings: dict[str, Any]) -> dict[str, Any]:
    """The result card (format :data:`~medrobust.evaluation.card.CARD_FORMAT`)."""
    from medrobust.evaluation import card as cardmod

    cfg, meta = r.config, r.meta
    return {
        "format": cardmod.CARD_FORMAT,
        "title": f"{(r.model_card or {}).get('architecture', r.model_name)} on {meta.name}/{meta.split}",
        "command": r.command,
        "environment": cardmod.environment(),
        "seeds": {"protocol_seed": cfg.seed, "selection_seed": (r.selection or {}).get("seed"),
                  "unit_seeds": "sha256(protocol_seed, unit name, attack label, restart)"},
        "data": _data_section(r, y),
        "model": {"checkpoint": r.checkpoint, "card": dict(r.model_card) if r.model_card else None,
                  "wrapped": dict(r.wrapped) or None},
        "degenerate_model": degenerate,
        "notes": list(r.notes),
        "threat_model": _threat_section(r),
        "protocol": {**cfg.to_dict(), "members": [s.to_dict() for s in r.members], "skipped_optional": list(r.skipped),
                     "black_box": {s.label: flagmod.is_black_box(s.name) for s in r.members}},
        "clean": res["clean"],
        "results": res["per_eps"],
        "curves": res["curves"],
        "minimal_eps": minimal,
        "large_eps_check": None if large is None else {
            "eps": float(large["eps"]), "n": int(large["n"]), "still_correct": int(large["still_correct"]),
            "attack": f"pgd margin loss, {cfg.large_eps_steps} steps, no random start"},
        "flags": [fl.to_dict() for fl in flags],
        "files": {"state": cardmod.STATE_NAME, "examples": cardmod.EXAMPLES_NAME if has_examples else None,
                  "per_sample": cardmod.PER_SAMPLE_NAME},
        cardmod.TIMINGS_KEY: timings,
    }
