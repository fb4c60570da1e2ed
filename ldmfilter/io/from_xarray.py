"""xarray input: a DataArray with a ``time`` dim, optional ``series``, and observation dims.

Observation dims: one dim of channels (any name, e.g. ``feature``), or ``y``, ``x`` and an
optional ``channel`` for video (given to the model as ``(channel, y, x)``), or none (a
univariate series).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import check_numeric
from .lazy import pandas as pd
from .timegrid import TimeGrid, time_grids

__all__ = ["is_xarray", "xarray_series", "xarray_dims", "xarray_labels", "XarrayLabels"]


def is_xarray(X) -> bool:
    module = type(X).__module__
    return module.startswith("xarray") and type(X).__name__ in ("DataArray", "Dataset")


def _observation_dims(dims: list[str], name: str) -> tuple[str, ...]:
    if {"y", "x"} <= set(dims):
        if set(dims) - {"y", "x", "channel"}:
            raise ValueError(f"{name}: video dims must be y, x and optionally channel; also got {sorted(set(dims) - {'y', 'x', 'channel'})}")
        return ("channel", "y", "x") if "channel" in dims else ("y", "x")
    if len(dims) > 1:
        raise ValueError(
            f"{name} has observation dims {dims}; use one dim of channels (e.g. 'feature'), or 'y', 'x' "
            "[and 'channel'] for video"
        )
    return tuple(dims)


def xarray_dims(X, name: str, schema_dims: tuple | None) -> tuple[tuple[str, ...], bool]:
    """The observation dims of ``X`` in the model's order, and whether ``X`` lacks a ``series`` dim.

    Looks at dims only (no values are read).

    Raises
    ------
    TypeError
        A Dataset instead of a DataArray.
    ValueError
        No ``time`` dim, unexpected dims, or observation dims different from ``schema_dims``.
    """
    if type(X).__name__ == "Dataset":
        raise TypeError(f"{name} is an xarray Dataset; pass a DataArray (e.g. ds.to_array('feature') or ds[name])")
    if "time" not in X.dims:
        raise ValueError(f"{name} needs a 'time' dim, got dims {tuple(X.dims)}")
    rest = [d for d in X.dims if d not in ("time", "series")]
    obs_dims = _observation_dims([str(d) for d in rest], name)
    if schema_dims is not None and obs_dims != tuple(schema_dims):
        raise ValueError(f"{name} has observation dims {obs_dims}, but the model was fitted on {tuple(schema_dims)}")
    return obs_dims, "series" not in X.dims


@dataclass(frozen=True)
class XarrayLabels:
    """Labels of a DataArray's axes (read from its coordinates, not its values).

    Attributes
    ----------
    names : tuple of str or None
        Channel names (one channel dim), the array's name (no observation dim), else None.
    coords : dict
        Coordinates of the observation dims (reordered like ``order``).
    order : list of int or None
        Positions of the channels in ``feature_names``' order (None: keep the array's order).
    grid : TimeGrid
        The time index (shared by every series) on its regular grid.
    series : tuple
        A label per series (``(0,)`` without a ``series`` dim).
    """

    names: tuple | None
    coords: dict
    order: list | None
    grid: TimeGrid
    series: tuple


def xarray_labels(X, name: str, obs_dims: tuple, single: bool, feature_names: tuple | None, frequency: str | None = None) -> XarrayLabels:
    """Channel names, observation coordinates, channel order, time grid and series labels of ``X``.

    Raises
    ------
    ValueError
        Duplicated channel names, channels different from ``feature_names``, or an invalid time
        index (see :func:`~ldmfilter.io.timegrid.time_grids`).
    """
    coords = {d: np.asarray(X[d].values) for d in obs_dims if d in X.coords}
    names = None
    if len(obs_dims) == 1:
        names = tuple(str(c) for c in coords[obs_dims[0]]) if obs_dims[0] in coords else None
    elif not obs_dims:
        names = (str(X.name) if X.name is not None else "value",)
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"{name} has duplicated channel names: {sorted({c for c in names if names.count(c) > 1})}")
    order = None
    if names is not None and feature_names is not None and names != tuple(feature_names):
        if set(names) != set(feature_names):
            raise ValueError(f"{name} has channels {list(names)}, but the model was fitted on {list(feature_names)}")
        order = [names.index(c) for c in feature_names]
        names = tuple(feature_names)
        coords[obs_dims[0]] = coords[obs_dims[0]][order]
    index = X.indexes["time"] if "time" in X.indexes else pd.RangeIndex(X.sizes["time"], name="time")
    (grid,) = time_grids([index], [f"{name}'s time coordinate"], frequency)
    series = (0,) if single else tuple(X["series"].values.tolist() if "series" in X.coords else range(X.sizes["series"]))
    return XarrayLabels(names, coords, order, grid, series)


def xarray_series(X, name: str, schema_dims: tuple | None, feature_names: tuple | None, frequency: str | None = None):
    """Per-series values, feature names, grids, labels, single flag, obs dims and their coordinates.

    Raises
    ------
    TypeError
        A Dataset instead of a DataArray, or non-numeric data.
    ValueError
        No ``time`` dim, unexpected dims, observation dims or channel names different from
        the data the model was fitted on.
    """
    obs_dims, single = xarray_dims(X, name, schema_dims)
    data = X.transpose(*(() if single else ("series",)), "time", *obs_dims)
    values = check_numeric(np.asarray(data.values), name)
    if not obs_dims:
        values = values[..., None]
    if single:
        values = values[None]
    labels = xarray_labels(X, name, obs_dims, single, feature_names, frequency)
    if labels.order is not None:
        values = values[..., labels.order]
    return list(values), labels.names, [labels.grid] * len(values), labels.series, single, obs_dims, labels.coords
