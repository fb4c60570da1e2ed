"""Rauch–Tung–Striebel smoothing of a Kalman filter's output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kalman import FilterResult
from .linalg import cholesky, cholesky_solve, symmetrize
from .validation import check_matrix, check_psd

__all__ = ["SmootherResult", "kalman_smoother"]


@dataclass(frozen=True)
class SmootherResult:
    """Smoothed marginals ``p(x_t | z_{0:T-1})``.

    Attributes
    ----------
    smoothed_mean : Tensor, shape (*batch, T, S)
    smoothed_cov : Tensor, shape (*batch, T, S, S)
    lag_one_cov : Tensor, shape (*batch, T-1, S, S)
        Entry ``t`` is ``Cov(x_{t+1}, x_t | z_{0:T-1})`` (used by EM).
    """

    smoothed_mean: torch.Tensor
    smoothed_cov: torch.Tensor
    lag_one_cov: torch.Tensor


def kalman_smoother(result: FilterResult, transition_matrix, transition_cov) -> SmootherResult:
    """RTS smoother over the stored filtered and predicted beliefs.

    With ``G_t = P_t A_{t+1}ᵀ (P⁻_{t+1})⁻¹`` (a Cholesky solve)::

        m^s_t = m_t + G_t (m^s_{t+1} − m⁻_{t+1})
        P^s_t = (I − G_t A_{t+1}) P_t (I − G_t A_{t+1})ᵀ + G_t Q_{t+1} G_tᵀ + G_t P^s_{t+1} G_tᵀ

    The covariance line is the Joseph-like form of ``P_t + G_t (P^s_{t+1} − P⁻_{t+1}) G_tᵀ``: a
    sum of positive semi-definite terms, so smoothed covariances stay PSD by construction.  The
    gains do not depend on the smoothed values and are computed for all steps at once.

    Parameters
    ----------
    result : FilterResult
        Output of :func:`~ldmfilter.gaussian.kalman_filter`.
    transition_matrix : Tensor, shape (S, S) or (*batch, T, S, S)
        The same ``A`` that was given to the filter.
    transition_cov : Tensor, shape (S, S) or (*batch, T, S, S)
        The same ``Q``.

    Returns
    -------
    SmootherResult
    """
    if not isinstance(result, FilterResult):
        raise TypeError(f"result must be the FilterResult of kalman_filter, got {type(result).__name__}")
    means, covs = result.filtered_mean, result.filtered_cov
    batch_shape, steps, state_dim = tuple(means.shape[:-2]), means.shape[-2], means.shape[-1]
    args = (state_dim, state_dim, steps, batch_shape, means.dtype, means.device)
    A = check_matrix(transition_matrix, "transition_matrix", *args)
    Q = check_matrix(transition_cov, "transition_cov", *args)
    check_psd(Q, "transition_cov")
    if steps == 1:
        return SmootherResult(means, covs, covs.new_zeros(batch_shape + (0, state_dim, state_dim)))

    shared = result.shared_covariance and A.ndim <= 3 and Q.ndim <= 3
    pred_means, pred_covs = result.predicted_mean, result.predicted_cov
    if shared:  # one (T, S, S) covariance sequence for the whole batch
        index = (0,) * len(batch_shape)
        covs, pred_covs = covs[index], pred_covs[index]
    A_next = A[..., 1:, :, :] if A.ndim > 2 else A
    Q_next = Q[..., 1:, :, :] if Q.ndim > 2 else Q
    transported = A_next @ covs[..., :-1, :, :]  # A_{t+1} P_t
    gains = cholesky_solve(transported, cholesky(pred_covs[..., 1:, :, :], "predicted covariance")).mT  # G_t
    eye = torch.eye(state_dim, dtype=means.dtype, device=means.device)
    residual = eye - gains @ A_next
    base = residual @ covs[..., :-1, :, :] @ residual.mT + gains @ Q_next @ gains.mT
    offsets = means[..., :-1, :] - (gains @ pred_means[..., 1:, :].unsqueeze(-1)).squeeze(-1)  # m_t − G_t m⁻_{t+1}

    cov, mean = covs[..., -1, :, :], means[..., -1, :]
    smoothed_covs, smoothed_means = [cov], [mean]
    for t in range(steps - 2, -1, -1):
        gain = gains[..., t, :, :]
        cov = symmetrize(base[..., t, :, :] + gain @ cov @ gain.mT)
        mean = offsets[..., t, :] + (gain @ mean.unsqueeze(-1)).squeeze(-1)
        smoothed_covs.append(cov)
        smoothed_means.append(mean)
    smoothed_cov = torch.stack(smoothed_covs[::-1], -3)
    lag_one = smoothed_cov[..., 1:, :, :] @ gains.mT  # Cov(x_{t+1}, x_t) = P^s_{t+1} G_tᵀ
    if shared:
        smoothed_cov = smoothed_cov.expand(batch_shape + smoothed_cov.shape)
        lag_one = lag_one.expand(batch_shape + lag_one.shape)
    return SmootherResult(torch.stack(smoothed_means[::-1], -2), smoothed_cov, lag_one)
