"""Rauch–Tung–Striebel smoothing of a Kalman filter's output."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .kalman import OVERFLOW, FilterResult
from .linalg import cholesky, cholesky_solve, symmetrize
from .steps import UPDATE_DTYPE
from .validation import check_matrix, check_psd, check_result_finite

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


def _positive_semidefinite(covs: torch.Tensor) -> torch.Tensor:
    """``covs`` (…, S, S) with the matrices that are not PSD to rounding replaced by their
    eigenvalue-clamped versions.

    A filtered covariance spanning more than the dtype's precision (a very diffuse prior next to
    precise observations) is stored indefinite by rounding, and the smoother's Joseph-like form
    stays positive semi-definite only for PSD inputs; applied to the inputs and, as a last
    guard, to the smoothed covariances.  Most matrices pass the Cholesky test and are left as
    they are.
    """
    with torch.no_grad():
        eye = torch.eye(covs.shape[-1], dtype=covs.dtype, device=covs.device)
        scale = covs.abs().amax(dim=(-2, -1), keepdim=True)
        _, info = torch.linalg.cholesky_ex(covs + torch.finfo(covs.dtype).eps * scale * eye)
        bad = info > 0
    if not bool(bad.any()):
        return covs
    values, vectors = torch.linalg.eigh(covs[bad])
    covs = covs.clone()
    covs[bad] = symmetrize((vectors * values.clamp_min(0).unsqueeze(-2)) @ vectors.mT)
    return covs


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

    Notes
    -----
    Computed in float64 for float32 filter results (returned in float32), like the filter's
    covariance update.  Raises ``ValueError`` instead of returning NaN/inf when the smoothed
    moments overflow the dtype.
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
    dtype = means.dtype
    if torch.finfo(dtype).bits < torch.finfo(UPDATE_DTYPE).bits:  # like the filter's update (see steps.UPDATE_DTYPE)
        work = dataclasses.replace(result, **{f.name: getattr(result, f.name).to(UPDATE_DTYPE) for f in dataclasses.fields(result)
                                              if isinstance(getattr(result, f.name), torch.Tensor)})
        smoothed = kalman_smoother(work, A.to(UPDATE_DTYPE), Q.to(UPDATE_DTYPE))
        out = SmootherResult(*(x.to(dtype) for x in (smoothed.smoothed_mean, smoothed.smoothed_cov, smoothed.lag_one_cov)))
        check_result_finite(out.smoothed_mean, "the smoothed mean", -2, OVERFLOW)  # beyond the input dtype's range
        check_result_finite(out.smoothed_cov, "the smoothed covariance", -3, OVERFLOW)
        return out

    shared = result.shared_covariance and A.ndim <= 3 and Q.ndim <= 3
    pred_means, pred_covs = result.predicted_mean, result.predicted_cov
    if shared:  # one (T, S, S) covariance sequence for the whole batch
        index = (0,) * len(batch_shape)
        covs, pred_covs = covs[index], pred_covs[index]
    covs = _positive_semidefinite(covs)
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
    smoothed_cov = _positive_semidefinite(torch.stack(smoothed_covs[::-1], -3))
    lag_one = smoothed_cov[..., 1:, :, :] @ gains.mT  # Cov(x_{t+1}, x_t) = P^s_{t+1} G_tᵀ
    smoothed_mean = torch.stack(smoothed_means[::-1], -2)
    check_result_finite(smoothed_mean, "the smoothed mean", -2, OVERFLOW)
    check_result_finite(smoothed_cov, "the smoothed covariance", -3, OVERFLOW)
    if shared:
        smoothed_cov = smoothed_cov.expand(batch_shape + smoothed_cov.shape)
        lag_one = lag_one.expand(batch_shape + lag_one.shape)
    return SmootherResult(smoothed_mean, smoothed_cov, lag_one)
