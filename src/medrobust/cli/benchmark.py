"""``medrobust benchmark``: the standard protocol of the data type on a stratified subset, with a report.

Example (a TorchScript export of your model on 200 MIT-BIH test beats)::

    medrobust benchmark --checkpoint model.pt --fs 125 --units "normalized [0, 1]" --classes N,S,V,F,Q \\
        --dataset mitdb --data-dir ../shared/data --n 200 --out runs/bench

The model is any source of ``medrobust evaluate`` (checkpoint folder, TorchScript, ONNX, MODULE:FACTORY +
--weights); see docs/own_model.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from medrobust.cli._util import ensure_writable_dir, parse_options
from medrobust.cli.evaluate import add_model_arguments, parse_float_list, print_summary, source_options
from medrobust.errors import ConfigError


class _Defaults(argparse.HelpFormatter):
    """Shows ``(default: ...)`` for options with a real default (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="standard protocol of the data type on a stratified subset → card + report",
                       formatter_class=_Defaults)
    add_model_arguments(p)
    p.add_argument("--dataset", default="mitdb", help="dataset name")
    p.add_argument("--data-dir", help="dataset folder or its parent")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset loader option, repeatable")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--n", type=int, help="a stratified seeded subset of N samples (default: the whole split)")
    p.add_argument("--threat-model", choices=["linf", "l2"], default="linf",
                   help="linf: the standard protocol; l2 needs --eps")
    p.add_argument("--eps", help="comma-separated radii instead of the standard's (the protocol becomes 'custom')")
    p.add_argument("--minimal-eps", action="store_true", help="also find each sample's minimal adversarial ε")
    p.add_argument("--batch-size", type=int, help="samples per work unit (default: the protocol's)")
    p.add_argument("--out", required=True, help="run folder (card.json, report.md, report.html)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md / report.html")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out instead of resuming")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medrobust.benchmark import benchmark

    if not args.checkpoint:
        raise ConfigError("--checkpoint is required: a checkpoint folder, a TorchScript (.pt/.ts) or ONNX file, "
                          "or MODULE:FACTORY with --weights.")
    out = ensure_writable_dir(args.out)
    eps = parse_float_list(args.eps, "--eps") if args.eps else None
    command = "medrobust " + " ".join(shlex.quote(a) for a in (args._argv if hasattr(args, "_argv") else sys.argv[1:]))
    card = benchmark(args.checkpoint, dataset=args.dataset, threat_model=args.threat_model, eps=eps, n=args.n,
                     data_dir=args.data_dir, out=out, split=args.split, options=parse_options(args.option),
                     load=source_options(args), minimal_eps=args.minimal_eps, batch_size=args.batch_size,
                     report=not args.no_report, device=args.device, progress=not args.no_progress,
                     overwrite=args.overwrite, command=command)
    proto = card["protocol"]
    print(f"protocol {proto.get('name')}: {', '.join(m['label'] for m in proto['members'])}")
    print_summary(card, out)
    if not args.no_report:
        print(f"report: {out / 'report.html'} (and {out / 'report.md'})")
    return 0
