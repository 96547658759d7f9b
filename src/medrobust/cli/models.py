"""``medrobust models``: list registered architectures."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered model architectures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medrobust.models import available_models

    print("\n".join(available_models()))
    return 0
