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
launcher describes in ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT``.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import torch

from medrobust.errors import ConfigError

_BATCH_UNIT = re.compile(r"^(?:sweep/e\d+|mineps)/b(\d+)$")
RANK0_UNITS = ("large-eps", "examples")


def shard() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def init_from_env(*, timeout_hours: float = 24.0) -> tuple[int, int]:
    """Join the process group a launcher (torchrun) describes in the environment; ``(rank, world)``.

    Without ``WORLD_SIZE`` (or with 1) nothing is initialised. The backend is NCCL when CUDA is available, else
    gloo; the timeout is long because ranks wait at the final barrier for the slowest shard.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return shard()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
                          "`torchrun --nproc_per_node=N -m medrobust ...`.")
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run without torchrun.")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=timeout_hours))
    return shard()
