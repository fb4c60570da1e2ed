"""pandas input: a DataFrame (rows = time, columns = channels), a list of them, or a long table."""

from __future__ import annotations

import numpy as np

from .arrays import check_numeric
from .lazy import loaded, pandas as pd
from .timegrid import time_grids

__all__ = ["frame_values", "pandas_series", "is_pandas"]


def is_pandas(X) -> bool:
    """Whether ``X`` is a DataFrame or Series, or a non-empty list of them (never imports pandas)."""
    pandas = loaded("pandas")
    if pandas is None:  # pandas was never imported: X holds none of its objects
        return False
    kinds = (pandas.DataFrame, pandas.Series)
    return isinstance(X, kinds) or (isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(x, kinds) for x in X))


def frame_values(frame, name: str, feature_names: tuple | None) -> tuple[np.ndarray, tuple, pd.Index]:
    """One DataFrame/Series → (values (T, D), column names, time index).

    Columns are matched to ``feature_names`` by name (reordered when given in another order).

    Raises
    ------
    TypeError
        Non-numeric columns.
    ValueError
        Columns different from ``feature_names``, duplicated column names.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame(name=frame.name if frame.name is not None else "value")
    columns = tuple(str(c) for c in frame.columns)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name} has duplicated column names: {sorted({c for c in columns if columns.count(c) > 1})}")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    if bad:
        raise TypeError(f"{name} has non-numeric columns {[str(c) for c in bad]}; keep only numeric channels")
    if not len(columns):
        raise ValueError(f"{name} has no columns")
    if feature_names is not None and columns != tuple(feature_names):
        missing = [c for c in feature_names if c not in columns]
        extra = [c for c in columns if c not in feature_names]
        if missing or extra:
            raise ValueError(
                f"{name} has different columns from the data the model was fitted on: missing {missing}, unexpected {extra}"
            )
        frame = frame.loc[:, [frame.columns[columns.index(c)] for c in feature_names]]
        columns = tuple(feature_names)
    values = check_numeric(frame.to_numpy(dtype=np.float64, na_value=np.nan), name)
    return values, columns, frame.index


def _split_long(frame: pd.DataFrame, name: str) -> tuple[list, list, str]:
    """A long table indexed by (series, time) → per-series frames indexed by time."""
    if frame.index.nlevels != 2:
        raise ValueError(f"{name} has a {frame.index.nlevels}-level index; a long table is indexed by (series, time)")
    first, second = frame.index.levels[0], frame.index.levels[1]
    if isinstance(first, pd.DatetimeIndex) and not (
        isinstance(second, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(second.dtype)
    ):
        raise ValueError(
            f"{name} looks indexed by (time, series): its first index level holds timestamps; a long table is "
            "indexed by (series, time) (use df.swaplevel().sort_index())"
        )
    level = frame.index.names[0] or "series"
    ids, frames = [], []
    for key, part in frame.groupby(level=0, sort=False):
        ids.append(key)
        frames.append(part.droplevel(0))
    return ids, frames, str(level)


def pandas_series(X, name: str, feature_names: tuple | None, frequency: str | None = None):
    """Per-series values, column names, grids, series labels, kind, single flag, series and time axis names.

    The series' time grids share one step: ``frequency`` (the model's) when given, else the
    finest step of the series (see :func:`~ldmfilter.io.timegrid.time_grids`).
    """
    series_name = "series"
    if isinstance(X, pd.DataFrame) and isinstance(X.index, pd.MultiIndex):
        labels, frames, series_name = _split_long(X, name)
        kind, single = "long", False
        names = [f"{name}[{label!r}]" for label in labels]
    elif isinstance(X, (pd.DataFrame, pd.Series)):
        labels, frames, kind, single, names = [0], [X], "frame", True, [name]
    else:
        labels, frames, kind, single = list(range(len(X))), list(X), "frames", False
        names = [f"{name}[{i}]" for i in labels]
    values, indexes, columns = [], [], feature_names
    for frame, label in zip(frames, names):
        v, columns, index = frame_values(frame, label, columns)
        values.append(v)
        indexes.append(index)
    grids = time_grids(indexes, [f"{label}'s index" for label in names], frequency)
    time_name = grids[0].index.name or "time"
    return values, columns, grids, tuple(labels), kind, single, str(series_name), str(time_name)
