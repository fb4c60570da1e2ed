"""``LDMFilter`` on pandas and xarray input: the same numbers for every layout, labelled results,
irregular timestamps as predict steps, missing values, ragged series and the input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ldmfilter.estimators import LDMFilter

N, T, D = 8, 12, 5
COLUMNS = ["a", "b", "c", "d", "e"]
TARGETS = ["px", "py"]
ATOL = 1e-5  # float32 model: batched and single-series runs agree to rounding


def tiny() -> LDMFilter:
    return LDMFilter(state_dim=4, latent_dim=2, hidden=(16,), max_epochs=2, batch_size=4, verbose=False)


def make_values(n=N, steps=T, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    phases = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    return np.sin(0.5 * t + phases + np.arange(D)) + 0.1 * rng.normal(size=(n, steps, D))


INDEX = pd.date_range("2021-01-01", periods=T, freq="h", tz="UTC", name="when")
VALUES = make_values()


def as_frames(values, index=INDEX):
    return [pd.DataFrame(v, index=index[: len(v)], columns=COLUMNS) for v in values]


def as_long(values, index=INDEX):
    return pd.concat(as_frames(values, index), keys=[f"s{i}" for i in range(len(values))], names=["unit", "when"])


def as_xarray(values, index=INDEX):
    return xr.DataArray(
        values, dims=("series", "time", "feature"),
        coords={"series": [f"s{i}" for i in range(len(values))], "time": index.tz_localize(None).rename("time"), "feature": COLUMNS},
    )


@pytest.fixture(scope="module")
def model():
    targets = [pd.DataFrame(v[:, :2], index=INDEX, columns=TARGETS) for v in VALUES]
    return tiny().fit(as_frames(VALUES), targets=targets)


@pytest.fixture(scope="module")
def free_model():
    """Fitted on numpy arrays: no channel names and no time step, so each index sets its own step."""
    return tiny().fit(VALUES)


def assert_same(a, b, spaces=("state", "observations")):
    for space in spaces:
        np.testing.assert_allclose(a.space(space).mean, b.space(space).mean, atol=ATOL, rtol=0)
        np.testing.assert_allclose(a.space(space).cov, b.space(space).cov, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("method", ["filter", "smooth", "forecast"])
def test_every_layout_gives_the_same_numbers(model, method):
    call = (lambda X: model.forecast(X, 4)) if method == "forecast" else getattr(model, method)
    reference = call(VALUES)
    for kind, X in {"frames": as_frames(VALUES), "long": as_long(VALUES), "xarray": as_xarray(VALUES)}.items():
        result = call(X)
        assert_same(result, reference, ("state", "observations", "targets"))
        assert result.mean.shape == reference.mean.shape, kind
    single = call(VALUES[3])
    for X in (as_frames(VALUES)[3], as_xarray(VALUES).isel(series=3), as_long(VALUES[3:4])):
        result = call(X)
        np.testing.assert_allclose(np.squeeze(result.mean), single.mean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(single.mean, reference.mean[3], atol=ATOL, rtol=0)


def test_long_table_and_frames_give_equal_tables(model):
    long = model.filter(as_long(VALUES)).to_pandas()
    frames = model.filter(as_frames(VALUES)).to_pandas()
    np.testing.assert_allclose(long.to_numpy(), frames.to_numpy(), atol=ATOL)
    assert long.index.names == ["unit", "when"] and frames.index.names == ["series", "when"]
    assert list(long.index.get_level_values("when")[:T]) == list(INDEX)


def test_to_pandas_keeps_name_tz_and_freq(model):
    frame = as_frames(VALUES)[0]
    for result in (model.filter(frame), model.smooth(frame)):
        table = result.to_pandas()
        assert table.index.equals(INDEX)
        assert table.index.name == "when" and str(table.index.tz) == "UTC" and table.index.freqstr == "h"
        assert list(table.columns[:2]) == ["a", "b"] and "e_upper" in table and "observed_fraction" in table
    targets = model.filter(frame).to_pandas("targets")
    assert list(targets.columns) == ["px", "py", "px_std", "py_std", "px_lower", "py_lower", "px_upper", "py_upper", "observed_fraction"]
    forecast = model.forecast(frame, 3).to_pandas()
    pd.testing.assert_index_equal(forecast.index, pd.date_range("2021-01-01 12:00", periods=3, freq="h", tz="UTC", name="when"))


def test_to_xarray_names_dims_and_coords(model):
    result = model.filter(as_xarray(VALUES))
    ds = result.to_xarray()
    assert ds["mean"].dims == ("series", "time", "feature") and ds["cov"].dims == ("series", "time", "feature", "feature_2")
    assert list(ds.series.values) == [f"s{i}" for i in range(N)] and list(ds.feature_2.values) == COLUMNS
    np.testing.assert_array_equal(ds.time.values, INDEX.tz_localize(None).values)
    targets = model.filter(as_frames(VALUES)[0]).to_xarray("targets")
    assert targets["cov"].dims == ("time", "feature", "feature_2") and list(targets.feature.values) == TARGETS
    assert targets.attrs["timezone"] == "UTC"
    state = model.forecast(as_frames(VALUES), 2).to_xarray("state")
    assert state["mean"].dims == ("series", "time", "feature") and list(state.series.values) == list(range(N))


# ------------------------------------------------------------------------------ forecast indexes


@pytest.mark.parametrize(
    "index, expected",
    [
        (pd.date_range("2022-05-01", periods=T, freq="h", name="t"), pd.date_range("2022-05-01 12:00", periods=3, freq="h", name="t")),
        (pd.date_range("2022-05-01", periods=T, freq="D"), pd.date_range("2022-05-13", periods=3, freq="D")),
        (pd.date_range("2020-01-01", periods=T, freq="MS"), pd.date_range("2021-01-01", periods=3, freq="MS")),
        (pd.date_range("2020-01-01", periods=T + 4, freq="h").delete([1, 5, 6, 9]), pd.date_range("2020-01-01 16:00", periods=3, freq="h")),
        (pd.date_range("2020-01-01", periods=T + 3, freq="MS").delete([2, 3, 7]), pd.date_range("2021-04-01", periods=3, freq="MS")),
        (pd.RangeIndex(T, name="step"), pd.RangeIndex(T, T + 3, name="step")),
        (pd.RangeIndex(0, 2 * T, 2), pd.RangeIndex(2 * T, 2 * T + 6, 2)),
        (pd.Index([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0], name="x"), pd.Index([6.5, 7.0, 7.5], name="x")),
    ],
)
def test_forecast_index_continues_the_series(free_model, index, expected):
    frame = pd.DataFrame(VALUES[0], index=index)
    table = free_model.forecast(frame, 3).to_pandas()
    pd.testing.assert_index_equal(table.index, expected)
    assert getattr(table.index, "freq", None) == getattr(expected, "freq", None)
    assert np.isfinite(table.to_numpy()).all()


def test_irregular_hourly_forecast_equals_the_nan_filled_one(free_model):
    index = pd.date_range("2020-01-01", periods=T, freq="h")
    frame = pd.DataFrame(VALUES[0], index=index)
    holes = frame.drop(index[[3, 4, 8]])
    filled = frame.copy()
    filled.iloc[[3, 4, 8]] = np.nan
    a, b = free_model.forecast(holes, 3), free_model.forecast(filled, 3)
    assert_same(a, b)
    assert a.to_pandas().index.equals(b.to_pandas().index)


# ------------------------------------------------------------------------------ irregular timestamps


@pytest.mark.parametrize("drop", [[2], [3, 4, 5], [1, 6, 7, 10]])
def test_a_gap_of_k_steps_is_k_predict_steps(model, drop):
    frame = as_frames(VALUES)[1]
    holes = frame.drop(INDEX[drop])
    filled = frame.copy()
    filled.iloc[drop] = np.nan
    keep = np.setdiff1d(np.arange(T), drop)
    for method in ("filter", "smooth"):
        a, b = getattr(model, method)(holes), getattr(model, method)(filled)
        for space in ("state", "observations", "targets"):
            np.testing.assert_allclose(a.space(space).mean, b.space(space).mean[keep], atol=ATOL, rtol=0)
            np.testing.assert_allclose(a.space(space).cov, b.space(space).cov[keep], atol=ATOL, rtol=0)
        assert a.to_pandas().index.equals(holes.index)
    np.testing.assert_array_equal(model.filter(holes).observed_fraction, 1.0)
    np.testing.assert_allclose(model.filter(holes).log_likelihood, model.filter(filled).log_likelihood[keep], atol=1e-4)
    assert_same(model.forecast(holes, 2), model.forecast(filled, 2))


def test_gaps_in_a_long_table_and_in_xarray(model):
    drop = [2, 7, 8]
    long = as_long(VALUES[:3])
    holes = long.drop([("s1", INDEX[i]) for i in drop])
    filled = long.copy()
    filled.loc[[("s1", INDEX[i]) for i in drop]] = np.nan
    a, b = model.filter(holes), model.filter(filled)
    keep = np.setdiff1d(np.arange(T), drop)
    np.testing.assert_allclose(a.mean[1, : len(keep)], b.mean[1, keep], atol=ATOL)
    np.testing.assert_allclose(a.mean[[0, 2]], b.mean[[0, 2]], atol=ATOL)
    assert np.isnan(a.mean[1, len(keep):]).all()
    array = as_xarray(VALUES[:3])
    a, b = model.filter(array.isel(time=keep)), model.filter(array.where(~array.time.isin(array.time[drop])))
    assert b.observed_fraction[:, drop].sum() == 0
    np.testing.assert_allclose(a.mean, b.mean[:, keep], atol=ATOL)
    assert a.to_xarray().time.size == len(keep)


def test_sparser_rows_take_several_model_steps(model):
    """An hourly model given 2-hourly rows predicts two steps per row."""
    frame = as_frames(VALUES)[2]
    every_other = frame.iloc[::2]
    filled = frame.copy()
    filled.iloc[1::2] = np.nan
    np.testing.assert_allclose(model.filter(every_other).mean, model.filter(filled).mean[::2], atol=ATOL)
    forecast = model.forecast(every_other, 2).to_pandas()
    assert list(forecast.index) == list(pd.date_range("2021-01-01 11:00", periods=2, freq="h", tz="UTC"))
    with pytest.raises(ValueError, match="not whole steps of h"):
        model.filter(frame.set_axis(INDEX + pd.Timedelta("30min") * (np.arange(T) % 2)))


# ------------------------------------------------------------------------------ missing values


def test_nan_rows_and_channels_are_reported_and_results_finite(model):
    frame = as_frames(VALUES)[0]
    frame.iloc[[2, 3]] = np.nan
    frame.loc[:, "b"] = np.nan
    frame.iloc[7, 3] = np.nan
    expected = np.full(T, 0.8)
    expected[[2, 3]] = 0.0
    expected[7] = 0.6
    for result in (model.filter(frame), model.smooth(frame)):
        np.testing.assert_allclose(result.observed_fraction, expected)
        np.testing.assert_allclose(result.to_pandas()["observed_fraction"].to_numpy(), expected)
        for space in ("state", "observations", "targets"):
            assert np.isfinite(result.space(space).mean).all() and np.isfinite(result.space(space).cov).all()
    assert np.isfinite(model.forecast(frame, 3).mean).all()
    ll = model.filter(frame).log_likelihood
    assert (ll[[2, 3]] == 0).all() and np.isfinite(ll).all()


def test_missing_values_in_xarray(model):
    array = as_xarray(VALUES[:2]).copy()
    array[0, 4] = np.nan
    array[1, :, 0] = np.nan
    ds = model.filter(array).to_xarray()
    assert ds["observed_fraction"].values[0, 4] == 0 and (ds["observed_fraction"].values[1] == 0.8).all()
    assert np.isfinite(ds["mean"].values).all()


# ------------------------------------------------------------------------------ ragged series


def test_ragged_frames_are_padded_and_forecast_from_their_own_ends(model):
    lengths = [T, 9, 5]
    parts = [f.iloc[:n] for f, n in zip(as_frames(VALUES[:3]), lengths)]
    result = model.filter(parts)
    assert result.mean.shape == (3, T, 4)
    for i, n in enumerate(lengths):
        assert np.isnan(result.mean[i, n:]).all() and np.isnan(result.observations.mean[i, n:]).all()
        assert np.isnan(result.observed_fraction[i, n:]).all()
        alone = model.filter(parts[i])
        np.testing.assert_allclose(result.mean[i, :n], alone.mean, atol=ATOL)
    assert model.filter(parts).to_pandas().groupby(level=0).size().tolist() == lengths
    smoothed = model.smooth(parts)
    np.testing.assert_allclose(smoothed.mean[1, :9], model.smooth(parts[1]).mean, atol=ATOL)
    forecast = model.forecast(parts, 3)
    table = forecast.to_pandas()
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(forecast.mean[i], model.forecast(parts[i], 3).mean, atol=ATOL)
        assert list(table.loc[i].index) == list(pd.date_range(INDEX[n - 1], periods=4, freq="h")[1:])
    ds = forecast.to_xarray()
    assert ds["timestamp"].dims == ("series", "time")
    ragged_numpy = model.forecast([VALUES[0], VALUES[1][:5]], 2).to_pandas()
    assert list(ragged_numpy.index) == [(0, 12), (0, 13), (1, 5), (1, 6)]


# ------------------------------------------------------------------------------ input checks


def test_time_index_errors(model):
    frame = as_frames(VALUES)[0]
    with pytest.raises(ValueError, match="X's index is not sorted in increasing time order"):
        model.filter(frame.iloc[::-1])
    with pytest.raises(ValueError, match="X's index has duplicated timestamps"):
        model.filter(pd.concat([frame.iloc[:4], frame.iloc[3:]]))
    with pytest.raises(ValueError, match=r"X's index has missing \(NaT/NaN\) timestamps"):
        model.filter(frame.set_axis(INDEX.insert(5, pd.NaT)[:-1]))
    long = as_long(VALUES[:2])
    unsorted = pd.concat([long.loc[["s0"]], long.loc[["s1"]].iloc[::-1]])
    with pytest.raises(ValueError, match=r"X\['s1'\]'s index is not sorted"):
        model.forecast(unsorted, 2)


def test_channel_errors_and_reordering(model):
    frame = as_frames(VALUES)[0]
    with pytest.raises(TypeError, match=r"X has non-numeric columns \['c'\]"):
        model.filter(frame.assign(c="x"))
    with pytest.raises(ValueError, match=r"different columns from the data the model was fitted on: missing \['e'\]"):
        model.filter(frame.drop(columns="e"))
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        model.smooth(frame.assign(extra=0.0))
    reordered = frame[["e", "c", "a", "d", "b"]]
    assert_same(model.filter(reordered), model.filter(frame), ("state", "observations", "targets"))
    assert list(model.filter(reordered).to_pandas().columns[:5]) == COLUMNS
    array = as_xarray(VALUES[:2])
    assert_same(model.filter(array.isel(feature=[4, 3, 2, 1, 0])), model.filter(array))
    with pytest.raises(ValueError, match=r"X has channels .* but the model was fitted on"):
        model.filter(array.assign_coords(feature=list("abcdz")))


def test_shape_errors(model):
    with pytest.raises(ValueError, match=r"observations of shape \(4,\), but the model was fitted on \(5,\)"):
        model.filter(VALUES[0, :, :4])
    with pytest.raises(ValueError, match=r"observations of shape \(6,\), but the model was fitted on \(5,\)"):
        model.forecast(np.zeros((2, T, 6)), 2)
    with pytest.raises(ValueError, match=r"fitted on observations of shape \(5,\), so it needs \(T, 5\)"):
        model.filter(np.zeros((2, 2, T, 5)))


def test_value_errors(model):
    frame = as_frames(VALUES)[0]
    with pytest.raises(ValueError, match=r"X series \[0\] have no observed value"):
        model.filter(frame * np.nan)
    with pytest.raises(ValueError, match=r"X series \[1\] have no observed value"):
        model.filter([frame, frame * np.nan])
    infinite = frame.copy()
    infinite.iloc[3, 2] = -np.inf
    with pytest.raises(ValueError, match=r"X contains inf values \(first at \(3, 2\)\); use NaN for missing values"):
        model.filter(infinite)
    with pytest.raises(ValueError, match=r"X series \[1\] have fewer than 2 time steps"):
        tiny().fit([frame, frame.iloc[:1]])
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        model.forecast(frame, 0)


def test_xarray_errors(model):
    array = as_xarray(VALUES[:2])
    with pytest.raises(TypeError, match="X is an xarray Dataset; pass a DataArray"):
        model.filter(array.to_dataset(name="v"))
    with pytest.raises(ValueError, match="X needs a 'time' dim"):
        model.filter(array.rename(time="date"))
    with pytest.raises(ValueError, match=r"X has observation dims \['feature', 'extra'\]"):
        model.filter(array.expand_dims(extra=1, axis=-1))
    with pytest.raises(ValueError, match="video dims must be y, x"):
        model.filter(xr.DataArray(np.zeros((T, 2, 2, 2)), dims=("time", "y", "x", "z")))


def test_targets_must_match_the_rows_of_x(model):
    frames = as_frames(VALUES[:2])
    targets = [f[["a", "b"]] for f in frames]
    with pytest.raises(ValueError, match=r"targets must have the same series and rows as X: X has 2 series of lengths \[12, 12\], targets 2 of lengths \[12, 11\]"):
        model.fit_readout(frames, [targets[0], targets[1].iloc[1:]])
    with pytest.raises(ValueError, match="targets must have the same series and rows as X"):
        model.fit_readout(frames, targets[:1])
    with pytest.raises(ValueError, match="targets series 1 has a different time index from X's"):
        model.fit_readout(frames, [targets[0], targets[1].set_axis(INDEX + pd.Timedelta("1h"))])
    with pytest.raises(ValueError, match="targets must have the same series and rows as X"):
        tiny().fit(frames, targets=[t.iloc[:-2] for t in targets])


def test_fit_readout_on_irregular_frames_with_aligned_targets(model):
    frame = as_frames(VALUES)[4].drop(INDEX[[3, 4]])
    targets = frame[["a", "c"]].rename(columns={"a": "u", "c": "v"})
    refit = tiny().fit(as_frames(VALUES)).fit_readout(frame, targets)
    table = refit.filter(frame).to_pandas("targets")
    assert list(table.columns[:2]) == ["u", "v"] and table.index.equals(frame.index)
    assert np.isfinite(table.to_numpy()).all()
