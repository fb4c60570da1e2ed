"""Rauch–Tung–Striebel smoothing for a nonlinear transition, with a sampling-free moment rule.

Model as in :func:`~ldmfilter.gaussian.nonlinear_filter`: ``x_t = f(x_{t-1}[, u_t]) + w_t``,
``w_t ~ N(0, Q_t)``.  The backward pass is the Gaussian (assumed-density) RTS smoother of Särkkä
(2008, "Unscented Rauch–Tung–Striebel smoother"): pushing the filtered belief ``N(m_t, P_t)``
through ``f`` with the moment rule gives

    m⁻_{t+1} = E[f(x_t)],   C_{t+1} = Cov[f(x_t)] + Q_{t+1},   D_t = Cov[x_t, f(x_t)]

and with ``G_t = D_t C_{t+1}⁻¹`` (a Cholesky solve)::

    m^s_t = m_t + G_t (m^s_{t+1} − m⁻_{t+1})
    P^s_t = (P_t − G_t D_tᵀ) + G_t P^s_{t+1} G_tᵀ

``P_t − G_t D_tᵀ = P_t − D_t C_{t+1}⁻¹ D_tᵀ`` is the Schur complement of the joint covariance of
``(x_t, x_{t+1})`` under the rule, so both terms are positive semi-definite.  The forward moments
depend on the filtered beliefs only, so they are computed for all steps at once.  With
``method="linearize"`` this is the extended RTS smoother (``f`` linearised at ``m_t``); on an affine
``f`` every rule gives the exact RTS smoother of :func:`~ldmfilter.gaussian.kalman_smoother`.
"""

from __future__ import annotations

from typing import Callable

import torch

from .kalman import FilterResult
from .linalg import cholesky, cholesky_solve, symmetrize
from .moments import MOMENT_RULES, propagate
from .smoother import SmootherResult
from .validation import broadcastable, check_matrix, check_psd, check_tensor

__all__ = ["nonlinear_smoother"]


def nonlinear_smoother(
    result: FilterResult,
    transition_fn: Callable,
    transition_cov,
    method: str = "linearize",
    transition_inputs=None,
    **rule_options,
) -> SmootherResult:
    """Smoothed marginals ``p(x_t | z_{0:T-1})`` for a nonlinear transition.

    Parameters
    ----------
    result : FilterResult
        Output of :func:`~ldmfilter.gaussian.nonlinear_filter` (or of ``kalman_filter``) run with
        the same transition.
    transition_fn : callable
        ``f``: ``(N, S) -> (N, S)``, or ``(N, S), (N, U) -> (N, S)`` with ``transition_inputs``.
    transition_cov : Tensor, shape (S, S) or (*batch, T, S, S)
        ``Q``; when time-varying, entry ``t`` belongs to the transition into step ``t``.
    method : {"linearize", "unscented", "cubature"}
        The moment rule (use the filter's).
    transition_inputs : Tensor, shape (*batch, T, U), optional
        Controls ``u_t`` of the transition into step ``t`` (entry 0 unused).
    **rule_options
        ``alpha``, ``beta``, ``kappa`` for ``"unscented"``.

    Returns
    -------
    SmootherResult
        ``smoothed_mean (*batch, T, S)``, ``smoothed_cov (*batch, T, S, S)`` and
        ``lag_one_cov (*batch, T-1, S, S)`` (entry ``t`` is ``Cov(x_{t+1}, x_t | z)``, the RTS
        approximation ``P^s_{t+1} G_tᵀ``).
    """
    if not isinstance(result, FilterResult):
        raise TypeError(f"result must be the FilterResult of a filter, got {type(result).__name__}")
    if method not in MOMENT_RULES:
        raise ValueError(f"method must be one of {sorted(MOMENT_RULES)}, got {method!r}")
    if not callable(transition_fn):
        raise TypeError(f"transition_fn must be callable, got {type(transition_fn).__name__}")
    means = result.filtered_mean
    batch_shape, steps, state_dim = tuple(means.shape[:-2]), means.shape[-2], means.shape[-1]
    covs = result.filtered_cov.expand(means.shape + (state_dim,))
    args = (state_dim, state_dim, steps, batch_shape, means.dtype, means.device)
    Q = check_matrix(transition_cov, "transition_cov", *args)
    check_psd(Q, "transition_cov")
    inputs = None
    if transition_inputs is not None:
        transition_inputs = check_tensor(transition_inputs, "transition_inputs", means.dtype, means.device)
        lead = tuple(transition_inputs.shape[:-2])
        if transition_inputs.ndim < 2 or transition_inputs.shape[-2] != steps or not broadcastable(lead, batch_shape):
            raise ValueError(
                f"transition_inputs must have shape (*batch, T={steps}, U) with batch axes broadcasting to "
                f"{batch_shape}, got {tuple(transition_inputs.shape)}"
            )
        inputs = transition_inputs[..., 1:, :]
    if steps == 1:
        return SmootherResult(means, covs, covs.new_zeros(batch_shape + (0, state_dim, state_dim)))

    moments = propagate(transition_fn, means[..., :-1, :], covs[..., :-1, :, :], method, inputs, **rule_options)
    Q_next = Q[..., 1:, :, :] if Q.ndim > 2 else Q
    pred_cov = symmetrize(moments.cov + Q_next)  # C_{t+1} = Cov[f(x_t)] + Q
    cross = moments.cross_cov  # D_t = Cov[x_t, f(x_t)]
    gains = cholesky_solve(cross.mT, cholesky(pred_cov, "predicted covariance Cov[f(x)] + Q")).mT  # G_t = D_t C⁻¹
    base = symmetrize(covs[..., :-1, :, :] - gains @ cross.mT)  # P_t − G_t D_tᵀ
    offsets = means[..., :-1, :] - (gains @ moments.mean.unsqueeze(-1)).squeeze(-1)  # m_t − G_t m⁻_{t+1}

    cov, mean = covs[..., -1, :, :], means[..., -1, :]
    smoothed_covs, smoothed_means = [cov], [mean]
    for t in range(steps - 2, -1, -1):
        gain = gains[..., t, :, :]
        cov = symmetrize(base[..., t, :, :] + gain @ cov @ gain.mT)  # P^s_t = P_t − G D ᵀ + G P^s_{t+1} Gᵀ
        mean = offsets[..., t, :] + (gain @ mean.unsqueeze(-1)).squeeze(-1)  # m^s_t = m_t + G (m^s_{t+1} − m⁻)
        smoothed_covs.append(cov)
        smoothed_means.append(mean)
    smoothed_cov = torch.stack(smoothed_covs[::-1], -3)
    lag_one = smoothed_cov[..., 1:, :, :] @ gains.mT  # Cov(x_{t+1}, x_t) ≈ P^s_{t+1} G_tᵀ
    return SmootherResult(torch.stack(smoothed_means[::-1], -2), smoothed_cov, lag_one)
