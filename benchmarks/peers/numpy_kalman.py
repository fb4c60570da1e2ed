"""Batched numpy Kalman filter: the "fair loop" peer of ``ldmfilter.gaussian.kalman_filter``.

One Python iteration per time step; every iteration works on the whole batch at once with
stacked numpy operations (``(B, S, S)`` covariances, one per series).  The algebra is the
textbook one, written the way a careful numpy user would write it:

* predict ``m⁻ = A m``, ``P⁻ = A P Aᵀ + Q`` (matmul on stacks);
* innovation covariance ``Σ_e = H P⁻ Hᵀ + R``;
* gain from ``np.linalg.solve`` on stacks (no explicit inverse); the same solve also yields
  ``Σ_e⁻¹ e`` for the log-likelihood;
* Joseph-form covariance update ``P = (I − K H) P⁻ (I − K H)ᵀ + K R Kᵀ``;
* log-likelihood ``−½ (n_obs log 2π + log|Σ_e| + eᵀ Σ_e⁻¹ e)`` with ``np.linalg.slogdet``.

Missing data (NaN) is handled by zeroing the missing rows of ``H`` and the missing rows/columns
of ``R`` (with a unit diagonal) and setting the missing innovation components to zero: the
missing components then decouple from the observed ones, contribute nothing to the update, and
contribute ``log|1| = 0`` and ``0`` to the log-determinant and quadratic form.

Conventions match ``ldmfilter``, pykalman and dynamax: ``initial_mean``/``initial_cov`` are the
prior of the state at step 0, so step 0 is an update without a predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NumpyFilterResult", "numpy_kalman_filter"]

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class NumpyFilterResult:
    """Output of :func:`numpy_kalman_filter`.

    Attributes
    ----------
    filtered_mean : ndarray, shape (B, T, S)
    filtered_cov : ndarray, shape (B, T, S, S)
    log_likelihood : ndarray, shape (B, T)
        ``log p(z_t | z_{0:t-1})`` over the observed components (0 for a fully missing step).
    """

    filtered_mean: np.ndarray
    filtered_cov: np.ndarray
    log_likelihood: np.ndarray


def _masked_observation_model(H, R, observed):
    """Per-series ``H`` and ``R`` for one step with the missing components decoupled.

    Parameters
    ----------
    H : ndarray, shape (L, S)
    R : ndarray, shape (L, L)
    observed : ndarray of bool, shape (B, L)

    Returns
    -------
    H_t : ndarray, shape (B, L, S)
        ``H`` with the rows of missing components zeroed.
    R_t : ndarray, shape (B, L, L)
        ``R`` with the rows/columns of missing components zeroed and a unit diagonal there.
    """
    obs = observed.astype(H.dtype)
    H_t = obs[:, :, None] * H
    R_t = obs[:, :, None] * R * obs[:, None, :]
    missing = ~observed
    R_t[:, np.arange(R.shape[0]), np.arange(R.shape[0])] += missing
    return H_t, R_t


def _predict(mean, cov, A, Q):
    """Time update on stacks: ``m⁻ = A m``, ``P⁻ = A P Aᵀ + Q``."""
    mean = mean @ A.T
    cov = A @ cov @ A.T + Q
    return mean, 0.5 * (cov + np.swapaxes(cov, -1, -2))


def _update(mean, cov, z, H, R, eye):
    """Measurement update on stacks, Joseph form, with the step's log-likelihood.

    Parameters
    ----------
    mean : ndarray, shape (B, S)
    cov : ndarray, shape (B, S, S)
    z : ndarray, shape (B, L)
        Observations, zero where missing.
    H : ndarray, shape (L, S) or (B, L, S)
    R : ndarray, shape (L, L) or (B, L, L)
    eye : ndarray, shape (S, S)

    Returns
    -------
    mean : ndarray, shape (B, S)
    cov : ndarray, shape (B, S, S)
    quad_logdet : ndarray, shape (B,)
        ``log|Σ_e| + eᵀ Σ_e⁻¹ e`` (the caller adds ``n_obs log 2π``).
    """
    Ht = np.swapaxes(H, -1, -2)
    HP = H @ cov  # (B, L, S)
    innov_cov = HP @ Ht + R  # Σ_e = H P⁻ Hᵀ + R
    innovation = z - (H @ mean[:, :, None])[..., 0]
    # One solve gives Kᵀ = Σ_e⁻¹ H P⁻ and Σ_e⁻¹ e.
    rhs = np.concatenate([HP, innovation[:, :, None]], axis=-1)
    sol = np.linalg.solve(innov_cov, rhs)
    gain = np.swapaxes(sol[..., :-1], -1, -2)  # (B, S, L)
    weighted = sol[..., -1]  # Σ_e⁻¹ e
    mean = mean + (gain @ innovation[:, :, None])[..., 0]
    I_KH = eye - gain @ H
    cov = I_KH @ cov @ np.swapaxes(I_KH, -1, -2) + gain @ R @ np.swapaxes(gain, -1, -2)
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    _, logdet = np.linalg.slogdet(innov_cov)
    quad = np.einsum("bl,bl->b", innovation, weighted)
    return mean, cov, logdet + quad


def numpy_kalman_filter(observations, A, Q, H, R, initial_mean, initial_cov):
    """Kalman filter over a batch of series, one numpy-vectorised step at a time.

    Parameters
    ----------
    observations : ndarray, shape (B, T, L)
        NaN marks a missing component.
    A, Q : ndarray, shape (S, S)
        Transition matrix and covariance.
    H : ndarray, shape (L, S)
        Observation matrix.
    R : ndarray, shape (L, L)
        Observation covariance.
    initial_mean : ndarray, shape (S,)
        Prior mean of the state at step 0.
    initial_cov : ndarray, shape (S, S)
        Prior covariance of the state at step 0.

    Returns
    -------
    NumpyFilterResult
    """
    batch, steps, obs_dim = observations.shape
    state_dim = A.shape[0]
    observed = ~np.isnan(observations)
    any_missing = not observed.all()
    z_all = np.where(observed, observations, 0.0)
    num_observed = observed.sum(-1)  # (B, T)
    eye = np.eye(state_dim)

    mean = np.broadcast_to(initial_mean, (batch, state_dim)).copy()
    cov = np.broadcast_to(initial_cov, (batch, state_dim, state_dim)).copy()
    means = np.empty((batch, steps, state_dim))
    covs = np.empty((batch, steps, state_dim, state_dim))
    quad_logdet = np.empty((batch, steps))
    for t in range(steps):
        if t > 0:
            mean, cov = _predict(mean, cov, A, Q)
        H_t, R_t = (H, R) if not any_missing else _masked_observation_model(H, R, observed[:, t])
        mean, cov, quad_logdet[:, t] = _update(mean, cov, z_all[:, t], H_t, R_t, eye)
        means[:, t] = mean
        covs[:, t] = cov
    log_likelihood = -0.5 * (num_observed * LOG_2PI + quad_logdet)
    return NumpyFilterResult(filtered_mean=means, filtered_cov=covs, log_likelihood=log_likelihood)
