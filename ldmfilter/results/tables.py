"""Results as pandas DataFrames and xarray Datasets, labelled like the input."""

from __future__ import annotations

import numpy as np

from ..io.lazy import pandas as pd

__all__ = ["to_pandas", "to_xarray", "variable_names"]


def variable_names(result, space: str | None) -> tuple[str, ...]:
    """Names of the variables of a vector space (state_0… for the state)."""
    moments = result.space(space)
    dim = moments.mean.shape[-1]
    if moments.names is not None:
        return tuple(moments.names)
    prefix = {"observations": "obs", "targets": "target"}.get(space or "", "state")
    return tuple(f"{prefix}_{k}" for k in range(dim))


def _per_series(result, array: np.ndarray | None):
    """Split an array laid out like the result into per-series arrays over their own rows."""
    layout = result.layout
    if array is None:
        return [None] * layout.n_series
    if layout.single:
        return [array]
    rows = [len(result.time_index(i)) for i in range(layout.n_series)]
    return [array[i, : rows[i]] for i in range(layout.n_series)]


def _check_vector(result, space: str | None, what: str):
    moments = result.space(space)
    lead = 1 if result.layout.single else 2
    if moments.mean.ndim - lead != 1:
        raise ValueError(
            f"{what} needs vector beliefs; the {space or 'observations'} here are frames of shape "
            f"{moments.mean.shape[lead:]}: use to_xarray()"
        )
    return moments


def to_pandas(result, space: str | None = None, coverage: float = 0.9) -> pd.DataFrame:
    """See :meth:`ldmfilter.results.FilterResult.to_pandas`."""
    space = space or ("observations" if result.observations is not None else "state")
    moments = _check_vector(result, space, "to_pandas()")
    names = variable_names(result, space)
    lower, upper = moments.interval(coverage)
    extra = {}
    if getattr(result, "observed_fraction", None) is not None:
        if "observed_fraction" in names:
            raise ValueError("a variable is named 'observed_fraction', which clashes with the result's column")
        extra["observed_fraction"] = _per_series(result, result.observed_fraction)
    blocks = {"": moments.mean, "_std": moments.std, "_lower": lower, "_upper": upper}
    split = {suffix: _per_series(result, values) for suffix, values in blocks.items()}
    frames = []
    for i in range(result.layout.n_series):
        data = {f"{name}{suffix}": split[suffix][i][:, k] for suffix in blocks for k, name in enumerate(names)}
        data.update({key: parts[i] for key, parts in extra.items()})
        frames.append(pd.DataFrame(data, index=result.time_index(i)))
    if result.layout.single:
        return frames[0]
    layout = result.layout
    return pd.concat(frames, keys=list(layout.series), names=[layout.series_name, frames[0].index.name or layout.time_name])


def _naive(index: pd.Index) -> pd.Index:
    """xarray holds no time zones: tz-aware timestamps become naive UTC (the zone goes in attrs)."""
    return index.tz_convert(None) if isinstance(index, pd.DatetimeIndex) and index.tz is not None else index


def _time_coordinate(result) -> dict:
    """A shared time coordinate, or integer steps with a per-series ``timestamp`` coordinate."""
    indexes = [_naive(result.time_index(i)) for i in range(result.layout.n_series)]
    if all(index.equals(indexes[0]) for index in indexes):
        return {"time": np.asarray(indexes[0])}
    rows = max(len(index) for index in indexes)
    stamps = pd.DataFrame({i: pd.Series(np.asarray(index)) for i, index in enumerate(indexes)}).reindex(range(rows))
    return {"time": np.arange(rows), "timestamp": (("series", "time"), stamps.to_numpy().T)}


def to_xarray(result, space: str | None = None, coverage: float = 0.9):
    """See :meth:`ldmfilter.results.FilterResult.to_xarray`."""
    import xarray as xr

    space = space or ("observations" if result.observations is not None else "state")
    moments = result.space(space)
    layout = result.layout
    lead = ("time",) if layout.single else ("series", "time")
    event_ndim = moments.mean.ndim - len(lead)
    if event_ndim == 1:
        event = ("feature",)
        coords = {"feature": list(variable_names(result, space))}
    else:
        event = tuple(layout.obs_dims) if layout.obs_dims else tuple(f"dim_{k}" for k in range(event_ndim))
        coords = {d: layout.obs_coords[d] for d in event if d in layout.obs_coords}
    dims = lead + event
    lower, upper = moments.interval(coverage)
    data = {"mean": (dims, moments.mean), "std": (dims, moments.std), "lower": (dims, lower), "upper": (dims, upper)}
    if moments.cov is not None:
        data["cov"] = (dims + ("feature_2",), moments.cov)
        coords["feature_2"] = coords["feature"]
    for name in ("observed_fraction", "log_likelihood"):
        value = getattr(result, name, None)
        if value is not None:
            data[name] = (lead, value)
    coords.update(_time_coordinate(result))
    if not layout.single:
        coords["series"] = list(layout.series)
    attrs = {"space": space, "coverage": float(coverage), "kind": type(result).__name__}
    zone = getattr(result.time_index(0), "tz", None)
    if zone is not None:
        attrs["timezone"] = str(zone)
    return xr.Dataset(data, coords=coords, attrs=attrs)
