"""Forecasting: repeated time updates from a belief, in closed form."""

from __future__ import annotations

import operator

import torch

from .belief import GaussianBelief
from .kalman import at_step
from .steps import predict
from .validation import check_finite, check_matrix, check_offset, check_output_size, check_psd, check_result_finite, check_tensor

__all__ = ["kalman_forecast", "check_forecast_start"]


def check_forecast_start(mean, cov, horizon) -> tuple[torch.Tensor, torch.Tensor, int, torch.Size]:
    """Validate a forecast's start belief and horizon.

    Returns ``mean`` (*batch, S) and ``cov`` (*batch, S, S) as tensors of ``mean``'s dtype, the
    horizon as an int ≥ 1, and the broadcast batch shape.  Refuses a forecast whose output
    ``(*batch, horizon, S, S)`` could not fit in memory.
    """
    if isinstance(horizon, bool):
        raise TypeError("horizon must be an int, got bool")
    try:
        horizon = operator.index(horizon)
    except TypeError:
        raise TypeError(f"horizon must be an int, got {type(horizon).__name__}") from None
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    mean = check_tensor(mean, "mean")
    if mean.ndim < 1 or mean.shape[-1] < 1:
        raise ValueError(f"mean must have shape (*batch, S) with S >= 1, got {tuple(mean.shape)}")
    check_finite(mean, "mean")
    dtype, device, state_dim = mean.dtype, mean.device, mean.shape[-1]
    cov = check_tensor(cov, "cov", dtype, device)
    if cov.ndim < 2 or cov.shape[-2:] != (state_dim, state_dim):
        raise ValueError(f"cov must have shape (*batch, {state_dim}, {state_dim}), got {tuple(cov.shape)}")
    cov = check_psd(cov, "cov", lift=True)
    try:
        batch_shape = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the batch axes of mean {tuple(mean.shape[:-1])} and cov {tuple(cov.shape[:-2])} do not broadcast"
        ) from None
    check_output_size(tuple(batch_shape) + (horizon, state_dim, state_dim), dtype, f"a forecast of horizon {horizon}")
    return mean, cov, horizon, batch_shape


UNSTABLE = "the transition is unstable (it grows faster than the dtype's range allows over this horizon)"


def kalman_forecast(mean, cov, transition_matrix, transition_cov, horizon: int, transition_offset=None) -> GaussianBelief:
    """Predict ``horizon`` steps ahead: ``m ← A m + c``, ``P ← A P Aᵀ + Q`` repeated.

    Parameters
    ----------
    mean : Tensor, shape (*batch, S)
        Mean of the belief at the last observed step.
    cov : Tensor, shape (*batch, S, S) or (S, S)
        Its covariance; an unbatched covariance is propagated once for the whole batch.
    transition_matrix, transition_cov : Tensor, shape (S, S) or (*batch, horizon, S, S)
        When time-varying, entry ``k`` is used for forecast step ``k + 1``.
    horizon : int
        Number of steps ahead, at least 1.
    transition_offset : Tensor, shape (S,) or (*batch, horizon, S), optional

    Returns
    -------
    GaussianBelief
        ``mean`` of shape (*batch, horizon, S) and ``cov`` of shape (*batch, horizon, S, S); entry
        ``k`` is the belief ``k + 1`` steps ahead.

    Raises
    ------
    TypeError
        Non-tensors, integer tensors, mixed dtypes, a horizon that is not an int.
    ValueError
        Wrong shapes, NaN/inf in the start belief or the parameters, a horizon below 1 or too
        large for memory, or a forecast that overflows the dtype (an unstable transition).
    """
    mean, cov, horizon, batch_shape = check_forecast_start(mean, cov, horizon)
    dtype, device, state_dim = mean.dtype, mean.device, mean.shape[-1]
    args = (state_dim, state_dim, horizon, batch_shape, dtype, device)
    A = check_matrix(transition_matrix, "transition_matrix", *args)
    Q = check_psd(check_matrix(transition_cov, "transition_cov", *args), "transition_cov", lift=True)
    c = check_offset(transition_offset, "transition_offset", state_dim, horizon, batch_shape, dtype, device)

    mean = mean.expand(tuple(batch_shape) + (state_dim,))  # a cov with more batch axes than the mean
    means, covs = [], []
    for k in range(horizon):
        mean, cov = predict(mean, cov, at_step(A, k, 2), at_step(Q, k, 2), at_step(c, k, 1))
        means.append(mean)
        covs.append(cov)
    covs = torch.stack(covs, -3)
    means = torch.stack(torch.broadcast_tensors(*means), -2)
    check_result_finite(means, "the forecast mean", -2, UNSTABLE)
    check_result_finite(covs, "the forecast covariance", -3, UNSTABLE)
    return GaussianBelief(means, covs.expand(means.shape[:-2] + (horizon, state_dim, state_dim)))
