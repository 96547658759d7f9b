"""``medrobust report RUN_DIR``: Markdown and self-contained HTML report of an evaluation run."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.md and RUN_DIR/report.html from an evaluation run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `medrobust evaluate --out RUN_DIR`")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medrobust.report import write_report

    md, html = write_report(args.run_dir, progress=not args.no_progress)
    print(f"report: {html}\nmarkdown: {md} (figures in {md.parent / 'figures'})")
    return 0
