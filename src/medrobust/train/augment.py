"""Training-time augmentation and learning-rate schedules, as pure functions the trainer calls.

* :func:`random_crop`: every signal of a batch keeps a window of ``length`` consecutive samples that
  starts at its own uniformly drawn offset (the random-crop augmentation of 1-D ECG classifiers, e.g.
  Hannun et al., Nat. Med. 25:65-69, 2019, who train on random windows of longer records). The padding
  mask is cut with the same window, so masked models still see which samples were recorded.
* :func:`cosine_factor`: the cosine annealing of Loshchilov & Hutter ("SGDR: Stochastic Gradient Descent
  with Warm Restarts", ICLR 2017, Eq. 5) without restarts, per epoch: the learning rate of epoch ``e``
  (0-based) of ``E`` is ``lr · ½ (1 + cos(π e / E))``.
"""

from __future__ import annotations

import math

import torch

from medrobust.errors import ConfigError

LR_SCHEDULES = ("constant", "cosine")


def crop_length(samples: int, keep: float) -> int:
    """Samples of a window that keeps the fraction ``keep`` of ``samples`` (at least one)."""
    return max(1, int(round(samples * keep)))


def random_crop(x: torch.Tensor, mask: torch.Tensor | None, *, length: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cut every row of ``x`` ``(B, leads, samples)`` (and of its ``mask``) to ``length`` samples at a
    random offset per row, drawn uniformly from ``0 … samples − length`` with ``generator``."""
    if x.dim() != 3:
        raise ConfigError(f"random_crop needs signals (batch, leads, samples); got a batch of shape "
                          f"{tuple(x.shape)}. Set random_crop to None for images.")
    samples = x.shape[-1]
    if not 1 <= length <= samples:
        raise ConfigError(f"random_crop: a window of {length} samples does not fit signals of {samples}.")
    start = torch.randint(0, samples - length + 1, (x.shape[0],), generator=generator)
    index = (start[:, None] + torch.arange(length))[:, None, :]
    cut = lambda t: t.gather(-1, index.expand(t.shape[0], t.shape[1], length).to(t.device))  # noqa: E731
    return cut(x), (None if mask is None else cut(mask))


def cosine_factor(epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate at 0-based ``epoch`` of ``epochs`` (1 at the first epoch)."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The base learning rate's multiplier for ``epoch`` under ``schedule`` (one of :data:`LR_SCHEDULES`)."""
    if schedule == "cosine":
        return cosine_factor(epoch, epochs)
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}.")
