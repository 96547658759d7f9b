"""Sharded evaluation with ``torch.distributed`` (``torchrun --nproc_per_node=N -m medrobust evaluate ...``).

The evaluation is a list of work units (:func:`medrobust.evaluation.protocol._plan`). Under a process group of
``world`` ranks, the units of batch ``b`` (every ε of the sweep, and the minimal-ε search) belong to rank
``b mod world``; the large-ε check and the examples to rank 0; the pre-flight checks and the clean predictions are
cheap and run on every rank. Each rank records its units in its own resumable state,
``<out>/shards/rank<r>-of-<world>/``, so a killed rank continues where it stopped when the same command is run
again. After a barrier, rank 0 reads every shard's units and builds the one card. Every sample's randomness is
derived from the run seed, the unit and the sample's index (never from its rank or batch neighbours), so the card's
numbers equal a single-process run's for any ``world``.

Launch with torchrun (c10d rendezvous; gloo on CPU, NCCL on GPU); :func:`init_from_env` joins the group that the
launcher describes in ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (:mod:`medrobust.distributed`).
"""

from __future__ import annotations

import re
from pathlib import Path

from medrobust.distributed import barrier, init_from_env, shard

__all__ = ["RANK0_UNITS", "barrier", "init_from_env", "owner", "owns", "shard", "shard_dir"]

_BATCH_UNIT = re.compile(r"^(?:sweep/e\d+|mineps)/b(\d+)$")
RANK0_UNITS = ("large-eps", "examples")


def owner(key: str, world: int) -> int | None:
    """The rank that runs unit ``key`` (``None``: every rank runs it)."""
    m = _BATCH_UNIT.match(key)
    if m:
        return int(m.group(1)) % world
    return 0 if key in RANK0_UNITS else None


def owns(key: str, rank: int, world: int) -> bool:
    """Whether ``rank`` runs unit ``key``."""
    who = owner(key, world)
    return who is None or who == rank


def shard_dir(out: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` records its units."""
    from medrobust.evaluation.card import SHARDS_DIR

    return Path(out) / SHARDS_DIR / f"rank{rank}-of-{world}"
