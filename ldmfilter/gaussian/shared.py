"""The shared-covariance Kalman filter: one covariance recursion for the whole batch.

When ``A, Q, H, R, Σ_0`` and the missingness pattern are the same for every series, the
covariances, gains and innovation covariances do not depend on the data.  They are computed once
(``(T, S, S)`` tensors instead of ``(*batch, T, S, S)``), and the filtered means follow the
linear recursion

    m_t = F_t m_{t-1} + u_t,   F_t = (I − K_t H_t) A_t,   u_t = (I − K_t H_t) c_t + K_t z_t,

one fused matrix product per step for the whole batch.  Predicted means, innovations and
log-likelihoods are then computed for all steps at once.

Steady state: for time-invariant parameters the covariance recursion converges.  Once two
successive filtered covariances agree to ``STEADY_STATE_ULPS`` units of the dtype's epsilon
(relative to the largest variance), later fully observed steps reuse the converged covariance,
gain and innovation factor instead of recomputing them; a step with missing data restarts the
recursion.  The values differ from the fully unrolled recursion by rounding only.
"""

from __future__ import annotations

import torch

from .kalman import FilterResult, at_step
from .steps import innovation_log_likelihood, mask_observation_model, predict_cov, update_covariance
from .validation import LinearGaussianModel

__all__ = ["shared_covariance_filter", "STEADY_STATE_ULPS"]

STEADY_STATE_ULPS = 8


def _covariance_recursion(model: LinearGaussianModel, pattern: torch.Tensor | None):
    """Data-independent part: per-step covariances, gains and innovation factors, shape (T, ...)."""
    steps = model.num_steps
    A, Q, H, R = model.transition_matrix, model.transition_cov, model.observation_matrix, model.observation_cov
    static = all(p.ndim == 2 for p in (A, Q, H, R))
    eps = torch.finfo(model.observations.dtype).eps
    pred_covs, covs, gains, chols = [], [], [], []
    cov, tolerance, converged = model.initial_cov, None, None
    for t in range(steps):
        fully_observed = pattern is None or bool(pattern[t].all())
        if converged is not None and fully_observed:
            for out, value in zip((pred_covs, covs, gains, chols), converged):
                out.append(value)
            cov = converged[1]
            continue
        converged = None
        pred_cov = cov if t == 0 else predict_cov(cov, at_step(A, t, 2), at_step(Q, t, 2))
        H_t, R_t = at_step(H, t, 2), at_step(R, t, 2)
        if not fully_observed:
            H_t, R_t = mask_observation_model(H_t, R_t, pattern[t])
        previous = cov
        cov, gain, chol = update_covariance(pred_cov, H_t, R_t)
        for out, value in zip((pred_covs, covs, gains, chols), (pred_cov, cov, gain, chol)):
            out.append(value)
        if static and fully_observed and t > 0:
            with torch.no_grad():
                if tolerance is None:
                    tolerance = STEADY_STATE_ULPS * eps * cov.diagonal().abs().max().item()
                if torch.allclose(cov, previous, rtol=0.0, atol=tolerance):
                    converged = (pred_cov, cov, gain, chol)
    return torch.stack(pred_covs), torch.stack(covs), torch.stack(gains), torch.stack(chols)


def shared_covariance_filter(model: LinearGaussianModel) -> FilterResult:
    """Kalman filter with the covariance recursion shared by every series (see module docstring)."""
    batch_shape, steps = model.batch_shape, model.num_steps
    obs_dim, state_dim = model.observations.shape[-1], model.initial_mean.shape[-1]
    pattern = None
    if model.observed is not None:
        pattern = model.observed.reshape(-1, steps, obs_dim)[0]
    pred_covs, covs, gains, chols = _covariance_recursion(model, pattern)

    A, H, c = model.transition_matrix, model.observation_matrix, model.transition_offset
    if pattern is not None:
        H, _ = mask_observation_model(H if H.ndim > 2 else H.expand(steps, *H.shape), model.observation_cov, pattern)
    eye = torch.eye(state_dim, dtype=covs.dtype, device=covs.device)
    residual = eye - gains @ H  # (T, S, S): I − K_t H_t
    z = model.observations.reshape(-1, steps, obs_dim)  # (N, T, L)
    gained = torch.einsum("tsl,ntl->nts", gains, z)  # K_t z_t
    prior_mean = model.initial_mean.expand(batch_shape + (state_dim,)).reshape(-1, state_dim)
    first = prior_mean @ residual[0].mT + gained[:, 0]  # step 0 updates the prior: no predict
    inputs = gained
    if c is not None:
        c_all = c.reshape(-1, steps, state_dim) if c.ndim > 1 else c
        inputs = inputs + (residual @ c_all.unsqueeze(-1)).squeeze(-1)  # + (I − K_t H_t) c_t
    transitions = (residual @ A).mT  # F_tᵀ, (T, S, S)
    mean, means = first, [first]
    step_inputs = inputs.unbind(1)
    for t in range(1, steps):
        mean = torch.addmm(step_inputs[t], mean, transitions[t])
        means.append(mean)
    filtered = torch.stack(means, 1)  # (N, T, S)

    previous = filtered[:, :-1]
    A_next = A[1:] if A.ndim > 2 else A
    predicted_rest = previous @ A_next.mT
    if c is not None:
        predicted_rest = predicted_rest + (c_all[..., 1:, :] if c.ndim > 1 else c)
    predicted = torch.cat([prior_mean.unsqueeze(1), predicted_rest], 1)
    innovations = z - (H @ predicted.unsqueeze(-1)).squeeze(-1)
    num_observed = obs_dim if pattern is None else pattern.sum(-1)
    log_likelihood = innovation_log_likelihood(innovations, chols, num_observed)

    def batched(x, core):
        return x.reshape(batch_shape + x.shape[1:]) if core == "mean" else x.expand(batch_shape + x.shape)

    return FilterResult(
        filtered_mean=batched(filtered, "mean"),
        filtered_cov=batched(covs, "cov"),
        predicted_mean=batched(predicted, "mean"),
        predicted_cov=batched(pred_covs, "cov"),
        log_likelihood=log_likelihood.reshape(batch_shape + (steps,)),
        shared_covariance=True,
    )
