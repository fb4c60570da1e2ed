"""Argument checking and normalisation for the linear-Gaussian routines.

Shape rules (the same for every public function of :mod:`ldmfilter.gaussian`):

* a matrix parameter with exactly two dims, e.g. ``(S, S)``, is time-invariant and shared;
* a matrix parameter with more dims carries an explicit time axis: ``(*batch, T, S, S)``, where
  ``*batch`` broadcasts against the observations' batch axes and entry ``t`` is used at step
  ``t`` (for a transition: the transition *into* step ``t``; entry 0 is unused).  A per-series
  but time-invariant parameter is given by expanding it along time (``A[..., None, :, :].expand``,
  a view that costs nothing).  Shapes are never guessed: a 3-D array is always time-varying;
* a vector offset follows the same rule: ``(S,)`` or ``(*batch, T, S)``;
* the initial mean and covariance have no time axis: ``(S,)``/``(*batch, S)`` and
  ``(S, S)``/``(*batch, S, S)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

__all__ = ["LinearGaussianModel", "broadcastable", "check_tensor", "check_finite", "check_output_size", "check_result_finite", "check_matrix", "check_psd", "check_observations", "check_mask", "split_missing", "check_initial_belief", "check_offset", "check_filter_inputs", "prepare_linear_model"]


def check_tensor(value, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Require a floating torch tensor (of ``dtype``/``device`` when given)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the observations have {dtype}; use one dtype")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but the observations are on {device}")
    return value


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Require every entry of ``value`` to be finite (no NaN, no inf)."""
    with torch.no_grad():
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} of shape {tuple(value.shape)} contains NaN or inf")
    return value


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the OS does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_output_size(shape: tuple, dtype: torch.dtype, what: str) -> None:
    """Refuse to build an output of ``shape`` that cannot fit in this machine's memory.

    A clear ``ValueError`` up front instead of the process being killed half-way (e.g. a
    forecast with an absurd horizon).
    """
    nbytes = math.prod(shape) * torch.finfo(dtype).bits // 8
    limit = _physical_memory()
    if limit is not None and nbytes > limit:
        raise ValueError(
            f"{what} of shape {tuple(shape)} would take {nbytes / 2**30:.3g} GiB, more than this machine's "
            f"memory ({limit / 2**30:.3g} GiB)"
        )


def check_result_finite(values: torch.Tensor, name: str, time_axis: int, cause: str) -> None:
    """Raise instead of returning NaN or inf: ``values`` (…, T, …) must be finite; ``cause`` explains why not.

    The error names the first step (along ``time_axis``) with a non-finite entry.  A finite sum
    proves every entry finite (NaN and inf propagate through it) in one pass without a mask; only
    a non-finite sum (or an overflowing one) looks at the entries.
    """
    with torch.no_grad():
        if values.numel() == 0 or bool(torch.isfinite(values.sum())):
            return
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = (~finite).movedim(time_axis, 0).reshape(values.shape[time_axis], -1).any(-1)
        step = int(torch.nonzero(bad)[0, 0])
    raise ValueError(f"{name} is NaN or inf from step {step} on: {cause}")


def check_observations(observations) -> torch.Tensor:
    """Check observations of shape ``(*batch, T, L)``: float, ``T >= 1``, no inf (NaN = missing)."""
    obs = check_tensor(observations, "observations")
    if obs.ndim < 2:
        raise ValueError(f"observations must have shape (*batch, T, L), got {tuple(obs.shape)}")
    if obs.shape[-2] < 1 or obs.shape[-1] < 1:
        raise ValueError(f"observations need at least one time step and one dimension, got {tuple(obs.shape)}")
    if obs.numel() == 0:
        raise ValueError(f"observations have an empty batch axis, shape {tuple(obs.shape)}")
    if torch.isinf(obs).any():
        raise ValueError("observations contain inf; use NaN (or the mask) to mark missing values")
    return obs


def broadcastable(shape: tuple, target: tuple) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target``."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def check_matrix(value, name, rows, cols, steps, batch_shape, dtype, device) -> torch.Tensor:
    """Check a finite ``(rows, cols)`` parameter, static or time-varying ``(*batch, steps, rows, cols)``."""
    value = check_tensor(value, name, dtype, device)
    if value.ndim == 2:
        if value.shape != (rows, cols):
            raise ValueError(f"{name} must have shape ({rows}, {cols}), got {tuple(value.shape)}")
        return check_finite(value, name)
    if value.ndim < 2 or value.shape[-3:] != (steps, rows, cols):
        raise ValueError(
            f"{name} must have shape ({rows}, {cols}) or (*batch, T={steps}, {rows}, {cols}) when "
            f"time-varying, got {tuple(value.shape)}"
        )
    if not broadcastable(value.shape[:-3], batch_shape):
        raise ValueError(
            f"{name} batch axes {tuple(value.shape[:-3])} do not broadcast to the observations' "
            f"batch axes {tuple(batch_shape)}"
        )
    return check_finite(value, name)


def check_psd(value: torch.Tensor, name: str, lift: bool = False) -> torch.Tensor:
    """Symmetric and positive semi-definite up to sqrt(machine epsilon), relative.

    Returns ``value``; with ``lift=True`` a matrix that is PSD only to that tolerance (smallest
    eigenvalue ``λ`` in ``[−√eps · max|value|, 0)``, e.g. a rank-deficient ``v vᵀ`` rounded to
    float32) comes back as ``value + |λ| I``, a change within its rounding that makes it PSD.
    The filters lift their ``Q``, ``R`` and ``Σ_0`` so: the Joseph-form update is positive
    semi-definite only for a PSD ``R``, and ``K R Kᵀ`` with a large gain turns a rounding-sized
    negative eigenvalue into a negative variance.
    """
    with torch.no_grad():
        tol = torch.finfo(value.dtype).eps ** 0.5
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
        scale = value.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(value.dtype).tiny)
        asym = (value - value.mT).abs().amax(dim=(-2, -1))
        if (asym > tol * scale).any():
            raise ValueError(f"{name} of shape {tuple(value.shape)} is not symmetric")
        precise = value.to(torch.float64) if value.dtype != torch.float64 else value  # float32 eigvalsh misses ~1e-9
        smallest = torch.linalg.eigvalsh(precise)[..., 0]
        if (smallest < -tol * scale).any():
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} is not positive semi-definite "
                f"(smallest eigenvalue {smallest.min().item():.3g})"
            )
        negative = bool((smallest < 0).any())
    if lift and negative:  # |λ| plus one rounding unit of the largest entry, so that the shift survives rounding
        shift = torch.where(smallest < 0, -smallest + torch.finfo(value.dtype).eps * scale.to(smallest.dtype), 0.0)
        eye = torch.eye(value.shape[-1], dtype=value.dtype, device=value.device)
        return value + shift.to(value.dtype)[..., None, None] * eye
    return value


def check_mask(mask, batch_shape: tuple, steps: int, obs_dim: int) -> torch.Tensor:
    """Check a bool mask of shape ``(*batch, T)`` or ``(*batch, T, L)``; return it as (*batch, T, L)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = observed), got {mask.dtype}")
    full = tuple(batch_shape) + (steps, obs_dim)
    if broadcastable(tuple(mask.shape) + (1,), full):
        return mask.unsqueeze(-1).expand(full)
    if broadcastable(tuple(mask.shape), full):
        return mask.expand(full)
    raise ValueError(
        f"mask must have shape (*batch, T) = {tuple(batch_shape) + (steps,)} or (*batch, T, L) = {full}, "
        f"got {tuple(mask.shape)}"
    )


def split_missing(observations: torch.Tensor, mask=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Combine the NaN pattern with ``mask``; return zero-filled observations and the observed mask.

    Parameters
    ----------
    observations : Tensor, shape (*batch, T, L)
        Already checked by :func:`check_observations`.
    mask : Tensor of bool, shape (*batch, T) or (*batch, T, L), optional

    Returns
    -------
    observations : Tensor, shape (*batch, T, L)
        Missing entries replaced by 0 (so that no NaN reaches a gradient).
    observed : Tensor of bool, shape (*batch, T, L), or None when everything is observed
    """
    batch_shape, steps, obs_dim = tuple(observations.shape[:-2]), observations.shape[-2], observations.shape[-1]
    observed = ~torch.isnan(observations)
    if mask is not None:
        observed = observed & check_mask(mask, batch_shape, steps, obs_dim)
    if bool(observed.all()):
        return observations, None
    return torch.where(observed, observations, torch.zeros((), dtype=observations.dtype, device=observations.device)), observed


def check_initial_belief(initial_mean, initial_cov, batch_shape: tuple, dtype, device):
    """Check the prior ``(S,)``/``(*batch, S)`` (finite, ``S >= 1``) and ``(S, S)``/``(*batch, S, S)``; return both."""
    initial_mean = check_tensor(initial_mean, "initial_mean", dtype, device)
    if initial_mean.ndim < 1 or initial_mean.shape[-1] < 1:
        raise ValueError(f"initial_mean must have shape (S,) or (*batch, S) with S >= 1, got {tuple(initial_mean.shape)}")
    check_finite(initial_mean, "initial_mean")
    state_dim = initial_mean.shape[-1]
    if not broadcastable(initial_mean.shape[:-1], batch_shape):
        raise ValueError(
            f"initial_mean batch axes {tuple(initial_mean.shape[:-1])} do not broadcast to {batch_shape}"
        )
    initial_cov = check_tensor(initial_cov, "initial_cov", dtype, device)
    if initial_cov.ndim < 2 or initial_cov.shape[-2:] != (state_dim, state_dim):
        raise ValueError(
            f"initial_cov must have shape ({state_dim}, {state_dim}) or (*batch, {state_dim}, {state_dim}), "
            f"got {tuple(initial_cov.shape)}"
        )
    if not broadcastable(initial_cov.shape[:-2], batch_shape):
        raise ValueError(f"initial_cov batch axes {tuple(initial_cov.shape[:-2])} do not broadcast to {batch_shape}")
    initial_cov = check_psd(initial_cov, "initial_cov", lift=True)
    return initial_mean, initial_cov


def check_offset(offset, name: str, state_dim: int, steps: int, batch_shape: tuple, dtype, device):
    """Check a finite vector parameter ``(S,)`` or time-varying ``(*batch, T, S)``; None passes through."""
    if offset is None:
        return None
    offset = check_tensor(offset, name, dtype, device)
    ok = offset.shape == (state_dim,) or (
        offset.ndim >= 2 and offset.shape[-2:] == (steps, state_dim) and broadcastable(offset.shape[:-2], batch_shape)
    )
    if not ok:
        raise ValueError(
            f"{name} must have shape ({state_dim},) or (*batch, T={steps}, {state_dim}), got {tuple(offset.shape)}"
        )
    return check_finite(offset, name)


def check_filter_inputs(observations, transition_cov, observation_cov, initial_mean, initial_cov):
    """The checks every filter shares: observations, prior, ``Q`` and ``R``.

    Returns
    -------
    observations, initial_mean, initial_cov, transition_cov, observation_cov : Tensor
        Checked (not yet split into observed and missing).
    args : tuple
        ``(T, batch_shape, dtype, device)`` for :func:`check_matrix` and :func:`check_offset`.
    """
    obs = check_observations(observations)
    batch_shape, steps, obs_dim = tuple(obs.shape[:-2]), obs.shape[-2], obs.shape[-1]
    args = (steps, batch_shape, obs.dtype, obs.device)
    initial_mean, initial_cov = check_initial_belief(initial_mean, initial_cov, batch_shape, obs.dtype, obs.device)
    state_dim = initial_mean.shape[-1]
    Q = check_matrix(transition_cov, "transition_cov", state_dim, state_dim, *args)
    R = check_matrix(observation_cov, "observation_cov", obs_dim, obs_dim, *args)
    Q = check_psd(Q, "transition_cov", lift=True)
    R = check_psd(R, "observation_cov", lift=True)
    return obs, initial_mean, initial_cov, Q, R, args


@dataclass(frozen=True)
class LinearGaussianModel:
    """Checked inputs of a linear-Gaussian filter (see the module docstring for shapes)."""

    observations: torch.Tensor  # (*batch, T, L), missing entries replaced by 0
    observed: torch.Tensor | None  # (*batch, T, L) bool, None when everything is observed
    transition_matrix: torch.Tensor
    transition_cov: torch.Tensor
    observation_matrix: torch.Tensor
    observation_cov: torch.Tensor
    initial_mean: torch.Tensor
    initial_cov: torch.Tensor
    transition_offset: torch.Tensor | None

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.observations.shape[:-2])

    @property
    def num_steps(self) -> int:
        return self.observations.shape[-2]

    @property
    def covariance_is_shared(self) -> bool:
        """True when the covariance recursion is the same for every series of the batch."""
        params = (self.transition_matrix, self.transition_cov, self.observation_matrix, self.observation_cov)
        if any(p.ndim > 3 for p in params) or self.initial_cov.ndim > 2:
            return False
        if self.observed is None:
            return True
        flat = self.observed.reshape(-1, *self.observed.shape[-2:])
        return bool((flat == flat[:1]).all())


def prepare_linear_model(
    observations,
    transition_matrix,
    transition_cov,
    observation_matrix,
    observation_cov,
    initial_mean,
    initial_cov,
    transition_offset=None,
    mask=None,
) -> LinearGaussianModel:
    """Validate the arguments of :func:`~ldmfilter.gaussian.kalman_filter` and normalise them.

    Raises
    ------
    TypeError
        Wrong types or dtypes (non-tensors, integer tensors, mixed dtypes, non-bool mask).
    ValueError
        Wrong shapes, an empty batch or state, non-symmetric or non-PSD covariances, inf in the
        observations, NaN or inf in a parameter.
    """
    obs, initial_mean, initial_cov, Q, R, args = check_filter_inputs(
        observations, transition_cov, observation_cov, initial_mean, initial_cov
    )
    state_dim, obs_dim = initial_mean.shape[-1], obs.shape[-1]
    A = check_matrix(transition_matrix, "transition_matrix", state_dim, state_dim, *args)
    H = check_matrix(observation_matrix, "observation_matrix", obs_dim, state_dim, *args)
    offset = check_offset(transition_offset, "transition_offset", state_dim, *args)
    obs, observed = split_missing(obs, mask)
    return LinearGaussianModel(obs, observed, A, Q, H, R, initial_mean, initial_cov, offset)
