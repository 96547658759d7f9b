"""The ``medrobust`` command line.

Sub-commands live one per module in this package; each exposes ``add_parser(subparsers)`` and a
``run(args) -> int``. Input errors (:class:`medrobust.errors.MedrobustError`) are printed as one
line naming the argument or file and the fix, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Sequence

from medrobust import __version__
from medrobust.errors import MedrobustError

COMMANDS = ("data", "train", "evaluate", "attack", "benchmark", "report", "demo", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrobust",
        description="Measure and improve the adversarial robustness of medical (ECG, image) classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"medrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from medrobust.cli import attack, benchmark, data, demo, evaluate, models, report, reproduce, train

    for module in (data, train, evaluate, attack, benchmark, report, reproduce, demo, models):
        module.add_parser(sub)
    return parser


def _one_line_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
    """Warnings on the command line: one line each, like the errors (no source line echoed)."""
    print(f"medrobust: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]  # recorded in result cards
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except MedrobustError as exc:
        print(f"medrobust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medrobust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
