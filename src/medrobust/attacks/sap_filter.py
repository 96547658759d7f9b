"""The SAP smoothing operator: the average of 25 Gaussian kernels as one symmetric FIR filter.

Han et al. ("Deep learning models for electrocardiograms are susceptible to adversarial attack",
Nature Medicine 26, 360–363, 2020; arXiv 1905.05163) parameterise a smooth adversarial perturbation
as ``δ = S(θ)`` with ``S(θ) = (1/25) Σ_{s,σ} g_{s,σ} * θ``: 'same'-length, zero-padded convolutions
with the Gaussian kernels ``g_{s,σ}[k] ∝ exp(−k²/(2σ²))``, ``k = −⌊s/2⌋..⌊s/2⌋``, each normalised
to sum 1, for sizes ``s ∈ {5, 7, 11, 15, 19}`` and widths ``σ ∈ {1, 3, 5, 7, 10}``
Every kernel is centred and odd-length, so ``S`` is a single symmetric
19-tap filter ``K`` (the smaller kernels zero-extended); ``K ≥ 0`` and ``ΣK = 1``, hence
``‖S(θ)‖∞ ≤ ‖θ‖∞`` and, by Young's inequality, ``‖S(θ)‖₂ ≤ ‖θ‖₂``.

The original kernels are defined in samples, so the same filter smooths differently at different
sampling rates (its gain falls below one half at ≈21.8 Hz at 300 Hz but at ≈9.1 Hz at 125 Hz).
:func:`sap_kernel` can instead define the kernels at a reference rate and rescale sizes and widths to
the data's rate, so that the smoothing means the same thing in seconds at 125, 300, 360 or 500 Hz.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from medrobust.errors import ConfigError

HAN_SIZES: tuple[int, ...] = (5, 7, 11, 15, 19)
HAN_SIGMAS: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 10.0)
HAN_FS: float = 300.0
"""Sampling rate of the data Han et al. designed the kernels on (PhysioNet/CinC 2017)."""


def _odd(v: float) -> int:
    """Nearest odd integer >= 1."""
    n = 2 * int(math.floor((v - 1.0) / 2.0 + 0.5)) + 1
    return max(1, n)


def scaled_kernels(sizes: Sequence[int], sigmas: Sequence[float], scale: float) -> tuple[list[int], list[float]]:
    """Kernel sizes and widths rescaled by ``scale = fs / reference_fs``.

    Sizes go to the nearest odd integer (at least 1; ties round up), widths are scaled exactly. Han's
    sizes ``5, 7, 11, 15, 19`` at 300 Hz become ``3, 3, 5, 7, 7`` at 125 Hz and ``9, 11, 19, 25, 31`` at 500 Hz.
    """
    return [_odd(s * scale) for s in sizes], [float(sg) * scale for sg in sigmas]


def sap_kernel(
    *,
    sizes: Sequence[int] = HAN_SIZES,
    sigmas: Sequence[float] = HAN_SIGMAS,
    fs: float | None = None,
    reference_fs: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The SAP filter ``K``: the mean of the normalised Gaussian kernels, zero-extended and centred.

    Parameters
    ----------
    sizes, sigmas
        Kernel lengths (odd, in samples at ``reference_fs``) and Gaussian widths (samples); every
        size is combined with every width (Han et al.: 5 × 5 = 25 kernels).
    fs, reference_fs
        If both are given, sizes and widths are interpreted at ``reference_fs`` and rescaled by
        ``fs / reference_fs`` (sizes to the nearest odd integer, widths exactly), i.e. the kernels
        are defined in seconds. If neither is given, the kernels are in samples (Han's original).
    dtype
        Output dtype.

    Returns
    -------
    torch.Tensor
        1-D symmetric filter of odd length summing to one (19 taps for Han's setting).
    """
    if (fs is None) != (reference_fs is None):
        raise ConfigError("pass both fs and reference_fs to define the SAP kernels in seconds, or neither.")
    scale = 1.0
    if fs is not None and reference_fs is not None:
        if not (fs > 0 and reference_fs > 0):
            raise ConfigError(f"fs and reference_fs must be > 0 Hz, got fs={fs}, reference_fs={reference_fs}.")
        scale = float(fs) / float(reference_fs)
    if len(sizes) == 0 or len(sigmas) == 0:
        raise ConfigError("sizes and sigmas must be non-empty.")
    for s in sizes:
        if int(s) != s or s < 1 or s % 2 == 0:
            raise ConfigError(f"SAP kernel sizes must be odd positive integers, got {s}.")
    for sg in sigmas:
        if not sg > 0:
            raise ConfigError(f"SAP kernel widths must be > 0, got {sg}.")
    sizes_s, sigmas_s = scaled_kernels(sizes, sigmas, scale)
    length = max(sizes_s)
    half = length // 2
    k = torch.zeros(length, dtype=torch.float64)
    for s in sizes_s:
        r = s // 2
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        for sg in sigmas_s:
            g = torch.exp(-(t**2) / (2.0 * sg * sg))
            g = g / g.sum()
            k[half - r: half + r + 1] += g
    k = k / (len(sizes_s) * len(sigmas_s))
    return k.to(dtype)


def smooth(theta: torch.Tensor, kernel: torch.Tensor, *, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the symmetric FIR ``kernel`` along the last axis of ``theta`` ('same' length, zero padding).

    Every leading index (sample, lead, image row ...) is filtered independently, so a
    ``(N, leads, samples)`` batch is smoothed lead by lead. ``matrix`` (from :func:`smoothing_matrix`)
    computes the same filter as one matrix product, which is faster for short signals.
    """
    if matrix is not None:
        return theta @ matrix
    if kernel.ndim != 1 or kernel.numel() % 2 == 0:
        raise ConfigError("the smoothing kernel must be 1-D with an odd number of taps.")
    shape = theta.shape
    flat = theta.reshape(-1, 1, shape[-1])
    w = kernel.to(device=theta.device, dtype=theta.dtype).view(1, 1, -1)
    out = F.conv1d(flat, w, padding=kernel.numel() // 2)  # symmetric kernel: correlation == convolution
    return out.reshape(shape)


def smoothing_matrix(kernel: torch.Tensor, length: int, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The banded ``(length, length)`` matrix ``M`` with ``θ @ M == smooth(θ, kernel)`` (zero padding)."""
    half = kernel.numel() // 2
    i = torch.arange(length)
    off = i.view(1, -1) - i.view(-1, 1)  # column - row
    band = off.abs() <= half
    vals = kernel.to(torch.float64)[(off + half).clamp(0, 2 * half)]
    return torch.where(band, vals, torch.zeros((), dtype=torch.float64)).to(device=device, dtype=dtype)


def frequency_response(kernel: torch.Tensor, fs: float, freqs: torch.Tensor) -> torch.Tensor:
    """Magnitude ``|H(f)|`` of the zero-phase symmetric FIR ``kernel`` at ``freqs`` (Hz) for rate ``fs``."""
    half = kernel.numel() // 2
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    w = 2.0 * math.pi * freqs.to(torch.float64).view(-1, 1) / float(fs)
    return (kernel.to(torch.float64).view(1, -1) * torch.cos(w * n.view(1, -1))).sum(1).abs()
