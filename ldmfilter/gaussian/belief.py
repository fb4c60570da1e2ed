"""Gaussian beliefs: mean and covariance with closed-form marginal summaries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .linalg import cholesky, logdet_from_cholesky, triangular_solve

__all__ = ["GaussianBelief"]


def _probabilities(q, like: torch.Tensor) -> torch.Tensor:
    q = torch.as_tensor(q, dtype=like.dtype, device=like.device)
    if q.ndim > 1:
        raise ValueError(f"q must be a scalar or a 1-D sequence of probabilities, got shape {tuple(q.shape)}")
    if not bool(((q > 0) & (q < 1)).all()):
        raise ValueError(f"q must lie strictly between 0 and 1, got {q.tolist()}")
    return q


@dataclass(frozen=True)
class GaussianBelief:
    """A batch of multivariate Gaussian beliefs ``N(mean, cov)``.

    Parameters
    ----------
    mean : Tensor, shape (*batch, dim)
    cov : Tensor, shape (*batch, dim, dim)
        Symmetric positive (semi-)definite.
    """

    mean: torch.Tensor
    cov: torch.Tensor

    def __post_init__(self):
        if self.mean.ndim < 1 or self.cov.ndim != self.mean.ndim + 1:
            raise ValueError(
                f"GaussianBelief needs mean (*batch, dim) and cov (*batch, dim, dim); got mean "
                f"{tuple(self.mean.shape)} and cov {tuple(self.cov.shape)}"
            )
        dim = self.mean.shape[-1]
        if self.cov.shape[-2:] != (dim, dim) or self.cov.shape[:-2] != self.mean.shape[:-1]:
            raise ValueError(
                f"GaussianBelief: cov shape {tuple(self.cov.shape)} does not match mean shape "
                f"{tuple(self.mean.shape)}; expected {tuple(self.mean.shape) + (dim,)}"
            )

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, shape (*batch, dim)."""
        return self.cov.diagonal(dim1=-2, dim2=-1)

    @property
    def std(self) -> torch.Tensor:
        """Marginal standard deviations, shape (*batch, dim)."""
        return self.variance.clamp_min(0).sqrt()

    def quantiles(self, q) -> torch.Tensor:
        """Closed-form quantiles of each marginal.

        Parameters
        ----------
        q : float or sequence of float
            Probabilities in (0, 1).

        Returns
        -------
        Tensor, shape (len(q), *batch, dim), or (*batch, dim) for a scalar ``q``.
        """
        q = _probabilities(q, self.mean)
        z = torch.special.ndtri(q)
        return self.mean + z.reshape(z.shape + (1,) * self.mean.ndim) * self.std

    def interval(self, coverage: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central interval of each marginal holding ``coverage`` of its mass.

        Parameters
        ----------
        coverage : float in (0, 1)

        Returns
        -------
        lower, upper : Tensor, shape (*batch, dim)
        """
        if not 0.0 < float(coverage) < 1.0:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
        half = (1.0 - float(coverage)) / 2.0
        bounds = self.quantiles([half, 1.0 - half])
        return bounds[0], bounds[1]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Joint log-density of ``value`` under each belief.

        Parameters
        ----------
        value : Tensor, shape (*batch, dim)
            Batch axes broadcast against the belief's.

        Returns
        -------
        Tensor, shape (*batch,)
        """
        dim = self.mean.shape[-1]
        if value.shape[-1:] != (dim,):
            raise ValueError(f"value must end in dimension {dim}, got shape {tuple(value.shape)}")
        factor = cholesky(self.cov, "belief covariance")
        diff = (value - self.mean).unsqueeze(-1)
        factor = factor.expand(diff.shape[:-2] + factor.shape[-2:])
        white = triangular_solve(factor, diff).squeeze(-1)
        return -0.5 * (white.square().sum(-1) + logdet_from_cholesky(factor) + dim * math.log(2 * math.pi))
