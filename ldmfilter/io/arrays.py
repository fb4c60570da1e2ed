"""Checking numeric arrays of sequences (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np

from ..gaussian.blocks import row_blocks

__all__ = ["as_sequences", "check_numeric", "MAX_MAGNITUDE"]

MAX_MAGNITUDE = 1e150  # beyond this, squares overflow float64 (variances, least squares, EM statistics)


def check_numeric(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float array; TypeError for bool, complex, strings and objects, ValueError for inf
    and for magnitudes beyond ``MAX_MAGNITUDE`` (whose squares overflow float64)."""
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.integer):
        values = values.astype(np.float64)
    where = _first_beyond(values)
    if where is not None:
        if np.isinf(values[where]):
            raise ValueError(f"{name} contains inf values (first at {where}); use NaN for missing values")
        raise ValueError(
            f"{name} has values of magnitude {abs(float(values[where])):.3g} (first at {where}); values beyond "
            f"±{MAX_MAGNITUDE:g} overflow float64 once squared: rescale them"
        )
    return values


def _first_beyond(values: np.ndarray) -> tuple | None:
    """Index of the first inf or value beyond ``MAX_MAGNITUDE`` in float ``values``, or None.

    Scans row blocks, so the temporaries stay small however large ``values`` is.
    """
    if float(np.finfo(values.dtype).max) > MAX_MAGNITUDE:

        def beyond(block):
            with np.errstate(invalid="ignore"):
                return np.abs(block) > MAX_MAGNITUDE  # NaN compares False

    else:  # float32/float16: only inf lies beyond
        beyond = np.isinf
    if values.ndim == 0:
        return () if beyond(values) else None
    for rows in row_blocks(values.shape):
        found = np.argwhere(beyond(values[rows]))
        if len(found):
            return (rows.start + int(found[0][0]),) + tuple(int(i) for i in found[0][1:])
    return None


def as_sequences(X, name: str = "X", obs_shape: tuple | None = None, min_steps: int = 2):
    """Check a stack of sequences and find its missing frames.

    Parameters
    ----------
    X : array-like, shape (n_series, T, *obs_shape)
        Real numbers; NaN marks a missing value (a whole frame, or single channels/pixels).
    name : str
        Argument name used in error messages.
    obs_shape : tuple of int, optional
        The observation shape the model was fitted on; ``X`` must match it.
    min_steps : int
        Smallest acceptable ``T``.

    Returns
    -------
    values : ndarray, shape (n_series, T, *obs_shape)
        ``X`` as a float array (not copied when already a float array); NaN untouched.
    observed : ndarray of bool, shape (n_series, T)
        True where the frame holds at least one value.
    observed_fraction : ndarray, shape (n_series, T)
        Fraction of each frame's values that are present (1: complete, 0: missing frame).

    Raises
    ------
    TypeError
        ``X`` is not numeric (bool, complex, strings, objects).
    ValueError
        Wrong rank, shape different from ``obs_shape``, too few steps or series, inf values,
        series with no observed value.
    """
    values = np.asarray(X)
    if values.ndim < 3:
        raise ValueError(
            f"{name} must have shape (n_series, T, *obs_shape) with at least 3 dims, got shape {values.shape}"
        )
    values = check_numeric(values, name)
    if obs_shape is not None and tuple(values.shape[2:]) != tuple(obs_shape):
        raise ValueError(f"{name} has observations of shape {values.shape[2:]}, but the model was fitted on {tuple(obs_shape)}")
    if values.shape[0] < 1:
        raise ValueError(f"{name} holds no series (shape {values.shape})")
    if values.shape[1] < min_steps:
        raise ValueError(f"{name} needs at least {min_steps} time steps, got T={values.shape[1]}")
    if values.size == 0 and 0 in values.shape[2:]:
        raise ValueError(f"{name} has empty observations (shape {values.shape})")
    fraction = np.empty(values.shape[:2])
    for rows in row_blocks(values.shape, 1):  # one mask byte a value
        block = values[rows]
        fraction[rows] = (~np.isnan(block)).reshape(block.shape[:2] + (-1,)).mean(-1)
    observed = fraction > 0
    empty = ~observed.any(1)
    if empty.any():
        raise ValueError(f"{name} series {np.flatnonzero(empty).tolist()} have no observed value")
    return values, observed, fraction
