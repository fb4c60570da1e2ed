"""The shared-covariance Kalman filter: one covariance recursion for the whole batch.

When ``A, Q, H, R, Σ_0`` and the missingness pattern are the same for every series, the
covariances, gains and innovation covariances do not depend on the data.  They are computed once
(``(T, S, S)`` tensors instead of ``(*batch, T, S, S)``), and the filtered means follow the
linear recursion

    m_t = F_t m_{t-1} + u_t,   F_t = (I − K_t H_t) A_t,   u_t = (I − K_t H_t) c_t + K_t z_t,

solved for the whole batch by :func:`linear_recurrence` (about ``2√(2T)`` batched products).
Predicted means, innovations and log-likelihoods are then computed for all steps at once.

Steady state: for time-invariant parameters the covariance recursion converges.  Once two
successive filtered covariances agree to ``STEADY_STATE_ULPS`` units of the dtype's epsilon
(relative to the largest variance; checked every ``CONVERGENCE_CHECK_EVERY`` steps), later
fully observed steps reuse the converged covariance, gain and innovation factor instead of
recomputing them; a step with missing data restarts the recursion.  The values differ from the
fully unrolled recursion by rounding only.
"""

from __future__ import annotations

import math

import torch

from .kalman import FilterResult, at_step
from .steps import innovation_log_likelihood, mask_observation_model, predict_cov, update_covariance
from .validation import LinearGaussianModel

__all__ = ["shared_covariance_filter", "linear_recurrence", "STEADY_STATE_ULPS", "CONVERGENCE_CHECK_EVERY"]

STEADY_STATE_ULPS = 8
CONVERGENCE_CHECK_EVERY = 4


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
        if static and fully_observed and t % CONVERGENCE_CHECK_EVERY == 0 and t > 0:
            with torch.no_grad():
                if tolerance is None:
                    tolerance = STEADY_STATE_ULPS * eps * cov.diagonal().abs().max().item()
                if (cov - previous).abs().max().item() <= tolerance:
                    converged = (pred_cov, cov, gain, chol)
    return torch.stack(pred_covs), torch.stack(covs), torch.stack(gains), torch.stack(chols)


def _chunk_length(steps: int) -> int:
    """A chunk length near √(T/2), preferring a divisor of ``T`` (no padding)."""
    target = max(1.0, math.sqrt(steps / 2))
    divisors = [d for d in range(max(1, int(target / 2)), int(2 * target) + 1) if steps % d == 0]
    return min(divisors, key=lambda d: abs(d - target)) if divisors else max(1, round(target))


def linear_recurrence(transitions: torch.Tensor, inputs: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Solve ``x_t = x_{t-1} F_tᵀ + u_t`` for ``t = 0 … T−1`` from ``x_{-1} = 0``, by chunks.

    The steps are cut into chunks of length ``k``.  Inside every chunk, the maps from the chunk's
    start, ``x_{s+j} = x_s Φ_jᵀ + v_j``, are built for all chunks at once (``k`` batched
    products); the chunk starts then follow sequentially (one product per chunk), and finally
    every state is filled in with one batched product.  With ``k ≈ √(T/2)`` this takes about
    ``2√(2T)`` tensor operations instead of ``T``; the result equals the step-by-step recursion up
    to rounding.

    Parameters
    ----------
    transitions : Tensor, shape (T, S, S)
        ``F_t`` (entry 0 is not used: ``x_{-1} = 0``).
    inputs : Tensor, shape (T, N, S)
        ``u_t``; ``x_0 = u_0``.
    chunk : int, optional
        Chunk length ``k`` (default: near ``√(T/2)``, a divisor of ``T`` when one is close).

    Returns
    -------
    Tensor, shape (T, N, S)
    """
    steps, batch, state_dim = inputs.shape
    k = _chunk_length(steps) if chunk is None else int(chunk)
    chunks = -(-steps // k)
    pad = chunks * k - steps
    maps, drive = transitions, inputs
    if pad:  # identity maps and zero inputs after the last step
        eye = torch.eye(state_dim, dtype=maps.dtype, device=maps.device)
        maps = torch.cat([maps, eye.expand(pad, *eye.shape)])
        drive = torch.cat([drive, drive.new_zeros((pad, batch, state_dim))])
    maps = maps.reshape(chunks, k, state_dim, state_dim)
    drive = drive.reshape(chunks, k, batch, state_dim)

    phi, offset = [maps[:, 0]], [drive[:, 0]]  # x_{s+j} = x_s Φ_jᵀ + v_j within each chunk
    for j in range(1, k):
        phi.append(maps[:, j] @ phi[-1])  # Φ_j = F_j Φ_{j-1}
        offset.append(torch.baddbmm(drive[:, j], offset[-1], maps[:, j].mT))  # v_j = v_{j-1} F_jᵀ + u_j
    phi, offset = torch.stack(phi, 1), torch.stack(offset, 1)

    start = inputs.new_zeros(batch, state_dim)  # x_{-1}
    starts = [start]
    for c in range(chunks - 1):
        start = torch.addmm(offset[c, -1], start, phi[c, -1].mT)
        starts.append(start)
    starts = torch.stack(starts).unsqueeze(1).expand(chunks, k, batch, state_dim)
    flat = (chunks * k, batch, state_dim)
    states = torch.baddbmm(offset.reshape(flat), starts.reshape(flat), phi.reshape(chunks * k, state_dim, state_dim).mT)
    return states[:steps] if pad else states


def _shift_predict(filtered: torch.Tensor, prior: torch.Tensor, A: torch.Tensor, c) -> torch.Tensor:
    """Predicted means ``m⁻_0 = μ_0``, ``m⁻_t = A_t m_{t-1} + c_t``: (T, N, S) from (T, N, S)."""
    A_next = A[1:] if A.ndim > 2 else A
    offset = None if c is None else (c[1:] if c.ndim > 1 else c)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (filtered, prior, A, c)):
        rest = filtered[:-1] @ A_next.mT
        rest = rest if offset is None else rest + offset
        return torch.cat([prior.unsqueeze(0), rest])
    out = torch.empty_like(filtered)  # no autograd: write in place, no concatenation pass
    out[0] = prior
    torch.matmul(filtered[:-1], A_next.mT, out=out[1:])
    if offset is not None:
        out[1:] += offset
    return out


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
        H, _ = mask_observation_model(H, model.observation_cov, pattern)
    # Work in a time-major layout (T, N, ·): every step is then a contiguous block.
    z = model.observations.reshape(-1, steps, obs_dim).transpose(0, 1)  # (T, N, L)
    eye = torch.eye(state_dim, dtype=covs.dtype, device=covs.device)
    residual = eye - gains @ H  # (T, S, S): I − K_t H_t
    prior_mean = model.initial_mean.expand(batch_shape + (state_dim,)).reshape(-1, state_dim)  # (N, S)
    c_all = None
    if c is not None:
        c_all = c if c.ndim == 1 else c.expand(batch_shape + c.shape[-2:]).reshape(-1, steps, state_dim).transpose(0, 1)
    # m_t = F_t m_{t-1} + u_t with F_t = (I − K_t H_t) A_t and u_t = K_t z_t + (I − K_t H_t) c_t;
    # step 0 updates the prior (no predict): F_0 is unused and c_0 is replaced by μ_0.
    inputs = z @ gains.mT  # (T, N, S): K_t z_t, a fresh tensor updated in place below
    inputs[0] += prior_mean @ residual[0].mT
    if c_all is not None:
        inputs[1:] += c_all[1:] @ residual[1:].mT if c.ndim > 1 else (residual[1:] @ c).unsqueeze(1)
    filtered = linear_recurrence(residual @ A, inputs)
    predicted = _shift_predict(filtered, prior_mean, A, c_all)  # (T, N, S)
    innovations = z - predicted @ H.mT  # e_t = z_t − H_t m⁻_t, (T, N, L)
    num_observed = obs_dim if pattern is None else pattern.sum(-1)
    log_likelihood = innovation_log_likelihood(innovations.transpose(0, 1), chols, num_observed)  # (N, T)

    def per_series(x):  # (T, N, S) -> (*batch, T, S)
        return x.transpose(0, 1).reshape(batch_shape + (steps, state_dim))

    def broadcast(x):  # (T, S, S) -> (*batch, T, S, S), a view
        return x.expand(batch_shape + x.shape)

    return FilterResult(
        filtered_mean=per_series(filtered),
        filtered_cov=broadcast(covs),
        predicted_mean=per_series(predicted),
        predicted_cov=broadcast(pred_covs),
        log_likelihood=log_likelihood.reshape(batch_shape + (steps,)),
        shared_covariance=True,
    )
