"""Result objects returned by the estimators: Gaussian moments as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["GaussianMoments", "FilterResult", "ForecastResult"]


def _probabilities(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if q.ndim > 1 or not np.all((q > 0) & (q < 1)):
        raise ValueError(f"q must be a probability or a 1-D sequence of probabilities in (0, 1), got {q!r}")
    return q


@dataclass(frozen=True)
class GaussianMoments:
    """Marginal Gaussian beliefs ``N(mean, cov)`` over the last axis.

    Attributes
    ----------
    mean : ndarray, shape (*lead, dim)
    cov : ndarray, shape (*lead, dim, dim)
    """

    mean: np.ndarray
    cov: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Marginal standard deviations, shape (*lead, dim)."""
        return np.sqrt(np.clip(np.diagonal(self.cov, axis1=-2, axis2=-1), 0.0, None))

    def quantiles(self, q) -> np.ndarray:
        """Closed-form marginal quantiles: shape (len(q), *lead, dim), or (*lead, dim) for scalar q."""
        q = _probabilities(q)
        z = np.vectorize(NormalDist().inv_cdf)(q)
        return self.mean + np.reshape(z, z.shape + (1,) * self.mean.ndim) * self.std

    def interval(self, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central marginal interval holding ``coverage``: (lower, upper), each (*lead, dim)."""
        if not 0.0 < float(coverage) < 1.0:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
        half = (1.0 - float(coverage)) / 2.0
        lower, upper = self.quantiles([half, 1.0 - half])
        return lower, upper


@dataclass(frozen=True)
class FilterResult(GaussianMoments):
    """Filtered (or smoothed) state beliefs of a batch of series.

    Attributes
    ----------
    mean : ndarray, shape (n_series, T, state_dim)
    cov : ndarray, shape (n_series, T, state_dim, state_dim)
    log_likelihood : ndarray, shape (n_series, T)
        One-step predictive log-density of each step's latent (0 for missing frames); None for
        smoothed results.
    """

    log_likelihood: np.ndarray | None = None


@dataclass(frozen=True)
class ForecastResult(GaussianMoments):
    """State beliefs ``horizon`` steps ahead: mean (n_series, horizon, S), cov (…, S, S)."""
