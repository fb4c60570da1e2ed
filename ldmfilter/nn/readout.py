"""Read-outs from the filter's state to targets, with closed-form uncertainty."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fit_affine", "LinearReadout", "MIN_NOISE_FRACTION"]

MIN_NOISE_FRACTION = 0.05


def fit_affine(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares affine map from features to targets, in float64.

    Parameters
    ----------
    features : Tensor, shape (*lead, F)
    targets : Tensor, shape (*lead, D)

    Returns
    -------
    Tensor, shape (F + 1, D)
        Weights; the last row is the intercept.
    """
    x = features.detach().reshape(-1, features.shape[-1]).to(torch.float64)
    y = targets.detach().reshape(-1, targets.shape[-1]).to(torch.float64)
    design = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    return torch.linalg.lstsq(design, y, driver="gelsd").solution


class LinearReadout(nn.Module):
    """``y = W h + b + ε``, ``ε ~ N(0, Σ)``, fitted on detached filtered state means.

    Pushing a state belief ``N(m, P)`` through it gives ``N(W m + b, W P Wᵀ + Σ)`` exactly.
    ``Σ`` is the covariance of the training residuals minus the average state uncertainty that
    the read-out already propagates (``W P̄ Wᵀ``), floored at a small fraction of the residual
    variance (eigenvalues at least ``MIN_NOISE_FRACTION`` of the smallest residual variance), so
    that the state uncertainty is not counted twice.

    Parameters
    ----------
    weight : Tensor, shape (D, S)
    bias : Tensor, shape (D,)
    noise_cov : Tensor, shape (D, D)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_cov: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("noise_cov", noise_cov)

    @classmethod
    def fit(cls, state_mean: torch.Tensor, targets: torch.Tensor, state_cov: torch.Tensor | None = None) -> "LinearReadout":
        """Fit on filtered states.

        Parameters
        ----------
        state_mean : Tensor, shape (*lead, S)
        targets : Tensor, shape (*lead, D)
        state_cov : Tensor, shape (*lead, S, S), optional
            The states' covariances; their average propagated part is removed from the
            residual covariance.

        Returns
        -------
        LinearReadout
        """
        if state_mean.shape[:-1] != targets.shape[:-1]:
            raise ValueError(
                f"state_mean {tuple(state_mean.shape)} and targets {tuple(targets.shape)} must share leading axes"
            )
        coef = fit_affine(state_mean, targets)
        weight, bias = coef[:-1].mT.contiguous(), coef[-1].clone()
        x = state_mean.detach().reshape(-1, state_mean.shape[-1]).to(torch.float64)
        y = targets.detach().reshape(-1, targets.shape[-1]).to(torch.float64)
        residual = y - (x @ weight.mT + bias)
        noise = residual.mT @ residual / max(residual.shape[0] - coef.shape[0], 1)
        if state_cov is not None:  # Cov(residual) = W P̄ Wᵀ + Σ
            mean_cov = state_cov.detach().reshape(-1, *state_cov.shape[-2:]).to(torch.float64).mean(0)
            values, vectors = torch.linalg.eigh(noise - weight @ mean_cov @ weight.mT)
            values = values.clamp_min(MIN_NOISE_FRACTION * float(noise.diagonal().min()))
            noise = (vectors * values) @ vectors.mT
        return cls(weight, bias, 0.5 * (noise + noise.mT))

    def forward(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of the targets: mean (*lead, D) and covariance (*lead, D, D)."""
        W = self.weight.to(mean.dtype)
        out_mean = mean @ W.mT + self.bias.to(mean.dtype)
        out_cov = W @ cov @ W.mT + self.noise_cov.to(mean.dtype)
        return out_mean, 0.5 * (out_cov + out_cov.mT)
