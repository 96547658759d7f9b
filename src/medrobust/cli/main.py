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
from medrobust.errors import ConfigError, MedrobustError

COMMANDS = ("data", "train", "evaluate", "attack", "benchmark", "report", "reproduce", "study", "demo", "models", "zoo",
            "leaderboard")
COMPUTING = ("data", "train", "evaluate", "attack", "benchmark", "report", "reproduce")
"""Commands that get ``--threads`` here (``demo`` has its own, default 1)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the commands' docstring layout and shows every option's default that is not None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" not in text and action.option_strings and action.default not in (None, False)
                and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrobust",
        description="Measure and improve the adversarial robustness of medical (ECG, image) classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"medrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from medrobust.cli import (attack, benchmark, data, demo, evaluate, leaderboard, models, report, reproduce, study,
                               train, zoo)

    for module in (data, train, evaluate, attack, benchmark, report, reproduce, study, demo, models, zoo, leaderboard):
        module.add_parser(sub)
    for name, p in sub.choices.items():
        p.formatter_class = HelpFormatter
        if name in COMPUTING and not any("--threads" in a.option_strings for a in p._actions):
            p.add_argument("--threads", type=int, metavar="N",
                           help="CPU threads for torch (default: torch's own choice, usually every core)")
    return parser


def _set_threads(args: argparse.Namespace) -> None:
    n = getattr(args, "threads", None)
    if n is None or args.command == "demo":
        return
    if n < 1:
        raise ConfigError(f"--threads {n}: must be >= 1 (the number of CPU threads torch may use).")
    import torch

    torch.set_num_threads(n)


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
            _set_threads(args)
            return int(args.func(args) or 0)
    except MedrobustError as exc:
        print(f"medrobust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medrobust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
