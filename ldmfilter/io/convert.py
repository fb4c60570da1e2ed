"""One entry point for all inputs: numpy, pandas or xarray → :class:`Sequences`."""

from __future__ import annotations

from .from_numpy import numpy_series
from .from_pandas import is_pandas, pandas_series
from .from_xarray import is_xarray, xarray_series
from .layout import InputSchema, SeriesLayout, Sequences, place_on_grid

__all__ = ["to_sequences"]


def _frequency(grid) -> str | None:
    """The grid's step as text ("h", "MS", "2"), None for numpy input."""
    if grid is None or grid.step is None:
        return None
    return getattr(grid.step, "freqstr", str(grid.step))


def to_sequences(X, name: str = "X", schema: InputSchema | None = None, min_steps: int = 1) -> tuple[Sequences, InputSchema]:
    """Validate any supported input and put it on regular time grids.

    Parameters
    ----------
    X : array-like, DataFrame, Series, list of them, or xarray.DataArray
        numpy: ``(T, D)``, ``(n_series, T, *obs_shape)`` or a list of ``(T_i, *obs_shape)``;
        pandas: rows = time, columns = channels, or a long table indexed by (series, time);
        xarray: dims ``time`` [, ``series``] and ``feature`` or ``y``, ``x`` [, ``channel``].
        NaN marks missing values.
    name : str
        The argument's name in error messages.
    schema : InputSchema, optional
        What the model was fitted on; ``X`` must match it (channel names are matched by name,
        and time indexes are placed on grids of the model's time step, ``schema.frequency``).
    min_steps : int
        Fewest time steps a series may have.

    Returns
    -------
    sequences : Sequences
    schema : InputSchema
        The schema of ``X`` (equal to ``schema`` when given, apart from the frequency).
    """
    feature_names = None if schema is None else schema.feature_names
    frequency = None if schema is None else schema.frequency
    obs_dims, coords, series_name, time_name = None, {}, "series", "time"
    if is_xarray(X):
        series, names, grids, labels, single, obs_dims, coords = xarray_series(
            X, name, None if schema is None else schema.obs_dims, feature_names, frequency
        )
        kind = "xarray"
    elif is_pandas(X):
        series, names, grids, labels, kind, single, series_name, time_name = pandas_series(X, name, feature_names, frequency)
    else:
        series, single = numpy_series(X, name, None if schema is None else schema.obs_shape)
        names, grids, labels, kind = None, [None] * len(series), tuple(range(len(series))), "array"
    obs_shape = None if schema is None else schema.obs_shape
    values, observed, fraction = place_on_grid(series, grids, name, obs_shape, min_steps)
    names = names if names is not None else feature_names
    layout = SeriesLayout(
        kind, single, tuple(labels), tuple(grids), tuple(len(s) for s in series),
        names, obs_dims, coords, series_name, time_name,
    )
    new_schema = InputSchema(tuple(values.shape[2:]), names, obs_dims, _frequency(grids[0]))
    return Sequences(values, observed, fraction, layout), new_schema
