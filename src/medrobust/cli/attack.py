"""``medrobust attack``: run one attack on a dataset split and save the adversarial examples.

Writes ``OUT/adversarial.npz`` (clean and adversarial arrays, labels, predictions, success),
``OUT/wfdb/`` (one WFDB record per sample with adversarial and clean channels, plus ``RECORDS``;
signals only) and ``OUT/attack.json`` (settings and metrics with numerators and denominators).

Example::

    medrobust attack --checkpoint runs/cnn1/checkpoint --dataset mitdb --data-dir ../shared/data \\
        --attack pgd --eps 0.05 --limit 200 --out runs/adv-pgd
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medrobust.cli._util import ensure_writable_dir, parse_options
from medrobust.cli.evaluate import add_data_arguments, load_model_and_data
from medrobust.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack a dataset split; save adversarial examples as npz and WFDB")
    add_data_arguments(p)
    p.add_argument("--attack", required=True, help="registered attack name (see docs/attacks.md)")
    p.add_argument("--attack-option", action="append", metavar="KEY=VALUE", help="attack option, repeatable")
    p.add_argument("--eps", type=float, required=True, help="radius in input units")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--eps-mode", choices=["abs", "ptp", "snr_db"], default="abs")
    p.add_argument("--bounds", default="auto", help="'auto' (from the data's units), 'none' or LO,HI")
    p.add_argument("--target", help="targeted attack towards this class (name or index)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--wfdb-limit", type=int, default=1000, help="write at most N WFDB records (default 1000)")
    p.add_argument("--no-wfdb", action="store_true", help="npz only")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def _bounds(text: str, units: str) -> tuple[float, float] | None:
    from medrobust.evaluation.protocol import bounds_from_units

    t = str(text).strip().lower()
    if t == "auto":
        return bounds_from_units(units)
    if t == "none":
        return None
    try:
        lo, hi = (float(v) for v in t.split(","))
    except ValueError:
        raise ConfigError(f"--bounds {text!r}: expected auto, none or LO,HI (e.g. 0,1).") from None
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from medrobust.evaluation import AttackSpec, select_indices
    from medrobust.evaluation.export import save_npz, save_wfdb
    from medrobust.evaluation.perturbation import perturbation_metrics, summarize
    from medrobust.evaluation.protocol import build_attack, derive_seed
    from medrobust.evaluation.robustness import (
        attack_success_rate,
        fooling_rate,
        robust_accuracy,
        targeted_success_rate,
    )
    from medrobust.evaluation.card import atomic_write_json, environment

    out = ensure_writable_dir(args.out)
    ds_cfg = {"name": args.dataset, "root": args.data_dir, "split": args.split,
              "options": parse_options(args.option)}
    model, ds, mcard = load_model_and_data(ds_cfg, args.checkpoint)
    spec = AttackSpec(args.attack, parse_options(args.attack_option))
    from medrobust.attacks.registry import attack_class

    attack_class(spec.name)  # unknown names: a ConfigError listing the available attacks
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}.")
    meta = ds.meta
    classes = list(meta.classes)
    target_class = None
    if args.target is not None:
        if args.target in classes:
            target_class = classes.index(args.target)
        elif args.target.isdigit() and int(args.target) < len(classes):
            target_class = int(args.target)
        else:
            raise ConfigError(f"--target {args.target!r}: not a class of {meta.name} ({classes}) nor an index.")
    bounds = _bounds(args.bounds, meta.units)
    device = torch.device(args.device or "cpu")
    model = model.to(device).eval()
    idx = select_indices(len(ds), args.limit, args.seed)
    x, y = ds.x[torch.as_tensor(idx)], ds.y[torch.as_tensor(idx)].long()
    mask = None if ds.mask is None else ds.mask[torch.as_tensor(idx)]
    with torch.no_grad():
        clean_pred = torch.cat([model(x[s:s + args.batch_size].to(device)).argmax(1).cpu()
                                for s in range(0, len(x), args.batch_size)])
    target = None if target_class is None else torch.full_like(y, target_class)
    # Untargeted: attack the clean-correct samples (the others keep their clean prediction);
    # targeted: every sample whose label is not the target.
    todo = (clean_pred == y) if target is None else (y != target_class)
    x_adv, adv_pred, success = x.clone(), clean_pred.clone(), torch.zeros(len(x), dtype=torch.bool)
    sel_all = todo.nonzero().squeeze(1)
    t0 = time.perf_counter()
    grads = queries = 0
    for b, s in enumerate(tqdm(range(0, len(sel_all), args.batch_size), desc=f"{spec.name} ε={args.eps:g}",
                               unit="batch", disable=args.no_progress)):
        sel = sel_all[s:s + args.batch_size]
        atk = build_attack(model, spec, eps=args.eps, norm=args.norm, eps_mode=args.eps_mode, bounds=bounds,
                           generator=torch.Generator().manual_seed(derive_seed(args.seed, "attack", b)),
                           fs=meta.fs or None)
        res = atk(x[sel].to(device), y[sel].to(device),
                  target=None if target is None else target[sel].to(device),
                  mask=None if mask is None else (mask[sel] if mask.shape[0] > 1 else mask).to(device))
        x_adv[sel] = res.x_adv.cpu()
        adv_pred[sel] = res.adv_pred.cpu()
        success[sel] = res.success.cpu()
        grads += res.grad_evals
        queries += res.queries
    seconds = time.perf_counter() - t0
    pm = perturbation_metrics(x, x_adv, fs=meta.fs or None)
    succ_np = success.numpy()
    summary: dict[str, Any] = {
        "attack": spec.to_dict(), "eps": args.eps, "norm": args.norm, "eps_mode": args.eps_mode,
        "bounds": list(bounds) if bounds else None, "seed": args.seed, "target": target_class,
        "checkpoint": args.checkpoint, "model_card": mcard, "data": {**meta.card(), "n_evaluated": len(idx),
                                                                      "limit": args.limit},
        "robust_accuracy": robust_accuracy(y, adv_pred),
        "attack_success_rate": attack_success_rate(y, clean_pred, adv_pred),
        "fooling_rate": fooling_rate(clean_pred, adv_pred),
        "targeted_success_rate": None if target is None else targeted_success_rate(y, target, adv_pred),
        "perturbation": summarize({k: v[succ_np] for k, v in pm.items()}, units=meta.units),
        "grad_evals": int(grads), "queries": int(queries), "seconds": seconds, "environment": environment(),
        "files": {"npz": "adversarial.npz", "wfdb": None},
    }
    extra = {"index": idx, "ids": np.asarray([str(meta.ids[i]) for i in idx], dtype=str),
             "classes": np.asarray(classes, dtype=str), "fs": np.array(float(meta.fs or 0)),
             "units": np.array(meta.units), "eps": np.array(args.eps), "attack": np.array(spec.name)}
    if target is not None:
        extra["target"] = target.numpy()
    save_npz(out / "adversarial.npz", x=x.numpy(), x_adv=x_adv.numpy(), y=y.numpy(), clean_pred=clean_pred.numpy(),
             adv_pred=adv_pred.numpy(), success=succ_np, extra=extra)
    n_wfdb = 0
    if not args.no_wfdb and x.ndim == 3:
        k = min(len(x), max(0, args.wfdb_limit))
        comments = [[f"medrobust adversarial example: attack={spec.name} eps={args.eps:g} norm={args.norm}",
                     f"source={meta.name}/{meta.split} record={meta.ids[idx[i]]} index={int(idx[i])}",
                     f"label={classes[int(y[i])]} clean_pred={classes[int(clean_pred[i])]} "
                     f"adv_pred={classes[int(adv_pred[i])]} success={bool(success[i])}"] for i in range(k)]
        names = save_wfdb(out / "wfdb", x=x[:k].numpy(), x_adv=x_adv[:k].numpy(), fs=meta.fs, units=meta.units,
                          leads=list(meta.leads), prefix=f"{spec.name}", comments=comments)
        n_wfdb = len(names)
        summary["files"]["wfdb"] = {"folder": "wfdb", "records": n_wfdb}
    atomic_write_json(out / "attack.json", summary)
    r = summary["robust_accuracy"]
    a = summary["attack_success_rate"]
    print(f"{spec.name} at ε = {args.eps:g} on {len(idx)} samples: robust accuracy {r['value']:.4f} "
          f"({r['numerator']}/{r['denominator']}), attack success rate "
          + (f"{a['value']:.4f} ({a['numerator']}/{a['denominator']})" if a["value"] is not None else "n/a"))
    if summary["targeted_success_rate"]:
        t = summary["targeted_success_rate"]
        print(f"targeted success towards {classes[target_class]}: "
              + (f"{t['value']:.4f} ({t['numerator']}/{t['denominator']})" if t["value"] is not None else "n/a"))
    print(f"saved {out / 'adversarial.npz'}" + (f" and {n_wfdb} WFDB records in {out / 'wfdb'}" if n_wfdb else ""))
    return 0
