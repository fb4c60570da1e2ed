"""Per-horizon recalibration of forecast covariances (``calibrate_forecast`` of the estimators).

A model's forecast covariance grows as its transition says; where the model is wrong (a learned
transition only ever trained on one-step predictions, a moment rule that under-spreads a
nonlinear map), the ``h``-step intervals can come out too narrow or too wide.  Calibration
measures that on data: it forecasts from many origins of the given series, reads the forecasts
out to a space with known values (targets or observations), and for each horizon ``h`` finds the
factor ``c_h`` on the *state* forecast covariance that maximises the Gaussian likelihood of the
values ``h`` steps ahead.  ``forecast`` then multiplies the state covariance of step ``h`` by
``c_h`` (and of steps beyond the calibrated horizon by the last factor); the observation and
target beliefs follow through the read-outs.

The factor of each horizon is found by a coarse search over ``log c`` followed by a
golden-section refinement, for all horizons at once (one read-out evaluation per iteration).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

__all__ = ["forecast_origins", "gaussian_nll_sums", "fit_scales", "scale_forecast_cov", "MAX_ORIGINS"]

MAX_ORIGINS = 2048  # origins used when ``every`` is not given (evenly spaced steps)
LOG_SCALE_RANGE = (-8.0, 8.0)  # search range of log c_h
COARSE_POINTS = 33  # log c grid step 0.5
GOLDEN_ITERATIONS = 30  # bracket of width 1 shrunk to ~5e-7
LOG_2PI = math.log(2.0 * math.pi)


def forecast_origins(lengths, horizon: int, burn_in: int | None, every: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Series and step of every forecast origin.

    Parameters
    ----------
    lengths : sequence of int
        Grid steps of each series.
    horizon : int
        Steps forecast from each origin; an origin ``t`` needs ``t + horizon < length``.
    burn_in : int or None
        Origins start at this step of each series (None: a quarter of its length, so that the
        filter has left its initial belief).
    every : int or None
        Steps between origins (None: the smallest spacing that gives at most ``MAX_ORIGINS``).

    Returns
    -------
    series, step : ndarray of int, shape (N,)

    Raises
    ------
    ValueError
        No series is long enough for one origin.
    """
    ranges = []
    for i, length in enumerate(int(k) for k in lengths):
        start = length // 4 if burn_in is None else burn_in
        ranges.append((i, start, length - horizon))  # origins start, …, length - horizon - 1
    available = sum(max(0, stop - start) for _, start, stop in ranges)
    if available == 0:
        shortest = ("a quarter of its steps" if burn_in is None else f"{burn_in} burn-in steps")
        raise ValueError(
            f"no series is long enough to calibrate {horizon}-step forecasts: a series needs {shortest} plus "
            f"{horizon + 1} steps; the longest has {max(int(k) for k in lengths)}"
        )
    if every is None:
        every = max(1, math.ceil(available / MAX_ORIGINS))
    series, steps = [], []
    for i, start, stop in ranges:
        t = np.arange(start, stop, every)
        series.append(np.full(len(t), i))
        steps.append(t)
    return np.concatenate(series), np.concatenate(steps)


def gaussian_nll_sums(
    values: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor | None, var: torch.Tensor | None
) -> torch.Tensor:
    """Gaussian negative log-likelihood summed over the valid rows, per horizon.

    Parameters
    ----------
    values, mean : Tensor, shape (N, H, D)
    valid : Tensor of bool, shape (N, H)
        Rows whose values are all known (the others count zero).
    cov : Tensor, shape (N, H, D, D), or None
        Full covariances; the marginal variances ``var`` (N, H, D) are used when None.

    Returns
    -------
    Tensor, shape (H,)
        ``inf`` where the covariance of a valid row is not positive definite.
    """
    error = torch.where(valid[..., None], values - mean, torch.zeros_like(mean))
    if cov is not None:
        chol, info = torch.linalg.cholesky_ex(cov)
        ok = info == 0
        chol = torch.where(ok[..., None, None], chol, torch.eye(cov.shape[-1], dtype=cov.dtype))
        white = torch.linalg.solve_triangular(chol, error.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        nll = 0.5 * (logdet + white.square().sum(-1))
    else:
        ok = (var > 0).all(-1)
        safe = torch.where(var > 0, var, torch.ones_like(var))
        nll = 0.5 * (torch.log(safe) + error.square() / safe).sum(-1)
    nll = nll + 0.5 * error.shape[-1] * LOG_2PI
    nll = torch.where(ok, nll, torch.full_like(nll, math.inf))
    return torch.where(valid, nll, torch.zeros_like(nll)).sum(0)


def fit_scales(nll_at: Callable[[torch.Tensor], torch.Tensor], horizon: int) -> np.ndarray:
    """Per-horizon factors ``c_h`` that minimise ``nll_at``.

    Parameters
    ----------
    nll_at : callable
        ``log_c`` (H,) ↦ summed NLL per horizon (H,) with the state covariance of step ``h``
        multiplied by ``exp(log_c[h])``.
    horizon : int

    Returns
    -------
    ndarray, shape (H,)
        The factors; a factor at the edge of ``exp(LOG_SCALE_RANGE)`` means the data asked for
        more (the search does not go beyond).
    """
    grid = torch.linspace(*LOG_SCALE_RANGE, COARSE_POINTS, dtype=torch.float64)
    values = torch.stack([nll_at(torch.full((horizon,), float(g), dtype=torch.float64)) for g in grid])
    if not torch.isfinite(values.min(0).values).all():
        bad = [h + 1 for h in range(horizon) if not math.isfinite(float(values[:, h].min()))]
        raise FloatingPointError(f"the forecast likelihood is not finite at any scale for horizons {bad}")
    best = values.argmin(0)
    step = float(grid[1] - grid[0])
    low = (grid[best] - step).clamp(min=LOG_SCALE_RANGE[0])
    high = (grid[best] + step).clamp(max=LOG_SCALE_RANGE[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll_at(a), nll_at(b)
    for _ in range(GOLDEN_ITERATIONS):
        left = fa <= fb  # the minimum is in [low, b]: shrink from the right
        high, low = torch.where(left, b, high), torch.where(left, low, a)
        new_a, new_b = high - ratio * (high - low), low + ratio * (high - low)
        probe = torch.where(left, new_a, new_b)
        fp = nll_at(probe)
        a, b = torch.where(left, probe, b), torch.where(left, a, probe)
        fa, fb = torch.where(left, fp, fb), torch.where(left, fa, fp)
    return torch.exp(torch.where(fa <= fb, a, b)).numpy()


def scale_forecast_cov(cov: torch.Tensor, scale: np.ndarray) -> torch.Tensor:
    """Forecast covariances (…, horizon, S, S) with step ``k`` multiplied by ``scale[min(k, len - 1)]``."""
    horizon = cov.shape[-3]
    factors = np.asarray(scale)[np.minimum(np.arange(horizon), len(scale) - 1)]
    return cov * torch.as_tensor(factors, dtype=cov.dtype)[:, None, None]
