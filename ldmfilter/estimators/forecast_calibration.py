"""Per-horizon recalibration of forecast covariances (``calibrate_forecast`` of the estimators).

A model's forecast covariance grows as its transition says; where the model is wrong (a learned
transition only ever trained on one-step predictions, a moment rule that under-spreads a
nonlinear map), the ``h``-step intervals can come out too narrow or too wide.  Calibration
measures that on data: it forecasts from many origins of the given series, reads the forecasts
out to a space with known values (targets or observations), and for each horizon ``h`` finds the
factor ``c_h`` on the *state* forecast covariance that either maximises the Gaussian likelihood
of the values ``h`` steps ahead (``method="likelihood"``) or makes the central intervals of a
chosen level cover exactly that share of them (``method="coverage"``).  ``forecast`` then
multiplies the state covariance of step ``h`` by ``c_h`` (and of steps beyond the calibrated
horizon by the last factor); the observation and target beliefs follow through the read-outs.

The two criteria agree when the forecast errors are Gaussian.  With heavy-tailed errors (chaotic
flows, rare large misses) the likelihood is dominated by the few largest errors and its factors
can make the intervals too wide or too narrow at a given level; the coverage factors hit the level
on the calibration data by construction, and leave the likelihood to fall where it may.

The likelihood factor of each horizon is found by a coarse search over ``log c`` followed by a
golden-section refinement, the coverage factor by bisection on ``log c``; both run for all
horizons at once (one read-out evaluation per iteration).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

__all__ = [
    "forecast_origins", "gaussian_nll_sums", "marginal_coverage", "fit_scales", "fit_coverage_scales",
    "scale_forecast_cov", "MAX_ORIGINS", "METHODS",
]

MAX_ORIGINS = 2048  # origins used when ``every`` is not given (evenly spaced steps)
LOG_SCALE_RANGE = (-8.0, 8.0)  # search range of log c_h
COARSE_POINTS = 33  # log c grid step 0.5
GOLDEN_ITERATIONS = 30  # bracket of width 1 shrunk to ~5e-7
BISECTION_ITERATIONS = 40  # bracket of width 16 shrunk to ~1.5e-11
METHODS = ("likelihood", "coverage")
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


def marginal_coverage(
    values: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, level: float
) -> torch.Tensor:
    """Share of the known values inside their marginal central Gaussian interval, per horizon.

    The interval of each value is ``mean ± Φ⁻¹((1 + level)/2) · √var``; the share pools the
    ``D`` values of every valid row.

    Parameters
    ----------
    values, mean, var : Tensor, shape (N, H, D)
    valid : Tensor of bool, shape (N, H)
        Rows whose values are all known (the others are left out).
    level : float in (0, 1)

    Returns
    -------
    Tensor, shape (H,)
        In [0, 1]; a value with zero variance counts as covered only when it equals the mean.
    """
    half = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(level, dtype=torch.float64))
    inside = (values - mean).abs() <= half * var.clamp(min=0).sqrt()
    counted = valid[..., None].expand_as(inside)
    return (inside & counted).sum((0, 2)).to(torch.float64) / counted.sum((0, 2)).to(torch.float64)


def fit_coverage_scales(coverage_at: Callable[[torch.Tensor], torch.Tensor], horizon: int, level: float) -> np.ndarray:
    """Per-horizon factors ``c_h`` at which the intervals of ``level`` cover ``level`` of the values.

    Coverage grows with the factor; the result is the smallest factor (to the bisection's
    resolution) whose coverage reaches ``level``.

    Parameters
    ----------
    coverage_at : callable
        ``log_c`` (H,) ↦ coverage per horizon (H,) with the state covariance of step ``h``
        multiplied by ``exp(log_c[h])`` (see :func:`marginal_coverage`).
    horizon : int
    level : float in (0, 1)

    Returns
    -------
    ndarray, shape (H,)
        The factors; ``exp(LOG_SCALE_RANGE[1])`` where even that does not reach ``level``,
        ``exp(LOG_SCALE_RANGE[0])`` where that already does (the search does not go beyond).
    """
    low = torch.full((horizon,), LOG_SCALE_RANGE[0], dtype=torch.float64)
    high = torch.full((horizon,), LOG_SCALE_RANGE[1], dtype=torch.float64)
    for _ in range(BISECTION_ITERATIONS):  # invariant: coverage(high) >= level, or high is the range's top
        middle = 0.5 * (low + high)
        enough = coverage_at(middle) >= level
        high, low = torch.where(enough, middle, high), torch.where(enough, low, middle)
    return torch.exp(high).numpy()


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
