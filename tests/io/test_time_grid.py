"""Time indexes: validation, placing irregular timestamps on a regular grid, and continuing an index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ldmfilter.io import TimeGrid, time_grid
from ldmfilter.io.timegrid import MAX_GRID_EXPANSION, parse_step, time_grids


def hourly(n=6, **kwargs) -> pd.DatetimeIndex:
    return pd.date_range("2021-01-01", periods=n, freq="h", **kwargs)


# ------------------------------------------------------------------------------ regular indexes


@pytest.mark.parametrize(
    "index, freqstr",
    [
        (pd.date_range("2021-01-01", periods=5, freq="h"), "h"),
        (pd.date_range("2021-01-01", periods=5, freq="D"), "D"),
        (pd.date_range("2021-01-01", periods=5, freq="MS"), "MS"),
        (pd.date_range("2021-01-01", periods=5, freq="QS"), "QS-JAN"),
        (pd.date_range("2021-01-01", periods=5, freq="15min"), "15min"),
        (pd.date_range("2021-01-01", periods=5, freq="W"), "W-SUN"),
    ],
)
def test_regular_datetime_index_is_its_own_grid(index, freqstr):
    grid = time_grid(index)
    assert grid.regular and grid.length == 5
    np.testing.assert_array_equal(grid.positions, np.arange(5))
    assert grid.step.freqstr == freqstr
    assert grid.index is index


@pytest.mark.parametrize("freq", ["h", "D", "MS", "QS", "W"])
def test_frequency_is_inferred_without_freq_attribute(freq):
    index = pd.DatetimeIndex(list(pd.date_range("2021-01-01", periods=6, freq=freq)))
    assert index.freq is None
    grid = time_grid(index)
    assert grid.regular
    assert grid.step == pd.tseries.frequencies.to_offset(freq)


def test_range_and_numeric_indexes():
    grid = time_grid(pd.RangeIndex(3, 13, 2))
    assert grid.step == 2 and grid.regular
    grid = time_grid(pd.Index([10, 20, 30]))
    assert grid.step == 10 and grid.regular
    grid = time_grid(pd.Index([0.0, 0.5, 1.0]))
    assert grid.step == pytest.approx(0.5) and grid.regular


# ------------------------------------------------------------------------------ irregular indexes


def test_hourly_gaps_give_missing_steps():
    index = hourly(10).delete([2, 3, 7])
    grid = time_grid(index)
    assert grid.step.freqstr == "h"
    np.testing.assert_array_equal(grid.positions, [0, 1, 4, 5, 6, 8, 9])
    assert grid.length == 10 and not grid.regular


def test_a_gap_of_k_steps_leaves_k_minus_1_grid_points_empty():
    index = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 05:00"])
    grid = time_grid(index)
    np.testing.assert_array_equal(grid.positions, [0, 1, 5])
    assert grid.length - len(index) == 5 - 1 - 1  # the gap of 4 steps inserted 3 missing steps


def test_daily_gaps_give_a_day_step():
    index = pd.date_range("2021-01-01", periods=8, freq="D").delete([1, 4])
    grid = time_grid(index)
    assert grid.step == pd.offsets.Day(1)
    assert grid.future(2).freqstr == "D"


def test_every_other_day_with_gaps_gives_two_days():
    index = pd.date_range("2021-01-01", periods=8, freq="2D").delete([3])
    grid = time_grid(index)
    assert grid.step == pd.offsets.Day(2)
    np.testing.assert_array_equal(grid.positions, [0, 1, 2, 4, 5, 6, 7])


def test_monthly_gaps_are_found_as_month_starts():
    index = pd.date_range("2020-01-01", periods=8, freq="MS").delete([2, 3, 6])
    grid = time_grid(index)
    assert grid.step.freqstr == "MS"
    np.testing.assert_array_equal(grid.positions, [0, 1, 4, 5, 7])


def test_month_ends_and_quarters_with_gaps():
    ends = pd.date_range("2020-01-31", periods=6, freq="ME").delete([1, 2])
    assert time_grid(ends).step.freqstr == "ME"
    quarters = pd.date_range("2020-01-01", periods=6, freq="QS").delete([2])
    grid = time_grid(quarters)
    assert grid.step.freqstr.startswith("QS")
    np.testing.assert_array_equal(grid.positions, [0, 1, 3, 4, 5])


def test_tz_aware_hourly_gaps_across_dst():
    index = pd.date_range("2021-03-27 22:00", periods=8, freq="h", tz="Europe/Paris").delete([3])
    grid = time_grid(index)
    assert grid.step.freqstr == "h"
    np.testing.assert_array_equal(grid.positions, [0, 1, 2, 4, 5, 6, 7])


def test_tz_aware_daily_gaps_across_dst_use_calendar_days():
    index = pd.date_range("2021-03-25", periods=8, freq="D", tz="Europe/Paris").delete([2, 5])
    grid = time_grid(index)  # UTC gaps are 23 h or 24 h multiples: whole days on the wall clock
    assert grid.step == pd.offsets.Day(1)
    np.testing.assert_array_equal(grid.positions, [0, 1, 3, 4, 6, 7])
    future = grid.future(2)
    assert list(future) == list(pd.date_range("2021-04-02", periods=2, freq="D", tz="Europe/Paris"))


def test_integer_index_with_gaps_uses_the_gcd():
    grid = time_grid(pd.Index([0, 2, 5, 6]))
    assert grid.step == 1
    np.testing.assert_array_equal(grid.positions, [0, 2, 5, 6])
    grid = time_grid(pd.Index([10, 14, 22]))
    assert grid.step == 4
    np.testing.assert_array_equal(grid.positions, [0, 1, 3])


def test_float_index_gaps_use_their_common_step():
    grid = time_grid(pd.Index([0.0, 2.0, 5.0]))  # like the integer [0, 2, 5]
    assert grid.step == pytest.approx(1.0)
    np.testing.assert_array_equal(grid.positions, [0, 2, 5])
    grid = time_grid(pd.Index([0.0, 0.5, 1.5]))
    assert grid.step == pytest.approx(0.5)
    np.testing.assert_array_equal(grid.positions, [0, 1, 3])


def test_float_index_without_common_step_is_refused():
    with pytest.raises(ValueError, match="no common step"):
        time_grid(pd.Index([0.0, 1.0, 1.0 + np.pi]), "t")


def test_grid_much_longer_than_the_series_is_refused():
    index = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 00:01", "2021-01-05 00:00"])
    with pytest.raises(ValueError, match=rf"X's index is irregular.*more than {MAX_GRID_EXPANSION}"):
        time_grid(index, "X's index")
    with pytest.raises(ValueError, match="irregular"):
        time_grid(pd.Index([0, 1, 1000]))


# ------------------------------------------------------------------------------ continuing an index


@pytest.mark.parametrize(
    "index, expected",
    [
        (hourly(4, name="when"), pd.date_range("2021-01-01 04:00", periods=3, freq="h", name="when")),
        (pd.date_range("2021-01-01", periods=4, freq="D"), pd.date_range("2021-01-05", periods=3, freq="D")),
        (pd.date_range("2021-01-01", periods=4, freq="MS"), pd.date_range("2021-05-01", periods=3, freq="MS")),
        (pd.date_range("2021-01-31", periods=4, freq="ME"), pd.date_range("2021-05-31", periods=3, freq="ME")),
        (hourly(10).delete([1, 2, 5]), pd.date_range("2021-01-01 10:00", periods=3, freq="h")),
        (pd.date_range("2020-01-01", periods=6, freq="MS").delete([1, 2]), pd.date_range("2020-07-01", periods=3, freq="MS")),
        (hourly(4, tz="America/New_York"), pd.date_range("2021-01-01 04:00", periods=3, freq="h", tz="America/New_York")),
    ],
)
def test_future_continues_datetimes(index, expected):
    future = time_grid(index).future(3)
    pd.testing.assert_index_equal(future, expected)
    assert future.freq == expected.freq
    assert future.name == index.name and future.tz == index.tz


def test_future_continues_numbers():
    pd.testing.assert_index_equal(time_grid(pd.RangeIndex(5, name="t")).future(3), pd.RangeIndex(5, 8, name="t"))
    pd.testing.assert_index_equal(time_grid(pd.RangeIndex(0, 10, 2)).future(2), pd.RangeIndex(10, 14, 2))
    assert list(time_grid(pd.Index([0, 2, 5])).future(2)) == [6, 7]
    future = time_grid(pd.Index([0.0, 0.5, 1.5], name="s")).future(2)
    np.testing.assert_allclose(future, [2.0, 2.5])
    assert future.name == "s"


def test_single_timestamp_without_freq_cannot_be_continued():
    grid = time_grid(pd.DatetimeIndex(["2021-01-01"]))
    assert grid.length == 1
    with pytest.raises(ValueError, match="single timestamp"):
        grid.future(2)
    with_freq = time_grid(pd.date_range("2021-01-01", periods=1, freq="h"))
    assert list(with_freq.future(1)) == [pd.Timestamp("2021-01-01 01:00")]


# ------------------------------------------------------------------------------ validation


def test_unsorted_timestamps():
    index = hourly(5)[[0, 1, 3, 2, 4]]
    with pytest.raises(ValueError, match=r"X's index is not sorted.*row 3 comes before row 2.*sort_index"):
        time_grid(index, "X's index")


def test_duplicated_timestamps():
    index = hourly(5)[[0, 1, 1, 2, 3]]
    with pytest.raises(ValueError, match="duplicated timestamps.*2021-01-01 01:00"):
        time_grid(index)


def test_nat_and_nan():
    with pytest.raises(ValueError, match=r"missing \(NaT/NaN\) timestamps"):
        time_grid(pd.DatetimeIndex(["2021-01-01", pd.NaT, "2021-01-03"]))
    with pytest.raises(ValueError, match="missing"):
        time_grid(pd.Index([0.0, np.nan, 2.0]))


@pytest.mark.parametrize(
    "index",
    [pd.Index(["a", "b"]), pd.period_range("2021-01", periods=3, freq="M"), pd.Index([True, False])],
)
def test_index_of_other_types(index):
    with pytest.raises(TypeError, match="must hold datetimes or numbers"):
        time_grid(index)


def test_multiindex_and_empty():
    with pytest.raises(TypeError, match="MultiIndex"):
        time_grid(pd.MultiIndex.from_product([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="is empty"):
        time_grid(pd.DatetimeIndex([]), "X's index")
    with pytest.raises(ValueError, match="is empty"):
        time_grid(pd.Index([], dtype=float))


# ------------------------------------------------------------------------------ a given step (the model's)


def test_given_step_places_a_coarser_series_on_the_finer_grid():
    index = hourly(12)[::2]  # regular, every 2 h: 2 steps per row on an hourly model
    assert time_grid(index).step.freqstr == "2h"
    grid = time_grid(index, step=pd.offsets.Hour(1))
    np.testing.assert_array_equal(grid.positions, [0, 2, 4, 6, 8, 10])
    assert grid.future(2)[0] == pd.Timestamp("2021-01-01 11:00")


def test_given_step_refuses_timestamps_off_the_grid():
    index = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 02:30"])
    with pytest.raises(ValueError, match=r"not whole steps of h.*02:30"):
        time_grid(index, "X's index", step=pd.offsets.Hour(1))
    with pytest.raises(ValueError, match="not on the model's time step MS"):
        time_grid(pd.DatetimeIndex(["2021-01-15", "2021-02-15"]), step=pd.offsets.MonthBegin())
    with pytest.raises(ValueError, match="not whole steps of 1"):
        time_grid(pd.Index([0.0, 1.5]), step=1)
    with pytest.raises(ValueError, match="spans 2881 steps of min.*model was fitted on"):
        time_grid(pd.date_range("2021-01-01", periods=3, freq="D"), step=pd.offsets.Minute(1))
    assert time_grid(pd.date_range("2021-01-01", periods=3, freq="D"), step=pd.offsets.Hour(1)).length == 49


def test_parse_step_matches_the_kind_of_index():
    dates, ints, floats = hourly(3), pd.Index([0, 1]), pd.Index([0.0, 1.0])
    assert parse_step("h", dates) == pd.offsets.Hour(1)
    assert parse_step("MS", dates) == pd.offsets.MonthBegin()
    assert parse_step("2", dates) is None and parse_step("h", ints) is None
    assert parse_step("2", ints) == 2 and isinstance(parse_step("2", ints), int)
    assert parse_step("0.5", floats) == 0.5 and isinstance(parse_step("1", floats), float)
    assert parse_step(None, dates) is None


def test_series_share_the_finest_step():
    a, b = hourly(8), hourly(8)[::2]
    grids = time_grids([a, b], ["a", "b"])
    assert [g.step.freqstr for g in grids] == ["h", "h"]
    np.testing.assert_array_equal(grids[1].positions, [0, 2, 4, 6])


def test_single_row_series_takes_the_common_step():
    grids = time_grids([hourly(4), pd.DatetimeIndex(["2021-02-01"])], ["a", "b"])
    assert grids[1].step.freqstr == "h"
    assert grids[1].future(1)[0] == pd.Timestamp("2021-02-01 01:00")


def test_series_without_a_common_step_or_of_mixed_kinds_are_refused():
    months = pd.date_range("2021-01-01", periods=4, freq="MS")
    weeks = pd.date_range("2021-01-03", periods=4, freq="W")
    with pytest.raises(ValueError, match="time steps.*resample them onto one frequency"):
        time_grids([months, weeks], ["X[0]'s index", "X[1]'s index"])
    with pytest.raises(TypeError, match="mix datetime and numeric"):
        time_grids([hourly(3), pd.RangeIndex(3)], ["X[0]", "X[1]"])
    with pytest.raises(TypeError, match="time-zone-aware and naive"):
        time_grids([hourly(3), hourly(3, tz="UTC")], ["X[0]", "X[1]"])


def test_timegrid_is_a_frozen_record():
    grid = time_grid(hourly(3))
    assert isinstance(grid, TimeGrid)
    with pytest.raises(AttributeError):
        grid.step = None
    assert grid.same_as(time_grid(hourly(3))) and not grid.same_as(time_grid(hourly(4)))
