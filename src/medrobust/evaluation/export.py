"""Export adversarial examples: a NumPy ``.npz`` archive and WFDB records (PhysioNet format).

WFDB (Moody & Mark's format of the PhysioNet databases; Goldberger et al., Circulation 2000) is
what ECG viewers (PhysioNet LightWAVE, WAVE, ``wfdb.plot_wfdb``) open. Every exported sample
becomes one record ``<prefix>_<n>`` with, per lead, the adversarial signal (``<lead>_adv``) and the
clean one (``<lead>_clean``), 16-bit samples with a per-channel gain chosen by ``wfdb.wrsamp``; the
header comments name the attack, ε, the label and both predictions. A ``RECORDS`` file lists the
records, as in a PhysioNet database folder. Quantisation error is at most half an ADC step
(``0.5 / adc_gain`` in signal units).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrobust.atomic import atomic_write_bytes, atomic_write_json, npz_bytes
from medrobust.errors import ConfigError, DataError
from medrobust.outdir import claim_out_dir
from medrobust.models.inference import predict
from medrobust.evaluation.card import environment
from medrobust.evaluation.ensemble import EnsembleContext, derive_seed, run_attack, subset_mask
from medrobust.evaluation.flags import unverified_weights_flag
from medrobust.evaluation.inputs import check_labels, select_indices
from medrobust.evaluation.perturbation import perturbation_metrics, summarize
from medrobust.evaluation.results import sample_uv_scale
from medrobust.evaluation.robustness import attack_success_rate, fooling_rate, robust_accuracy, targeted_success_rate
from medrobust.evaluation.spec import AttackSpec
from medrobust.units import Units, resolve_bounds

_WFDB_PHYSICAL = {1e3: "mV", 1e6: "V", 1.0: "uV"}


def wfdb_units(units: str) -> str:
    """A WFDB units string (no spaces) for a dataset's units (:class:`medrobust.units.Units`): ``mV``, ``uV``,
    ``V``, ``adu`` for ADC counts; normalised data become ``"NU"``."""
    u = Units.parse(units)
    if u.kind == "ecg-adc":
        return "adu"
    if u.kind == "ecg-mv" and u.uv_per_unit is not None:
        return _WFDB_PHYSICAL.get(u.uv_per_unit, "NU")
    return "NU"


def save_npz(
    path: str | Path,
    *,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    adv_pred: np.ndarray,
    success: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write clean and adversarial arrays (and anything in ``extra``) to ``path`` atomically.

    Keys: ``x``, ``x_adv``, ``delta`` (= ``x_adv − x``), ``y``, ``clean_pred``, ``adv_pred``,
    ``success`` plus ``extra``. No pickled objects (read with ``np.load(path)``).
    """
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    if x.shape != x_adv.shape:
        raise DataError(f"x has shape {x.shape} but x_adv has {x_adv.shape}.")
    arrays = {"x": x, "x_adv": x_adv, "delta": x_adv - x, "y": np.asarray(y), "clean_pred": np.asarray(clean_pred),
              "adv_pred": np.asarray(adv_pred), "success": np.asarray(success, dtype=bool)}
    for k, v in (extra or {}).items():
        arrays[k] = np.asarray(v)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, npz_bytes(arrays))
    return p


def _safe(text: str) -> str:
    return re.sub(r"[^-\w]", "_", str(text)) or "x"


def save_wfdb(
    directory: str | Path,
    *,
    x: np.ndarray,
    x_adv: np.ndarray,
    fs: float,
    units: str,
    leads: Sequence[str],
    prefix: str = "adv",
    comments: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Write one WFDB record per sample (adversarial and clean channels) into ``directory``.

    Parameters
    ----------
    directory
        Output folder (created); a ``RECORDS`` file lists the record names.
    x, x_adv
        Clean and adversarial signals ``(N, leads, samples)``.
    fs
        Sampling rate in Hz.
    units
        The data's units (``"mV"`` stays ``mV``; normalised data are written as ``NU``).
    leads
        Lead names (one per lead).
    prefix
        Record names are ``<prefix>_<i>`` (letters, digits, ``-`` and ``_`` only).
    comments
        Optional header comments per sample.

    Returns
    -------
    list of str
        The record names written.
    """
    import wfdb

    x, x_adv = np.asarray(x, dtype=np.float64), np.asarray(x_adv, dtype=np.float64)
    if x.ndim != 3 or x.shape != x_adv.shape:
        raise ConfigError(f"WFDB export needs signals (N, leads, samples) of equal shape, got {x.shape} and "
                          f"{x_adv.shape}; images are exported as npz only.")
    if not (fs and fs > 0):
        raise ConfigError(f"WFDB export needs the sampling rate fs > 0, got {fs!r}.")
    if len(leads) != x.shape[1]:
        raise ConfigError(f"got {len(leads)} lead names for {x.shape[1]} leads.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    u = wfdb_units(units)
    names = [f"{_safe(lead)}_adv" for lead in leads] + [f"{_safe(lead)}_clean" for lead in leads]
    width = max(3, len(str(len(x) - 1)))
    prefix = _safe(prefix)
    written: list[str] = []
    for i in range(len(x)):
        record = f"{prefix}_{i:0{width}d}"
        sig = np.concatenate([x_adv[i], x[i]], axis=0).T  # (samples, channels)
        # A constant channel would give an undefined gain; widen its range by a tiny amount.
        lo, hi = sig.min(0), sig.max(0)
        flat = hi - lo <= 0
        if flat.any():
            sig = sig.copy()
            sig[0, flat] += 1e-6
        gain, baseline = _adc_params(sig)
        try:
            wfdb.wrsamp(record, fs=float(fs), units=[u] * sig.shape[1], sig_name=names, p_signal=sig,
                        fmt=["16"] * sig.shape[1], adc_gain=gain, baseline=baseline,
                        comments=list(comments[i]) if comments is not None else None, write_dir=str(out))
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot write WFDB record {out / record}: {exc}") from exc
        written.append(record)
    (out / "RECORDS").write_text("".join(f"{r}\n" for r in written))
    return written


def _adc_params(sig: np.ndarray) -> tuple[list[float], list[int]]:
    """Per-channel gain and baseline mapping each channel's range onto the 16-bit range (±32767)."""
    lo, hi = sig.min(0), sig.max(0)
    dmin, dmax = -32766, 32766  # -32768 is the WFDB "missing sample" code
    gain = (dmax - dmin) / (hi - lo)
    baseline = np.round(dmin - lo * gain).astype(np.int64)
    # keep every digital value inside [dmin, dmax] after rounding the baseline
    baseline = np.clip(baseline, -2**31, 2**31 - 1)
    return [float(g) for g in gain], [int(b) for b in baseline]


# ============================================================================================ attack a selection
ADVERSARIAL_NPZ = "adversarial.npz"
ATTACK_JSON = "attack.json"
WFDB_DIR = "wfdb"


@dataclass(frozen=True)
class AttackRequest:
    """One attack on a seeded selection of a dataset split (the settings of ``medrobust attack``).

    Parameters
    ----------
    spec
        The attack (its options other than the threat model).
    eps, norm, eps_mode, bounds
        Threat model; ``bounds="auto"`` takes the data's natural range from its units
        (:func:`medrobust.units.resolve_bounds`).
    target
        Targeted attack towards this class (name or index); ``None``: untargeted.
    seed
        Selection seed and run seed (batch ``b`` is attacked with ``derive_seed(seed, "attack", b)``).
    batch_size, limit
        Samples per attack call; evaluate a seeded random subset of ``limit`` samples (``None``: all).
    wfdb, wfdb_limit
        Also write at most ``wfdb_limit`` WFDB records (signals only).
    """

    spec: AttackSpec
    eps: float
    norm: str = "linf"
    eps_mode: str = "abs"
    bounds: Any = "auto"
    target: str | int | None = None
    seed: int = 0
    batch_size: int = 256
    limit: int | None = None
    wfdb: bool = True
    wfdb_limit: int = 1000


def _target_index(target: str | int | None, classes: list[str], dataset: str) -> int | None:
    if target is None:
        return None
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    text = str(target)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise ConfigError(f"--target {target!r}: not a class of {dataset} ({classes}) nor an index.")


def prepare_attack_dir(out: Path, *, overwrite: bool) -> None:
    """Claim ``out`` for an attack (:func:`medrobust.outdir.claim_out_dir`): an empty or new folder is taken; a
    non-empty one (an earlier attack's or anyone's) is refused unless ``overwrite``, which removes only what an
    attack writes there (``adversarial.npz``, ``attack.json``, the ``wfdb/`` records) and leaves the rest."""
    claim_out_dir(out, command="attack", overwrite=overwrite, produced=(ADVERSARIAL_NPZ, ATTACK_JSON, WFDB_DIR),
                  adopt=(ATTACK_JSON,))


def _attack_batches(ens: EnsembleContext, req: AttackRequest, x: torch.Tensor, y: torch.Tensor,
                    mask: torch.Tensor | None, todo: torch.Tensor, target: torch.Tensor | None, progress: bool,
                    ids: torch.Tensor | None = None) -> dict[str, Any]:
    """Run the attack on the samples ``todo`` batch by batch; the others keep their clean input.

    ``ids`` (dataset indices) key each sample's random stream, so a sample's output does not depend on its batch.
    """
    dev = ens.device
    x_adv, adv_pred = x.clone(), torch.full((len(x),), -1, dtype=torch.long)
    success = torch.zeros(len(x), dtype=torch.bool)
    sel_all = todo.nonzero().squeeze(1)
    grads = queries = 0
    t0 = time.perf_counter()
    starts = range(0, len(sel_all), req.batch_size)
    for s in tqdm(starts, desc=f"{req.spec.name} ε={req.eps:g}", unit="batch", disable=not progress):
        sel = sel_all[s:s + req.batch_size]
        res = run_attack(ens, req.spec, x[sel].to(dev), y[sel].to(dev), req.eps,
                         seed=derive_seed(req.seed, "attack"), sample_ids=None if ids is None else ids[sel],
                         target=None if target is None else target[sel].to(dev),
                         mask=None if mask is None else subset_mask(mask, sel).to(dev))
        x_adv[sel] = res.x_adv.cpu()
        adv_pred[sel] = res.adv_pred.cpu()
        success[sel] = res.success.cpu()
        grads += res.grad_evals
        queries += res.queries
    return {"x_adv": x_adv, "adv_pred": adv_pred, "success": success, "grad_evals": int(grads),
            "queries": int(queries), "seconds": time.perf_counter() - t0}


def _write_wfdb_records(out: Path, req: AttackRequest, meta: Any, idx: np.ndarray, x: torch.Tensor,
                        y: torch.Tensor, clean_pred: torch.Tensor, r: dict[str, Any]) -> int:
    classes = list(meta.classes)
    k = min(len(x), max(0, req.wfdb_limit))
    comments = [[f"medrobust adversarial example: attack={req.spec.name} eps={req.eps:g} norm={req.norm}",
                 f"source={meta.name}/{meta.split} record={meta.ids[idx[i]]} index={int(idx[i])}",
                 f"label={classes[int(y[i])]} clean_pred={classes[int(clean_pred[i])]} "
                 f"adv_pred={classes[int(r['adv_pred'][i])]} success={bool(r['success'][i])}"] for i in range(k)]
    names = save_wfdb(out / WFDB_DIR, x=x[:k].numpy(), x_adv=r["x_adv"][:k].numpy(), fs=meta.fs, units=meta.units,
                      leads=list(meta.leads), prefix=f"{req.spec.name}", comments=comments)
    return len(names)


def attack_dataset(model: nn.Module, dataset: Any, req: AttackRequest, *, out_dir: str | Path,
                   device: str | torch.device | None = None, progress: bool = True, overwrite: bool = False,
                   checkpoint: str | None = None, model_card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Attack a seeded selection of ``dataset``; write ``adversarial.npz``, WFDB records and ``attack.json``.

    Untargeted, the clean-correct samples are attacked (the others keep their clean prediction);
    targeted, every sample whose label is not the target. Returns the summary written to ``attack.json``
    (robust accuracy, attack and targeted success rates with numerators and denominators, perturbation
    statistics of the successful examples, cost).

    Raises
    ------
    ConfigError
        Unknown attack, bad batch size or target, or a non-empty ``out_dir`` without ``overwrite``.
    DataError
        Labels outside the model's classes.
    """
    from medrobust.attacks.registry import attack_class

    attack_class(req.spec.name)  # unknown names: a ConfigError listing the available attacks
    if isinstance(req.batch_size, bool) or not isinstance(req.batch_size, int) or req.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {req.batch_size}.")
    meta = dataset.meta
    classes = list(meta.classes)
    target_class = _target_index(req.target, classes, meta.name)
    bounds = resolve_bounds(req.bounds, meta.units)
    out = Path(out_dir)
    idx = select_indices(len(dataset), req.limit, req.seed, labels=dataset.y.numpy())
    t = torch.as_tensor(idx)
    x, y = dataset.x[t], dataset.y[t].long()
    check_labels(y.numpy(), classes, dataset=meta.name)
    mask = None if getattr(dataset, "mask", None) is None else dataset.mask[t]
    prepare_attack_dir(out, overwrite=overwrite)
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    ens = EnsembleContext(model=model, members=(req.spec,), norm=req.norm, eps_mode=req.eps_mode, bounds=bounds,
                          fs=meta.fs or None, device=dev, units=meta.units)
    clean_pred = predict(model, x.to(dev), batch_size=req.batch_size,
                         mask=None if mask is None else mask.to(dev)).cpu()
    target = None if target_class is None else torch.full_like(y, target_class)
    todo = (clean_pred == y) if target is None else (y != target_class)
    r = _attack_batches(ens, req, x, y, mask, todo, target, progress, ids=t)
    r["adv_pred"] = torch.where(todo, r["adv_pred"], clean_pred)
    summary = _attack_summary(req, meta, idx, bounds, target_class, y, clean_pred, target, x, r,
                              checkpoint=checkpoint, model_card=model_card)
    extra = {"index": idx, "ids": np.asarray([str(meta.ids[i]) for i in idx], dtype=str),
             "classes": np.asarray(classes, dtype=str), "fs": np.array(float(meta.fs or 0)),
             "units": np.array(meta.units), "eps": np.array(req.eps), "attack": np.array(req.spec.name)}
    summary["data"]["selection"] = ("stratified seeded subset" if len(idx) < len(dataset) else "all samples")
    if target is not None:
        extra["target"] = target.numpy()
    for key in ("uv_scale", "uv_offset"):  # per-sample µV map of scaled beats (drawn in mV by the report, the study)
        if getattr(meta, key, None) is not None:
            extra[key] = np.asarray(getattr(meta, key), dtype=np.float64)[idx]
    save_npz(out / ADVERSARIAL_NPZ, x=x.numpy(), x_adv=r["x_adv"].numpy(), y=y.numpy(),
             clean_pred=clean_pred.numpy(), adv_pred=r["adv_pred"].numpy(), success=r["success"].numpy(), extra=extra)
    if req.wfdb and x.ndim == 3:
        n_wfdb = _write_wfdb_records(out, req, meta, idx, x, y, clean_pred, r)
        summary["files"]["wfdb"] = {"folder": WFDB_DIR, "records": n_wfdb}
    atomic_write_json(out / ATTACK_JSON, summary)
    return summary


def _attack_summary(req: AttackRequest, meta: Any, idx: np.ndarray, bounds: Any, target_class: int | None,
                    y: torch.Tensor, clean_pred: torch.Tensor, target: torch.Tensor | None, x: torch.Tensor,
                    r: dict[str, Any], *, checkpoint: str | None, model_card: Mapping[str, Any] | None
                    ) -> dict[str, Any]:
    pm = perturbation_metrics(x, r["x_adv"], fs=meta.fs or None)
    succ = r["success"].numpy()
    adv_pred = r["adv_pred"]
    scale = sample_uv_scale(meta, idx)  # normalised beats: each beat's own µV per unit
    return {
        "attack": req.spec.to_dict(), "eps": req.eps, "norm": req.norm, "eps_mode": req.eps_mode,
        "bounds": list(bounds) if bounds else None, "seed": req.seed, "target": target_class,
        "checkpoint": checkpoint, "model_card": dict(model_card) if model_card is not None else None,
        "data": {**meta.card(), "n_evaluated": len(idx), "limit": req.limit},
        "robust_accuracy": robust_accuracy(y, adv_pred),
        "attack_success_rate": attack_success_rate(y, clean_pred, adv_pred),
        "fooling_rate": fooling_rate(clean_pred, adv_pred),
        "targeted_success_rate": None if target is None else targeted_success_rate(y, target, adv_pred),
        "perturbation": summarize({k: v[succ] for k, v in pm.items()}, units=meta.units,
                                  uv_scale=None if scale is None else scale[succ]),
        "grad_evals": r["grad_evals"], "queries": r["queries"], "seconds": r["seconds"],
        "environment": environment(),
        "flags": [f.to_dict() for f in (unverified_weights_flag(model_card),) if f is not None],
        "files": {"npz": ADVERSARIAL_NPZ, "wfdb": None},
    }
