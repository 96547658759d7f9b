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
from typing import Any

from medrobust.cli._util import ensure_writable_dir, parse_options
from medrobust.cli.evaluate import add_data_arguments, load_model_and_data, source_options
from medrobust.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack a dataset split; save adversarial examples as npz and WFDB")
    add_data_arguments(p)
    p.add_argument("--attack", required=True, help="registered attack name (see docs/attacks.md)")
    p.add_argument("--attack-option", action="append", metavar="KEY=VALUE", help="attack option, repeatable")
    p.add_argument("--eps", type=float, required=True, help="radius in input units")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf", help="threat-model norm")
    p.add_argument("--eps-mode", choices=["abs", "ptp", "snr_db"], default="abs",
                   help="abs: ε in input units; ptp: a fraction of each record's peak-to-peak; snr_db: an SNR")
    p.add_argument("--bounds", default="auto", help="'auto' (from the data's units), 'none' or LO,HI")
    p.add_argument("--target", help="targeted attack towards this class (name or index)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's random streams and of --limit's subset")
    p.add_argument("--batch-size", type=int, default=256, help="samples per attack batch")
    p.add_argument("--wfdb-limit", type=int, default=1000, help="write at most N WFDB records (default 1000)")
    p.add_argument("--no-wfdb", action="store_true", help="npz only")
    p.add_argument("--out", required=True, help="output folder (empty, or pass --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove a previous attack's files in --out (npz, attack.json, its WFDB records) first")
    p.set_defaults(func=run)


def _bounds(text: str) -> Any:
    """``--bounds``: ``"auto"`` (resolved from the data's units), ``None`` or ``(lo, hi)``."""
    t = str(text).strip().lower()
    if t in ("auto", "none"):
        return None if t == "none" else "auto"
    try:
        lo, hi = (float(v) for v in t.split(","))
    except ValueError:
        raise ConfigError(f"--bounds {text!r}: expected auto, none or LO,HI (e.g. 0,1).") from None
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from medrobust.benchmark import check_black_box_members
    from medrobust.evaluation import AttackSpec
    from medrobust.evaluation.export import ADVERSARIAL_NPZ, WFDB_DIR, AttackRequest, attack_dataset

    out = ensure_writable_dir(args.out)
    ds_cfg = {"name": args.dataset, "root": args.data_dir, "split": args.split,
              "options": parse_options(args.option)}
    model, ds, mcard = load_model_and_data(ds_cfg, args.checkpoint, source=source_options(args))
    check_black_box_members(model, mcard, [args.attack])
    req = AttackRequest(spec=AttackSpec(args.attack, parse_options(args.attack_option)), eps=args.eps,
                        norm=args.norm, eps_mode=args.eps_mode, bounds=_bounds(args.bounds), target=args.target,
                        seed=args.seed, batch_size=args.batch_size, limit=args.limit, wfdb=not args.no_wfdb,
                        wfdb_limit=args.wfdb_limit)
    summary = attack_dataset(model, ds, req, out_dir=out, device=args.device, progress=not args.no_progress,
                             overwrite=args.overwrite, checkpoint=args.checkpoint, model_card=mcard)
    n = summary["data"]["n_evaluated"]
    r, a = summary["robust_accuracy"], summary["attack_success_rate"]
    print(f"{req.spec.name} at ε = {args.eps:g} on {n} samples: robust accuracy {r['value']:.4f} "
          f"({r['numerator']}/{r['denominator']}), attack success rate "
          + (f"{a['value']:.4f} ({a['numerator']}/{a['denominator']})" if a["value"] is not None else "n/a"))
    if summary["targeted_success_rate"]:
        t = summary["targeted_success_rate"]
        print(f"targeted success towards {ds.meta.classes[summary['target']]}: "
              + (f"{t['value']:.4f} ({t['numerator']}/{t['denominator']})" if t["value"] is not None else "n/a"))
    for f in summary["flags"]:
        print(f"reliability flag [{f['code']}] {f['message']}")
    n_wfdb = (summary["files"]["wfdb"] or {}).get("records", 0)
    print(f"saved {out / ADVERSARIAL_NPZ}" + (f" and {n_wfdb} WFDB records in {out / WFDB_DIR}" if n_wfdb else ""))
    return 0
