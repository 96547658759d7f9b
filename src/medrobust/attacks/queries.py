"""Counted, chunked, gradient-free model queries for the black-box attacks.

Every black-box attack (SPSA, Square, boundary, noise baselines) reaches the model only through
:func:`query`: a forward pass under ``torch.no_grad()`` whose inputs are split into chunks of at most
``max_batch`` rows (to bound memory), and which adds to each sample's query counter exactly the
number of rows forwarded on its behalf (``AttackContext.n_fwd``; a forward of ``n`` inputs counts
``n`` queries, Ilyas et al., ICML 2018, arXiv 1804.08598, §2 "query budget"). Models whose ``forward``
takes ``mask=`` receive the padding mask of each row's owner (:meth:`AttackContext.forward`).
"""

from __future__ import annotations

import torch

from medrobust.attacks.base import AttackContext
from medrobust.errors import ConfigError


def query(
    ctx: AttackContext,
    owners: torch.Tensor,
    x_in: torch.Tensor,
    *,
    max_batch: int | None = None,
) -> torch.Tensor:
    """Logits of ``x_in`` without gradients, charging one query per row to its owner.

    Parameters
    ----------
    ctx
        The attack context (holds the model and the per-sample counters).
    owners
        ``(M,)`` long: for every row of ``x_in``, the index (into the full batch) of the sample the
        query is made for.
    x_in
        ``(M, ...)`` model inputs.
    max_batch
        Largest number of rows per forward (``None``: all at once).

    Returns
    -------
    torch.Tensor
        ``(M, K)`` detached logits.
    """
    m = x_in.shape[0]
    if owners.shape != (m,):
        raise ConfigError(f"query owners must have shape ({m},), got {tuple(owners.shape)}.")
    chunk = m if max_batch is None else max(1, int(max_batch))
    outs = []
    with torch.no_grad():
        for s in range(0, m, chunk):
            outs.append(ctx.forward(x_in[s:s + chunk], owners[s:s + chunk]).detach())
    ctx.n_fwd.index_add_(0, owners, torch.ones_like(owners))
    return torch.cat(outs, 0) if len(outs) > 1 else outs[0]
