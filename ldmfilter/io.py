"""Input validation and conversion at the package's edge (numpy in, tensors inside)."""

from __future__ import annotations

import numpy as np

__all__ = ["as_sequences"]


def as_sequences(X, name: str = "X", obs_shape: tuple | None = None, min_steps: int = 2):
    """Check a stack of sequences and find its missing frames.

    Parameters
    ----------
    X : array-like, shape (n_series, T, *obs_shape)
        Real numbers; a frame that is entirely NaN is missing.
    name : str
        Argument name used in error messages.
    obs_shape : tuple of int, optional
        The observation shape the model was fitted on; ``X`` must match it.
    min_steps : int
        Smallest acceptable ``T``.

    Returns
    -------
    values : ndarray, shape (n_series, T, *obs_shape)
        ``X`` as an array (not copied when already a numpy array); NaN frames untouched.
    observed : ndarray of bool, shape (n_series, T)
        True where the frame is present.

    Raises
    ------
    TypeError
        ``X`` is not numeric (bool, complex, strings, objects).
    ValueError
        Wrong rank, shape different from ``obs_shape``, too few steps or series, inf values,
        frames that are only partly NaN, series with no observed frame.
    """
    values = np.asarray(X)
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if values.ndim < 3:
        raise ValueError(
            f"{name} must have shape (n_series, T, *obs_shape) with at least 3 dims, got shape {values.shape}"
        )
    if obs_shape is not None and tuple(values.shape[2:]) != tuple(obs_shape):
        raise ValueError(f"{name} has observations of shape {values.shape[2:]}, but the model was fitted on {tuple(obs_shape)}")
    if values.shape[0] < 1:
        raise ValueError(f"{name} holds no series (shape {values.shape})")
    if values.shape[1] < min_steps:
        raise ValueError(f"{name} needs at least {min_steps} time steps, got T={values.shape[1]}")
    if values.size and 0 in values.shape[2:]:
        raise ValueError(f"{name} has empty observations (shape {values.shape})")
    if np.issubdtype(values.dtype, np.floating):
        if np.isinf(values).any():
            raise ValueError(f"{name} contains inf values; use NaN for missing frames")
        nan = np.isnan(values).reshape(values.shape[:2] + (-1,))
        missing = nan.all(-1)
        partial = nan.any(-1) & ~missing
        if partial.any():
            series, step = np.argwhere(partial)[0]
            raise ValueError(
                f"{name}[{series}, {step}] is partly NaN: a frame must be fully observed or fully missing (NaN)"
            )
        empty = missing.all(1)
        if empty.any():
            raise ValueError(f"{name} series {np.flatnonzero(empty).tolist()} have no observed frame")
        return values, ~missing
    return values, np.ones(values.shape[:2], dtype=bool)
