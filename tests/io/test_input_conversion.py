"""numpy, pandas and xarray input → validated ``Sequences`` on regular grids, and the input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ldmfilter.io import InputSchema, Sequences, as_sequences, to_sequences

COLUMNS = ["a", "b", "c"]
T = 6


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(size=(2, T, 3))


@pytest.fixture
def index():
    return pd.date_range("2021-01-01", periods=T, freq="h", name="when")


def frames(values, index):
    return [pd.DataFrame(v, index=index, columns=COLUMNS) for v in values]


# ------------------------------------------------------------------------------ every input gives the same values


def test_all_layouts_give_the_same_sequences(values, index):
    long = pd.concat(frames(values, index), keys=["u", "v"], names=["unit", "when"])
    array = xr.DataArray(
        values, dims=("series", "time", "feature"),
        coords={"series": ["u", "v"], "time": index.rename("time"), "feature": COLUMNS},
    )
    inputs = {
        "array": values,
        "list of arrays": list(values),
        "frames": frames(values, index),
        "long": long,
        "xarray": array,
        "xarray transposed": array.transpose("feature", "time", "series"),
    }
    for kind, X in inputs.items():
        sequences, schema = to_sequences(X)
        np.testing.assert_array_equal(sequences.values, values, err_msg=kind)
        assert sequences.observed.all() and sequences.values.shape == (2, T, 3)
        assert schema.obs_shape == (3,)
        assert not sequences.layout.single and sequences.layout.lengths == (T, T)
    assert to_sequences(long)[0].layout.series == ("u", "v")
    assert to_sequences(long)[0].layout.series_name == "unit"
    assert to_sequences(long)[0].layout.time_name == "when"
    assert to_sequences(array)[0].layout.series == ("u", "v")
    assert to_sequences(frames(values, index))[1].feature_names == tuple(COLUMNS)
    assert to_sequences(frames(values, index))[1].frequency == "h"
    assert to_sequences(array)[1].feature_names == tuple(COLUMNS)
    assert to_sequences(values)[1].feature_names is None


def test_single_series_inputs(values, index):
    frame = frames(values, index)[0]
    for X in (values[0], frame, xr.DataArray(values[0], dims=("time", "feature"))):
        sequences, _ = to_sequences(X)
        assert sequences.layout.single
        np.testing.assert_array_equal(sequences.values[0], values[0])
    series = frame["a"]
    sequences, schema = to_sequences(series)
    assert schema.feature_names == ("a",) and sequences.values.shape == (1, T, 1)
    sequences, schema = to_sequences(np.arange(5.0))
    assert sequences.values.shape == (1, 5, 1) and sequences.layout.single


def test_interleaved_long_table_is_grouped_by_series(values, index):
    long = pd.concat(frames(values, index), keys=["u", "v"], names=["unit", "when"])
    shuffled = long.sort_index(level="when", sort_remaining=False)  # rows alternate u, v, u, v, …
    sequences, _ = to_sequences(shuffled)
    np.testing.assert_array_equal(sequences.values, values)


def test_schema_reorders_columns_by_name(values, index):
    _, schema = to_sequences(frames(values, index))
    swapped = [f[["c", "a", "b"]] for f in frames(values, index)]
    assert to_sequences(swapped)[1].feature_names == ("c", "a", "b")
    sequences, _ = to_sequences(swapped, schema=schema)
    np.testing.assert_array_equal(sequences.values, values)
    array = xr.DataArray(values[..., [2, 0, 1]], dims=("series", "time", "feature"), coords={"feature": ["c", "a", "b"]})
    sequences, _ = to_sequences(array, schema=schema)
    np.testing.assert_array_equal(sequences.values, values)


def test_list_of_frames_in_different_column_orders(values, index):
    parts = frames(values, index)
    parts[1] = parts[1][["b", "c", "a"]]
    sequences, schema = to_sequences(parts)
    np.testing.assert_array_equal(sequences.values, values)
    assert schema.feature_names == tuple(COLUMNS)


def test_nullable_dtypes_and_integers(index):
    frame = pd.DataFrame({"a": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"), "b": np.arange(T)}, index=index)
    sequences, _ = to_sequences(frame)
    assert sequences.values.dtype == np.float64
    assert np.isnan(sequences.values[0, 1, 0]) and sequences.observed_fraction[0, 1] == 0.5


# ------------------------------------------------------------------------------ missing values and grids


def test_nan_rows_and_channels_are_reported(values, index):
    frame = frames(values, index)[0]
    frame.iloc[2] = np.nan
    frame.iloc[4, 1] = np.nan
    sequences, _ = to_sequences(frame)
    np.testing.assert_allclose(sequences.observed_fraction[0], [1, 1, 0, 1, 2 / 3, 1])
    np.testing.assert_array_equal(sequences.observed[0], [True, True, False, True, True, True])


def test_irregular_rows_become_missing_grid_steps(values, index):
    frame = frames(values, index)[0].drop(index[[1, 2]])
    sequences, schema = to_sequences(frame)
    assert sequences.values.shape == (1, T, 3)
    np.testing.assert_array_equal(sequences.observed[0], [True, False, False, True, True, True])
    np.testing.assert_array_equal(sequences.values[0, [0, 3, 4, 5]], values[0, [0, 3, 4, 5]])
    assert np.isnan(sequences.values[0, 1:3]).all()
    assert schema.frequency == "h"
    assert sequences.gather(np.arange(T)[None, :, None]).ravel().tolist() == [0, 3, 4, 5]


def test_the_models_step_places_sparser_rows(values, index):
    _, schema = to_sequences(frames(values, index))
    sparse = frames(values, index)[0].iloc[::2]
    alone, _ = to_sequences(sparse)
    assert alone.values.shape[1] == 3  # on its own: a regular 2-hourly series
    sequences, _ = to_sequences(sparse, schema=schema)
    assert sequences.values.shape[1] == 5  # on the model's hourly grid: a missing hour between rows
    np.testing.assert_array_equal(sequences.observed[0], [True, False, True, False, True])


def test_ragged_series_are_padded(values, index):
    parts = [frames(values, index)[0], frames(values, index)[1].iloc[:4]]
    sequences, _ = to_sequences(parts)
    assert sequences.layout.ragged and sequences.layout.lengths == (T, 4)
    assert np.isnan(sequences.values[1, 4:]).all() and not sequences.observed[1, 4:].any()
    gathered = sequences.gather(sequences.values)
    assert np.isnan(gathered[1, 4:]).all()
    np.testing.assert_array_equal(gathered[1, :4], values[1, :4])
    sequences, _ = to_sequences([values[0], values[1, :4]])
    assert sequences.layout.lengths == (T, 4) and np.isnan(sequences.values[1, 4:]).all()


def test_ragged_irregular_gather_returns_rows(values, index):
    parts = [frames(values, index)[0].drop(index[1]), frames(values, index)[1].iloc[:3]]
    sequences, _ = to_sequences(parts)
    assert sequences.values.shape[1] == T and sequences.layout.lengths == (T - 1, 3)
    steps = np.broadcast_to(np.arange(T)[None, :, None], (2, T, 1)).astype(float)
    rows = sequences.gather(steps)[..., 0]
    np.testing.assert_array_equal(rows[0], [0, 2, 3, 4, 5])
    np.testing.assert_array_equal(rows[1, :3], [0, 1, 2])
    assert np.isnan(rows[1, 3:]).all()


# ------------------------------------------------------------------------------ video


def test_xarray_video_dims():
    frames_ = np.random.default_rng(1).normal(size=(3, 5, 4, 2, 3))  # series, time, y, x, channel
    array = xr.DataArray(frames_, dims=("series", "time", "y", "x", "channel"), coords={"x": [0, 1]})
    sequences, schema = to_sequences(array)
    assert schema.obs_dims == ("channel", "y", "x") and schema.obs_shape == (3, 4, 2)
    np.testing.assert_array_equal(sequences.values, frames_.transpose(0, 1, 4, 2, 3))
    assert list(sequences.layout.obs_coords["x"]) == [0, 1]
    with pytest.raises(ValueError, match=r"observation dims \('y', 'x'\), but the model was fitted on \('channel', 'y', 'x'\)"):
        to_sequences(array.isel(channel=0), schema=schema)


def test_numpy_frames_as_single_series_for_a_frame_model():
    stack = np.zeros((2, 5, 4, 3))
    _, schema = to_sequences(stack)
    assert schema.obs_shape == (4, 3)
    sequences, _ = to_sequences(stack[0], schema=schema)
    assert sequences.layout.single and sequences.values.shape == (1, 5, 4, 3)
    with pytest.raises(ValueError, match=r"so it needs \(T, 4, 3\) or \(n_series, T, 4, 3\)"):
        to_sequences(np.zeros((5, 12)), schema=schema)


# ------------------------------------------------------------------------------ errors


def test_unsorted_duplicated_and_nat_timestamps(values, index):
    frame = frames(values, index)[0]
    with pytest.raises(ValueError, match="X's index is not sorted in increasing time order"):
        to_sequences(frame.iloc[::-1])
    with pytest.raises(ValueError, match="X's index has duplicated timestamps"):
        to_sequences(pd.concat([frame.iloc[:3], frame.iloc[2:]]))
    with pytest.raises(ValueError, match=r"X's index has missing \(NaT/NaN\) timestamps"):
        to_sequences(frame.set_axis(index.insert(2, pd.NaT)[:-1]))
    long = pd.concat({"u": frame.iloc[::-1]}, names=["unit", "when"])
    with pytest.raises(ValueError, match=r"X\['u'\]'s index is not sorted"):
        to_sequences(long)


def test_non_numeric_columns_and_data(values, index):
    frame = frames(values, index)[0]
    with pytest.raises(TypeError, match=r"X has non-numeric columns \['b'\]"):
        to_sequences(frame.assign(b="x"))
    with pytest.raises(TypeError, match=r"non-numeric columns \['c'\]"):
        to_sequences(frame.assign(c=True))
    with pytest.raises(TypeError, match="X must hold real numbers, got dtype object"):
        to_sequences(values.astype(object))
    with pytest.raises(TypeError, match="must hold real numbers"):
        to_sequences(xr.DataArray(np.array([["a", "b"]] * 3), dims=("time", "feature")))
    with pytest.raises(TypeError, match="must hold datetimes or numbers, got dtype str"):
        to_sequences(frame.set_axis(index.astype(str)))


def test_columns_different_from_the_schema(values, index):
    _, schema = to_sequences(frames(values, index))
    frame = frames(values, index)[0]
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \[\]"):
        to_sequences(frame.drop(columns="c"), schema=schema)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['d'\]"):
        to_sequences(frame.assign(d=1.0), schema=schema)
    with pytest.raises(ValueError, match=r"missing \['a'\], unexpected \['z'\]"):
        to_sequences(frame.rename(columns={"a": "z"}), schema=schema)
    with pytest.raises(ValueError, match=r"X\[1\] has different columns"):
        to_sequences([frame, frame.drop(columns="a")])
    with pytest.raises(ValueError, match=r"duplicated column names: \['a'\]"):
        to_sequences(frame.set_axis(["a", "b", "a"], axis=1))
    with pytest.raises(ValueError, match="X has no columns"):
        to_sequences(frame.iloc[:, :0])


def test_shape_different_from_the_schema(values):
    _, schema = to_sequences(values)
    with pytest.raises(ValueError, match=r"observations of shape \(4,\), but the model was fitted on \(3,\)"):
        to_sequences(np.zeros((T, 4)), schema=schema)
    with pytest.raises(ValueError, match=r"observations of shape \(2,\)"):
        to_sequences(pd.DataFrame(np.zeros((T, 2))), schema=schema)


def test_all_nan_series_inf_and_too_short(values, index):
    frame = frames(values, index)[0]
    with pytest.raises(ValueError, match=r"X series \[0\] have no observed value"):
        to_sequences(frame * np.nan)
    with pytest.raises(ValueError, match=r"X series \[1\] have no observed value"):
        to_sequences([frame, frame * np.nan])
    infinite = frame.copy()
    infinite.iloc[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains inf values \(first at \(2, 1\)\); use NaN"):
        to_sequences(infinite)
    with pytest.raises(ValueError, match="contains inf"):
        to_sequences(xr.DataArray(np.full((3, 2), -np.inf), dims=("time", "feature")))
    with pytest.raises(ValueError, match=r"X series \[1\] have fewer than 2 time steps"):
        to_sequences([frame, frame.iloc[:1]], min_steps=2)
    with pytest.raises(ValueError, match=r"X series \[0, 1\] have fewer than 2 time steps"):
        to_sequences(values[:, :1], min_steps=2)
    with pytest.raises(ValueError, match="X's index is empty"):
        to_sequences(frame.iloc[:0])


def test_bad_xarray_input(values):
    array = xr.DataArray(values, dims=("series", "time", "feature"))
    with pytest.raises(TypeError, match="X is an xarray Dataset; pass a DataArray"):
        to_sequences(array.to_dataset(name="v"))
    with pytest.raises(ValueError, match=r"X needs a 'time' dim, got dims \('series', 't', 'feature'\)"):
        to_sequences(array.rename(time="t"))
    with pytest.raises(ValueError, match=r"X has observation dims \['feature', 'extra'\]"):
        to_sequences(array.expand_dims(extra=2, axis=-1))
    with pytest.raises(ValueError, match=r"video dims must be y, x and optionally channel; also got \['z'\]"):
        to_sequences(xr.DataArray(np.zeros((4, 2, 2, 2)), dims=("time", "y", "x", "z")))
    with pytest.raises(ValueError, match=r"duplicated channel names: \['a'\]"):
        to_sequences(array.assign_coords(feature=["a", "b", "a"]))
    _, schema = to_sequences(array.assign_coords(feature=COLUMNS))
    with pytest.raises(ValueError, match=r"X has channels \['a', 'b', 'z'\], but the model was fitted on \['a', 'b', 'c'\]"):
        to_sequences(array.assign_coords(feature=["a", "b", "z"]), schema=schema)


def test_bad_long_tables(values, index):
    frame = frames(values, index)[0]
    with pytest.raises(ValueError, match="3-level index"):
        to_sequences(pd.concat({("u", 1): frame}, names=["a", "b", "when"]))
    long = pd.concat({"u": frame, "v": frame}, names=["unit", "when"]).swaplevel()
    with pytest.raises(ValueError, match=r"indexed by \(time, series\).*swaplevel"):
        to_sequences(long)


def test_mixed_lists_are_refused(values, index):
    with pytest.raises(TypeError, match=r"X mixes \['DataFrame', 'ndarray'\]"):
        to_sequences([frames(values, index)[0], values[1]])
    with pytest.raises(ValueError, match="different observation shapes"):
        to_sequences([values[0], values[1, :, :2]])


def test_as_sequences_checks():
    with pytest.raises(ValueError, match=r"shape \(n_series, T, \*obs_shape\)"):
        as_sequences(np.zeros((3, 2)))
    values, observed, fraction = as_sequences(np.array([[[1.0, np.nan], [np.nan, np.nan], [2.0, 3.0]]]))
    np.testing.assert_array_equal(observed, [[True, False, True]])
    np.testing.assert_allclose(fraction, [[0.5, 0.0, 1.0]])


def test_schema_round_trips_through_a_dict(values, index):
    _, schema = to_sequences(frames(values, index))
    assert InputSchema.from_dict(schema.to_dict()) == schema
    assert isinstance(to_sequences(values)[0], Sequences)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_first_bad_value_is_named_when_it_lies_beyond_the_first_row_block(monkeypatch, dtype):
    """The scan runs in row blocks; the index it reports is the whole array's first, not the block's."""
    import functools

    from ldmfilter.io import arrays

    monkeypatch.setattr(arrays, "row_blocks", functools.partial(arrays.row_blocks, block_bytes=8 * 3 * 2 * 2))  # 2 rows a block
    values = np.zeros((7, 3, 2), dtype=dtype)
    values[5, 1, 0] = np.nan
    values[4, 2, 1] = -np.inf
    values[6, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"X contains inf values \(first at \(4, 2, 1\)\)"):
        arrays.as_sequences(values)
    if dtype == np.float64:
        values[4, 2, 1] = 3e200
        with pytest.raises(ValueError, match=r"magnitude 3e\+200 \(first at \(4, 2, 1\)\)"):
            arrays.as_sequences(values)
    values[4, 2, 1] = values[6, 0, 0] = 0.0
    _, observed, fraction = arrays.as_sequences(values)
    expected = (~np.isnan(values)).reshape(7, 3, -1).mean(-1)
    np.testing.assert_array_equal(fraction, expected)
    assert observed.all()
