"""Nonlinear Gaussian filters (EKF / UKF / CKF) built on the sampling-free moment rules.

Model::

    x_0 ~ N(μ_0, Σ_0)
    x_t = f(x_{t-1}[, u_t]) + w_t,   w_t ~ N(0, Q_t)        (t ≥ 1)
    z_t = H_t x_t + v_t   or   z_t = h(x_t) + v_t,   v_t ~ N(0, R_t)

The predicted belief comes from a deterministic moment rule (:mod:`.moments`).  With a linear
observation model the update is the exact Kalman update; with a nonlinear ``h`` the rule also
gives ``E[z]``, ``Cov[z]`` and ``Cov[x, z]``.  Either way the update is Gaussian conditioning on
those moments (:func:`~.steps.condition`, whitened form).  For float32 inputs the recursion runs
in float64 (:data:`~.steps.UPDATE_DTYPE`) and the functions are called in float32; the results
come back in float32.

With a linear observation and a transition module that has ``value_and_jacobian`` and
``state_vjp`` (:class:`~ldmfilter.nn.MLPDynamics`), every rule runs through :mod:`.adjoint_filter`:
the same results, with a hand-written reverse pass instead of autograd's record of every small
operation.
"""

from __future__ import annotations

from typing import Callable

import torch

from .adjoint_filter import adjoint_filter, supports_adjoint
from .kalman import FilterResult, at_step
from .linalg import symmetrize
from .moments import MOMENT_RULES, propagate, value_and_jacobian
from .steps import UPDATE_DTYPE, condition, innovation_log_likelihood, linear_observation_moments, mask_observation_model, predict_cov
from .validation import broadcastable, check_filter_inputs, check_finite, check_matrix, check_result_finite, check_tensor, split_missing

__all__ = ["nonlinear_filter", "check_image_width"]

NOT_FINITE = "transition_fn or observation_fn returned NaN or inf (or overflowed the dtype)"


def check_image_width(value: torch.Tensor, expected: int, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Require a function's output (…, D) to have ``D == expected`` (and ``dtype``); names the function otherwise."""
    if value.shape[-1] != expected:
        raise ValueError(f"{name} must map rows of size S to rows of size {expected}, got rows of size {value.shape[-1]}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must return {dtype} like its input, got {value.dtype}")
    return value


class _CalledIn:
    """``fn`` evaluated in the model's ``dtype`` inside a recursion kept in the working dtype.

    States (and anything else a moment rule passes) are cast down to ``dtype`` before the call and
    the results cast up to ``work`` after it, so a float32 model keeps its float32 function while
    the belief recursion runs in :data:`~ldmfilter.gaussian.steps.UPDATE_DTYPE`.  ``fn``'s own
    ``value_and_jacobian`` (see :func:`~ldmfilter.gaussian.value_and_jacobian`) is kept.
    """

    def __init__(self, fn: Callable, name: str, dtype: torch.dtype, work: torch.dtype):
        self.fn, self.name, self.dtype, self.work = fn, name, dtype, work
        given = getattr(fn, "value_and_jacobian", None)
        if given is not None:
            self.value_and_jacobian = lambda x, *inputs: tuple(self._up(v) for v in given(x.to(dtype), *inputs))

    def _up(self, value):
        if not isinstance(value, torch.Tensor):
            return value  # the moment rules name what it should have been
        if value.dtype != self.dtype:
            raise TypeError(f"{self.name} must return {self.dtype} like its input, got {value.dtype}")
        return value.to(self.work)

    def __call__(self, x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self._up(self.fn(x.to(self.dtype), *inputs))


def _masked_moments(cross, obs_cov, innovation, observed):
    """Drop masked observation components as :func:`~.steps.mask_observation_model` does for a
    linear ``H`` (``Cov[x, z]ᵀ`` plays ``H``'s part): zero cross-covariance and innovation, unit variance."""
    if observed is None:
        return cross, obs_cov, innovation
    cross_t, obs_cov = mask_observation_model(cross.mT, obs_cov, observed)
    return cross_t.mT, obs_cov, innovation * observed.to(innovation.dtype)


def nonlinear_filter(
    observations,
    transition_fn: Callable,
    transition_cov,
    observation_matrix,
    observation_cov,
    initial_mean,
    initial_cov,
    method: str = "linearize",
    mask=None,
    observation_fn: Callable | None = None,
    transition_inputs=None,
    **rule_options,
) -> FilterResult:
    """Filter with a nonlinear transition (and optionally a nonlinear observation function).

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, L)
        NaN entries are missing.
    transition_fn : callable
        ``f``: ``(N, S) -> (N, S)``, or ``(N, S), (N, U) -> (N, S)`` when ``transition_inputs``
        is given; rows independent.  An ``nn.Module`` with ``value_and_jacobian`` and
        ``state_vjp`` methods takes the hand-written reverse pass with a linear observation
        (:mod:`~ldmfilter.gaussian.adjoint_filter`).
    transition_cov : Tensor, shape (S, S) or (*batch, T, S, S)
    observation_matrix : Tensor, shape (L, S) or (*batch, T, L, S), or None
        Must be None exactly when ``observation_fn`` is given.
    observation_cov : Tensor, shape (L, L) or (*batch, T, L, L)
    initial_mean : Tensor, shape (S,) or (*batch, S)
    initial_cov : Tensor, shape (S, S) or (*batch, S, S)
    method : {"linearize", "unscented", "cubature"}
        Moment rule: EKF, UKF or CKF.
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional
    observation_fn : callable, optional
        ``h``: ``(N, S) -> (N, L)``.
    transition_inputs : Tensor, shape (*batch, T, U), optional
        Controls ``u_t`` passed to ``transition_fn`` (entry 0 unused).
    **rule_options
        Options of the moment rule (``alpha``, ``beta``, ``kappa`` for ``"unscented"``).

    Returns
    -------
    FilterResult

    Raises
    ------
    TypeError, ValueError
        As :func:`~ldmfilter.gaussian.kalman_filter`; also a function whose output has the
        wrong width, NaN/inf in ``transition_inputs``, or NaN/inf coming out of the functions.
        Exceptions raised by the functions themselves propagate unchanged.
    """
    if method not in MOMENT_RULES:
        raise ValueError(f"method must be one of {sorted(MOMENT_RULES)}, got {method!r}")
    if not callable(transition_fn):
        raise TypeError(f"transition_fn must be callable, got {type(transition_fn).__name__}")
    if (observation_fn is None) == (observation_matrix is None):
        raise ValueError("give exactly one of observation_matrix (linear observations) and observation_fn")
    obs, initial_mean, initial_cov, Q, R, args = check_filter_inputs(
        observations, transition_cov, observation_cov, initial_mean, initial_cov
    )
    steps, batch_shape, dtype, device = args
    state_dim, obs_dim = initial_mean.shape[-1], obs.shape[-1]
    H = None if observation_matrix is None else check_matrix(observation_matrix, "observation_matrix", obs_dim, state_dim, *args)
    if transition_inputs is not None:
        transition_inputs = check_tensor(transition_inputs, "transition_inputs", dtype, device)
        lead = tuple(transition_inputs.shape[:-2])
        if transition_inputs.ndim < 2 or transition_inputs.shape[-2] != steps or not broadcastable(lead, batch_shape):
            raise ValueError(
                f"transition_inputs must have shape (*batch, T={steps}, U) with batch axes broadcasting to "
                f"{batch_shape}, got {tuple(transition_inputs.shape)}"
            )
        check_finite(transition_inputs, "transition_inputs")
    obs, observed = split_missing(obs, mask)
    num_observed = obs_dim if observed is None else observed.sum(-1)
    work = UPDATE_DTYPE if torch.finfo(dtype).bits < torch.finfo(UPDATE_DTYPE).bits else dtype
    obs, Q, R, initial_mean, initial_cov = (x.to(work) for x in (obs, Q, R, initial_mean, initial_cov))
    H = None if H is None else H.to(work)
    if H is not None and observed is not None:
        H, R = mask_observation_model(H, R, observed)

    if H is not None and supports_adjoint(transition_fn):

        def check(value, name):
            check_image_width(value, state_dim, name, dtype)

        recursion = adjoint_filter(
            transition_fn, dtype, check, method, obs, Q, H, R, initial_mean, initial_cov, transition_inputs, **rule_options
        )
    else:
        if work != dtype:
            transition_fn = _CalledIn(transition_fn, "transition_fn", dtype, work)
            observation_fn = None if observation_fn is None else _CalledIn(observation_fn, "observation_fn", dtype, work)
        recursion = _recursion(
            obs, transition_fn, Q, H, R, initial_mean, initial_cov, method, observed, observation_fn, transition_inputs, rule_options
        )
    means, covs, pred_means, pred_covs, innovations, chols = recursion
    result = FilterResult(
        filtered_mean=means.to(dtype),
        filtered_cov=covs.to(dtype),
        predicted_mean=pred_means.to(dtype),
        predicted_cov=pred_covs.to(dtype),
        log_likelihood=innovation_log_likelihood(innovations, chols, num_observed).to(dtype),
    )
    for name in ("filtered_mean", "predicted_mean", "filtered_cov", "predicted_cov"):
        check_result_finite(getattr(result, name), f"the {name.replace('_', ' ')}", -2 if name.endswith("mean") else -3, NOT_FINITE)
    check_result_finite(result.log_likelihood.masked_fill(result.log_likelihood.isinf(), 0.0), "the log-likelihood", -1, NOT_FINITE)
    return result


def _recursion(obs, transition_fn, Q, H, R, initial_mean, initial_cov, method, observed, observation_fn, transition_inputs, rule_options):
    """The filter's recursion with any moment rule, recorded by autograd.

    Returns
    -------
    filtered_mean, filtered_cov, predicted_mean, predicted_cov, innovations, innovation_chols : Tensor
        Shapes (*batch, T, S), (*batch, T, S, S), …, (*batch, T, L) and (*batch, T, L, L).
    """
    batch_shape, steps = obs.shape[:-2], obs.shape[-2]
    state_dim, obs_dim, work = initial_mean.shape[-1], obs.shape[-1], obs.dtype
    mean = initial_mean.expand(batch_shape + (state_dim,))
    cov = initial_cov.expand(batch_shape + (state_dim, state_dim))
    pred_means, pred_covs, means, covs, innovations, chols = [], [], [], [], [], []
    for t in range(steps):
        if t > 0:
            inputs = None if transition_inputs is None else transition_inputs[..., t, :]
            if method == "linearize":  # the linear filter's predict with A = J: P⁻ = J P Jᵀ + Q
                mean, jac = value_and_jacobian(transition_fn, mean, inputs)
                check_image_width(mean, state_dim, "transition_fn", work)
                check_image_width(jac, state_dim, "transition_fn's Jacobian", work)
                cov = predict_cov(cov, jac, at_step(Q, t, 2))
            else:
                moments = propagate(transition_fn, mean, cov, method, inputs, **rule_options)
                check_image_width(moments.mean, state_dim, "transition_fn", work)
                mean, cov = moments.mean, symmetrize(moments.cov + at_step(Q, t, 2))  # P⁻ = Cov[f(x)] + Q
        pred_means.append(mean)
        pred_covs.append(cov)
        if observation_fn is None:
            cross, obs_cov, innovation = linear_observation_moments(mean, cov, at_step(H, t, 2), at_step(R, t, 2), obs[..., t, :])
        else:
            obs_moments = propagate(observation_fn, mean, cov, method, None, **rule_options)
            check_image_width(obs_moments.mean, obs_dim, "observation_fn", work)
            cross, obs_cov, innovation = _masked_moments(
                obs_moments.cross_cov, obs_moments.cov + at_step(R, t, 2), obs[..., t, :] - obs_moments.mean,
                None if observed is None else observed[..., t, :],
            )
        mean, cov, chol = condition(mean, cov, cross, obs_cov, innovation)
        means.append(mean)
        covs.append(cov)
        innovations.append(innovation)
        chols.append(chol.expand(batch_shape + chol.shape[-2:]))
    return (
        torch.stack(means, -2), torch.stack(covs, -3), torch.stack(pred_means, -2), torch.stack(pred_covs, -3),
        torch.stack(innovations, -2), torch.stack(chols, -3),
    )
