"""``medrobust reproduce NAME``: rerun a seed paper's experiment (train every compared model, evaluate, tabulate).

Example::

    medrobust reproduce ma2020 --budget smoke --data-dir ../shared/data --out runs/repro-ma2020

Budgets: ``smoke`` (minutes; proves the pipeline, numbers meaningless), ``cpu`` (a few hours on 2 cores;
defences fine-tuned from one CE model, labelled so), ``paper`` (the paper's epochs; for a GPU). A killed run
continues with its first unfinished step when the same command is run again. ``--status`` lists the steps.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from medrobust.reproduce.plan import BUDGETS

    p = sub.add_parser("reproduce", help="reproduce a seed paper's experiment (resumable)")
    p.add_argument("name", nargs="?", help="reproduction name (see --list) or a plan .yaml")
    p.add_argument("--budget", choices=BUDGETS, default="smoke", help="scale of the run (default: %(default)s)")
    p.add_argument("--data-dir", help="dataset folder or its parent (default: MEDROBUST_DATA, then the cache)")
    p.add_argument("--out", help="folder for the results and README.md (default: reproductions/NAME)")
    p.add_argument("--list", action="store_true", help="list the reproductions and exit")
    p.add_argument("--status", action="store_true", help="list the steps and which are finished, run nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medrobust import reproduce
    from medrobust.errors import ConfigError

    if args.list:
        for name in reproduce.available():
            print(f"{name:10s} {reproduce.load_plan(name)['paper']}")
        return 0
    if not args.name:
        raise ConfigError("name a reproduction (medrobust reproduce --list shows them), e.g. medrobust reproduce ma2020.")
    if args.status:
        for row in reproduce.status(args.name, budget=args.budget, out=args.out):
            print(f"{'done' if row['done'] else 'todo':4s}  {row['step']:24s} {row['out']}")
        return 0
    reproduce.run(args.name, budget=args.budget, out=args.out, data_dir=args.data_dir)
    return 0
