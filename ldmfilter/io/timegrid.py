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

from .lazy import pandas as pd

__all__ = ["TimeGrid", "time_grid", "time_grids", "parse_step", "MAX_GRID_EXPANSION"]

# coarsest first: the first calendar frequency every timestamp lies on is the series' step
CALENDAR_FREQUENCIES = ("YS", "YE", "QS", "QE", "MS", "ME", "W")
MAX_GRID_EXPANSION = 20  # a grid more than this many times longer than the series is refused
DAY_NS = 86_400 * 10**9


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
        if self.step is None:
            raise ValueError(
                f"cannot continue the time index after {last}: the series has a single timestamp and its index "
                "has no freq (give it one, e.g. pd.DatetimeIndex([...], freq='h'))"
            )
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
    return _gcd_step(index)


def _gcd_step(index: pd.DatetimeIndex):
    """The largest step dividing every gap: whole days as a (calendar) ``Day`` offset, else a fixed time."""
    unit = np.datetime_data(index.dtype)[0] if index.tz is None else index.dtype.unit
    per_day = DAY_NS // int(pd.Timedelta(1, unit=unit).value)
    step = int(np.gcd.reduce(np.diff(index.asi8)))
    if step % per_day == 0:
        return pd.offsets.Day(step // per_day)
    if index.tz is not None:  # daily data across a DST change: gaps of 23 or 25 hours, whole days on the wall clock
        wall = np.diff(index.tz_localize(None).asi8)
        if (wall > 0).all() and int(np.gcd.reduce(wall)) % per_day == 0:
            return pd.offsets.Day(int(np.gcd.reduce(wall)) // per_day)
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step, unit=unit))


def _numeric_step(index: pd.Index, name: str):
    if isinstance(index, pd.RangeIndex):
        return int(index.step)
    values = np.asarray(index)
    gaps = np.diff(values)
    if np.issubdtype(values.dtype, np.integer):
        return int(np.gcd.reduce(gaps))
    smallest = float(gaps.min())
    for k in range(1, MAX_GRID_EXPANSION + 1):  # the largest step dividing every gap: smallest gap / k
        ratios = gaps / (smallest / k)
        if np.allclose(ratios, np.round(ratios), rtol=0, atol=1e-6):
            return smallest / k
    raise ValueError(
        f"{name} is irregular and its gaps (smallest {smallest:g}) have no common step of at least "
        f"1/{MAX_GRID_EXPANSION} of the smallest gap; resample the series onto a regular grid first"
    )


def parse_step(frequency: str | None, index: pd.Index):
    """A step recorded as text (``InputSchema.frequency``: "h", "MS", "2", "0.5") for ``index``'s kind.

    None when there is no frequency or it does not fit the kind of index (a numeric step for
    datetimes, an offset for numbers).
    """
    if frequency is None:
        return None
    if isinstance(index, pd.DatetimeIndex):
        try:
            return pd.tseries.frequencies.to_offset(frequency)
        except ValueError:
            return None
    try:
        step = float(frequency)
    except ValueError:
        return None
    if not np.isfinite(step) or step <= 0:
        return None
    return int(step) if pd.api.types.is_integer_dtype(index.dtype) and step.is_integer() else step


def _step_size(step) -> float:
    """A comparable size of a step (nanoseconds from 2000-01-01 for offsets; the number itself otherwise)."""
    if isinstance(step, pd.offsets.BaseOffset):
        anchor = pd.Timestamp("2000-01-01")
        return float((anchor + step - anchor).value)
    return float(step)


def time_grids(indexes: list, names: list, frequency: str | None = None) -> list[TimeGrid]:
    """The grids of several series on one common step.

    The step is ``frequency`` (the model's, when given and fitting the kind of index); else the
    finest of the series' own steps, on which every series must lie.  A series of one row takes
    the common step.

    Raises
    ------
    TypeError
        Datetime and numeric indexes mixed, or tz-aware and naive ones.
    ValueError
        As :func:`time_grid`, or series whose timestamps share no common step.
    """
    kinds = {isinstance(index, pd.DatetimeIndex) for index in indexes}
    if len(kinds) > 1:
        raise TypeError(f"{names[0]} and the other series mix datetime and numeric time indexes; use one kind")
    if len({index.tz is None for index in indexes if isinstance(index, pd.DatetimeIndex)}) > 1:
        raise TypeError(f"{names[0]} and the other series mix time-zone-aware and naive timestamps; use one kind")
    step = parse_step(frequency, indexes[0]) if len(indexes[0]) else None
    if step is not None:
        return [time_grid(index, name, step) for index, name in zip(indexes, names)]
    grids = [time_grid(index, name) for index, name in zip(indexes, names)]
    steps = [g.step for g in grids if len(g.index) > 1 and g.step is not None]
    if not steps:
        return grids
    finest = min(steps, key=_step_size)
    if all(s == finest for s in steps) and all(g.step is not None for g in grids):
        return grids
    try:
        return [time_grid(index, name, finest) for index, name in zip(indexes, names)]
    except ValueError as error:
        found = sorted({getattr(s, "freqstr", str(s)) for s in steps})
        raise ValueError(
            f"the series have time steps {found} and do not all lie on the finest one ({error}); "
            "resample them onto one frequency first"
        ) from None


def time_grid(index: pd.Index, name: str = "time index", step=None) -> TimeGrid:
    """Validate a series' time index and place its rows on a regular grid.

    Parameters
    ----------
    index : pandas.Index, length T ≥ 1
        A DatetimeIndex (tz-aware or not), a RangeIndex or a numeric index.
    name : str
        Used in error messages.
    step : pandas.DateOffset or number, optional
        The grid's step (e.g. the step of the data a model was fitted on); every timestamp must
        lie on the grid of this step that starts at the first one.  Default: inferred from the
        index (its ``freq``, a calendar frequency, or the largest step dividing every gap).

    Returns
    -------
    TimeGrid

    Raises
    ------
    TypeError
        The index is neither datetimes nor numbers.
    ValueError
        An empty index; missing, duplicated or unsorted timestamps; gaps that are not whole
        multiples of a common step (or of ``step``); or a grid more than ``MAX_GRID_EXPANSION``
        times longer than the series.
    """
    if isinstance(index, pd.MultiIndex):
        raise TypeError(f"{name} is a MultiIndex; a long table needs exactly the levels (series, time)")
    if not (isinstance(index, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(index.dtype)) or pd.api.types.is_bool_dtype(index.dtype):
        raise TypeError(f"{name} must hold datetimes or numbers, got dtype {index.dtype}")
    if len(index) == 0:
        raise ValueError(f"{name} is empty: a series needs at least one time step")
    _check_order(index, name)
    given = step is not None
    if len(index) == 1 and not given:
        step = index.freq if isinstance(index, pd.DatetimeIndex) else (index.step if isinstance(index, pd.RangeIndex) else 1)
        return TimeGrid(index, np.zeros(1, dtype=np.int64), step)
    if isinstance(index, pd.DatetimeIndex):
        step = step if given else _datetime_step(index, name)
        if given and not step.is_on_offset(index[0]):
            raise ValueError(f"{name} starts at {index[0]}, which is not on the model's time step {step.freqstr}")
        span = pd.date_range(index[0], index[-1], freq=step)
        if len(span) > MAX_GRID_EXPANSION * len(index) + 1:
            raise ValueError(_expansion_message(name, len(index), len(span), step, given))
        positions = span.get_indexer(index)
        if (positions < 0).any():
            if given:
                raise ValueError(_off_grid_message(name, index[positions < 0], step.freqstr))
            raise ValueError(_expansion_message(name, len(index), len(span), step))
    else:
        step = step if given else _numeric_step(index, name)
        exact = (np.asarray(index, dtype=float) - float(index[0])) / step
        positions = np.rint(exact).astype(np.int64)
        if given and not np.allclose(exact, positions, rtol=0, atol=1e-6):
            raise ValueError(_off_grid_message(name, index[np.abs(exact - positions) > 1e-6], step))
        if positions[-1] + 1 > MAX_GRID_EXPANSION * len(index) + 1:
            raise ValueError(_expansion_message(name, len(index), int(positions[-1]) + 1, step, given))
    return TimeGrid(index, np.asarray(positions, dtype=np.int64), step)


def _off_grid_message(name: str, off, step) -> str:
    return (
        f"{name} has timestamps that are not whole steps of {step} (the time step of the data the model was "
        f"fitted on) after its first one, e.g. {list(off[:3])}; resample the series onto that step first"
    )


def _expansion_message(name: str, rows: int, steps: int, step, given: bool = False) -> str:
    if given:
        return (
            f"{name} spans {steps} steps of {getattr(step, 'freqstr', step)} (the time step of the data the model was "
            f"fitted on) with only {rows} rows (more than {MAX_GRID_EXPANSION}× as many); resample the series "
            "onto that step first"
        )
    return (
        f"{name} is irregular: its timestamps lie on a common grid of step {getattr(step, 'freqstr', step)} only "
        f"with {steps} grid steps "
        f"for {rows} rows (more than {MAX_GRID_EXPANSION}× as many); resample the series onto a regular grid "
        "first (e.g. df.resample(...).mean())"
    )
