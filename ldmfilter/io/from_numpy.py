"""numpy input: one series ``(T, *obs_shape)``, a stack ``(n_series, T, *obs_shape)`` or a list."""

from __future__ import annotations

import numpy as np

from .arrays import check_numeric

__all__ = ["numpy_series"]


def _single_ndim(obs_shape) -> int | None:
    return None if obs_shape is None else len(obs_shape) + 1


def numpy_series(X, name: str, obs_shape: tuple | None) -> tuple[list[np.ndarray] | np.ndarray, bool]:
    """Split numpy input into per-series arrays ``(T_i, *obs_shape)``.

    A 1-D array is one univariate series; a 2-D array is one series of vectors ``(T, D)``;
    higher ranks are stacks ``(n_series, T, *obs_shape)`` unless the model's ``obs_shape``
    says the array is a single series (e.g. ``(T, H, W)`` for a model of ``(H, W)`` frames).
    A list or tuple of arrays holds series of different lengths.

    Returns
    -------
    series : list of ndarray, or ndarray (n_series, T, *obs_shape)
        A stack is returned as it is (its rows are the series), so that it is not copied.
    single : bool
        The input had no series axis.
    """
    if isinstance(X, (list, tuple)) and any(type(item).__module__.split(".")[0] in ("pandas", "xarray") for item in X):
        kinds = sorted({type(item).__name__ for item in X})
        raise TypeError(f"{name} mixes {kinds}; pass a list of DataFrames only, or of numpy arrays only")
    if isinstance(X, (list, tuple)) and len(X) and all(isinstance(item, np.ndarray) for item in X):
        parts = [numpy_series(item, f"{name}[{i}]", obs_shape) for i, item in enumerate(X)]
        if any(not single for _, single in parts):
            raise ValueError(f"each array in the list {name} must be a single series (T, *obs_shape)")
        series = [s[0] for s, _ in parts]
        shapes = {s.shape[1:] for s in series}
        if len(shapes) > 1:
            raise ValueError(f"the series in {name} have different observation shapes: {sorted(shapes)}")
        return series, False
    try:
        values = np.asarray(X)
    except ValueError:  # numpy: "setting an array element with a sequence ... inhomogeneous shape"
        raise ValueError(
            f"{name} is a ragged nested sequence (rows or series of different lengths); pass a list of numpy "
            "arrays, one (T_i, *obs_shape) array per series"
        ) from None
    values = check_numeric(values, name)
    if values.ndim == 0:
        raise ValueError(f"{name} must be an array of observations over time, got a scalar")
    if values.ndim == 1:
        values = values[:, None]
    single = values.ndim == 2 if obs_shape is None else values.ndim == _single_ndim(obs_shape)
    if obs_shape is not None and values.ndim not in (_single_ndim(obs_shape), _single_ndim(obs_shape) + 1):
        raise ValueError(
            f"{name} has shape {values.shape}; the model was fitted on observations of shape {tuple(obs_shape)}, "
            f"so it needs (T, {', '.join(map(str, obs_shape))}) or (n_series, T, {', '.join(map(str, obs_shape))})"
        )
    return ([values] if single else values), single
