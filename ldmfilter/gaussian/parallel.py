"""Parallel-in-time Kalman filter (associative scan).

After Särkkä & García-Fernández (2021), "Temporal parallelization of Bayesian smoothers".  Each
step ``t`` becomes an element ``(E, b, C, η, J)`` describing ``p(x_t | x_{t-1}, z_t)`` as the
affine-Gaussian map ``x_t = E x_{t-1} + b + N(0, C)`` together with the information
``(η, J)`` that ``z_t`` carries about ``x_{t-1}``.  Elements combine associatively; an inclusive
scan yields the filtered means ``b`` and covariances ``C`` of every step in ``⌈log₂ T⌉`` rounds
of batched linear algebra.  Predicted moments and log-likelihoods are then computed for all
steps at once.  The per-element quantities are computed with the same update functions as the
sequential filter (:mod:`ldmfilter.gaussian.steps`).
"""

from __future__ import annotations

import dataclasses

import torch

from .kalman import FilterResult
from .linalg import NotPositiveDefiniteError, cholesky, cholesky_solve, symmetrize
from .steps import (
    UPDATE_DTYPE,
    innovation_log_likelihood,
    mask_observation_model,
    predict,
    predict_observation,
    update_covariance,
    update_mean,
)
from .validation import LinearGaussianModel

__all__ = ["parallel_filter"]


def _full(param: torch.Tensor, batch_shape: tuple, steps: int, core_ndim: int) -> torch.Tensor:
    """Broadcast a static or time-varying parameter to (*batch, T, *core)."""
    core = param.shape[-core_ndim:]
    if param.ndim == core_ndim:
        param = param.expand((steps,) + core)
    return param.expand(batch_shape + (steps,) + core)


def _elements(model: LinearGaussianModel, H: torch.Tensor, R: torch.Tensor):
    """The scan's elements for every step, each of shape (*batch, T, ...)."""
    batch_shape, steps = model.batch_shape, model.num_steps
    state_dim = model.initial_mean.shape[-1]
    A = _full(model.transition_matrix, batch_shape, steps, 2)
    Q = _full(model.transition_cov, batch_shape, steps, 2)
    c = model.transition_offset
    c = torch.zeros(state_dim, dtype=A.dtype, device=A.device) if c is None else c
    c = _full(c, batch_shape, steps, 1)
    z = model.observations

    # Steps t ≥ 1: condition x_t = A x_{t-1} + c + w on z_t, as a function of x_{t-1}.
    cov, gain, chol = update_covariance(Q[..., 1:, :, :], H[..., 1:, :, :], R[..., 1:, :, :])
    offset, innovation = update_mean(c[..., 1:, :], gain, z[..., 1:, :], H[..., 1:, :, :])
    eye = torch.eye(state_dim, dtype=A.dtype, device=A.device)
    transition = (eye - gain @ H[..., 1:, :, :]) @ A[..., 1:, :, :]  # E = (I − K H) A
    HA = H[..., 1:, :, :] @ A[..., 1:, :, :]
    eta = (HA.mT @ cholesky_solve(innovation.unsqueeze(-1), chol)).squeeze(-1)  # η = (HA)ᵀ Σ⁻¹ (z − H c)
    info = symmetrize(HA.mT @ cholesky_solve(HA, chol))  # J = (HA)ᵀ Σ⁻¹ H A

    # Step 0: condition the prior on z_0; it does not depend on an earlier state.
    prior_mean = model.initial_mean.expand(batch_shape + (state_dim,))
    prior_cov = model.initial_cov.expand(batch_shape + (state_dim, state_dim))
    cov0, gain0, _ = update_covariance(prior_cov, H[..., 0, :, :], R[..., 0, :, :])
    mean0, _ = update_mean(prior_mean, gain0, z[..., 0, :], H[..., 0, :, :])
    zero = torch.zeros_like(cov0)

    def cat(first, rest):
        return torch.cat([first.unsqueeze(len(batch_shape)), rest], len(batch_shape))

    return (
        cat(zero, transition),
        cat(mean0, offset),
        cat(cov0, cov),
        cat(torch.zeros_like(mean0), eta),
        cat(zero, info),
    )


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The scan's working precision: float64 for lower-precision inputs (see ``parallel_filter``)."""
    return UPDATE_DTYPE if torch.finfo(dtype).bits < torch.finfo(UPDATE_DTYPE).bits else dtype


def _working_precision(model: LinearGaussianModel) -> LinearGaussianModel:
    """``model`` with its tensors in the scan's working precision."""
    dtype = _work_dtype(model.observations.dtype)
    if dtype == model.observations.dtype:
        return model
    cast = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    cast = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in cast.items()}
    return LinearGaussianModel(**cast)


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``matrix⁻¹ rhs``; NotPositiveDefiniteError (a ValueError) when ``I + C J`` is numerically singular."""
    solution, info = torch.linalg.solve_ex(matrix, rhs)
    if bool(info.any()):
        raise NotPositiveDefiniteError(
            "the parallel scan's I + C J is numerically singular: the model is degenerate at this precision "
            "(e.g. a transition matrix of magnitude near the dtype's range); rescale it, or use parallel=False"
        )
    return solution


def _combine(earlier, later):
    """Associative operator: ``earlier`` (steps up to s) followed by ``later`` (steps s+1..t)."""
    E_i, b_i, C_i, eta_i, J_i = earlier
    E_j, b_j, C_j, eta_j, J_j = later
    eye = torch.eye(E_i.shape[-1], dtype=E_i.dtype, device=E_i.device)
    M = eye + C_i @ J_j  # I + C_i J_j
    V = _solve(M.mT, E_j.mT).mT  # E_j (I + C_i J_j)⁻¹
    U = _solve(M, E_i)  # (I + C_i J_j)⁻¹ E_i, so Uᵀ = E_iᵀ (I + J_j C_i)⁻¹
    E = V @ E_i
    b = (V @ (b_i + (C_i @ eta_j.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1) + b_j
    C = symmetrize(V @ C_i @ E_j.mT + C_j)
    eta = (U.mT @ (eta_j - (J_j @ b_i.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1) + eta_i
    J = symmetrize(U.mT @ J_j @ E_i + J_i)
    return E, b, C, eta, J


def _inclusive_scan(elements, time_axis: int):
    """Hillis–Steele inclusive scan along ``time_axis`` with :func:`_combine`."""
    steps = elements[0].shape[time_axis]
    shift = 1
    while shift < steps:
        earlier = tuple(e.narrow(time_axis, 0, steps - shift) for e in elements)
        later = tuple(e.narrow(time_axis, shift, steps - shift) for e in elements)
        combined = _combine(earlier, later)
        elements = tuple(
            torch.cat([e.narrow(time_axis, 0, shift), c], time_axis) for e, c in zip(elements, combined)
        )
        shift *= 2
    return elements


def parallel_filter(model: LinearGaussianModel) -> FilterResult:
    """Kalman filter by associative scan; same results as the sequential recursion.

    The elements and the scan are computed in float64 for lower-precision inputs (results in the
    input dtype): in float32 the information-form combination loses positive semi-definiteness
    once the covariances span ~1e6 (near-singular ``Q`` and ``R``), and the means then diverge.
    """
    batch_shape, steps = model.batch_shape, model.num_steps
    H = _full(model.observation_matrix, batch_shape, steps, 2)
    R = _full(model.observation_cov, batch_shape, steps, 2)
    num_observed = model.observations.shape[-1]
    if model.observed is not None:
        H, R = mask_observation_model(H, R, model.observed)
        num_observed = model.observed.sum(-1)
    elements = _elements(_working_precision(model), H.to(_work_dtype(H.dtype)), R.to(_work_dtype(R.dtype)))
    _, means, covs, _, _ = _inclusive_scan(elements, len(batch_shape))
    means, covs = means.to(H.dtype), covs.to(H.dtype)

    A = _full(model.transition_matrix, batch_shape, steps, 2)[..., 1:, :, :]
    Q = _full(model.transition_cov, batch_shape, steps, 2)[..., 1:, :, :]
    c = model.transition_offset
    c = None if c is None else _full(c, batch_shape, steps, 1)[..., 1:, :]
    pred_mean, pred_cov = predict(means[..., :-1, :], covs[..., :-1, :, :], A, Q, c)
    state_dim = means.shape[-1]
    prior_mean = model.initial_mean.expand(batch_shape + (state_dim,)).unsqueeze(-2)
    prior_cov = model.initial_cov.expand(batch_shape + (state_dim, state_dim)).unsqueeze(-3)
    pred_mean = torch.cat([prior_mean, pred_mean], -2)
    pred_cov = torch.cat([prior_cov, pred_cov], -3)

    obs_mean, obs_cov = predict_observation(pred_mean, pred_cov, H, R)
    chol = cholesky(obs_cov, "innovation covariance H P⁻ Hᵀ + R")
    innovation = model.observations - obs_mean
    return FilterResult(
        filtered_mean=means,
        filtered_cov=covs,
        predicted_mean=pred_mean,
        predicted_cov=pred_cov,
        log_likelihood=innovation_log_likelihood(innovation, chol, num_observed),
    )
