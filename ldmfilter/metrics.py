"""Scores for point forecasts, Gaussian beliefs, filter consistency and learned latents.

An edge module: numpy (or array-like) in, floats or numpy arrays out.  Every function works on
arrays whose last axis is the feature axis ``(..., D)``; leading axes (batch, time) are flattened
consistently.  NaN in the *observed* argument (``y_true``, ``y``) means "missing": the entry is
left out of the score, and an error is raised when nothing is left to score.  Predictions, moments
and the arguments of the consistency checks must be finite.  inf is always rejected.

Groups:

* point forecasts: :func:`rmse`;
* Gaussian beliefs: :func:`gaussian_nll`, :func:`crps_gaussian`, :func:`interval_coverage`,
  :func:`gaussian_interval_coverage`;
* filter consistency (Bar-Shalom, Li & Kirubarajan, 2001, §5.4): :func:`nees`, :func:`nis`,
  :func:`chi2_band`, :func:`consistency`;
* learned representations: :func:`linear_probe_r2`, :func:`mean_correlation_coefficient`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import linalg as sla
from scipy import optimize, special, stats

__all__ = [
    "rmse",
    "gaussian_nll",
    "crps_gaussian",
    "interval_coverage",
    "gaussian_interval_coverage",
    "nees",
    "nis",
    "chi2_band",
    "consistency",
    "Consistency",
    "linear_probe_r2",
    "mean_correlation_coefficient",
    "MatchedCorrelation",
]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- input checking


def _array(value, name: str, *, allow_nan: bool = False, min_ndim: int = 0) -> np.ndarray:
    """``value`` as a float64 array: real numeric, no inf, NaN only when ``allow_nan``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s) (..., D), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains inf; only finite values (or NaN for missing observations) are allowed")
    if not allow_nan and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; only the observed argument may mark missing values with NaN")
    return arr


def _broadcast(arr: np.ndarray, shape: tuple, name: str, ref: str) -> np.ndarray:
    """Broadcast ``arr`` to exactly ``shape`` (the shape of argument ``ref``) or raise."""
    try:
        ok = np.broadcast_shapes(arr.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to the shape {tuple(shape)} of {ref}")
    return np.broadcast_to(arr, shape)


def _positive(arr: np.ndarray, name: str) -> np.ndarray:
    if (arr <= 0).any():
        raise ValueError(f"{name} must be strictly positive, got minimum {arr.min()}")
    return arr


def _probability(value, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    return value


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _covariance(value, name: str, dim: int, batch_shape: tuple, ref: str) -> np.ndarray:
    """Check a symmetric ``(..., dim, dim)`` covariance whose batch axes broadcast to ``batch_shape``.

    Returns ``(dim, dim)`` when shared by every step, else ``(N, dim, dim)`` with ``N`` the number
    of steps in ``batch_shape`` (flattened).
    """
    cov = _array(value, name, min_ndim=2)
    if cov.shape[-2:] != (dim, dim):
        raise ValueError(f"{name} must have shape (..., {dim}, {dim}) to match {ref}, got {cov.shape}")
    scale = np.abs(cov).max(initial=0.0)
    if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-6, atol=1e-12 * scale):
        raise ValueError(f"{name} must be symmetric")
    if cov.ndim == 2:
        return cov
    cov = _broadcast(cov, tuple(batch_shape) + (dim, dim), name, f"{ref} (with the last axis as (D, D))")
    return cov.reshape(-1, dim, dim)


def _cholesky(cov: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be positive definite; its Cholesky factorisation failed") from None


def _whiten(err: np.ndarray, cov: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis norms ``eᵀ Σ⁻¹ e`` and ``log|Σ|`` per row, by Cholesky solves.

    ``err`` is (N, d); ``cov`` is (d, d) (shared) or (N, d, d).  Returns two arrays of shape (N,).
    """
    chol = _cholesky(cov, name)
    if cov.ndim == 2:
        z = sla.solve_triangular(chol, err.T, lower=True).T  # z = L⁻¹ e
        logdet = np.full(err.shape[0], 2.0 * np.log(np.diagonal(chol)).sum())
    else:
        z = np.linalg.solve(chol, err[..., None])[..., 0]  # z = L⁻¹ e, batched
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    return np.square(z).sum(-1), logdet


def _observed(y: np.ndarray, name: str) -> np.ndarray:
    observed = ~np.isnan(y)
    if not observed.any():
        raise ValueError(f"{name} has no observed (non-NaN) entries; there is nothing to score")
    return observed


def _mean_observed(values: np.ndarray, observed: np.ndarray) -> float:
    return float(values[observed].mean())


# --------------------------------------------------------------------------- point forecasts


def rmse(y_true, y_pred, axis=None):
    """Root mean squared error over the observed entries.

    ``RMSE = sqrt( (1/|O|) Σ_{i ∈ O} (y_i − ŷ_i)² )`` with ``O`` the non-NaN entries of ``y_true``.

    Parameters
    ----------
    y_true : array_like, shape (...)
        Observed values; NaN marks a missing entry, which is left out.
    y_pred : array_like, broadcastable to the shape of ``y_true``
        Predictions; must be finite.
    axis : int or tuple of int, optional
        Axes to average over; all of them when None.

    Returns
    -------
    float or ndarray
        A float when ``axis`` is None, else an array of the remaining axes, NaN where a slice has
        no observed entry.

    Raises
    ------
    ValueError
        If no entry of ``y_true`` is observed, on inf, NaN in ``y_pred`` or a shape mismatch.
    """
    y = _array(y_true, "y_true", allow_nan=True)
    pred = _broadcast(_array(y_pred, "y_pred"), y.shape, "y_pred", "y_true")
    observed = _observed(y, "y_true")
    err = np.where(observed, np.where(observed, y, 0.0) - pred, 0.0)
    scale = float(np.abs(err).max())  # errors in units of the largest: squares neither overflow nor underflow
    scale = scale if 0.0 < scale < math.inf else 1.0
    sq = np.square(err / scale)
    if axis is None:
        return scale * math.sqrt(_mean_observed(sq, observed))
    count = observed.sum(axis=axis)
    total = sq.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return scale * np.sqrt(np.where(count > 0, total / np.maximum(count, 1), np.nan))


# --------------------------------------------------------------------------- Gaussian beliefs


def gaussian_nll(y, mean, *, var=None, cov=None, reduce: bool = True):
    """Negative log-density of observations under Gaussian beliefs, per step or averaged.

    For a step with observed entries ``o`` (the non-NaN entries of ``y``),
    ``NLL = ½ [ |o| log 2π + log|Σ_oo| + (y_o − μ_o)ᵀ Σ_oo⁻¹ (y_o − μ_o) ]``, i.e. the exact
    marginal density of the observed entries.  With ``var=`` the covariance is ``diag(var)``.
    Computed with Cholesky solves.

    Parameters
    ----------
    y : array_like, shape (..., D)
        Observations; NaN marks a missing entry.
    mean : array_like, broadcastable to (..., D)
    var : array_like, broadcastable to (..., D), keyword-only
        Marginal variances (independent entries), strictly positive.
    cov : array_like, shape (D, D) or (..., D, D) broadcastable to ``y.shape[:-1] + (D, D)``, keyword-only
        Full symmetric positive-definite covariances.  Give exactly one of ``var`` and ``cov``.
    reduce : bool, default True
        Return the mean over steps with at least one observed entry (a float); otherwise the
        per-step values.

    Returns
    -------
    float or ndarray of shape (...)
        Nats.  Per-step values are NaN at steps with no observed entry.

    Raises
    ------
    ValueError
        If both or neither of ``var``/``cov`` are given, on shape mismatch, inf, non-positive
        variances, a covariance that is not symmetric positive definite, or if nothing is observed.
    """
    if (var is None) == (cov is None):
        raise ValueError("give exactly one of var= (marginal variances, (..., D)) or cov= (covariances, (..., D, D))")
    y = _array(y, "y", allow_nan=True, min_ndim=1)
    mu = _broadcast(_array(mean, "mean"), y.shape, "mean", "y")
    observed = _observed(y, "y")
    resid = np.where(observed, y, 0.0) - mu
    steps = observed.any(-1)
    if var is not None:
        v = _positive(_broadcast(_array(var, "var"), y.shape, "var", "y"), "var")
        terms = np.where(observed, _LOG_2PI + np.log(v) + np.square(resid) / v, 0.0)
        per_step = np.where(steps, 0.5 * terms.sum(-1), np.nan)
    else:
        dim = y.shape[-1]
        sigma = _covariance(cov, "cov", dim, y.shape[:-1], "y")
        per_step = _nll_full(resid.reshape(-1, dim), sigma, observed.reshape(-1, dim)).reshape(y.shape[:-1])
    return float(per_step[steps].mean()) if reduce else per_step


def _nll_full(resid: np.ndarray, cov: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-row Gaussian NLL of the observed entries, grouping rows by their missing pattern."""
    out = np.full(resid.shape[0], np.nan)
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for k, pattern in enumerate(patterns):
        if not pattern.any():
            continue
        rows = np.flatnonzero(inverse == k)
        block = cov[np.ix_(pattern, pattern)] if cov.ndim == 2 else cov[rows][:, pattern][:, :, pattern]
        maha, logdet = _whiten(resid[np.ix_(rows, pattern)], block, "cov")
        out[rows] = 0.5 * (pattern.sum() * _LOG_2PI + logdet + maha)
    return out


def crps_gaussian(y, mean, std, reduce: bool = True):
    """Continuous ranked probability score of Gaussian marginals, in closed form.

    ``CRPS(N(μ, σ²), y) = ∫ (F(x) − 1{x ≥ y})² dx = σ [ z (2Φ(z) − 1) + 2φ(z) − 1/√π ]``,
    ``z = (y − μ)/σ`` (Gneiting & Raftery, 2007).  Lower is better; it has the units of ``y`` and
    reduces to the absolute error as ``σ → 0``.

    Parameters
    ----------
    y : array_like, shape (...)
        Observations; NaN marks a missing entry.
    mean : array_like, broadcastable to the shape of ``y``
    std : array_like, broadcastable to the shape of ``y``
        Marginal standard deviations, strictly positive.
    reduce : bool, default True
        Return the mean over observed entries (a float); otherwise the per-entry values.

    Returns
    -------
    float or ndarray of the shape of ``y``
        Per-entry values are NaN at missing entries.
    """
    y = _array(y, "y", allow_nan=True)
    mu = _broadcast(_array(mean, "mean"), y.shape, "mean", "y")
    sigma = _positive(_broadcast(_array(std, "std"), y.shape, "std", "y"), "std")
    observed = _observed(y, "y")
    resid = np.where(observed, y, 0.0) - mu
    with np.errstate(over="ignore", under="ignore"):
        z = resid / sigma  # may overflow to ±inf for σ → 0; the score below stays finite (→ |y − μ|)
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    score = resid * (2.0 * special.ndtr(z) - 1.0) + sigma * (2.0 * pdf - 1.0 / math.sqrt(math.pi))  # σ z = y − μ
    return _mean_observed(score, observed) if reduce else np.where(observed, score, np.nan)


def interval_coverage(y, lower, upper) -> float:
    """Fraction of observed entries inside their interval: ``(1/|O|) Σ_{i ∈ O} 1{l_i ≤ y_i ≤ u_i}``.

    Parameters
    ----------
    y : array_like, shape (...)
        Observations; NaN marks a missing entry.
    lower, upper : array_like, broadcastable to the shape of ``y``
        Interval bounds with ``lower <= upper``.

    Returns
    -------
    float in [0, 1]
    """
    y = _array(y, "y", allow_nan=True)
    lo = _broadcast(_array(lower, "lower"), y.shape, "lower", "y")
    hi = _broadcast(_array(upper, "upper"), y.shape, "upper", "y")
    if (lo > hi).any():
        raise ValueError(f"lower must not exceed upper; {(lo > hi).sum()} entries have lower > upper")
    observed = _observed(y, "y")
    inside = (lo <= y) & (y <= hi)  # False where y is NaN
    return _mean_observed(inside, observed)


def gaussian_interval_coverage(y, mean, std, coverage: float = 0.9) -> float:
    """Empirical coverage of the central Gaussian interval holding ``coverage`` of the mass.

    The interval is ``μ ± Φ⁻¹((1 + c)/2) σ``; see :func:`interval_coverage`.  A calibrated belief
    gives a value close to ``coverage``.

    Parameters
    ----------
    y : array_like, shape (...)
        Observations; NaN marks a missing entry.
    mean, std : array_like, broadcastable to the shape of ``y``
        Marginal means and strictly positive standard deviations.
    coverage : float in (0, 1), default 0.9

    Returns
    -------
    float in [0, 1]
    """
    c = _probability(coverage, "coverage")
    y = _array(y, "y", allow_nan=True)
    mu = _broadcast(_array(mean, "mean"), y.shape, "mean", "y")
    sigma = _positive(_broadcast(_array(std, "std"), y.shape, "std", "y"), "std")
    half = special.ndtri(0.5 + c / 2.0) * sigma
    return interval_coverage(y, mu - half, mu + half)


# --------------------------------------------------------------------------- filter consistency


def _mahalanobis(err: np.ndarray, cov, err_name: str, cov_name: str) -> np.ndarray:
    dim = err.shape[-1]
    sigma = _covariance(cov, cov_name, dim, err.shape[:-1], err_name)
    maha, _ = _whiten(err.reshape(-1, dim), sigma, cov_name)
    return maha.reshape(err.shape[:-1])


def nees(x_true, mean, cov) -> np.ndarray:
    """Normalised estimation error squared per step: ``ε_t = (x_t − m_t)ᵀ P_t⁻¹ (x_t − m_t)``.

    For a consistent estimator ``ε_t ~ χ²(D)``, so its mean is ``D``; check it with
    :func:`consistency`.  Computed with Cholesky solves.

    Parameters
    ----------
    x_true : array_like, shape (..., D)
        True states; must be complete (the χ² reference assumes a fixed ``D``).
    mean : array_like, broadcastable to (..., D)
        Estimated means.
    cov : array_like, shape (D, D) or (..., D, D)
        Estimated covariances, symmetric positive definite.

    Returns
    -------
    ndarray, shape (...)
    """
    x = _array(x_true, "x_true", min_ndim=1)
    m = _broadcast(_array(mean, "mean"), x.shape, "mean", "x_true")
    return _mahalanobis(x - m, cov, "x_true", "cov")


def nis(innovation, innov_cov) -> np.ndarray:
    """Normalised innovation squared per step: ``ν_tᵀ S_t⁻¹ ν_t`` with ``ν_t = y_t − H m⁻_t``.

    For a consistent filter ``ν_tᵀ S_t⁻¹ ν_t ~ χ²(D)``; check it with :func:`consistency`.

    Parameters
    ----------
    innovation : array_like, shape (..., D)
        Innovations (complete).
    innov_cov : array_like, shape (D, D) or (..., D, D)
        Innovation covariances ``S_t = H P⁻_t Hᵀ + R``, symmetric positive definite.

    Returns
    -------
    ndarray, shape (...)
    """
    nu = _array(innovation, "innovation", min_ndim=1)
    return _mahalanobis(nu, innov_cov, "innovation", "innov_cov")


def chi2_band(dof: int, n_runs: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided acceptance band for the average of ``n_runs`` independent χ²(dof) statistics.

    With ``N`` runs, ``N · mean ~ χ²(N · dof)``, so the band is
    ``[χ²_{N·dof}((1 − c)/2) / N, χ²_{N·dof}((1 + c)/2) / N]`` (Bar-Shalom et al., 2001, §5.4.2).

    Parameters
    ----------
    dof : int
        Degrees of freedom of one statistic (the state dimension for NEES, the observation
        dimension for NIS).
    n_runs : int
        Number of statistics averaged (Monte Carlo runs, or time steps for a time average).
    confidence : float in (0, 1), default 0.95

    Returns
    -------
    (float, float)
        Lower and upper bounds for the average.
    """
    dof = _positive_int(dof, "dof")
    n = _positive_int(n_runs, "n_runs")
    c = _probability(confidence, "confidence")
    lo, hi = stats.chi2.ppf([(1.0 - c) / 2.0, (1.0 + c) / 2.0], n * dof) / n
    return float(lo), float(hi)


class Consistency(NamedTuple):
    """Result of :func:`consistency`: the average statistic, whether it lies in the band, the band."""

    mean: float | np.ndarray
    consistent: bool | np.ndarray
    lower: float
    upper: float


def consistency(values, dof: int, confidence: float = 0.95, axis=None) -> Consistency:
    """Chi-square consistency test of averaged NEES or NIS values.

    The average ``ε̄`` of ``N`` values is compared with :func:`chi2_band` ``(dof, N, confidence)``.

    Parameters
    ----------
    values : array_like, shape (...)
        NEES/NIS values, e.g. (n_runs, T) from :func:`nees`; finite and non-negative.
    dof : int
        Degrees of freedom of each value.
    confidence : float in (0, 1), default 0.95
    axis : int, optional
        Average along this axis only (e.g. ``axis=0``: over runs, per time step, with
        ``N = values.shape[axis]``).  When None all values are pooled (``N = values.size``).

    Returns
    -------
    Consistency
        ``mean`` (float, or array of the remaining axes), ``consistent`` (bool or bool array:
        ``lower <= mean <= upper``), ``lower``, ``upper``.
    """
    vals = _array(values, "values")
    if vals.size == 0:
        raise ValueError("values is empty; there is nothing to average")
    if (vals < 0).any():
        raise ValueError(f"values must be non-negative (NEES/NIS are squared norms), got minimum {vals.min()}")
    if axis is None:
        mean, n = float(vals.mean()), vals.size
    else:
        mean, n = vals.mean(axis=axis), vals.shape[axis]
    lo, hi = chi2_band(dof, n, confidence)
    inside = (lo <= mean) & (mean <= hi)
    return Consistency(mean, bool(inside) if axis is None else inside, lo, hi)


# --------------------------------------------------------------------------- learned representations


def _paired_rows(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two complete (..., d) arrays with equal leading axes, flattened to (N, d_a), (N, d_b)."""
    x = _array(a, name_a, min_ndim=1)
    y = _array(b, name_b, min_ndim=1)
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"{name_a} and {name_b} must share their leading axes, got shapes {x.shape} and {y.shape}")
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if x.shape[0] < 2 or x.shape[1] < 1 or y.shape[1] < 1:
        raise ValueError(f"need at least 2 rows and 1 column, got shapes {x.shape} and {y.shape} after flattening")
    return x, y


def _nonconstant(x: np.ndarray, name: str) -> None:
    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if constant.size:
        raise ValueError(f"{name} has constant column(s) {constant.tolist()}; the score is undefined for them")


def _column_scale(x: np.ndarray) -> np.ndarray:
    """Largest magnitude of each column (1 for an all-zero column), shape (d,)."""
    scale = np.abs(x).max(0)
    return np.where(scale > 0, scale, 1.0)


def linear_probe_r2(features, targets, test_features=None, test_targets=None) -> float:
    """R² of an affine least-squares read-out from features to targets.

    Fits ``ŷ = W h + b`` by least squares (``ldmfilter.training.probes``) and returns
    ``R² = mean_d [1 − Σ_n (y_nd − ŷ_nd)² / Σ_n (y_nd − ȳ_d)²]`` on the test data when given,
    otherwise on the training data (in-sample).

    Parameters
    ----------
    features : array_like, shape (..., F)
    targets : array_like, shape (..., D)
        Same leading axes as ``features``.
    test_features : array_like, shape (..., F), optional
    test_targets : array_like, shape (..., D), optional
        Give both or neither.

    Returns
    -------
    float
        At most 1; can be negative on held-out data.
    """
    if (test_features is None) != (test_targets is None):
        raise ValueError("give both test_features and test_targets, or neither")
    x, y = _paired_rows(features, targets, "features", "targets")
    if test_features is None:
        x_test, y_test = x, y
    else:
        x_test, y_test = _paired_rows(test_features, test_targets, "test_features", "test_targets")
        if x_test.shape[1] != x.shape[1] or y_test.shape[1] != y.shape[1]:
            raise ValueError(
                f"test data must have {x.shape[1]} features and {y.shape[1]} targets like the training data, "
                f"got {x_test.shape[1]} and {y_test.shape[1]}"
            )
    _nonconstant(y_test, "test_targets" if test_targets is not None else "targets")
    # R² is invariant to rescaling feature and target columns: work in units of the training data's
    # largest values, so that least squares on magnitudes near 1e±300 neither overflows nor underflows
    x_scale, y_scale = _column_scale(x), _column_scale(y)
    x, x_test, y, y_test = x / x_scale, x_test / x_scale, y / y_scale, y_test / y_scale
    import torch  # noqa: PLC0415 - lazy: keep `import ldmfilter.metrics` free of torch

    from .training.probes import linear_probe_r2 as _probe_r2  # noqa: PLC0415

    return _probe_r2(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, x_test, y_test)))


class MatchedCorrelation(NamedTuple):
    """Result of :func:`mean_correlation_coefficient` with ``return_matching=True``."""

    score: float
    true_index: np.ndarray
    est_index: np.ndarray
    abs_correlation: np.ndarray


def mean_correlation_coefficient(z_true, z_est, method: str = "pearson", return_matching: bool = False):
    """Mean correlation coefficient (MCC) between true and estimated latents.

    ``C_ij = |corr(z_true_i, z_est_j)|`` (Pearson, or Spearman = Pearson on ranks); a one-to-one
    matching ``π`` of ``k = min(d_true, d_est)`` pairs maximises ``Σ C_{i π(i)}`` (Hungarian
    algorithm); ``MCC = (1/k) Σ C_{i π(i)}``.  It is 1 when the estimate equals the truth up to
    permutation, sign and scale (and, for Spearman, any monotone map per dimension).

    Parameters
    ----------
    z_true : array_like, shape (..., d_true)
    z_est : array_like, shape (..., d_est)
        Same leading axes as ``z_true``; extra dimensions of the larger one stay unmatched.
    method : {"pearson", "spearman"}, default "pearson"
    return_matching : bool, default False
        Also return the matched pairs and the |correlation| matrix.

    Returns
    -------
    float, or MatchedCorrelation
        ``score``; ``true_index``, ``est_index`` (int arrays of shape (k,), pair ``n`` matches
        ``z_true[..., true_index[n]]`` with ``z_est[..., est_index[n]]``); ``abs_correlation``
        (d_true, d_est).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    a, b = _paired_rows(z_true, z_est, "z_true", "z_est")
    _nonconstant(a, "z_true")
    _nonconstant(b, "z_est")
    if method == "spearman":
        a, b = stats.rankdata(a, axis=0), stats.rankdata(b, axis=0)
    a, b = a / _column_scale(a), b / _column_scale(b)  # correlations are scale-free; norms must not overflow
    a = (a - a.mean(0)) / np.linalg.norm(a - a.mean(0), axis=0)
    b = (b - b.mean(0)) / np.linalg.norm(b - b.mean(0), axis=0)
    corr = np.clip(np.abs(a.T @ b), 0.0, 1.0)  # (d_true, d_est)
    rows, cols = optimize.linear_sum_assignment(corr, maximize=True)
    score = float(corr[rows, cols].mean())
    return MatchedCorrelation(score, rows, cols, corr) if return_matching else score
