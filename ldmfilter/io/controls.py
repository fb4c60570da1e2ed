"""Control inputs: split off the columns of an input that are controls, and put controls on the grid.

A control ``u_t`` is the input acting on the transition into step ``t`` (its value at step 0 is
unused).  Controls are given either as their own array/DataFrame/DataArray laid out like the
observations, or as channel names of the observations' DataFrame columns or xarray channel
coordinate, which are then split off the observations.

On a regular grid with steps the user did not give (an irregular time index), a control holds
its last given value over the missing steps (zero-order hold, the usual model of a sampled
input); a NaN in a given row is an error, because the transition needs every control.
"""

from __future__ import annotations

import numpy as np

from .from_pandas import is_pandas
from .from_xarray import is_xarray
from .layout import SeriesLayout

__all__ = ["control_names_of", "has_columns", "split_control_columns", "hold_on_grid"]


def control_names_of(controls) -> tuple[str, ...] | None:
    """The names when ``controls`` names columns of the input (a str or a list of str), else None."""
    if isinstance(controls, str):
        return (controls,)
    if isinstance(controls, (list, tuple)) and controls and all(isinstance(c, str) for c in controls):
        if len(set(controls)) != len(controls):
            raise ValueError(f"controls names a column twice: {list(controls)}")
        return tuple(controls)
    return None


def _channel_dim(X, name: str) -> str:
    rest = [str(d) for d in X.dims if d not in ("time", "series")]
    if len(rest) != 1:
        raise ValueError(f"controls named as channels need {name} with one channel dim besides time/series, got dims {tuple(X.dims)}")
    return rest[0]


def _columns(X, name: str) -> list[str]:
    """Channel names of a DataFrame, a list of them or a DataArray (for membership tests)."""
    if is_xarray(X):
        dim = _channel_dim(X, name)
        return [str(c) for c in X[dim].values] if dim in X.coords else []
    if is_pandas(X):
        return [str(c) for c in getattr(X, "columns", [])]
    if isinstance(X, (list, tuple)) and X and all(is_pandas(frame) for frame in X):
        return _columns(X[0], f"{name}[0]")
    return []


def has_columns(X, names: tuple[str, ...]) -> bool:
    """Whether ``X`` is labelled input holding every channel in ``names``."""
    try:
        columns = _columns(X, "X")
    except ValueError:
        return False
    return bool(columns) and set(names) <= set(columns)


def _split_frame(frame, names: tuple[str, ...], name: str):
    if not hasattr(frame, "columns"):
        raise TypeError(f"controls named as columns need DataFrames; {name} is a {type(frame).__name__}")
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"controls {missing} are not columns of {name} (columns: {list(frame.columns)})")
    rest = frame.drop(columns=list(names))
    if rest.shape[1] == 0:
        raise ValueError(f"{name} has no columns left for observations after taking the controls {list(names)}")
    return rest, frame[list(names)]


def split_control_columns(X, names: tuple[str, ...], name: str = "X"):
    """Split the control channels ``names`` off ``X``.

    Parameters
    ----------
    X : DataFrame, list of DataFrames, long DataFrame or DataArray with one channel dim
    names : tuple of str
    name : str
        The argument's name in error messages.

    Returns
    -------
    observations, controls
        Inputs of the same kind: ``X`` without the control channels, and the controls alone
        (columns in the order of ``names``).
    """
    if is_xarray(X):
        dim = _channel_dim(X, name)
        present = set(_columns(X, name))
        missing = [c for c in names if c not in present]
        if missing:
            raise ValueError(f"controls {missing} are not in {name}'s {dim!r} coordinate (has {sorted(present)})")
        labels = [str(c) for c in X[dim].values]
        keep = [i for i, c in enumerate(labels) if c not in names]
        if not keep:
            raise ValueError(f"{name} has no channels left for observations after taking the controls {list(names)}")
        return X.isel({dim: keep}), X.isel({dim: [labels.index(c) for c in names]})
    if is_pandas(X):
        return _split_frame(X, names, name)
    if isinstance(X, (list, tuple)) and X and all(is_pandas(frame) for frame in X):
        parts = [_split_frame(frame, names, f"{name}[{i}]") for i, frame in enumerate(X)]
        return [p[0] for p in parts], [p[1] for p in parts]
    raise TypeError(
        f"controls given as names {list(names)} need {name} as DataFrame(s) or a DataArray; "
        f"for arrays pass the controls as an array laid out like {name}"
    )


def hold_on_grid(values: np.ndarray, layout: SeriesLayout, name: str = "controls") -> np.ndarray:
    """Controls on the grid, with each series' missing grid steps holding the last given value.

    Parameters
    ----------
    values : ndarray, shape (n, T, U)
        Controls on the grid, NaN at steps the input did not give.
    layout : SeriesLayout
        Which grid steps each series gave.
    name : str

    Returns
    -------
    ndarray, shape (n, T, U)
        Finite everywhere: gaps and the padding after a series' end hold the last given value.

    Raises
    ------
    ValueError
        A given row holds NaN or inf.
    """
    out = np.array(values, dtype=np.float64)
    for i in range(layout.n_series):
        given = layout.positions(i)
        rows = out[i, given]
        bad = ~np.isfinite(rows)
        if bad.any():
            row, channel = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} must be finite at every given row (the transition needs each input): series "
                f"{layout.series[i]!r}, row {int(row)}, input {int(channel)} is {rows[row, channel]}"
            )
        last = np.zeros(out.shape[1], dtype=np.int64)  # index of the last given step at or before each step
        last[given] = given
        last = np.maximum.accumulate(last)
        out[i] = out[i, last]
    return out
