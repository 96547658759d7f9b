"""Helpers for the attack-base tests: an exact ``match=`` pattern and an attack that changes nothing."""

from __future__ import annotations

import re

from medrobust.attacks import Attack, AttackContext


def exactly(msg: str) -> str:
    """A ``match=`` pattern accepting exactly ``msg``."""
    return "^" + re.escape(msg) + "$"


class Noop(Attack):
    """Leaves every sample at its clean input (the template's checks and bookkeeping only)."""

    name = "noop"

    def _run(self, ctx: AttackContext) -> None:
        pass
