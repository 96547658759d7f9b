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
    from medrobust.cli.evaluate import MODEL_SOURCES_HELP
    from medrobust.reproduce.plan import BUDGETS

    p = sub.add_parser("reproduce", help="reproduce a seed paper's experiment (resumable)")
    p.add_argument("name", nargs="?", help="reproduction name (see --list) or a plan .yaml")
    p.add_argument("--budget", choices=BUDGETS, default="smoke", help="scale of the run (default: %(default)s)")
    p.add_argument("--data-dir", help="dataset folder or its parent (default: MEDROBUST_DATA, then the cache)")
    p.add_argument("--out", help="folder for the results and README.md (default: reproductions/NAME)")
    p.add_argument("--model", metavar="SOURCE",
                   help="evaluate YOUR model with the paper's attacks, checks and claims instead of training the "
                        "paper's: " + MODEL_SOURCES_HELP.removeprefix("the model: "))
    for flag, help_ in (("--weights", "for MODULE:FACTORY: the weights file"),
                        ("--model-path", "for MODULE:FACTORY: the folder your package is imported from"),
                        ("--fs", "your model's sampling rate in Hz (unless the file says it)"),
                        ("--units", "your model's input units (unless the file says it)"),
                        ("--classes", "your model's class names in output order (unless the file says it)")):
        p.add_argument(flag, type=float if flag == "--fs" else str, help=help_)
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
    source = {k: getattr(args, k) for k in ("weights", "model_path", "fs", "units", "classes")
              if getattr(args, k) is not None}
    if source and not args.model:
        raise ConfigError(f"--{next(iter(source)).replace('_', '-')} describes your model: pass it with --model SOURCE.")
    if args.status:
        for row in reproduce.status(args.name, budget=args.budget, out=args.out, model=args.model):
            print(f"{'done' if row['done'] else 'todo':4s}  {row['step']:24s} {row['out']}")
        return 0
    reproduce.run(args.name, budget=args.budget, out=args.out, data_dir=args.data_dir, model=args.model,
                  source=source)
    return 0
