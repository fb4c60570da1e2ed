"""One Kalman step at a time: predict, covariance update, mean update, log-likelihood.

These are the only implementations of the Kalman equations in the package; the sequential, the
shared-covariance and the nonlinear filters all call them.  Every function is batched over any
leading axes (which broadcast) and differentiable.
"""

from __future__ import annotations

import math

import torch

from .linalg import cholesky, cholesky_solve, logdet_from_cholesky, matmul, matmul_add, symmetrize, triangular_solve

__all__ = [
    "predict",
    "predict_cov",
    "predict_observation",
    "update_covariance",
    "UPDATE_DTYPE",
    "linear_observation_moments",
    "is_selection",
    "condition",
    "whitened_condition",
    "update_mean",
    "innovation_log_likelihood",
    "mask_observation_model",
]


def predict(mean, cov, transition_matrix, transition_cov, transition_offset=None):
    """Time update ``m⁻ = A m + c``, ``P⁻ = A P Aᵀ + Q``.

    Parameters
    ----------
    mean : Tensor, shape (*batch, S)
    cov : Tensor, shape (*batch, S, S)
    transition_matrix, transition_cov : Tensor, shape (*batch, S, S)
    transition_offset : Tensor, shape (*batch, S), optional

    Returns
    -------
    mean : Tensor, shape (*batch, S)
    cov : Tensor, shape (*batch, S, S)
    """
    pred_mean = (transition_matrix @ mean.unsqueeze(-1)).squeeze(-1)  # m⁻ = A m + c
    if transition_offset is not None:
        pred_mean = pred_mean + transition_offset
    return pred_mean, predict_cov(cov, transition_matrix, transition_cov)


def predict_cov(cov, transition_matrix, transition_cov):
    """Covariance half of the time update, ``P⁻ = A P Aᵀ + Q`` (symmetrised).

    Parameters
    ----------
    cov : Tensor, shape (*batch, S, S)
    transition_matrix, transition_cov : Tensor, shape (*batch, S, S)

    Returns
    -------
    Tensor, shape (*batch, S, S)
    """
    A = transition_matrix
    return symmetrize(matmul_add(transition_cov, matmul(A, cov), A.mT))  # P⁻ = A P Aᵀ + Q


def predict_observation(pred_mean, pred_cov, observation_matrix, observation_cov):
    """One-step predictive distribution of the observation, ``N(H m⁻, H P⁻ Hᵀ + R)``.

    Parameters
    ----------
    pred_mean : Tensor, shape (*batch, S)
    pred_cov : Tensor, shape (*batch, S, S)
    observation_matrix : Tensor, shape (*batch, L, S)
    observation_cov : Tensor, shape (*batch, L, L)

    Returns
    -------
    mean : Tensor, shape (*batch, L)
    cov : Tensor, shape (*batch, L, L)
    """
    H = observation_matrix
    mean = (H @ pred_mean.unsqueeze(-1)).squeeze(-1)  # ẑ = H m⁻
    cov = symmetrize(matmul_add(observation_cov, matmul(H, pred_cov), H.mT))  # Σ_e = H P⁻ Hᵀ + R
    return mean, cov


UPDATE_DTYPE = torch.float64  # the covariance update's working precision for lower-precision inputs


def update_covariance(pred_cov, observation_matrix, observation_cov):
    """Covariance half of the Kalman update (independent of the data).

    Computed in float64 when the inputs are of lower precision (results in the input dtype):
    in float32 the Joseph form loses positive semi-definiteness once ``P⁻`` spans more than
    ~1e6 in its eigenvalues (a well-observed and a barely observed direction, near-singular
    ``Q`` and ``R``), and the filter then diverges within tens of steps.  In float64 the same
    update stays positive semi-definite; the cost is a few casts of small tensors.

    Parameters
    ----------
    pred_cov : Tensor, shape (*batch, S, S)
        Predicted covariance ``P⁻``.
    observation_matrix : Tensor, shape (*batch, L, S)
    observation_cov : Tensor, shape (*batch, L, L)

    Returns
    -------
    cov : Tensor, shape (*batch, S, S)
        Filtered covariance, Joseph form.
    gain : Tensor, shape (*batch, S, L)
        Kalman gain ``K``.
    innovation_chol : Tensor, shape (*batch, L, L)
        Lower Cholesky factor of the innovation covariance ``Σ_e``.
    """
    dtype = pred_cov.dtype
    if torch.finfo(dtype).bits < torch.finfo(UPDATE_DTYPE).bits:
        work = (pred_cov.to(UPDATE_DTYPE), observation_matrix.to(UPDATE_DTYPE), observation_cov.to(UPDATE_DTYPE))
        return tuple(x.to(dtype) for x in _joseph_update(*work))
    return _joseph_update(pred_cov, observation_matrix, observation_cov)


def _joseph_update(pred_cov, observation_matrix, observation_cov):
    """:func:`update_covariance` in the inputs' own dtype."""
    H, R = observation_matrix, observation_cov
    HP = matmul(H, pred_cov)
    innovation_cov = matmul_add(R, HP, H.mT)  # Σ_e = H P⁻ Hᵀ + R
    chol = cholesky(innovation_cov, "innovation covariance H P⁻ Hᵀ + R")
    gain = cholesky_solve(HP, chol).mT  # K = P⁻ Hᵀ Σ_e⁻¹
    eye = torch.eye(pred_cov.shape[-1], dtype=pred_cov.dtype, device=pred_cov.device)
    residual = matmul_add(eye, gain, H, alpha=-1.0)  # I − K H
    noise_term = matmul(matmul(gain, R), gain.mT)
    cov = symmetrize(matmul_add(noise_term, matmul(residual, pred_cov), residual.mT))  # (I−KH) P⁻ (I−KH)ᵀ + K R Kᵀ
    return cov, gain, chol


def is_selection(observation_matrix) -> bool:
    """Whether ``H`` is one shared ``[I_L 0]`` (the latent filter's), for which
    :func:`linear_observation_moments` takes slices instead of products."""
    H = observation_matrix
    return H.ndim == 2 and torch.equal(H, torch.eye(*H.shape, dtype=H.dtype, device=H.device))


def linear_observation_moments(pred_mean, pred_cov, observation_matrix, observation_cov, observation, selects=False):
    """Moments of a linear observation ``z = H x + v`` under the predicted belief, for :func:`condition`.

    Parameters
    ----------
    pred_mean : Tensor, shape (*batch, S)
    pred_cov : Tensor, shape (*batch, S, S)
    observation_matrix : Tensor, shape (*batch, L, S)
    observation_cov : Tensor, shape (*batch, L, L)
    observation : Tensor, shape (*batch, L)
    selects : bool
        ``H = [I_L 0]`` (:func:`is_selection`): the same moments by slicing.

    Returns
    -------
    cross_cov : Tensor, shape (*batch, S, L)
        ``Cov[x, z] = P⁻ Hᵀ``.
    innovation_cov : Tensor, shape (*batch, L, L)
        ``Σ_e = H P⁻ Hᵀ + R``.
    innovation : Tensor, shape (*batch, L)
        ``e = z − H m⁻``.
    """
    H = observation_matrix
    if selects:
        obs_dim = H.shape[-2]
        cross = pred_cov[..., :obs_dim]
        return cross, cross[..., :obs_dim, :] + observation_cov, observation - pred_mean[..., :obs_dim]
    cross = matmul(pred_cov, H.mT)  # Cov[x, z] = P⁻ Hᵀ
    innovation = observation - (H @ pred_mean.unsqueeze(-1)).squeeze(-1)  # e = z − H m⁻
    return cross, matmul_add(observation_cov, H, cross), innovation  # Σ_e = H Cov[x, z] + R


def condition(pred_mean, pred_cov, cross_cov, innovation_cov, innovation):
    """Gaussian conditioning on an observation given its predicted moments, in whitened form.

    With ``Σ_e = C Cᵀ`` (Cholesky), ``W = C⁻¹ Cov[x, z]ᵀ`` and ``w = C⁻¹ e`` (one triangular
    solve with ``S + 1`` right-hand sides)::

        m = m⁻ + Wᵀ w      (= m⁻ + K e)
        P = P⁻ − Wᵀ W      (= P⁻ − K Σ_e Kᵀ)

    No gain or inverse is formed: about half the operations of :func:`update_covariance` plus
    :func:`update_mean`, which matters in the nonlinear filter's per-series loop (paid at every
    step, forward and backward).  The downdate is the standard form, so callers in float32 run it
    in :data:`UPDATE_DTYPE`.  For a linear observation ``z = H x + v``: ``Cov[x, z] = P⁻ Hᵀ``,
    ``Σ_e = H P⁻ Hᵀ + R``, ``e = z − H m⁻``.

    Parameters
    ----------
    pred_mean : Tensor, shape (*batch, S)
    pred_cov : Tensor, shape (*batch, S, S)
    cross_cov : Tensor, shape (*batch, S, L)
        ``Cov[x, z]`` under the predicted belief; the same batch axes as ``innovation``.
    innovation_cov : Tensor, shape (*batch, L, L)
        ``Σ_e = Cov[z]`` (including the observation noise).
    innovation : Tensor, shape (*batch, L)
        ``e = z − E[z]``.

    Returns
    -------
    mean : Tensor, shape (*batch, S)
    cov : Tensor, shape (*batch, S, S)
    innovation_chol : Tensor, shape (*batch, L, L)
        Lower Cholesky factor of ``Σ_e``.
    """
    return whitened_condition(pred_mean, pred_cov, cross_cov, innovation_cov, innovation)[:3]


def whitened_condition(pred_mean, pred_cov, cross_cov, innovation_cov, innovation):
    """:func:`condition`, also returning the whitened block ``[W | w] = C⁻¹ [Cov[x, z]ᵀ | e]``
    (*batch, L, S + 1) that its reverse (:func:`~.adjoints.condition_adjoint`) starts from."""
    chol = cholesky(innovation_cov, "innovation covariance")
    whitened = triangular_solve(chol, torch.cat([cross_cov.mT, innovation.unsqueeze(-1)], -1))  # [W | w]
    white, white_innovation = whitened.split([pred_cov.shape[-1], 1], -1)
    mean = pred_mean + (white * white_innovation).sum(-2)  # m = m⁻ + Wᵀ w
    # P = P⁻ − Wᵀ W, symmetrised: under expanding Jacobians the rounding asymmetry otherwise grows
    # over long runs until the downdate loses definiteness
    cov = symmetrize(matmul_add(pred_cov, white.mT, white, alpha=-1.0))
    return mean, cov, chol, whitened


def update_mean(pred_mean, gain, observation, observation_matrix):
    """Mean half of the Kalman update.

    Parameters
    ----------
    pred_mean : Tensor, shape (*batch, S)
    gain : Tensor, shape (*batch, S, L)
    observation : Tensor, shape (*batch, L)
    observation_matrix : Tensor, shape (*batch, L, S)

    Returns
    -------
    mean : Tensor, shape (*batch, S)
        ``m = m⁻ + K e``.
    innovation : Tensor, shape (*batch, L)
        ``e = z − H m⁻``.
    """
    innovation = observation - (observation_matrix @ pred_mean.unsqueeze(-1)).squeeze(-1)  # e = z − H m⁻
    mean = pred_mean + (gain @ innovation.unsqueeze(-1)).squeeze(-1)  # m = m⁻ + K e
    return mean, innovation


def innovation_log_likelihood(innovation, innovation_chol, num_observed):
    """Gaussian log-density of innovations: ``−½ (eᵀ Σ_e⁻¹ e + log|Σ_e| + n log 2π)``.

    Parameters
    ----------
    innovation : Tensor, shape (*lead, *batch, L)
    innovation_chol : Tensor, shape (*batch, L, L)
        Lower Cholesky factor of ``Σ_e``.  When it lacks the leading axes ``*lead`` of the
        innovations (a factor shared by several series), each factor is applied once to all
        series' innovations at the same time (one triangular solve with many right-hand sides).
    num_observed : Tensor or int, broadcastable to (*lead, *batch)
        Number of observed components ``n`` (masked components carry unit variance and zero
        innovation, contributing nothing but the ``log 2π`` term this count removes).

    Returns
    -------
    Tensor, shape (*lead, *batch)
    """
    shared_ndim = innovation_chol.ndim - 2
    lead = innovation.shape[: innovation.ndim - 1 - shared_ndim]
    rhs = innovation.reshape((-1,) + innovation.shape[len(lead):]).movedim(0, -1)  # (*batch, L, N)
    chol = innovation_chol.expand(rhs.shape[:-2] + innovation_chol.shape[-2:])
    white = triangular_solve(chol, rhs)
    mahalanobis = white.square().sum(-2).movedim(-1, 0).reshape(lead + rhs.shape[:-2])
    count = torch.as_tensor(num_observed, dtype=innovation.dtype, device=innovation.device)
    return -0.5 * (mahalanobis + logdet_from_cholesky(chol) + count * math.log(2 * math.pi))


def mask_observation_model(observation_matrix, observation_cov, observed):
    """Drop missing components from the observation model without changing shapes.

    Rows of ``H`` for missing components become zero, and so do the rows and columns of ``R``,
    whose diagonal entry becomes one.  The innovation of such a component is then zero with unit
    variance and uncorrelated with the rest, so its gain column vanishes: the update conditions
    exactly on the observed components, and the log-likelihood gains only the ``log 2π`` term that
    :func:`innovation_log_likelihood` removes through ``num_observed``.

    Parameters
    ----------
    observation_matrix : Tensor, shape (*batch, L, S), batch axes broadcasting
    observation_cov : Tensor, shape (*batch, L, L), batch axes broadcasting
    observed : Tensor, shape (*batch, L), bool

    Returns
    -------
    observation_matrix : Tensor, shape (*batch, L, S)
        With the broadcast batch axes (a static ``H`` and a ``(T, L)`` mask give ``(T, L, S)``).
    observation_cov : Tensor, shape (*batch, L, L)
    """
    weight = observed.to(observation_matrix.dtype)
    masked_H = observation_matrix * weight.unsqueeze(-1)
    masked_R = observation_cov * (weight.unsqueeze(-1) * weight.unsqueeze(-2)) + torch.diag_embed(1.0 - weight)
    return masked_H, masked_R
