"""``medrobust leaderboard``: tasks, validated entries and the static site.

Examples::

    medrobust leaderboard tasks                      # the tasks, their versions and threat rows
    medrobust leaderboard config mitdb-intra --checkpoint CKPT --out runs/eval > eval.yaml
    medrobust evaluate --config eval.yaml --data-dir ../shared/data
    medrobust leaderboard add runs/eval/card.json --zoo mitdb-intra/cnn1-ce [--verify --data-dir ../shared/data]
    medrobust leaderboard add runs/eval --checkpoint runs/cnn1/checkpoint --id my-cnn --task mitdb-intra
    medrobust leaderboard build --out leaderboard/site

``add`` validates the card against its task (protocol version, dataset and data fingerprint, evaluated subset,
attacks and radii, weights hash, numerators and denominators) and prints one line per problem; ``--verify``
re-runs a seeded sample of the evaluation and compares it with the card's per-sample outcomes.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="validate entries against the leaderboard tasks and build the site")
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)
    t = lsub.add_parser("tasks", help="list the tasks (or show one)")
    t.add_argument("task", nargs="?", help="a task name or YAML file")
    t.set_defaults(func=run_tasks)
    pn = lsub.add_parser("pin", help="print a task's data fingerprint, split size and subset indices hash")
    pn.add_argument("task", help="a task name or YAML file")
    pn.add_argument("--data-dir", help="dataset folder or its parent (default: MEDROBUST_DATA)")
    pn.set_defaults(func=run_pin)
    c = lsub.add_parser("config", help="print a `medrobust evaluate --config` YAML for a task's threat row")
    c.add_argument("task", help="a task name or YAML file")
    c.add_argument("--threat", default="linf", help="threat row id")
    c.add_argument("--checkpoint", help="the model (checkpoint folder or other model source)")
    c.add_argument("--out", help="the evaluation's run folder")
    c.add_argument("--data-dir", help="dataset folder or its parent")
    c.set_defaults(func=run_config)
    a = lsub.add_parser("add", help="validate a result card and add it to the board")
    a.add_argument("card", help="the result card (card.json or its evaluation folder)")
    a.add_argument("--board", default="leaderboard", help="the board folder")
    a.add_argument("--task", help="task name or YAML (default: the zoo entry's, or the one matching the card's data)")
    a.add_argument("--threat", help="threat row id (default: the row whose protocol the card carries)")
    a.add_argument("--zoo", metavar="ID", help="the zoo entry evaluated (default: found by the card's weights hash)")
    a.add_argument("--checkpoint", metavar="DIR", help="for a model outside the zoo: its checkpoint folder")
    a.add_argument("--id", dest="entry_id", help="the entry's name on the board (default: the zoo entry's name)")
    a.add_argument("--defence", help="defence shown on the board (default: the zoo entry's / checkpoint's)")
    a.add_argument("--budget", help="training budget shown on the board")
    a.add_argument("--verify", action="store_true", help="re-run a seeded sample of the evaluation and compare")
    a.add_argument("--verify-samples", type=int, default=32, help="samples re-run by --verify")
    a.add_argument("--data-dir", help="dataset folder for --verify (default: MEDROBUST_DATA)")
    a.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch during --verify")
    a.set_defaults(func=run_add)
    b = lsub.add_parser("build", help="write the static site (HTML + JSON, self-contained)")
    b.add_argument("--board", default="leaderboard", help="the board folder")
    b.add_argument("--out", default=None, help="site folder (default: BOARD/site)")
    b.add_argument("--no-reports", action="store_true",
                   help="do not render a report from the card of an entry that has none")
    b.set_defaults(func=run_build)


def run_tasks(args: argparse.Namespace) -> int:
    from medrobust.leaderboard import builtin_tasks, load_task

    if args.task:
        print(json.dumps(load_task(args.task).summary(), indent=2))
        return 0
    for t in builtin_tasks():
        rows = ", ".join(f"{r.id} ({r.status})" for r in t.threats)
        limit = t.subset.get("limit")
        print(f"{t.name} v{t.version}: {t.dataset['name']}/{t.dataset['split']} "
              f"{'all' if limit is None else limit} samples; rows: {rows}")
    return 0


def run_pin(args: argparse.Namespace) -> int:
    from medrobust.leaderboard import load_task, pin

    print(json.dumps(pin(load_task(args.task), root=args.data_dir), indent=2))
    return 0


def run_config(args: argparse.Namespace) -> int:
    import yaml

    from medrobust.leaderboard import load_task
    from medrobust.leaderboard.tasks import evaluate_config

    cfg = evaluate_config(load_task(args.task), threat=args.threat, checkpoint=args.checkpoint, out=args.out,
                          data_dir=args.data_dir)
    print(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), end="")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from medrobust.errors import ConfigError
    from medrobust.leaderboard import add

    if args.verify_samples < 1:
        raise ConfigError(f"--verify-samples {args.verify_samples}: must be >= 1.")
    meta = {"defence": args.defence, "budget": args.budget}
    e = add(args.card, board=args.board, task=args.task, threat=args.threat, zoo_id=args.zoo,
            checkpoint=args.checkpoint, entry_id=args.entry_id, meta=meta, verify=args.verify,
            verify_samples=args.verify_samples, data_root=args.data_dir)
    rob = ", ".join(f"{r['eps']:g}: {100 * r['value']:.1f} %" for r in e["robust"])
    print(f"added {e['task']}/{e['id']} ({e['threat']}): clean {100 * e['clean']['value']:.1f} %, robust {rob}"
          + (f"; FLAGGED: {', '.join(str(f['code']) for f in e['flags'])}" if e["flagged"] else "")
          + (f"; verified on {e['verified']['n']} samples" if e["verified"] else ""))
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medrobust.leaderboard import build

    out = args.out or str(Path(args.board) / "site")
    index = build(board=args.board, out=out, reports=not args.no_reports)
    print(f"leaderboard site: {index}")
    return 0
