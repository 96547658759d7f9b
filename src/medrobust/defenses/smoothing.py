"""Randomized smoothing with certification (Cohen, Rosenfeld & Kolter 2019).

Cohen, J., Rosenfeld, E. & Kolter, J. Z. "Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019 (arXiv 1902.02918). The smoothed classifier is ``g(x) = argmax_c P(f(x + η) = c)`` with
``η ~ N(0, σ²I)``. If the top class ``c_A`` has probability ``p_A ≥ p̲_A > 1/2``, then ``g`` is constant on
the L2 ball of radius ``R = σ·Φ⁻¹(p̲_A)`` around ``x`` (Theorem 1 with ``p_B = 1 − p_A``).

* Training (:class:`GaussianNoiseTraining`): cross-entropy on ``x + η`` (Cohen et al. train on noisy
  inputs only, no clamping).
* :meth:`SmoothedClassifier.predict` (Cohen's PREDICT): count the classes of ``n`` noisy copies; return
  the top class if a two-sided binomial test of the top two counts rejects equality at level α,
  else abstain (``-1``).
* :meth:`SmoothedClassifier.certify` (Cohen's CERTIFY): guess ``c_A`` from ``n0`` noisy copies, count it in
  ``n`` fresh copies, take the one-sided Clopper-Pearson lower bound ``p̲_A = Beta⁻¹(α; n_A, n − n_A + 1)``;
  abstain if ``p̲_A < 1/2``, else return ``c_A`` and ``R = σ·Φ⁻¹(p̲_A)``.

The radius is in input units (L2 over all leads and samples). For ECG in mV it is also reported in µV
(``radius_uV = 1000 · R``). The certificate holds with probability at least ``1 − α`` over the sampling.
Written from the paper (ART's ``PyTorchRandomizedSmoothing.certify`` was read for its interface only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import nn

from medrobust.attacks import frozen_eval
from medrobust.data.base import ECGDataset
from medrobust.checks import check_float, check_int
from medrobust.defenses.base import DefenseTrainer, masked
from medrobust.defenses.registry import register_defense
from medrobust.errors import DataError
from medrobust.train.trainer import TrainConfig

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 − α`` Clopper-Pearson lower confidence bound of a binomial proportion."""
    if successes <= 0:
        return 0.0
    return float(beta_dist.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """``σ·Φ⁻¹(p̲_A)`` (Cohen et al., Theorem 1); 0 when ``p̲_A ≤ 1/2``."""
    if p_lower <= 0.5:
        return 0.0
    return float(sigma * norm.ppf(p_lower))


@dataclass
class CertifyResult:
    """Output of :meth:`SmoothedClassifier.certify` for a batch.

    Attributes
    ----------
    prediction
        ``(N,)`` class of the smoothed classifier, ``-1`` where it abstains.
    radius
        ``(N,)`` certified L2 radius in input units (0 where abstaining).
    p_lower
        ``(N,)`` Clopper-Pearson lower bound of ``p_A``.
    counts
        ``(N, K)`` class counts of the ``n`` noisy copies used for the bound.
    sigma, n0, n, alpha, units
        Settings.
    radius_uV
        ``(N,)`` radius in µV when ``units`` is ``"mV"`` (``None`` otherwise).
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    counts: torch.Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    units: str | None = None
    radius_uV: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> torch.Tensor:
        """``(N,)`` bool: no certificate."""
        return self.prediction == ABSTAIN

    def certified_accuracy(self, y: torch.Tensor, radius: float = 0.0) -> float:
        """Fraction of samples predicted correctly with a certified radius ``≥ radius``."""
        ok = (self.prediction == y.to(self.prediction.device)) & (self.radius >= radius)
        return float(ok.double().mean())


class SmoothedClassifier:
    """The Gaussian-smoothed version ``g`` of a base classifier ``f`` (Cohen et al., ICML 2019).

    Parameters
    ----------
    model
        Base classifier returning logits (evaluated in eval mode with frozen parameters).
    sigma
        Noise standard deviation σ in input units.
    batch_size
        Noisy copies per forward pass.
    units
        Input units (e.g. ``dataset.meta.units``); ``"mV"`` adds µV radii.

    Examples
    --------
    >>> g = SmoothedClassifier(model, sigma=0.05, units="mV")                       # doctest: +SKIP
    >>> res = g.certify(x, n0=100, n=10000, alpha=0.001,
    ...                 generator=torch.Generator().manual_seed(0))                  # doctest: +SKIP
    >>> res.prediction, res.radius_uV                                                # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, sigma: float, batch_size: int = 1000, units: str | None = None) -> None:
        self.model = model
        self.sigma = check_float(sigma, "sigma", minimum=0.0, strict=True)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.units = units

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
            raise DataError("x must be a non-empty floating-point batch (N, ...), e.g. (N, leads, samples).")
        if not bool(torch.isfinite(x).all()):
            raise DataError("x contains NaN or inf; clean those samples before certifying.")

    def sample_counts(self, x: torch.Tensor, n: int, *, generator: torch.Generator) -> torch.Tensor:
        """``(N, K)`` class counts of ``f(x_i + η)`` over ``n`` noise draws per sample."""
        self._check(x)
        n = check_int(n, "n", minimum=1)
        out: list[torch.Tensor] = []
        with frozen_eval(self.model), torch.no_grad():
            for xi in x:
                counts: torch.Tensor | None = None
                left = n
                while left > 0:
                    b = min(self.batch_size, left)
                    noise = torch.randn((b, *xi.shape), generator=generator, device=generator.device,
                                        dtype=torch.float32).to(xi)
                    logits = self.model(xi.unsqueeze(0) + self.sigma * noise)
                    c = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).cpu()
                    counts = c if counts is None else counts + c
                    left -= b
                assert counts is not None
                out.append(counts)
        return torch.stack(out)

    def predict(self, x: torch.Tensor, *, n: int = 100, alpha: float = 0.001,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Cohen's PREDICT: the top class, or ``-1`` if a binomial test cannot separate the top two at level α."""
        alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0, strict=True)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        counts = self.sample_counts(x, n, generator=gen)
        top2 = counts.topk(2, dim=1)
        pred = torch.full((x.shape[0],), ABSTAIN, dtype=torch.long)
        for i in range(x.shape[0]):
            na, nb = int(top2.values[i, 0]), int(top2.values[i, 1])
            if binomtest(na, na + nb, 0.5).pvalue <= alpha:
                pred[i] = int(top2.indices[i, 0])
        return pred

    def certify(self, x: torch.Tensor, *, n0: int = 100, n: int = 10000, alpha: float = 0.001,
                generator: torch.Generator | None = None) -> CertifyResult:
        """Cohen's CERTIFY for every sample of ``x``.

        Parameters
        ----------
        x
            Batch ``(N, ...)``.
        n0
            Noisy copies used to choose the candidate class ``c_A``.
        n
            Independent noisy copies used for the Clopper-Pearson bound of ``p_A``.
        alpha
            Failure probability of each certificate.
        generator
            Source of the noise (default: seeded with 0).

        Returns
        -------
        CertifyResult
        """
        alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0, strict=True)
        n0 = check_int(n0, "n0", minimum=1)
        n = check_int(n, "n", minimum=1)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        guess = self.sample_counts(x, n0, generator=gen).argmax(1)
        counts = self.sample_counts(x, n, generator=gen)
        pred = torch.full((x.shape[0],), ABSTAIN, dtype=torch.long)
        radius = torch.zeros(x.shape[0], dtype=torch.float64)
        p_low = torch.zeros(x.shape[0], dtype=torch.float64)
        for i in range(x.shape[0]):
            c = int(guess[i])
            pl = clopper_pearson_lower(int(counts[i, c]), n, alpha)
            p_low[i] = pl
            if pl >= 0.5:
                pred[i] = c
                radius[i] = certified_radius(pl, self.sigma)
        uv = radius * 1000.0 if self.units == "mV" else None
        return CertifyResult(prediction=pred, radius=radius, p_lower=p_low, counts=counts, sigma=self.sigma, n0=n0,
                             n=n, alpha=alpha, units=self.units, radius_uV=uv)


@register_defense("smoothing")
class GaussianNoiseTraining(DefenseTrainer):
    """Training of the base classifier of randomized smoothing: CE on ``x + N(0, σ²I)`` (Cohen et al. 2019).

    Parameters
    ----------
    model, config, out_dir, generator
        See :class:`~medrobust.defenses.base.DefenseTrainer`.
    sigma
        Noise standard deviation in input units (Cohen et al. use 0.12–1.0 on [0, 1] images; on
        MIT-BIH beats in [0, 1] smaller values such as 0.05 keep clean accuracy). Certify with the
        same σ: ``SmoothedClassifier(model, sigma=σ)``.
    noise_fraction
        Fraction of each batch that receives noise (1: Cohen et al.).
    """

    name = "smoothing"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        generator: torch.Generator | None = None,
        sigma: float = 0.12,
        noise_fraction: float = 1.0,
    ) -> None:
        super().__init__(model, config, out_dir=out_dir, generator=generator)
        self.sigma = check_float(sigma, "sigma", minimum=0.0, strict=True)
        self.noise_fraction = check_float(noise_fraction, "noise_fraction", minimum=0.0, maximum=1.0)
        self.hp = {"sigma": self.sigma, "noise_fraction": self.noise_fraction, "noise": "gaussian, unclamped"}

    def prepare(self, train: ECGDataset) -> None:
        self.check_scale(self.sigma, "sigma")
        self.hp["units"] = train.meta.units

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = x + masked(self.sigma * self.randn_like(x), mask)
        if self.noise_fraction < 1.0:
            keep = (torch.rand(x.shape[0], generator=self.generator) < self.noise_fraction).to(x.device)
            noisy = torch.where(keep.view(-1, *[1] * (x.ndim - 1)), noisy, x)
        logits = self.forward(noisy, mask)
        return F.cross_entropy(logits, y, weight=self.loss_weights), logits
