"""Time indexes: validation, the regular grid a series lives on, and continuing it.

Filtering runs on a regular grid of steps.  A series whose timestamps skip grid points (an
irregular index) is placed on its grid with the skipped points as missing frames, so a gap of
``k`` steps is ``k`` predict steps of the dynamics; results are read back at the series' own
timestamps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TimeGrid", "time_grid", "MAX_GRID_EXPANSION"]

# coarsest first: the first calendar frequency every timestamp lies on is the series' step
CALENDAR_FREQUENCIES = ("YS", "YE", "QS", "QE", "MS", "ME", "W")
MAX_GRID_EXPANSION = 20  # a grid more than this many times longer than the series is refused


@dataclass(frozen=True)
class TimeGrid:
    """Where a series' rows lie on its regular grid of steps.

    Attributes
    ----------
    index : pandas.Index
        The series' own time index, as given (name, tz and freq kept).
    positions : ndarray of int, shape (T,)
        Grid step of each row; ``positions[0] == 0`` and ``positions[-1] + 1`` grid steps in all.
    step : pandas.DateOffset, int, float or None
        The grid's step: a pandas offset for datetime indexes, a number for numeric ones.
    """

    index: pd.Index
    positions: np.ndarray
    step: object

    @property
    def length(self) -> int:
        """Number of grid steps the series spans."""
        return int(self.positions[-1]) + 1

    @property
    def regular(self) -> bool:
        """True when every grid step holds a row."""
        return self.length == len(self.positions)

    def future(self, horizon: int) -> pd.Index:
        """The ``horizon`` timestamps after the series' last one, at the grid's step."""
        last, name = self.index[-1], self.index.name
        if isinstance(self.index, pd.DatetimeIndex):
            return pd.date_range(last + self.step, periods=horizon, freq=self.step, name=name)
        if isinstance(self.index, pd.RangeIndex) or isinstance(self.step, (int, np.integer)):
            start = int(last) + int(self.step)
            return pd.RangeIndex(start, start + horizon * int(self.step), int(self.step), name=name)
        return pd.Index(last + self.step * np.arange(1, horizon + 1), name=name)

    def same_as(self, other: "TimeGrid") -> bool:
        return self.index.equals(other.index)


def _check_order(index: pd.Index, name: str) -> None:
    if index.hasnans:
        raise ValueError(f"{name} has missing (NaT/NaN) timestamps")
    if index.has_duplicates:
        duplicated = index[index.duplicated()].unique()[:3].tolist()
        raise ValueError(f"{name} has duplicated timestamps, e.g. {duplicated}")
    if not index.is_monotonic_increasing:
        position = int(np.flatnonzero(np.asarray(index[1:] < index[:-1]))[0]) + 1
        raise ValueError(
            f"{name} is not sorted in increasing time order (row {position} comes before row {position - 1}); "
            "sort it first (e.g. df.sort_index())"
        )


def _datetime_step(index: pd.DatetimeIndex, name: str):
    """The grid step (a pandas offset) of a sorted DatetimeIndex."""
    if index.freq is not None:
        return index.freq
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inferred = pd.infer_freq(index) if len(index) >= 3 else None
    if inferred is not None:
        return pd.tseries.frequencies.to_offset(inferred)
    for freq in CALENDAR_FREQUENCIES:  # calendar steps (months, quarters) with gaps
        grid = pd.date_range(index[0], index[-1], freq=freq)
        if len(grid) >= 2 and len(grid) <= MAX_GRID_EXPANSION * len(index) and index.isin(grid).all():
            return grid.freq
    gaps = np.diff(index.asi8)
    step = int(np.gcd.reduce(gaps))
    unit = np.datetime_data(index.dtype)[0] if index.tz is None else index.dtype.unit
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step, unit=unit))


def _numeric_step(index: pd.Index, name: str):
    if isinstance(index, pd.RangeIndex):
        return int(index.step)
    values = np.asarray(index)
    gaps = np.diff(values)
    if np.issubdtype(values.dtype, np.integer):
        return int(np.gcd.reduce(gaps))
    step = float(gaps.min())
    ratios = gaps / step
    if not np.allclose(ratios, np.round(ratios), rtol=0, atol=1e-6):
        raise ValueError(
            f"{name} is irregular and its gaps are not whole multiples of the smallest one ({step:g}); "
            "resample the series onto a regular grid first"
        )
    return step


def time_grid(index: pd.Index, name: str = "time index") -> TimeGrid:
    """Validate a series' time index and place its rows on a regular grid.

    Parameters
    ----------
    index : pandas.Index, length T ≥ 1
        A DatetimeIndex (tz-aware or not), a RangeIndex or a numeric index.
    name : str
        Used in error messages.

    Returns
    -------
    TimeGrid

    Raises
    ------
    TypeError
        The index is neither datetimes nor numbers.
    ValueError
        Missing, duplicated or unsorted timestamps; gaps that are not whole multiples of a common
        step; or a grid more than ``MAX_GRID_EXPANSION`` times longer than the series.
    """
    if isinstance(index, pd.MultiIndex):
        raise TypeError(f"{name} is a MultiIndex; a long table needs exactly the levels (series, time)")
    if not (isinstance(index, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(index.dtype)) or pd.api.types.is_bool_dtype(index.dtype):
        raise TypeError(f"{name} must hold datetimes or numbers, got dtype {index.dtype}")
    _check_order(index, name)
    if len(index) == 1:
        step = index.freq if isinstance(index, pd.DatetimeIndex) else (index.step if isinstance(index, pd.RangeIndex) else 1)
        return TimeGrid(index, np.zeros(1, dtype=np.int64), step)
    if isinstance(index, pd.DatetimeIndex):
        step = _datetime_step(index, name)
        grid = pd.date_range(index[0], periods=1, freq=step)
        span = pd.date_range(grid[0], index[-1], freq=step)
        positions = span.get_indexer(index)
        if (positions < 0).any() or len(span) > MAX_GRID_EXPANSION * len(index) + 1:
            raise ValueError(_expansion_message(name, len(index), len(span), step))
    else:
        step = _numeric_step(index, name)
        positions = np.rint((np.asarray(index, dtype=float) - float(index[0])) / step).astype(np.int64)
        if positions[-1] + 1 > MAX_GRID_EXPANSION * len(index) + 1:
            raise ValueError(_expansion_message(name, len(index), int(positions[-1]) + 1, step))
    return TimeGrid(index, np.asarray(positions, dtype=np.int64), step)


def _expansion_message(name: str, rows: int, steps: int, step) -> str:
    return (
        f"{name} is irregular: its timestamps lie on a common grid of step {step} only with {steps} grid steps "
        f"for {rows} rows (more than {MAX_GRID_EXPANSION}× as many); resample the series onto a regular grid "
        "first (e.g. df.resample(...).mean())"
    )
