"""Scoring observations under Gaussian state beliefs: a filter's one-step-ahead predictions, or any other."""

from __future__ import annotations

from typing import Callable

import torch

from .kalman import FilterResult
from .linalg import cholesky
from .moments import propagate
from .steps import innovation_log_likelihood, mask_observation_model, predict_observation
from .validation import check_matrix, check_observations, split_missing

__all__ = ["predictive_log_likelihood", "belief_log_likelihood", "function_belief_log_likelihood"]


def predictive_log_likelihood(targets, result: FilterResult, observation_matrix, observation_cov, mask=None) -> torch.Tensor:
    """``log N(y_t; H_t m⁻_t, H_t P⁻_t H_tᵀ + R_t)`` for arbitrary targets ``y_t``.

    With ``targets`` equal to the filtered observations this is ``result.log_likelihood``.  With
    detached targets it is the stop-gradient predictive objective of LDM: gradients reach the
    observations only through the predictions, which depend on earlier observations.

    Parameters
    ----------
    targets : Tensor, shape (*batch, T, L)
        NaN entries are missing and not scored.
    result : FilterResult
        The filter run whose predicted beliefs ``N(m⁻_t, P⁻_t)`` are used.
    observation_matrix : Tensor, shape (L, S) or (*batch, T, L, S)
    observation_cov : Tensor, shape (L, L) or (*batch, T, L, L)
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional
        True = scored.

    Returns
    -------
    Tensor, shape (*batch, T)
        Zero at steps with nothing to score.
    """
    if not isinstance(result, FilterResult):
        raise TypeError(f"result must be a FilterResult, got {type(result).__name__}")
    return belief_log_likelihood(
        targets, result.predicted_mean, result.predicted_cov, observation_matrix, observation_cov, mask, result.shared_covariance
    )


def belief_log_likelihood(targets, mean, cov, observation_matrix, observation_cov, mask=None, shared_covariance: bool = False):
    """``log N(y_t; H_t m_t, H_t P_t H_tᵀ + R_t)`` under state beliefs ``N(m_t, P_t)``, step by step.

    :func:`predictive_log_likelihood` is this with a filter's one-step predictions; the
    multi-step objective passes k-step predictions.

    Parameters
    ----------
    targets : Tensor, shape (*batch, T, L)
        NaN entries are missing and not scored.
    mean : Tensor, shape (*batch, T, S)
    cov : Tensor, shape (*batch, T, S, S)
    observation_matrix : Tensor, shape (L, S) or (*batch, T, L, S)
    observation_cov : Tensor, shape (L, L) or (*batch, T, L, L)
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional
        True = scored.
    shared_covariance : bool
        ``cov`` is a broadcast view of one ``(T, S, S)`` array, the same for every series (then
        the covariance algebra runs once when the masks agree).

    Returns
    -------
    Tensor, shape (*batch, T)
        Zero at steps with nothing to score.
    """
    targets = check_observations(targets)
    batch_shape, steps, state_dim = tuple(mean.shape[:-2]), mean.shape[-2], mean.shape[-1]
    if tuple(targets.shape[:-1]) != batch_shape + (steps,):
        raise ValueError(
            f"targets must have shape {batch_shape + (steps,)} + (L,) to match the beliefs, got {tuple(targets.shape)}"
        )
    obs_dim = targets.shape[-1]
    args = (steps, batch_shape, mean.dtype, mean.device)
    H = check_matrix(observation_matrix, "observation_matrix", obs_dim, state_dim, *args)
    R = check_matrix(observation_cov, "observation_cov", obs_dim, obs_dim, *args)
    targets, observed = split_missing(targets, mask)
    flat = None if observed is None else observed.reshape(-1, steps, obs_dim)
    shared = shared_covariance and H.ndim <= 3 and R.ndim <= 3 and (flat is None or bool((flat == flat[:1]).all()))
    covs = cov[(0,) * len(batch_shape)] if shared else cov  # (T, S, S) if shared
    num_observed = obs_dim
    if observed is not None:
        pattern = flat[0] if shared else observed
        H, R = mask_observation_model(H, R, pattern)
        num_observed = pattern.sum(-1)
    obs_mean, obs_cov = predict_observation(mean, covs, H, R)
    chol = cholesky(obs_cov, "predictive observation covariance H P Hᵀ + R")
    return innovation_log_likelihood(targets - obs_mean, chol, num_observed)


def function_belief_log_likelihood(
    targets, mean, cov, observation_fn: Callable, observation_cov, method: str = "linearize", mask=None, **rule_options
) -> torch.Tensor:
    """``log N(y_t; E[h(x_t)], Cov[h(x_t)] + R_t)`` under state beliefs ``x_t ~ N(m_t, P_t)``.

    :func:`belief_log_likelihood` for a nonlinear observation function ``h``, whose moments come
    from the moment rule ``method`` as in :func:`~ldmfilter.gaussian.nonlinear_filter`'s update:
    with a filter's predicted beliefs and its own observations as targets this is that filter's
    ``log_likelihood``.

    Parameters
    ----------
    targets : Tensor, shape (*batch, T, L)
        NaN entries are missing and not scored.
    mean : Tensor, shape (*batch, T, S)
    cov : Tensor, shape (*batch, T, S, S)
    observation_fn : callable
        ``h``: ``(N, S) -> (N, L)``.
    observation_cov : Tensor, shape (L, L) or (*batch, T, L, L)
    method : {"linearize", "unscented", "cubature"}
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional
        True = scored.
    **rule_options
        Options of the moment rule.

    Returns
    -------
    Tensor, shape (*batch, T)
        Zero at steps with nothing to score.
    """
    targets = check_observations(targets)
    batch_shape, steps, state_dim = tuple(mean.shape[:-2]), mean.shape[-2], mean.shape[-1]
    if tuple(targets.shape[:-1]) != batch_shape + (steps,) or tuple(cov.shape) != batch_shape + (steps, state_dim, state_dim):
        raise ValueError(
            f"targets (*batch, T, L), mean (*batch, T, S) and cov (*batch, T, S, S) must agree, got "
            f"{tuple(targets.shape)}, {tuple(mean.shape)} and {tuple(cov.shape)}"
        )
    obs_dim = targets.shape[-1]
    R = check_matrix(observation_cov, "observation_cov", obs_dim, obs_dim, steps, batch_shape, mean.dtype, mean.device)
    targets, observed = split_missing(targets, mask)
    moments = propagate(observation_fn, mean, cov, method, None, **rule_options)
    if tuple(moments.mean.shape) != tuple(targets.shape):
        raise ValueError(f"observation_fn must map (N, {state_dim}) states to (N, {obs_dim}), got width {moments.mean.shape[-1]}")
    innovation, obs_cov, num_observed = targets - moments.mean, moments.cov + R, obs_dim
    if observed is not None:
        _, obs_cov = mask_observation_model(moments.cross_cov.mT, obs_cov, observed)
        innovation, num_observed = innovation * observed.to(innovation.dtype), observed.sum(-1)
    chol = cholesky(obs_cov, "predictive observation covariance Cov[h(x)] + R")
    return innovation_log_likelihood(innovation, chol, num_observed)
