"""Expectation–maximisation for time-invariant linear-Gaussian state-space models.

Model (column vectors, the engine's convention; step 0 is an update without a predict)::

    x_0 ~ N(μ_0, Σ_0)
    x_t = A x_{t-1} + c + w_t,   w_t ~ N(0, Q)      (t ≥ 1)
    z_t = H x_t + d + v_t,       v_t ~ N(0, R)

The engine's :func:`~ldmfilter.gaussian.kalman_filter` has no observation offset, so ``d`` is
applied here by filtering ``z − d``; both offsets are optional (``None`` means zero and is never
estimated; give a zero vector to have EM estimate one).

One EM iteration (Shumway & Stoffer 1982, 2006 §6.3–6.4; Ghahramani & Hinton 1996):

* **E-step** — :func:`kalman_filter` and :func:`kalman_smoother` under the current parameters give
  ``x̂_t = E[x_t | data]``, ``P_t = Cov(x_t | data)`` and ``P_{t+1,t} = Cov(x_{t+1}, x_t | data)``
  for every series.  A missing observation component is a latent variable too: given ``x_t`` and
  the observed block ``o`` of ``z_t``, the missing block ``m`` is Gaussian with
  ``E = H_m x_t + d_m + K (z_o − H_o x_t − d_o)``, ``K = R_mo R_oo⁻¹``, and covariance
  ``R_mm − K R_om`` (exact for any, also non-diagonal, ``R``).  So the full ``z_t`` is
  ``F_t x_t + f_t + e_t`` with ``F_t`` zero on observed rows, and its expected moments are
  ``ẑ_t = F_t x̂_t + f_t``, ``E[z_t x_tᵀ] = ẑ_t x̂_tᵀ + F_t P_t`` and
  ``E[z_t z_tᵀ] = ẑ_t ẑ_tᵀ + F_t P_t F_tᵀ + R^c_t``.
* **M-step** — the exact maximiser of the expected complete-data log-likelihood, pooled over all
  series and steps: ``[A c]`` and ``[H d]`` jointly by least squares on the expected moments, then
  ``Q`` and ``R`` as the expected residual covariances under the *new* ``(A, c)`` and ``(H, d)``,
  ``μ_0`` as the mean of ``x̂_0`` over series and ``Σ_0`` as the spread of ``x_0`` about the new
  ``μ_0``.  Parameters named in ``fixed`` keep their value and the others are maximised given it
  (e.g. with ``A`` fixed, ``c = mean(x̂_t − A x̂_{t−1})``).  With ``diagonal_Q``/``diagonal_R`` the
  covariance is the diagonal of the unconstrained one, which is the constrained maximiser because
  the regression coefficients do not depend on the noise covariance.

Every EM step therefore never decreases the observed-data log-likelihood.  pykalman's ``em`` uses
the same updates except for the offsets, which it updates *after* ``A``/``H`` (a coordinate step:
``A`` with the old ``c``, then ``c`` with the new ``A``), and it drops any time step with a missing
component from the ``H``/``R`` updates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import torch

from .kalman import kalman_filter
from .linalg import cholesky, cholesky_solve, symmetrize
from .smoother import kalman_smoother
from .validation import check_observations, check_tensor, split_missing

__all__ = [
    "LinearGaussianParams",
    "PARAMETER_NAMES",
    "linear_gaussian_log_likelihood",
    "em_step",
    "fit_em",
    "initial_params_from_data",
]

PARAMETER_NAMES = frozenset(
    {"A", "Q", "H", "R", "initial_mean", "initial_cov", "transition_offset", "observation_offset"}
)


@dataclass(frozen=True)
class LinearGaussianParams:
    """Time-invariant parameters of a linear-Gaussian state-space model.

    Attributes
    ----------
    A : Tensor, shape (S, S)
        Transition matrix.
    Q : Tensor, shape (S, S)
        Transition noise covariance.
    H : Tensor, shape (D, S)
        Observation matrix.
    R : Tensor, shape (D, D)
        Observation noise covariance.
    initial_mean : Tensor, shape (S,)
        Prior mean ``μ_0`` of the state at step 0.
    initial_cov : Tensor, shape (S, S)
        Prior covariance ``Σ_0``.
    transition_offset : Tensor, shape (S,), optional
        ``c``; None means zero (and is not estimated by EM).
    observation_offset : Tensor, shape (D,), optional
        ``d``; None means zero (and is not estimated by EM).

    All tensors share one floating dtype and device.  Positive (semi-)definiteness of the
    covariances is checked where they are used (by the filter).
    """

    A: torch.Tensor
    Q: torch.Tensor
    H: torch.Tensor
    R: torch.Tensor
    initial_mean: torch.Tensor
    initial_cov: torch.Tensor
    transition_offset: torch.Tensor | None = None
    observation_offset: torch.Tensor | None = None

    def __post_init__(self):
        A = check_tensor(self.A, "A")
        dtype, device = A.dtype, A.device
        for name in ("Q", "H", "R", "initial_mean", "initial_cov"):
            check_tensor(getattr(self, name), name, dtype, device)
        for name in ("transition_offset", "observation_offset"):
            if getattr(self, name) is not None:
                check_tensor(getattr(self, name), name, dtype, device)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ValueError(f"A must have shape (S, S) with S >= 1, got {tuple(A.shape)}")
        S = A.shape[0]
        if self.H.ndim != 2 or self.H.shape[1] != S or self.H.shape[0] < 1:
            raise ValueError(f"H must have shape (D, S={S}), got {tuple(self.H.shape)}")
        D = self.H.shape[0]
        expected = {"Q": (S, S), "R": (D, D), "initial_mean": (S,), "initial_cov": (S, S),
                    "transition_offset": (S,), "observation_offset": (D,)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (S={S}, D={D}), got {tuple(value.shape)}")

    @property
    def state_dim(self) -> int:
        """``S``."""
        return self.A.shape[0]

    @property
    def obs_dim(self) -> int:
        """``D``."""
        return self.H.shape[0]

    def replace(self, **changes) -> "LinearGaussianParams":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_fixed(fixed) -> frozenset:
    if isinstance(fixed, str):
        fixed = (fixed,)
    try:
        names = frozenset(fixed)
    except TypeError:
        raise TypeError(f"fixed must be a collection of parameter names, got {type(fixed).__name__}") from None
    unknown = sorted(str(n) for n in names - PARAMETER_NAMES)
    if unknown:
        raise ValueError(f"fixed has unknown parameter names {unknown}; expected a subset of {sorted(PARAMETER_NAMES)}")
    return names


def _check_data(observations, params: LinearGaussianParams, mask):
    """Observations as (N, T, D) zero-filled, observed mask (N, T, D) or None."""
    if not isinstance(params, LinearGaussianParams):
        raise TypeError(f"params must be a LinearGaussianParams, got {type(params).__name__}")
    obs = check_observations(observations)
    if obs.shape[-1] != params.obs_dim:
        raise ValueError(
            f"observations have D={obs.shape[-1]} components (shape {tuple(obs.shape)}) but params.H has "
            f"shape {tuple(params.H.shape)} (D={params.obs_dim})"
        )
    if obs.dtype != params.A.dtype or obs.device != params.A.device:
        raise TypeError(f"observations ({obs.dtype}, {obs.device}) and params ({params.A.dtype}, "
                        f"{params.A.device}) must share dtype and device")
    obs, observed = split_missing(obs, mask)
    T, D = obs.shape[-2], obs.shape[-1]
    obs = obs.reshape(-1, T, D)
    if observed is not None:
        observed = observed.reshape(-1, T, D)
    return obs, observed


def _filter(obs, observed, params: LinearGaussianParams):
    d = params.observation_offset
    centred = obs if d is None else obs - d
    return kalman_filter(
        centred, params.A, params.Q, params.H, params.R, params.initial_mean, params.initial_cov,
        transition_offset=params.transition_offset, mask=observed,
    )


def linear_gaussian_log_likelihood(observations, params: LinearGaussianParams, mask=None) -> torch.Tensor:
    """Total log-likelihood ``Σ_series log p(observed z)`` of the data under ``params``.

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, D)
        NaN entries are missing.
    params : LinearGaussianParams
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, D), optional
        True = observed.

    Returns
    -------
    Tensor, shape ()
    """
    obs, observed = _check_data(observations, params, mask)
    return _filter(obs, observed, params).log_likelihood.sum()


def _series_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the leading (series) axis; an expanded view (stride 0) is summed without N-fold work."""
    if x.shape[0] > 1 and x.stride(0) == 0:
        return x[0] * x.shape[0]
    return x.sum(0)


def _solve_right(lhs: torch.Tensor, gram: torch.Tensor, name: str) -> torch.Tensor:
    """``lhs @ gram⁻¹`` for a symmetric positive definite ``gram`` (Cholesky solve)."""
    return cholesky_solve(lhs.mT, cholesky(symmetrize(gram), name)).mT


def _outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ_i a_i b_iᵀ`` for rows ``a (…, p)``, ``b (…, q)``."""
    return a.reshape(-1, a.shape[-1]).mT @ b.reshape(-1, b.shape[-1])


def _missing_moments(obs, observed, means, covs, params: LinearGaussianParams):
    """Expected observations and the correction terms of partly/fully missing steps.

    Returns ``ẑ (N, T, D)`` and the sums over missing steps of ``F P (D, S)``, ``F P Fᵀ (D, D)`` and
    the conditional covariance ``R^c (D, D)`` (all zero when nothing is missing).
    """
    H, R = params.H, params.R
    D, S = H.shape
    d = params.observation_offset if params.observation_offset is not None else H.new_zeros(D)
    zero_ds, zero_dd = H.new_zeros(D, S), H.new_zeros(D, D)
    if observed is None:
        return obs, zero_ds, zero_dd, zero_dd
    n_idx, t_idx = (~observed.all(-1)).nonzero(as_tuple=True)
    if n_idx.numel() == 0:
        return obs, zero_ds, zero_dd, zero_dd
    M = observed[n_idx, t_idx].to(H.dtype)  # (k, D), 1 = observed
    U = 1.0 - M
    P, m, z = covs[n_idx, t_idx], means[n_idx, t_idx], obs[n_idx, t_idx]
    R_oo = R * (M[:, :, None] * M[:, None, :]) + torch.diag_embed(U)  # blockdiag(R_oo, I)
    R_om = R * (M[:, :, None] * U[:, None, :])  # rows o, columns m
    gain = cholesky_solve(R_om, cholesky(R_oo, "observed block of R")).mT  # K̃: (m, o) block K = R_mo R_oo⁻¹
    innovation = M * (z - m @ H.mT - d)  # ν = z_o − H_o x̂ − d_o, zero on missing rows
    z_hat = m @ H.mT + d + innovation + (gain @ innovation.unsqueeze(-1)).squeeze(-1)  # ẑ = H x̂ + d + (I + K̃) ν
    F = (torch.diag_embed(U) - gain) @ H  # rows m: H_m − K H_o; rows o: 0
    FP = F @ P
    cond = symmetrize((R - gain @ R) * (U[:, :, None] * U[:, None, :]))  # R_mm − K R_om on the (m, m) block
    full = obs.clone()
    full[n_idx, t_idx] = z_hat
    return full, FP.sum(0), (FP @ F.mT).sum(0), cond.sum(0)


@torch.no_grad()
def em_step(
    observations,
    params: LinearGaussianParams,
    mask=None,
    fixed: Iterable[str] = frozenset(),
    diagonal_Q: bool = False,
    diagonal_R: bool = False,
) -> tuple[LinearGaussianParams, torch.Tensor]:
    """One EM iteration, pooled over a batch of series (see the module docstring for the maths).

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, D)
        Typically ``(n_series, T, D)``; NaN entries are missing.
    params : LinearGaussianParams
        The current parameters (used by the E-step).
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, D), optional
        True = observed; combined with the NaN pattern.
    fixed : collection of str
        Parameters to keep, any of ``"A", "Q", "H", "R", "initial_mean", "initial_cov",
        "transition_offset", "observation_offset"``.
    diagonal_Q, diagonal_R : bool
        Constrain the estimated ``Q``/``R`` to be diagonal.

    Returns
    -------
    params : LinearGaussianParams
        The updated parameters.
    log_likelihood : Tensor, shape ()
        Total log-likelihood of the observed data under the *input* ``params`` (a by-product of
        the E-step), equal to ``kalman_filter(z − d, …).log_likelihood.sum()``.

    Raises
    ------
    ValueError
        Unknown names in ``fixed``, shapes that disagree with ``params``.
    TypeError
        Non-tensor input, mixed dtypes.
    """
    fixed = _check_fixed(fixed)
    obs, observed = _check_data(observations, params, mask)
    N, T, D = obs.shape
    S = params.state_dim
    result = _filter(obs, observed, params)
    smoothed = kalman_smoother(result, params.A, params.Q)
    means, covs, lag = smoothed.smoothed_mean, smoothed.smoothed_cov, smoothed.lag_one_cov
    log_likelihood = result.log_likelihood.sum()

    new = {}
    cov_first = _series_sum(covs[:, 0])
    cov_all = _series_sum(covs).sum(0)

    # initial state: μ0 = mean_n x̂_{n,0};  Σ0 = mean_n [P_{n,0} + (x̂_{n,0} − μ0)(x̂_{n,0} − μ0)ᵀ]
    mu0 = params.initial_mean if "initial_mean" in fixed else means[:, 0].mean(0)
    new["initial_mean"] = mu0
    if "initial_cov" not in fixed:
        spread = means[:, 0] - mu0
        new["initial_cov"] = symmetrize((cov_first + spread.mT @ spread) / N)

    # transition: [A c] by least squares of x_t on (x_{t-1}, 1); Q the expected residual covariance
    if T > 1:
        count = N * (T - 1)
        prev, nxt = means[:, :-1].reshape(-1, S), means[:, 1:].reshape(-1, S)
        cov_prev = cov_all - _series_sum(covs[:, -1])  # Σ P_t, t = 0..T-2
        cov_next = cov_all - cov_first  # Σ P_t, t = 1..T-1
        lag_sum = _series_sum(lag).sum(0)  # Σ Cov(x_{t+1}, x_t)
        A = params.A
        c = params.transition_offset
        free_A = "A" not in fixed
        free_c = c is not None and "transition_offset" not in fixed
        if free_A and free_c:
            prev_c, next_c = prev - prev.mean(0), nxt - nxt.mean(0)
            A = _solve_right(next_c.mT @ prev_c + lag_sum, prev_c.mT @ prev_c + cov_prev, "Σ E[x_{t-1} x_{t-1}ᵀ]")
            c = nxt.mean(0) - A @ prev.mean(0)  # c = mean(x̂_t) − A mean(x̂_{t−1})
        elif free_A:
            target = nxt if c is None else nxt - c
            A = _solve_right(target.mT @ prev + lag_sum, prev.mT @ prev + cov_prev, "Σ E[x_{t-1} x_{t-1}ᵀ]")
        elif free_c:
            c = (nxt - prev @ A.mT).mean(0)
        new["A"], new["transition_offset"] = A, c
        if "Q" not in fixed:
            resid = nxt - prev @ A.mT - (0.0 if c is None else c)
            lag_A = lag_sum @ A.mT
            Q = (resid.mT @ resid + cov_next - lag_A - lag_A.mT + A @ cov_prev @ A.mT) / count
            Q = symmetrize(Q)  # E[(x_t − A x_{t−1} − c)(…)ᵀ] averaged
            new["Q"] = torch.diag_embed(Q.diagonal()) if diagonal_Q else Q

    # observation: [H d] by least squares of z_t on (x_t, 1) with missing z imputed; R the residual
    free_H = "H" not in fixed
    free_d = params.observation_offset is not None and "observation_offset" not in fixed
    if free_H or free_d or "R" not in fixed:
        z_hat, FP, FPF, cond = _missing_moments(obs, observed, means, covs, params)
        count = N * T
        x_flat, z_flat = means.reshape(-1, S), z_hat.reshape(-1, D)
        H, d = params.H, params.observation_offset
        if free_H and free_d:
            x_c, z_c = x_flat - x_flat.mean(0), z_flat - z_flat.mean(0)
            H = _solve_right(z_c.mT @ x_c + FP, x_c.mT @ x_c + cov_all, "Σ E[x_t x_tᵀ]")
            d = z_flat.mean(0) - H @ x_flat.mean(0)  # d = mean(ẑ) − H mean(x̂)
        elif free_H:
            target = z_flat if d is None else z_flat - d
            H = _solve_right(target.mT @ x_flat + FP, x_flat.mT @ x_flat + cov_all, "Σ E[x_t x_tᵀ]")
        elif free_d:
            d = (z_flat - x_flat @ H.mT).mean(0)
        new["H"], new["observation_offset"] = H, d
        if "R" not in fixed:
            resid = z_flat - x_flat @ H.mT - (0.0 if d is None else d)
            FPH = FP @ H.mT
            # E[(z − H x − d)(…)ᵀ] = r rᵀ + (F − H) P (F − H)ᵀ + R^c, summed
            R = (resid.mT @ resid + FPF - FPH - FPH.mT + H @ cov_all @ H.mT + cond) / count
            R = symmetrize(R)
            new["R"] = torch.diag_embed(R.diagonal()) if diagonal_R else R
    return params.replace(**new), log_likelihood


def fit_em(
    observations,
    initial_params: LinearGaussianParams,
    mask=None,
    num_iters: int = 50,
    tol: float = 1e-6,
    fixed: Iterable[str] = frozenset(),
    diagonal_Q: bool = False,
    diagonal_R: bool = False,
) -> tuple[LinearGaussianParams, list[float]]:
    """Run EM until ``num_iters`` iterations or a relative improvement below ``tol``.

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, D)
        NaN entries are missing.
    initial_params : LinearGaussianParams
        Starting point, e.g. from :func:`initial_params_from_data`.
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, D), optional
    num_iters : int
        Maximum number of EM iterations (>= 0).
    tol : float
        Stop once ``(ℓ_k − ℓ_{k−1}) / |ℓ_{k−1}| < tol`` (>= 0; 0 runs all iterations unless the
        log-likelihood stops increasing).
    fixed, diagonal_Q, diagonal_R
        As in :func:`em_step`.

    Returns
    -------
    params : LinearGaussianParams
    history : list of float
        ``history[k]`` is the total log-likelihood after ``k`` EM iterations (``history[0]`` of
        ``initial_params``); the last entry belongs to the returned parameters (one extra filter
        pass computes it).
    """
    if not isinstance(num_iters, int) or isinstance(num_iters, bool) or num_iters < 0:
        raise ValueError(f"num_iters must be an integer >= 0, got {num_iters!r}")
    if not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    fixed = _check_fixed(fixed)
    params, history = initial_params, []
    for _ in range(num_iters):
        params, log_likelihood = em_step(observations, params, mask, fixed, diagonal_Q, diagonal_R)
        history.append(float(log_likelihood))
        if len(history) > 1 and (history[-1] - history[-2]) < tol * abs(history[-2]):
            break
    with torch.no_grad():
        history.append(float(linear_gaussian_log_likelihood(observations, params, mask)))
    return params, history


@torch.no_grad()
def initial_params_from_data(observations, state_dim: int, mask=None) -> LinearGaussianParams:
    """A PCA / least-squares starting point for EM.

    1. ``d`` = per-component mean of the observed entries; the data are centred with it.
    2. ``H`` = the top ``state_dim`` eigenvectors of the (pairwise-complete) covariance of the
       centred observations, each with its largest entry positive (orthonormal columns).
    3. Projected states ``x_t`` = the least-squares coefficients of ``z_t − d`` on ``H`` over the
       observed components of step ``t`` (ridge ``sqrt(eps)``; a fully missing step gives 0).
    4. ``A`` = least squares of ``x_t`` on ``x_{t−1}`` pooled over series, shrunk to spectral
       radius at most 0.98; ``Q`` = covariance of its residuals.
    5. ``R`` = diagonal, the variance of the observed PCA residuals ``z − d − H x``, floored at
       20% of each component's variance.  PCA attributes the noise along the retained directions
       to the states, so its residuals under-estimate ``R`` (to zero when ``state_dim = D``); EM
       converges far faster from an over- than from an under-estimated ``R`` (a start with tiny
       ``R`` lets the states explain the noise, a slowly escaped region).
    6. ``μ_0`` = mean of ``x_0`` over series; ``Σ_0`` = covariance of all projected states.

    No transition offset (the data are centred by ``d``).  Every covariance gets a floor of
    ``1e-6 ×`` its mean diagonal (and at least ``sqrt(eps)``), so it is positive definite.

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, D)
        NaN entries are missing; ``T >= 2``.
    state_dim : int
        ``S``, with ``1 <= S <= D``.
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, D), optional

    Returns
    -------
    LinearGaussianParams
        With ``observation_offset = d`` and ``transition_offset = None``.
    """
    obs = check_observations(observations)
    T, D = obs.shape[-2], obs.shape[-1]
    if not isinstance(state_dim, int) or isinstance(state_dim, bool) or not 1 <= state_dim <= D:
        raise ValueError(
            f"state_dim must be an integer with 1 <= state_dim <= D={D} (the PCA initialisation), got {state_dim!r}"
        )
    if T < 2:
        raise ValueError(f"observations need at least 2 time steps to initialise A, got shape {tuple(obs.shape)}")
    S = state_dim
    obs, observed = split_missing(obs, mask)
    obs = obs.reshape(-1, T, D)
    M = torch.ones_like(obs) if observed is None else observed.reshape(-1, T, D).to(obs.dtype)
    counts = M.sum((0, 1))
    if (counts < 2).any():
        raise ValueError(f"every observation component needs at least 2 observed values, got counts {counts.tolist()}")
    eps = torch.finfo(obs.dtype).eps
    eye_s = torch.eye(S, dtype=obs.dtype, device=obs.device)

    def floored(cov):
        cov = symmetrize(cov)
        floor = max(1e-6 * float(cov.diagonal().mean()), eps ** 0.5)
        return cov + floor * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)

    d = (obs * M).sum((0, 1)) / counts
    centred = (obs - d) * M
    flat_z, flat_m = centred.reshape(-1, D), M.reshape(-1, D)
    pair_counts = (flat_m.mT @ flat_m).clamp_min(1.0)
    cov_z = symmetrize(flat_z.mT @ flat_z / pair_counts)
    _, vecs = torch.linalg.eigh(cov_z)
    H = vecs[:, -S:].flip(-1)  # top S directions, largest first
    signs = torch.sign(H.gather(0, H.abs().argmax(0, keepdim=True)))
    H = H * torch.where(signs == 0, torch.ones_like(signs), signs)

    # per-step least squares on the observed components: (Hᵀ M H + ridge) x = Hᵀ M z
    if observed is None:
        states = flat_z @ H
    else:
        gram = H.mT @ (flat_m[:, :, None] * H) + eps ** 0.5 * eye_s
        states = torch.linalg.solve(gram, (flat_z @ H).unsqueeze(-1)).squeeze(-1)
    states = states.reshape(-1, T, S)
    prev, nxt = states[:, :-1].reshape(-1, S), states[:, 1:].reshape(-1, S)
    A = _solve_right(nxt.mT @ prev, floored(prev.mT @ prev), "Σ x_{t-1} x_{t-1}ᵀ")
    radius = float(torch.linalg.eigvals(A).abs().max())
    if radius > 0.98:
        A = A * (0.98 / radius)
    resid = nxt - prev @ A.mT
    Q = floored(resid.mT @ resid / resid.shape[0])

    obs_resid = (flat_z - states.reshape(-1, S) @ H.mT) * flat_m
    variance = (flat_z.square().sum(0) / counts).clamp_min(eps ** 0.5)
    R = torch.diag_embed(torch.maximum(obs_resid.square().sum(0) / counts, 0.2 * variance))

    all_states = states.reshape(-1, S)
    centred_states = all_states - all_states.mean(0)
    initial_cov = floored(centred_states.mT @ centred_states / all_states.shape[0])
    return LinearGaussianParams(
        A=A, Q=Q, H=H.contiguous(), R=R, initial_mean=states[:, 0].mean(0), initial_cov=initial_cov,
        transition_offset=None, observation_offset=d,
    )
