"""Noise baselines: uniform, Gaussian and physiological ECG noise, as arrays and as attacks.

Clinicians ask whether ordinary noise fools a classifier as often as an adversarial perturbation of
the same size; this module answers with the same threat model and result type as the attacks.

Noise kinds (:data:`NOISE_KINDS`), generated per sample and lead, fs-aware where the kind has a
physical time scale:

* ``"uniform"`` — i.i.d. ``U[−1, 1]``; ``"gaussian"`` — i.i.d. ``N(0, 1)``.
* ``"baseline_wander"`` — respiration / body-movement drift: a sum of ``4`` sinusoids with random
  frequencies in ``[0.05, 0.5]`` Hz, random phases and amplitudes (the band of the MIT-BIH Noise
  Stress Test "bw" record; Moody, Muldrow & Mark, "A noise stress test for arrhythmia detectors",
  Computers in Cardiology 11, 381–384, 1984).
* ``"powerline"`` — mains interference at ``mains_hz`` (50 or 60 Hz) and its harmonics below the
  Nyquist frequency, amplitude ``1/k`` for the ``k``-th harmonic, random phase (Friesen et al., "A
  comparison of the noise sensitivity of nine QRS detection algorithms", IEEE TBME 37(1), 1990).
* ``"emg"`` — muscle artefact: Gaussian noise band-limited to ``[20, 150]`` Hz (capped at 0.45 fs),
  amplitude-modulated by a slow random envelope (bursts; Friesen et al. 1990).
* ``"electrode_motion"`` — electrode-skin impedance changes: Poisson-timed (rate 0.5 s⁻¹, at least
  one event) step-like baseline jumps decaying exponentially (time constant 0.3 s) with a
  short damped ringing (the "em" record of the NSTDB; Moody et al. 1984).

The generator :func:`noise` returns each kind normalised to unit RMS per sample (over all leads and
samples), except ``uniform`` and ``gaussian`` which are returned raw. :func:`add_noise` and
:func:`physiological_noise` scale noise to an RMS ``amplitude`` in signal units (e.g. mV) or to an
exact per-sample ``snr_db = 10·log10(mean(x²) / mean(n²))``.

As attacks (names ``"uniform_noise"``, ``"gaussian_noise"``, ``"physio_noise"``; ``black_box =
True``; one forward per trial): every trial draws one noise pattern per sample and scales it to the
threat model's radius — L∞: peak ``max|δ| = ε``; L2: ``‖δ‖₂ = ε`` (with ``eps_mode="snr_db"`` and L2
the SNR is therefore exactly ε dB) — except uniform noise under L∞, which is ``U[−ε, ε]`` per
coordinate as in Ma & Liang's random-noise evaluation (arXiv 2005.09134). ``trials > 1`` draws
new patterns for the samples not yet misclassified (per-sample early stop).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.base import Active, Attack, AttackContext
from medrobust.attacks.queries import query
from medrobust.attacks.registry import register_attack
from medrobust.attacks.threat import bview, lp_norm
from medrobust.checks import check_choice, check_float, check_int, check_positive
from medrobust.errors import ConfigError, DataError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from medrobust.attacks.base import ThreatArgs

NOISE_KINDS: tuple[str, ...] = ("uniform", "gaussian", "baseline_wander", "powerline", "emg", "electrode_motion")
PHYSIO_KINDS: tuple[str, ...] = ("baseline_wander", "powerline", "emg", "electrode_motion", "mixed")
"""Physiological kinds; ``"mixed"`` is the unit-RMS sum of the four (equal power)."""


def _gen(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        s = tuple(int(v) for v in shape)
    except TypeError:
        raise ConfigError(f"shape must be a tuple of ints (N, ..., samples), got {shape!r}.") from None
    if len(s) < 2 or any(v < 1 for v in s):
        raise ConfigError(f"shape must be (N, ..., samples) with positive sizes and ndim >= 2, got {s}.")
    return s


def _need_fs(fs: Any, kind: str) -> float:
    if fs is None:
        raise ConfigError(f"noise kind {kind!r} depends on the sampling rate: pass fs=<Hz> "
                          "(e.g. fs=360.0 for MIT-BIH records).")
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not (fs > 0) or not math.isfinite(fs):
        raise ConfigError(f"fs must be a positive number of Hz, got {fs!r}.")
    return float(fs)


def _unit_rms(n: torch.Tensor) -> torch.Tensor:
    rms = n.flatten(1).pow(2).mean(1).sqrt()
    return n / bview(rms.clamp_min(1e-30), n)


def _baseline_wander(shape: tuple[int, ...], fs: float, g: torch.Generator) -> torch.Tensor:
    rows = math.prod(shape[:-1])
    t = torch.arange(shape[-1], dtype=torch.float64) / fs
    k = 4
    f = 0.05 + 0.45 * torch.rand(rows, k, 1, generator=g, dtype=torch.float64)
    ph = 2 * math.pi * torch.rand(rows, k, 1, generator=g, dtype=torch.float64)
    a = 0.5 + torch.rand(rows, k, 1, generator=g, dtype=torch.float64)
    return (a * torch.sin(2 * math.pi * f * t + ph)).sum(1).view(shape)


def _powerline(shape: tuple[int, ...], fs: float, g: torch.Generator, mains_hz: float, harmonics: int) -> torch.Tensor:
    if mains_hz >= fs / 2:
        raise ConfigError(
            f"mains_hz={mains_hz} Hz is not below the Nyquist frequency fs/2 = {fs / 2} Hz; powerline noise "
            "cannot be represented at this sampling rate (use a higher fs or another kind)."
        )
    rows = math.prod(shape[:-1])
    t = torch.arange(shape[-1], dtype=torch.float64) / fs
    out = torch.zeros(rows, shape[-1], dtype=torch.float64)
    for k in range(1, harmonics + 1):
        fk = k * mains_hz
        if fk >= fs / 2:
            break
        ph = 2 * math.pi * torch.rand(rows, 1, generator=g, dtype=torch.float64)
        out += torch.sin(2 * math.pi * fk * t + ph) / k
    return out.view(shape)


def _band_noise(shape: tuple[int, ...], fs: float, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    n = shape[-1]
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    spec = torch.fft.rfft(w, dim=-1)
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs).to(torch.float64)
    keep = (freqs >= lo) & (freqs <= hi)
    if not bool(keep.any()):
        keep = freqs > 0
    return torch.fft.irfft(spec * keep, n=n, dim=-1)


def _emg(shape: tuple[int, ...], fs: float, g: torch.Generator) -> torch.Tensor:
    hi = min(150.0, 0.45 * fs)
    lo = min(20.0, 0.5 * hi)
    carrier = _band_noise(shape, fs, g, lo, hi)
    env = _band_noise(shape, fs, g, 0.0, 2.0)
    env = 1.0 + env / env.flatten(0, -2).abs().amax(1).clamp_min(1e-30).view(*shape[:-1], 1)  # in [0, 2]
    return carrier * env


def _electrode_motion(shape: tuple[int, ...], fs: float, g: torch.Generator) -> torch.Tensor:
    rows = math.prod(shape[:-1])
    n = shape[-1]
    dur = n / fs
    t = torch.arange(n, dtype=torch.float64) / fs
    out = torch.zeros(rows, n, dtype=torch.float64)
    lam = max(0.5 * dur, 1e-9)
    counts = torch.poisson(torch.full((rows,), lam, dtype=torch.float64), generator=g).clamp_min(1).long()
    kmax = int(counts.max())
    onset = torch.rand(rows, kmax, 1, generator=g, dtype=torch.float64) * dur
    amp = torch.randn(rows, kmax, 1, generator=g, dtype=torch.float64)
    used = (torch.arange(kmax).view(1, kmax, 1) < counts.view(rows, 1, 1)).to(torch.float64)
    tau, ring_hz, ring_tau = 0.3, 3.0, 0.1
    dt = t.view(1, 1, n) - onset
    on = (dt >= 0).to(torch.float64)
    dtp = dt.clamp_min(0)
    shape_fn = torch.exp(-dtp / tau) + 0.5 * torch.exp(-dtp / ring_tau) * torch.sin(2 * math.pi * ring_hz * dtp)
    out = (used * amp * on * shape_fn).sum(1)
    return out.view(shape)


def noise(
    shape: tuple[int, ...],
    *,
    kind: str,
    fs: float | None = None,
    generator: torch.Generator | None = None,
    mains_hz: float = 50.0,
    harmonics: int = 3,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Raw noise of ``kind`` with the layout ``(N, ..., samples)`` (time along the last axis).

    Parameters
    ----------
    shape
        Output shape, e.g. ``(N, leads, samples)``; every leading row gets independent noise.
    kind
        One of :data:`NOISE_KINDS` or ``"mixed"`` (equal-power sum of the four physiological kinds).
    fs
        Sampling rate in Hz; required by every physiological kind.
    generator
        Random generator (``None``: seeded with 0).
    mains_hz, harmonics
        Powerline frequency (50 or 60 Hz) and number of harmonics (fundamental included); harmonics at
        or above the Nyquist frequency are dropped.
    dtype
        Output dtype.

    Returns
    -------
    torch.Tensor
        ``uniform``: ``U[−1, 1]``; ``gaussian``: ``N(0, 1)``; physiological kinds: unit RMS per sample.
    """
    s = _check_shape(shape)
    g = _gen(generator)
    if kind == "uniform":
        return (2.0 * torch.rand(s, generator=g, dtype=torch.float64) - 1.0).to(dtype)
    if kind == "gaussian":
        return torch.randn(s, generator=g, dtype=torch.float64).to(dtype)
    if kind not in PHYSIO_KINDS:
        raise ConfigError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS + ('mixed',)}.")
    f = _need_fs(fs, kind)
    if mains_hz not in (50, 60, 50.0, 60.0) and kind in ("powerline", "mixed"):
        if not (isinstance(mains_hz, (int, float)) and mains_hz > 0):
            raise ConfigError(f"mains_hz must be a positive frequency (50 or 60 Hz), got {mains_hz!r}.")
    check_int(harmonics, "harmonics", minimum=1)
    parts = {
        "baseline_wander": lambda: _baseline_wander(s, f, g),
        "powerline": lambda: _powerline(s, f, g, float(mains_hz), harmonics),
        "emg": lambda: _emg(s, f, g),
        "electrode_motion": lambda: _electrode_motion(s, f, g),
    }
    if kind == "mixed":
        out = sum(_unit_rms(parts[k]()) for k in ("baseline_wander", "powerline", "emg", "electrode_motion"))
    else:
        out = parts[kind]()
    return _unit_rms(out).to(dtype)


def _scale(
    n: torch.Tensor, *, amplitude: float | None, snr_db: float | None, signal: torch.Tensor | None
) -> torch.Tensor:
    if (amplitude is None) == (snr_db is None):
        raise ConfigError("pass exactly one of amplitude= (RMS in signal units, e.g. mV) or snr_db= (dB).")
    rms = n.double().flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-30)
    if amplitude is not None:
        check_positive(amplitude, "amplitude", allow_none=False)
        target = torch.full_like(rms, float(amplitude))
    else:
        if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
            raise ConfigError(f"snr_db must be a finite number of dB, got {snr_db!r}.")
        if signal is None:
            raise ConfigError("snr_db needs the clean signal: pass signal=x (or use add_noise(x, ...)).")
        p = signal.detach().double().flatten(1).pow(2).mean(1)
        if bool((p <= 0).any()):
            raise DataError("snr_db needs signals with non-zero power (an all-zero sample was found).")
        target = p.sqrt() * 10.0 ** (-float(snr_db) / 20.0)
    return (n.double() * bview(target / rms, n)).to(n.dtype)


def physiological_noise(
    shape: tuple[int, ...],
    *,
    fs: float,
    kind: str = "mixed",
    amplitude: float | None = None,
    snr_db: float | None = None,
    signal: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mains_hz: float = 50.0,
    harmonics: int = 3,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Physiological ECG noise of ``kind`` scaled to an RMS ``amplitude`` or to ``snr_db`` against ``signal``.

    Parameters
    ----------
    shape
        ``(N, leads, samples)`` (any ``(N, ..., samples)``).
    fs
        Sampling rate in Hz (required).
    kind
        ``"baseline_wander"``, ``"powerline"``, ``"emg"``, ``"electrode_motion"`` or ``"mixed"``.
    amplitude
        Per-sample RMS of the noise in signal units (mV for mV signals).
    snr_db
        Per-sample ``10·log10(mean(signal²) / mean(noise²))``; needs ``signal`` of shape ``shape``.
    generator, mains_hz, harmonics, dtype
        See :func:`noise`.

    Examples
    --------
    >>> n = physiological_noise((2, 1, 3600), fs=360.0, kind="powerline", amplitude=0.05, mains_hz=60.0)
    >>> tuple(n.shape)
    (2, 1, 3600)
    """
    if kind not in PHYSIO_KINDS:
        raise ConfigError(f"physiological_noise kind must be one of {PHYSIO_KINDS}, got {kind!r}.")
    n = noise(shape, kind=kind, fs=fs, generator=generator, mains_hz=mains_hz, harmonics=harmonics, dtype=dtype)
    if signal is not None and tuple(signal.shape) != tuple(n.shape):
        raise DataError(f"signal has shape {tuple(signal.shape)} but the noise shape is {tuple(n.shape)}.")
    return _scale(n, amplitude=amplitude, snr_db=snr_db, signal=signal)


def add_noise(
    x: torch.Tensor,
    *,
    kind: str,
    fs: float | None = None,
    amplitude: float | None = None,
    snr_db: float | None = None,
    generator: torch.Generator | None = None,
    mains_hz: float = 50.0,
    harmonics: int = 3,
) -> torch.Tensor:
    """``x + n`` with noise ``n`` of ``kind`` at an RMS ``amplitude`` or an exact per-sample ``snr_db``.

    Parameters
    ----------
    x
        Clean batch ``(N, ..., samples)``.
    kind
        Any of :data:`NOISE_KINDS` or ``"mixed"``.
    fs
        Sampling rate in Hz (required by the physiological kinds).
    amplitude, snr_db
        Exactly one: RMS of the noise per sample, or the SNR in dB per sample.
    generator, mains_hz, harmonics
        See :func:`noise`.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise DataError("x must be a floating-point tensor of shape (N, ..., samples).")
    n = noise(tuple(x.shape), kind=kind, fs=fs, generator=generator, mains_hz=mains_hz, harmonics=harmonics,
              dtype=x.dtype).to(x.device)
    return x + _scale(n, amplitude=amplitude, snr_db=snr_db, signal=x)


class _NoiseAttack(Attack):
    """Shared machinery of the noise baselines (see the module docstring)."""

    black_box: ClassVar[bool] = True
    default_loss: ClassVar[str] = "margin"
    kind: str = "uniform"

    def __init__(
        self,
        model: nn.Module,
        *,
        trials: int = 1,
        fs: float | None = None,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.trials = check_int(trials, "trials", minimum=1)
        self.fs = None if fs is None else _need_fs(fs, self.kind)
        super().__init__(model, **threat_kwargs)

    def hyperparameters(self) -> dict[str, Any]:
        return {"kind": self.kind, **super().hyperparameters()}

    def _noise_kwargs(self) -> dict[str, Any]:
        return {}

    def _draw(self, ctx: AttackContext, act: Active) -> torch.Tensor:
        """One noise pattern per active sample, each from a generator seeded by the sample's own stream."""
        seeds = ctx.randint(act, 2**52).view(-1).tolist()
        one = (1, *act.x.shape[1:])
        rows = [noise(one, kind=self.kind, fs=self.fs, generator=torch.Generator().manual_seed(int(sd)),
                      dtype=torch.float64, **self._noise_kwargs()) for sd in seeds]
        return torch.cat(rows).to(device=act.x.device)

    def _run(self, ctx: AttackContext) -> None:
        for _ in range(self.trials):
            act = ctx.active()
            if len(act) == 0:
                return
            n = self._draw(ctx, act)
            if act.mask is not None:
                n = n * act.mask.double()
            if not (self.kind == "uniform" and ctx.norm == "linf"):
                size = lp_norm(n, ctx.norm).clamp_min(1e-300)
                n = n / bview(size, n) * bview(act.eps.double(), n)
            else:
                n = n * bview(act.eps.double(), n)
            x_in = ctx.constrain(act, n.to(act.x.dtype))
            logits = query(ctx, act.idx, x_in)
            ctx.record(act, x_in, logits)
            ctx.record_final(act, x_in, logits)


@register_attack("uniform_noise")
class UniformNoise(_NoiseAttack):
    """Uniform random noise baseline (Ma & Liang, ICLR 2020 AI4AH workshop, arXiv 2005.09134).

    L∞: ``δ ~ U[−ε, ε]`` per coordinate; L2: ``U[−1, 1]`` noise rescaled to ``‖δ‖₂ = ε``. Then masked
    and clipped to the bounds. ``trials`` independent draws with per-sample early stop.

    Examples
    --------
    >>> res = UniformNoise(model, eps=0.1, bounds=(0, 1))(x, y)     # doctest: +SKIP
    """

    name = "uniform_noise"
    kind = "uniform"


@register_attack("gaussian_noise")
class GaussianNoise(_NoiseAttack):
    """Gaussian noise baseline: ``N(0, I)`` rescaled to the radius (L∞ peak ε, or ``‖δ‖₂ = ε``).

    Under L2 the direction is uniform on the sphere, so this is the random control of an L2 attack
    (Fawzi, Moosavi-Dezfooli & Frossard, "Robustness of classifiers: from adversarial to random
    noise", NeurIPS 2016, arXiv 1608.08967).
    """

    name = "gaussian_noise"
    kind = "gaussian"


@register_attack("physio_noise")
class PhysioNoise(_NoiseAttack):
    """Physiological ECG noise baseline at the threat model's radius (see the module docstring).

    Parameters
    ----------
    kind
        ``"baseline_wander"``, ``"powerline"``, ``"emg"``, ``"electrode_motion"`` or ``"mixed"``
        (default). Noise models after the MIT-BIH Noise Stress Test (Moody et al. 1984) and Friesen et
        al., IEEE TBME 1990.
    fs
        Sampling rate of the signals in Hz (required).
    mains_hz, harmonics
        Powerline frequency (50 or 60 Hz) and number of harmonics.

    Examples
    --------
    >>> atk = PhysioNoise(model, eps=20.0, eps_mode="snr_db", norm="l2", fs=360.0, kind="emg")  # doctest: +SKIP
    >>> res = atk(x, y)      # every δ has an SNR of exactly 20 dB                                # doctest: +SKIP
    """

    name = "physio_noise"

    def __init__(
        self,
        model: nn.Module,
        *,
        kind: str = "mixed",
        fs: float | None = None,
        mains_hz: float = 50.0,
        harmonics: int = 3,
        trials: int = 1,
        **threat_kwargs: Unpack[ThreatArgs],
    ) -> None:
        self.kind = check_choice(kind, "PhysioNoise kind", PHYSIO_KINDS)
        if fs is None:
            raise ConfigError("PhysioNoise needs the sampling rate of the signals: pass fs=<Hz> (the dataset's "
                              "meta.fs, e.g. fs=125.0 for Kachuee MIT-BIH beats, fs=500.0 for CPSC 2018).")
        self.mains_hz = check_float(mains_hz, "mains_hz", minimum=0.0, strict=True)
        if kind in ("powerline", "mixed") and self.mains_hz >= float(fs) / 2:
            raise ConfigError(f"mains_hz={mains_hz} Hz is not below fs/2 = {float(fs) / 2} Hz; pass a higher fs.")
        self.harmonics = check_int(harmonics, "harmonics", minimum=1)
        super().__init__(model, trials=trials, fs=fs, **threat_kwargs)

    def _noise_kwargs(self) -> dict[str, Any]:
        return {"mains_hz": self.mains_hz, "harmonics": self.harmonics}
