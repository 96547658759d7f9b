"""The evaluation protocol: ε sweeps, attack ensembles, minimal-ε bisection, checks and the result card.

:func:`evaluate` runs, for one model and one dataset split:

1. **Pre-flight checks** on a small batch (:mod:`medrobust.evaluation.flags`): probabilities instead
   of logits (the model is then attacked through ``log p``), a non-deterministic forward pass, zero
   or vanishing input gradients, DLR with fewer than 4 classes.
2. **Clean predictions** of every sample.
3. **ε sweep with an attack ensemble.** At every ε, the attacks run one after another. In
   ``"sequential"`` mode (AutoAttack's semantics, Croce & Hein ICML 2020, arXiv 2003.01690) each
   attack runs only on the samples that are still robust; in
   ``"individual"`` mode every attack runs on every clean-correct sample (then each attack's own
   curve is known too). A sample counts as robust only if no attack broke it: the reported number
   is the pointwise worst case over the ensemble. Samples misclassified when clean are never
   attacked and keep their clean prediction (Ma & Liang, Comput. Biol. Med. 2022). Each attack may have
   ``restarts``: further independently seeded runs on the samples it has not broken yet.
4. **Minimal adversarial ε** (optional): per sample, a binary search over the ε grid followed by
   ``refine_steps`` bisection steps between grid points, each step one run of the ensemble with a
   per-sample radius (attacks early-stopped, ``early_stop=True`` where the attack accepts it). The
   result, an upper bound on each sample's minimal adversarial radius, gives robust accuracy at every
   ε up to the largest one from a single run (a continuous accuracy-versus-ε curve).
5. **Large-ε sanity check**: PGD (margin loss) at a radius far beyond the sweep must bring accuracy
   on clean-correct samples down to chance (ART ``SecurityCurve``).
6. **Examples**: every attack alone at every ε on a few records (one per class), kept for the report.

Every step is a *work unit* (:mod:`medrobust.evaluation.work`) with its own seed, recorded in a
resumable state (see :mod:`medrobust.evaluation.card`), and the result card is built from the recorded
units (:mod:`medrobust.evaluation.results`). The attack ensemble is in :mod:`medrobust.evaluation.ensemble`,
the configuration in :mod:`medrobust.evaluation.spec`, the input checks in :mod:`medrobust.evaluation.inputs`;
every name they define that this module defined before is importable from here too.

A degenerate model (one class predicted, or a clean class-balanced accuracy within 0.05 of chance, or a
collapse recorded in training) is flagged and named in the card's ``degenerate_model`` section, so that its
robust accuracy is never read as robustness.

Named ``standard`` protocols (:data:`STANDARD_PROTOCOLS`) fix the radii, attacks and settings per
data type so that numbers are comparable between models.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrobust.attacks.fastpath import resolve_fast_path
from medrobust.attacks.registry import attack_class
from medrobust.checks import check_choice
from medrobust.errors import ConfigError
from medrobust.evaluation import card as cardmod
from medrobust.evaluation import flags as flagmod
from medrobust.evaluation.ensemble import (  # noqa: F401  (re-exported: the former home of these names)
    EnsembleContext,
    _Context,
    _subset_mask,
    build_attack,
    derive_seed,
    has_universal,
    metrics_arrays as _metrics_arrays,
    run_attack,
    run_ensemble,
)
from medrobust.evaluation.precision import CHECK_SAMPLES, precision_check
from medrobust.models.precision import PRECISIONS, with_precision
from medrobust.evaluation.inputs import (  # noqa: F401
    check_compatible,
    check_indices,
    check_labels,
    resolve_members,
    select_indices,
    state_dict_hash as _state_dict_hash,
)
from medrobust.evaluation.results import (  # noqa: F401
    RunRecord,
    build_card,
    collect_flags,
    minimal_section as _minimal_section,
    results as _results,
    sample_uv_scale,
    stack_sweep,
)
from medrobust.evaluation.spec import (  # noqa: F401
    MODES,
    PROTOCOL_VERSION,
    STANDARD_PROTOCOLS,
    THREAT_KEYS,
    AttackSpec,
    ProtocolConfig,
    standard_protocol,
)
from medrobust.evaluation.work import (  # noqa: F401
    UnitRunner,
    WorkContext,
    clean_unit,
    examples_unit,
    large_eps_unit,
    mineps_unit,
    model_for_attacks,
    pick_examples as _pick_examples,
    preflight_unit,
    sweep_unit,
)
from medrobust.evaluation.distributed import barrier, owner, owns, shard, shard_dir
from medrobust.outdir import claim_out_dir
from medrobust.units import Units, resolve_bounds


def data_type(units: str, fs: float) -> str:
    """The data kind (``"ecg-normalized"``, ``"ecg-mv"``, ``"ecg-maxabs"``, ``"ecg-adc"``, ``"image"``):
    ``Units.parse(units, fs=fs).require_kind()`` (kept for callers of the former helper)."""
    return Units.parse(units, fs=fs).require_kind()


def bounds_from_units(units: str) -> tuple[float, float] | None:
    """The natural range of ``units`` (``resolve_bounds("auto", units)``; kept for callers of the former helper)."""
    return resolve_bounds("auto", units)


# ============================================================================================ evaluate
def evaluate(
    model: nn.Module,
    dataset: Any,
    config: ProtocolConfig,
    *,
    out_dir: str | Path | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    limit: int | None = None,
    model_card: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    selection: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
    fast_path: str = "auto",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with ``config``; returns the result card (and writes it to ``out_dir``).

    Parameters
    ----------
    model
        Classifier returning logits (probabilities are detected, flagged and converted).
    dataset
        An :class:`~medrobust.data.ECGDataset` (single-label).
    config
        The protocol.
    out_dir
        Run folder (state, card, examples). ``None``: in memory, no resuming.
    indices
        Samples of ``dataset`` to evaluate (default all); see :func:`select_indices`.
    limit
        Instead of ``indices``: a stratified seeded subset of ``limit`` samples (seed ``config.seed``; each
        class in proportion to its count in the split; never the first rows).
    model_card
        The checkpoint card (recorded and checked against the dataset).
    checkpoint
        Checkpoint path, for the card.
    selection
        How ``indices`` were chosen (recorded).
    device
        Where to run (default: the model's device).
    progress
        Show progress bars.
    overwrite
        Discard an existing state in ``out_dir`` instead of resuming.
    command
        The command line, for the card.
    fast_path
        The attacks' GPU fast path (:mod:`medrobust.attacks.fastpath`): ``"auto"`` (CUDA graphs on a GPU,
        today's path on CPU), ``"off"`` or ``"cuda_graph"``. It does not change the numbers.
    precision
        ``"fp32"``, or ``"bf16"``: the model's forward under autocast, used only if the first white-box
        attack's robust accuracy at the middle radius on up to 256 stratified samples stays within 0.5 pp of
        float32 (:func:`medrobust.evaluation.precision.precision_check`); the card's ``precision`` section
        holds the check and what was used.

    Returns
    -------
    dict
        The result card.

    Notes
    -----
    The model is moved to ``device`` and kept in eval mode with frozen parameters during the
    evaluation; its train/eval flags and ``requires_grad`` are restored afterwards.
    """
    from medrobust.attacks import frozen_eval

    if limit is not None:
        if indices is not None:
            raise ConfigError("pass either indices or limit, not both.")
        indices = select_indices(len(dataset), limit, config.seed, labels=dataset.y.numpy())
        selection = selection or stratified_selection(limit, config.seed, len(dataset))
    with frozen_eval(model):
        return _evaluate(model, dataset, config, out_dir=out_dir, indices=indices, model_card=model_card,
                         checkpoint=checkpoint, selection=selection, device=device, progress=progress,
                         overwrite=overwrite, command=command, fast_path=fast_path, precision=precision)


def stratified_selection(limit: int | None, seed: int, n_total: int) -> dict[str, Any]:
    """The card's record of how :func:`select_indices` chose the samples (``labels`` given)."""
    if limit is None or limit >= n_total:
        return {"method": "all samples", "seed": None, "limit": limit, "stratified": False}
    return {"method": "stratified seeded subset (each class in proportion to its count in the split, drawn with "
                      "numpy default_rng(seed))", "seed": seed, "limit": limit, "stratified": True}


def _plan(config: ProtocolConfig, n_batches: int) -> list[str]:
    """The names of every work unit of the run, in order."""
    plan = ["preflight", "clean"]
    plan += [f"sweep/e{e}/b{b}" for e in range(len(config.eps)) for b in range(n_batches)]
    if config.minimal_eps:
        plan += [f"mineps/b{b}" for b in range(n_batches)]
    if config.large_eps_check:
        plan.append("large-eps")
    if config.n_examples:
        plan.append("examples")
    return plan


def _open_state(out: Path | None, *, config: ProtocolConfig, members: Sequence[AttackSpec], meta: Any,
                bounds: tuple[float, float] | None, weights_id: str, idx_hash: str, n: int, checkpoint: str | None,
                overwrite: bool) -> cardmod.RunState:
    """The run's resumable state; a folder holding another model, other data or other settings is refused."""
    settings = {
        "protocol": config.to_dict(),
        "members": [s.label for s in members],
        "weights": weights_id,
        "data": {"name": meta.name, "split": meta.split, "fingerprint": meta.fingerprint,
                 "options": meta.options, "indices_sha256": idx_hash, "n": n},
        "bounds": list(bounds) if bounds else None,
    }
    components = {
        "model weights": weights_id,
        "data fingerprint": str(meta.fingerprint),
        "evaluated samples": f"{meta.name}/{meta.split} n={n} indices sha256 {idx_hash[:12]}",
        "protocol settings": cardmod.config_hash({k: settings[k] for k in ("protocol", "members", "bounds")}),
    }
    summary = {"checkpoint": checkpoint, "dataset": meta.name, "split": meta.split, "n": n,
               "attacks": [s.label for s in members], "eps": list(config.eps), "seed": config.seed}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    return cardmod.RunState(out, settings_hash=cardmod.config_hash(settings), settings=summary, overwrite=overwrite,
                            components=components)


def _run_units(run: UnitRunner, w: WorkContext, raw_model: nn.Module, meta: Any, idx: np.ndarray, *, rank: int,
               world: int) -> tuple[Any, list[list[Any]], list[Any] | None, Any, Any]:
    """Run (or read back) this rank's work units; another rank's are ``None``."""
    config = w.config

    def mine(key: str, fn: Any, *args: Any) -> Any:
        return run(key, fn, *args) if owns(key, rank, world) else None

    pre = run("preflight", preflight_unit, w)
    w.ens.model = model_for_attacks(raw_model, str(pre["probability_kind"]))
    w.clean_pred = run("clean", clean_unit, w)["clean_pred"]
    sweep_units = [[mine(f"sweep/e{e}/b{b}", sweep_unit, w, e, b) for b in range(len(w.batches))]
                   for e in range(len(config.eps))]
    mineps = ([mine(f"mineps/b{b}", mineps_unit, w, b) for b in range(len(w.batches))]
              if config.minimal_eps else None)
    large = mine("large-eps", large_eps_unit, w) if config.large_eps_check else None
    examples = mine("examples", examples_unit, w, meta, idx) if config.n_examples else None
    return pre, sweep_units, mineps, large, examples


def _rank_state(out: Path | None, *, rank: int, world: int, overwrite: bool, **kw: Any) -> cardmod.RunState:
    """This rank's resumable state: the run folder itself, or its shard under a process group of ``world`` ranks
    (rank 0 claims the run folder first; ``overwrite`` removes every shard)."""
    if world == 1:
        return _open_state(out, overwrite=overwrite, **kw)
    if out is None:
        raise ConfigError(f"a sharded evaluation ({world} ranks) needs an output folder (--out / out_dir): the ranks "
                          "exchange their work units through it.")
    if rank == 0:
        claim_out_dir(out, command="evaluate", overwrite=overwrite, produced=cardmod.EVALUATION_FILES, resume=True,
                      adopt=(cardmod.STATE_NAME, cardmod.UNITS_DIR, cardmod.SHARDS_DIR))
    barrier()
    return _open_state(shard_dir(out, rank, world), overwrite=False, **kw)


def _gather(out: Path, world: int, kw: dict[str, Any], sweep_units: list[list[Any]], mineps: list[Any] | None,
            timings: dict[str, Any]) -> dict[str, Any]:
    """Rank 0 fills the other ranks' units in from their shards (in place); returns the merged timings."""
    states = {r: _open_state(shard_dir(out, r, world), overwrite=False, **kw) for r in range(1, world)}

    def fetch(key: str) -> Any:
        who = owner(key, world)
        return states[who].get(key) if who else None

    for e, row in enumerate(sweep_units):
        for b, unit in enumerate(row):
            row[b] = unit if unit is not None else fetch(f"sweep/e{e}/b{b}")
    for b, unit in enumerate(mineps or []):
        mineps[b] = unit if unit is not None else fetch(f"mineps/b{b}")  # type: ignore[index]
    per_unit = dict(timings["seconds_per_unit"])
    for r, st in states.items():
        per_unit.update({f"rank{r}:{k}": v for k, v in st.timings()["seconds_per_unit"].items()})
    return {**timings, "seconds_per_unit": per_unit, "seconds_compute": float(sum(per_unit.values())),
            "ranks": world}


def _write_outputs(out: Path, card: dict[str, Any], *, idx: np.ndarray, meta: Any, y: np.ndarray,
                   clean_pred: np.ndarray, sweep: Any, min_lo: np.ndarray | None, min_hi: np.ndarray | None) -> None:
    per_sample = {"index": idx, "y": y, "clean_pred": clean_pred, "adv_pred": sweep.adv_pred,
                  "broken_by": sweep.broken_by, "status": sweep.status, "member_pred": sweep.member_pred,
                  "eps": np.asarray(card["threat_model"]["eps"]),
                  "ids": np.asarray([str(meta.ids[i]) for i in idx], dtype=str)}
    if min_hi is not None:
        per_sample.update({"min_eps": min_hi, "min_eps_lower": min_lo})
    cardmod.atomic_write_bytes(out / cardmod.PER_SAMPLE_NAME, cardmod.npz_bytes(per_sample))
    cardmod.write_card(out, card)


def _prepare(model: nn.Module, dataset: Any, config: ProtocolConfig, indices: Any, model_card: Any,
             device: Any) -> tuple[WorkContext, np.ndarray, list[AttackSpec], list[str], list[str]]:
    """Every check that needs no attack, then the shared work context (model on ``device``, samples selected)."""
    meta = dataset.meta
    if getattr(meta, "multilabel", False):
        raise ConfigError(f"dataset {meta.name!r} is multi-label; the evaluation protocol needs single-label data.")
    notes = check_compatible(model_card, dataset)
    members, skipped = resolve_members(config.attacks)
    bounds = resolve_bounds(config.bounds, meta.units)
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    check_indices(idx, len(dataset))
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model = model.to(device).eval()
    t = torch.as_tensor(idx)
    x, y = dataset.x[t], dataset.y[t].long()
    check_labels(y.numpy(), meta.classes, dataset=meta.name)
    mask = None if getattr(dataset, "mask", None) is None else dataset.mask[t]
    ens = EnsembleContext(model=model, members=tuple(members), norm=config.norm, eps_mode=config.eps_mode,
                          bounds=bounds, fs=meta.fs or None, device=device, units=meta.units)
    # Validate every attack's options before any work (unknown options, bad values).
    for spec in members:
        ens.attack(spec, float(config.eps[-1]) if config.eps_mode != "snr_db" else float(config.eps[0]), 0)
    # A universal perturbation is fitted on every sample at once: one work unit per radius, whatever batch_size.
    universal = has_universal(members)
    bs = len(idx) if universal else config.batch_size
    if universal and config.minimal_eps:
        raise ConfigError("minimal_eps bisects per-sample radii, which a universal perturbation does not have; set "
                          "minimal_eps: false for a protocol with a universal attack (uap).")
    if any(s.restarts > 1 for s in members if has_universal((s,))):
        raise ConfigError("a universal attack takes restarts: 1 (a restart would fit a second perturbation on the "
                          "samples the first left); raise its 'passes' instead.")
    batches = [np.arange(s, min(s + bs, len(idx))) for s in range(0, len(idx), bs)]
    w = WorkContext(config=config, ens=ens, x=x, y=y, mask=mask, batches=batches, num_classes=len(meta.classes),
                    ids=np.asarray(idx, dtype=np.int64))
    return w, idx, members, skipped, notes


def _use_precision(w: WorkContext, members: Sequence[AttackSpec], precision: str) -> dict[str, Any]:
    """Check ``precision`` against float32 (first white-box member, middle radius, up to 256 stratified samples)
    and put the model at that precision into ``w.ens`` when the check passes; returns the card section."""
    check_choice(precision, "precision", tuple(PRECISIONS))
    if precision == "fp32":
        return {"requested": "fp32", "used": "fp32"}
    spec = next((s for s in members if not getattr(attack_class(s.name), "black_box", False)), members[0])
    eps = float(w.config.eps[len(w.config.eps) // 2])
    pick = torch.as_tensor(select_indices(len(w.y), CHECK_SAMPLES, w.config.seed, labels=w.y.numpy()))
    mask = None if w.mask is None else w.mask[pick]
    check = precision_check(w.ens.model, w.x[pick].to(w.ens.device), w.y[pick].to(w.ens.device), mask=mask,
                            precision=precision, attack=lambda m: replace(w.ens, model=m).attack(spec, eps, w.config.seed))
    used = precision if check["within"] else "fp32"
    if check["within"]:
        w.ens.model = with_precision(w.ens.model, precision)
    else:
        warnings.warn(f"precision={precision!r} changed robust accuracy by {check['difference_pp']:+.2f} pp "
                      f"(tolerance {check['tolerance_pp']} pp) on {check['n']} samples; evaluating in float32.",
                      RuntimeWarning, stacklevel=3)
    return {"requested": precision, "used": used, "check": check}


def _evaluate(
    model: nn.Module,
    dataset: Any,
    config: ProtocolConfig,
    *,
    out_dir: str | Path | None,
    indices: Sequence[int] | np.ndarray | None,
    model_card: Mapping[str, Any] | None,
    checkpoint: str | None,
    selection: Mapping[str, Any] | None,
    device: str | torch.device | None,
    progress: bool,
    overwrite: bool,
    command: str | None,
    fast_path: str = "auto",
    precision: str = "fp32",
) -> dict[str, Any]:
    meta = dataset.meta
    w, idx, members, skipped, notes = _prepare(model, dataset, config, indices, model_card, device)
    resolve_fast_path(fast_path, w.ens.device)   # refuses 'cuda_graph' off CUDA before any work
    w.ens.fast_path = fast_path
    raw_model, n = w.ens.model, len(idx)
    weights_id = (model_card or {}).get("weights_sha256") or _state_dict_hash(raw_model)
    precision_card = _use_precision(w, members, precision)
    if precision_card["used"] != "fp32":   # units of another arithmetic never mix with float32 ones on resume
        weights_id = f"{weights_id}+{precision_card['used']}"
    idx_hash = hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()
    out = None if out_dir is None else Path(out_dir)
    rank, world = shard()
    state_kw = dict(config=config, members=members, meta=meta, bounds=w.ens.bounds, weights_id=weights_id,
                    idx_hash=idx_hash, n=n, checkpoint=checkpoint)
    state = _rank_state(out, rank=rank, world=world, overwrite=overwrite, **state_kw)
    plan = [k for k in _plan(config, len(w.batches)) if owns(k, rank, world)]
    bar = tqdm(total=len(plan), desc=f"evaluate {meta.name}/{meta.split} (n={n})"
               + (f" rank {rank}/{world}" if world > 1 else ""), unit="unit", disable=not progress,
               initial=sum(state.has(k) for k in plan), leave=True)
    pre, sweep_units, mineps, large, examples = _run_units(UnitRunner(state, bar), w, raw_model, meta, idx,
                                                           rank=rank, world=world)
    kind = str(pre["probability_kind"])
    if examples is not None and out is not None:
        cardmod.atomic_write_bytes(out / cardmod.EXAMPLES_NAME, cardmod.npz_bytes(examples))
    bar.close()
    timings = state.timings()
    if world > 1:
        barrier()
        if rank != 0:
            return {"shard": {"rank": rank, "world": world, "units": len(plan), "out": str(out)}}
        timings = _gather(out, world, state_kw, sweep_units, mineps, timings)  # type: ignore[arg-type]

    y = w.y.numpy().astype(np.int64)
    sweep = stack_sweep(sweep_units)
    min_lo = None if mineps is None else np.concatenate([u["lo"] for u in mineps])
    min_hi = None if mineps is None else np.concatenate([u["hi"] for u in mineps])
    uv_scale = sample_uv_scale(meta, idx)
    res = _results(config=config, members=members, y=y, clean_pred=w.clean_pred, sweep=sweep,
                   classes=list(meta.classes), units=meta.units, uv_scale=uv_scale)
    flags = collect_flags(preflight=pre, large=large, sweep=sweep, members=members, config=config,
                          classes=list(meta.classes), y=y, clean_pred=w.clean_pred, model_card=model_card)
    record = RunRecord(config=config, members=members, skipped=skipped, meta=meta, n_total=len(dataset), idx=idx,
                       idx_hash=idx_hash, bounds=w.ens.bounds, has_mask=w.mask is not None,
                       model_name=type(raw_model).__name__, model_card=model_card, checkpoint=checkpoint,
                       selection=selection, wrapped={"probabilities_to_logits": kind} if kind else {}, notes=notes,
                       command=command)
    card = build_card(record, res=res, flags=flags,
                      degenerate=flagmod.degenerate_model(y, w.clean_pred, list(meta.classes), model_card=model_card),
                      minimal=None if min_hi is None else _minimal_section(min_lo, min_hi, w.correct, config, res,
                                                                        uv_scale=uv_scale),
                      large=large, y=y, has_examples=examples is not None, timings=timings)
    if precision != "fp32":
        card["precision"] = precision_card
    if out is not None:
        _write_outputs(out, card, idx=idx, meta=meta, y=y, clean_pred=w.clean_pred, sweep=sweep, min_lo=min_lo,
                       min_hi=min_hi)
    return card
