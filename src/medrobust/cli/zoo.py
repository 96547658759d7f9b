"""``medrobust zoo``: the model zoo's entries, adding a checkpoint, checking every entry.

Examples::

    medrobust zoo list
    medrobust zoo add runs/nsr/checkpoint --id mitdb-intra/cnn1-nsr --eval-card runs/eval-nsr/card.json
    medrobust zoo add ... --eval-card CARD --board leaderboard --verify   # zoo + board in one command
    medrobust zoo check                      # load every shipped entry and compare its probe logits
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list, add and check model-zoo entries")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    ls = zsub.add_parser("list", help="list the entries")
    ls.add_argument("--task", help="only this task's entries")
    ls.set_defaults(func=run_list)
    a = zsub.add_parser("add", help="copy a checkpoint (and its evaluation card) into the zoo")
    a.add_argument("checkpoint", help="the checkpoint folder (model.safetensors + card.json)")
    a.add_argument("--id", dest="entry_id", required=True, help="TASK/NAME, e.g. mitdb-intra/cnn1-nsr")
    a.add_argument("--eval-card", help="the evaluation's card.json (per_sample.npz beside it is copied too)")
    a.add_argument("--defence", help="defence name (default: the checkpoint card's trainer)")
    a.add_argument("--budget", help="training budget text (default: from the checkpoint card)")
    a.add_argument("--notes", default="", help="free text shown with the entry")
    a.add_argument("--url", help="do not ship the weights: the URL they are downloaded from (SHA-256 recorded)")
    a.add_argument("--root", help="zoo folder (default: the package's medrobust/zoo/entries)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing entry")
    a.add_argument("--board", help="also add the eval card to this leaderboard folder (medrobust leaderboard add)")
    a.add_argument("--task", help="with --board: the task name or YAML (default: the entry's TASK)")
    a.add_argument("--verify", action="store_true", help="with --board: re-run a seeded sample of the evaluation")
    a.add_argument("--data-dir", help="with --verify: dataset folder (default: MEDROBUST_DATA)")
    a.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch during --verify")
    a.set_defaults(func=run_add)
    c = zsub.add_parser("check", help="load every shipped entry and compare its probe logits")
    c.add_argument("--root", help="zoo folder (default: the package's)")
    c.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    from medrobust import zoo
    from medrobust.cli._util import format_table

    rows = [[e.id, e.architecture, e.defence, f"{e.parameters:,}", e.budget,
             "shipped" if e.shipped else "url", "yes" if e.eval_card else "no"] for e in zoo.list_entries(args.task)]
    print(format_table(["id", "architecture", "defence", "parameters", "budget", "weights", "eval card"], rows))
    return 0


def run_add(args: argparse.Namespace) -> int:
    from medrobust import zoo
    from medrobust.errors import ConfigError

    if args.board and not args.eval_card:
        raise ConfigError("--board needs --eval-card: the board holds evaluated entries only.")

    e = zoo.add(args.checkpoint, entry_id=args.entry_id, eval_card=args.eval_card, defence=args.defence,
                budget=args.budget, notes=args.notes, url=args.url, root=args.root, overwrite=args.overwrite)
    print(f"zoo entry {e.id}: {e.architecture}, {e.defence}, {e.parameters:,} parameters, "
          f"{'eval card copied' if e.eval_card else 'no eval card'} -> {e.folder}")
    if args.board:
        from medrobust.leaderboard import add

        entry = add(e.eval_card, board=args.board, task=args.task, zoo_id=e.id, zoo_root=args.root, verify=args.verify,
                    data_root=args.data_dir)
        print(f"board entry {entry['task']}/{entry['id']} ({entry['threat']}): clean "
              f"{100 * entry['clean']['value']:.1f} %" + (" FLAGGED" if entry["flagged"] else "")
              + (f", verified on {entry['verified']['n']} samples" if entry["verified"] else ""))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from medrobust import zoo

    for e in zoo.list_entries(root=args.root):
        if not e.shipped:
            print(f"{e.id}: not shipped (url), skipped")
            continue
        zoo.load(e.id, root=args.root)
        print(f"{e.id}: weights and probe logits OK")
    return 0
