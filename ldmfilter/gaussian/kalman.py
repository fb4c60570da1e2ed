"""The Kalman filter: public entry point, result type and the per-series sequential recursion.

Model (column vectors; entry ``t`` of a time-varying parameter is used at step ``t``)::

    x_0 ~ N(μ_0, Σ_0)
    x_t = A_t x_{t-1} + c_t + w_t,   w_t ~ N(0, Q_t)      (t ≥ 1)
    z_t = H_t x_t + v_t,             v_t ~ N(0, R_t)

``initial_mean``/``initial_cov`` are the prior of the state at the first step, so step 0 is an
update without a predict (the pykalman / dynamax convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .linalg import broadcast_compact
from .steps import innovation_log_likelihood, mask_observation_model, predict, update_covariance, update_mean
from .validation import LinearGaussianModel, check_result_finite, prepare_linear_model

__all__ = ["FilterResult", "kalman_filter", "at_step"]

OVERFLOW = "it overflows the dtype's range (parameters or observations far too large, or an unstable transition over many missing steps)"


@dataclass(frozen=True)
class FilterResult:
    """Per-step output of a Kalman filter.

    Attributes
    ----------
    filtered_mean : Tensor, shape (*batch, T, S)
        Mean of ``p(x_t | z_{0:t})``.
    filtered_cov : Tensor, shape (*batch, T, S, S)
    predicted_mean : Tensor, shape (*batch, T, S)
        Mean of ``p(x_t | z_{0:t-1})`` (the prior at ``t = 0``).
    predicted_cov : Tensor, shape (*batch, T, S, S)
    log_likelihood : Tensor, shape (*batch, T)
        ``log p(z_t | z_{0:t-1})`` over the observed components of step ``t`` (0 when none is).
    shared_covariance : bool
        True when the covariances are the same for every series; the covariance tensors are then
        broadcast views (stride 0 along the batch axes) of one ``(T, S, S)`` array.
    """

    filtered_mean: torch.Tensor
    filtered_cov: torch.Tensor
    predicted_mean: torch.Tensor
    predicted_cov: torch.Tensor
    log_likelihood: torch.Tensor
    shared_covariance: bool = False


def at_step(param: torch.Tensor | None, step: int, core_ndim: int) -> torch.Tensor | None:
    """Entry ``step`` of a possibly time-varying parameter.

    Parameters
    ----------
    param : Tensor or None
        Time-invariant with ``core_ndim`` dims, or ``(*batch, T, *core)`` when time-varying.
    step : int
    core_ndim : int
        2 for matrices, 1 for vectors.
    """
    if param is None or param.ndim == core_ndim:
        return param
    return param.select(-core_ndim - 1, step)


def kalman_filter(
    observations,
    transition_matrix,
    transition_cov,
    observation_matrix,
    observation_cov,
    initial_mean,
    initial_cov,
    transition_offset=None,
    mask=None,
    parallel: bool = False,
) -> FilterResult:
    """Exact Kalman filter, batched over leading axes and differentiable end to end.

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, L)
        NaN entries are missing.
    transition_matrix : Tensor, shape (S, S) or (*batch, T, S, S)
        ``A``; when time-varying, entry ``t`` is the transition into step ``t`` (entry 0 unused).
    transition_cov : Tensor, shape (S, S) or (*batch, T, S, S)
        ``Q``, positive semi-definite.
    observation_matrix : Tensor, shape (L, S) or (*batch, T, L, S)
        ``H``.
    observation_cov : Tensor, shape (L, L) or (*batch, T, L, L)
        ``R``, positive semi-definite (``H P⁻ Hᵀ + R`` must be positive definite).
    initial_mean : Tensor, shape (S,) or (*batch, S)
        Prior mean of the state at step 0.
    initial_cov : Tensor, shape (S, S) or (*batch, S, S)
    transition_offset : Tensor, shape (S,) or (*batch, T, S), optional
        ``c``, added to the predicted mean (``B u_t`` style inputs).
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional
        True = observed.  Combined with the NaN pattern of ``observations``.
    parallel : bool
        Use the parallel-in-time (associative scan) filter: the same results, ``O(log T)``
        sequential depth; pays off on a GPU and for long series.

    Returns
    -------
    FilterResult

    Raises
    ------
    TypeError
        Non-tensors, integer tensors, mixed dtypes, a non-bool mask.
    ValueError
        Wrong shapes, NaN/inf in a parameter, inf in the observations, non-PSD covariances, a
        state that overflows the dtype; :class:`~ldmfilter.gaussian.NotPositiveDefiniteError`
        (a ``ValueError``) when an innovation covariance cannot be factorised.

    Notes
    -----
    A fully missing step is predict-only; a partially missing step conditions exactly on its
    observed components.  When the parameters and the missingness pattern are shared by every
    series, the covariance recursion is computed once for the whole batch (and stops early once
    it reaches its steady state to within a few ulps); only the mean recursion runs per series.
    """
    model = prepare_linear_model(
        observations, transition_matrix, transition_cov, observation_matrix, observation_cov,
        initial_mean, initial_cov, transition_offset, mask,
    )
    if parallel:
        from .parallel import parallel_filter

        result = parallel_filter(model)
    elif model.covariance_is_shared:
        from .shared import shared_covariance_filter

        result = shared_covariance_filter(model)
    else:
        result = sequential_filter(model)
    check_result_finite(result.filtered_mean, "the filtered mean", -2, OVERFLOW)
    for name in ("filtered_cov", "predicted_cov"):  # shared covariances: checked once, not per series
        check_result_finite(broadcast_compact(getattr(result, name)), f"the {name.replace('_', ' ')}ariance", -3, OVERFLOW)
    check_result_finite(result.log_likelihood.masked_fill(result.log_likelihood.isinf(), 0.0), "the log-likelihood", -1, OVERFLOW)
    return result


def _per_step(param: torch.Tensor | None, batch_shape: tuple, steps: int, core_ndim: int) -> list | None:
    """A parameter as a list of T tensors of shape (N, *core), N the flattened batch.

    Time-invariant parameters give the same broadcast view at every step; time-varying ones are
    laid out time-major and contiguous once, so that each step is a contiguous block.
    """
    if param is None:
        return None
    core = tuple(param.shape[param.ndim - core_ndim:])
    flat = (math.prod(batch_shape),)
    if param.ndim == core_ndim:
        return [param.expand(flat + core)] * steps
    full = param.expand(batch_shape + (steps,) + core).reshape(flat + (steps,) + core)
    return list(full.transpose(0, 1).contiguous().unbind(0))


def sequential_filter(model: LinearGaussianModel) -> FilterResult:
    """The textbook recursion with one covariance per series (any parameters, any mask)."""
    batch_shape, steps = model.batch_shape, model.num_steps
    state_dim, obs_dim = model.initial_mean.shape[-1], model.observations.shape[-1]
    H, R = model.observation_matrix, model.observation_cov
    num_observed = obs_dim
    if model.observed is not None:
        H, R = mask_observation_model(H, R, model.observed)
        num_observed = model.observed.sum(-1)
    A, Q = (_per_step(p, batch_shape, steps, 2) for p in (model.transition_matrix, model.transition_cov))
    H, R = _per_step(H, batch_shape, steps, 2), _per_step(R, batch_shape, steps, 2)
    offsets = _per_step(model.transition_offset, batch_shape, steps, 1)
    z = _per_step(model.observations, batch_shape, steps, 1)

    flat = math.prod(batch_shape)
    mean = model.initial_mean.expand(batch_shape + (state_dim,)).reshape(flat, state_dim)
    cov = model.initial_cov.expand(batch_shape + (state_dim, state_dim)).reshape(flat, state_dim, state_dim)
    pred_means, pred_covs, means, covs, innovations, chols = [], [], [], [], [], []
    for t in range(steps):
        if t > 0:
            mean, cov = predict(mean, cov, A[t], Q[t], None if offsets is None else offsets[t])
        pred_means.append(mean)
        pred_covs.append(cov)
        cov, gain, chol = update_covariance(cov, H[t], R[t])
        mean, innovation = update_mean(mean, gain, z[t], H[t])
        means.append(mean)
        covs.append(cov)
        innovations.append(innovation)
        chols.append(chol)

    def series(values: list) -> torch.Tensor:  # T × (N, *core) -> (*batch, T, *core)
        stacked = torch.stack(values, 1)
        return stacked.reshape(batch_shape + stacked.shape[1:])

    return FilterResult(
        filtered_mean=series(means),
        filtered_cov=series(covs),
        predicted_mean=series(pred_means),
        predicted_cov=series(pred_covs),
        log_likelihood=innovation_log_likelihood(series(innovations), series(chols), num_observed),
    )
