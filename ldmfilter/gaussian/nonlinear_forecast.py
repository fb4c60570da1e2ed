"""Forecasting through a nonlinear transition with a sampling-free moment rule."""

from __future__ import annotations

from typing import Callable

import torch

from .belief import GaussianBelief
from .forecast import UNSTABLE, check_forecast_start
from .kalman import at_step
from .linalg import symmetrize
from .moments import MOMENT_RULES, propagate
from .nonlinear import check_image_width
from .validation import broadcastable, check_finite, check_matrix, check_psd, check_result_finite, check_tensor

__all__ = ["nonlinear_forecast"]


def nonlinear_forecast(
    mean,
    cov,
    transition_fn: Callable,
    transition_cov,
    horizon: int,
    method: str = "linearize",
    transition_inputs=None,
    **rule_options,
) -> GaussianBelief:
    """Predict ``horizon`` steps ahead: ``N(m, P) ↦ N(E[f(x)], Cov[f(x)] + Q)`` repeated.

    Parameters
    ----------
    mean : Tensor, shape (*batch, S)
        Mean of the belief at the last observed step.
    cov : Tensor, shape (*batch, S, S) or (S, S)
    transition_fn : callable
        ``f``: ``(N, S) -> (N, S)``, or ``(N, S), (N, U) -> (N, S)`` with ``transition_inputs``.
    transition_cov : Tensor, shape (S, S) or (*batch, horizon, S, S)
        When time-varying, entry ``k`` is used for forecast step ``k + 1``.
    horizon : int
        Number of steps ahead, at least 1.
    method : {"linearize", "unscented", "cubature"}
    transition_inputs : Tensor, shape (*batch, horizon, U), optional
        Entry ``k`` is the control of forecast step ``k + 1``.
    **rule_options
        ``alpha``, ``beta``, ``kappa`` for ``"unscented"``.

    Returns
    -------
    GaussianBelief
        ``mean (*batch, horizon, S)`` and ``cov (*batch, horizon, S, S)``; entry ``k`` is the
        belief ``k + 1`` steps ahead.  On an affine ``f`` this equals
        :func:`~ldmfilter.gaussian.kalman_forecast`.
    """
    if method not in MOMENT_RULES:
        raise ValueError(f"method must be one of {sorted(MOMENT_RULES)}, got {method!r}")
    if not callable(transition_fn):
        raise TypeError(f"transition_fn must be callable, got {type(transition_fn).__name__}")
    mean, cov, horizon, batch_shape = check_forecast_start(mean, cov, horizon)
    dtype, device, state_dim = mean.dtype, mean.device, mean.shape[-1]
    Q = check_matrix(transition_cov, "transition_cov", state_dim, state_dim, horizon, batch_shape, dtype, device)
    Q = check_psd(Q, "transition_cov", lift=True)
    if transition_inputs is not None:
        transition_inputs = check_tensor(transition_inputs, "transition_inputs", dtype, device)
        lead = tuple(transition_inputs.shape[:-2])
        if transition_inputs.ndim < 2 or transition_inputs.shape[-2] != horizon or not broadcastable(lead, batch_shape):
            raise ValueError(
                f"transition_inputs must have shape (*batch, horizon={horizon}, U) with batch axes broadcasting "
                f"to {batch_shape}, got {tuple(transition_inputs.shape)}"
            )
        check_finite(transition_inputs, "transition_inputs")
    mean = mean.expand(batch_shape + (state_dim,))
    cov = cov.expand(batch_shape + (state_dim, state_dim))
    means, covs = [], []
    for k in range(horizon):
        inputs = None if transition_inputs is None else transition_inputs[..., k, :]
        moments = propagate(transition_fn, mean, cov, method, inputs, **rule_options)
        check_image_width(moments.mean, state_dim, "transition_fn", dtype)
        mean, cov = moments.mean, symmetrize(moments.cov + at_step(Q, k, 2))  # P⁻ = Cov[f(x)] + Q
        means.append(mean)
        covs.append(cov)
    means, covs = torch.stack(means, -2), torch.stack(covs, -3)
    cause = f"{UNSTABLE}, or transition_fn returned NaN or inf"
    check_result_finite(means, "the forecast mean", -2, cause)
    check_result_finite(covs, "the forecast covariance", -3, cause)
    return GaussianBelief(means, covs)
