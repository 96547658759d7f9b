"""The process group of a ``torchrun`` launch (c10d rendezvous; gloo on CPU, NCCL on GPU), for every layer.

:func:`init_from_env` joins the group the launcher describes in ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` /
``MASTER_PORT``; :func:`shard` says which rank this process is; :func:`barrier`, :func:`all_reduce_sum` and
:func:`average_gradients` are the collectives the sharded evaluation and the distributed training use. Without a
process group every function is the single-process identity.
"""

from __future__ import annotations

import datetime
import os
from typing import Iterable

import torch

from medrobust.errors import ConfigError


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if _group():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64)."""
    import torch.distributed as dist

    if not _group():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: Iterable[torch.nn.Parameter], share: float) -> None:
    """Replace every gradient by ``Σ_ranks share_r · grad_r`` (each rank's ``share`` = its slice of the global
    batch), so a per-sample-mean loss gets the gradient of the whole global batch. A parameter no rank gave a
    gradient keeps ``None`` (the optimiser skips it, as in one process); one that some rank did not reach
    counts as zero there."""
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not _group() or not params:
        return
    has = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64)
    dist.all_reduce(has)
    for p, any_rank in zip(params, has.tolist()):
        if any_rank == 0:
            continue
        g = torch.zeros_like(p) if p.grad is None else p.grad
        g.mul_(share)
        dist.all_reduce(g)
        p.grad = g


def init_from_env(*, timeout_hours: float = 24.0) -> tuple[int, int]:
    """Join the process group a launcher (torchrun) describes in the environment; ``(rank, world)``.

    Without ``WORLD_SIZE`` (or with 1) nothing is initialised. The backend is NCCL when CUDA is available, else
    gloo; the timeout is long because ranks wait at barriers for the slowest shard.
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
