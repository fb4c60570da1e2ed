"""Marginal Gaussian beliefs as numpy arrays, with closed-form quantiles and intervals."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["GaussianMoments", "probabilities"]


def probabilities(q) -> np.ndarray:
    """``q`` as an array of probabilities in (0, 1) (scalar or 1-D)."""
    q = np.asarray(q, dtype=float)
    if q.ndim > 1 or not np.all((q > 0) & (q < 1)):
        raise ValueError(f"q must be a probability or a 1-D sequence of probabilities in (0, 1), got {q!r}")
    return q


def _coverage(coverage: float) -> float:
    if not 0.0 < float(coverage) < 1.0:
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    return float(coverage)


@dataclass(frozen=True)
class GaussianMoments:
    """Gaussian beliefs ``N(mean, cov)`` over the event axes, for every leading index.

    Attributes
    ----------
    mean : ndarray, shape (*lead, *event)
        ``event`` is ``(D,)`` for vectors, or a frame shape such as ``(H, W)``.
    cov : ndarray, shape (*lead, D, D), or None
        Full covariances (vector events only); None when only marginal variances are kept
        (large observation spaces such as video frames).
    var : ndarray, shape (*lead, *event)
        Marginal variances; derived from ``cov`` when not given.
    names : tuple of str, optional
        Names of the ``D`` variables (vector events).
    """

    mean: np.ndarray
    cov: np.ndarray | None = None
    var: np.ndarray | None = None
    names: tuple | None = None

    def __post_init__(self):
        if self.var is None:
            if self.cov is None:
                raise ValueError("GaussianMoments needs cov or var")
            object.__setattr__(self, "var", np.diagonal(self.cov, axis1=-2, axis2=-1).copy())
        if self.var.shape != self.mean.shape:
            raise ValueError(f"var has shape {self.var.shape}, mean {self.mean.shape}")

    @property
    def std(self) -> np.ndarray:
        """Marginal standard deviations, shape (*lead, *event)."""
        return np.sqrt(np.clip(self.var, 0.0, None))

    def quantiles(self, q) -> np.ndarray:
        """Closed-form marginal quantiles: shape (len(q), *lead, *event), or (*lead, *event) for scalar q."""
        q = probabilities(q)
        z = np.vectorize(NormalDist().inv_cdf, otypes=[float])(q)
        if np.issubdtype(self.mean.dtype, np.floating):
            z = z.astype(self.mean.dtype)  # float32 beliefs give float32 quantiles
        return self.mean + np.reshape(z, z.shape + (1,) * self.mean.ndim) * self.std

    def interval(self, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central marginal interval holding ``coverage``: (lower, upper), each (*lead, *event)."""
        half = (1.0 - _coverage(coverage)) / 2.0
        lower, upper = self.quantiles([half, 1.0 - half])
        return lower, upper
