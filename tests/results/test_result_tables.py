"""Result objects: closed-form quantiles and intervals, and tables labelled like the input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import norm

from ldmfilter.io import to_sequences
from ldmfilter.results import FilterResult, ForecastResult, GaussianMoments

# ------------------------------------------------------------------------------ GaussianMoments


def moments(lead=(4,), dim=3, seed=0, dtype=np.float64, names=None) -> GaussianMoments:
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=lead + (dim,))
    root = rng.normal(size=lead + (dim, dim))
    cov = root @ np.swapaxes(root, -1, -2) + 0.1 * np.eye(dim)
    return GaussianMoments(mean.astype(dtype), cov.astype(dtype), names=names)


def test_variances_come_from_the_covariance_diagonal():
    m = moments()
    np.testing.assert_allclose(m.var, np.diagonal(m.cov, axis1=-2, axis2=-1))
    np.testing.assert_allclose(m.std, np.sqrt(m.var))
    m.var[0, 0] = 123.0  # a copy, not a view of cov
    assert m.cov[0, 0, 0] != 123.0


def test_quantiles_in_closed_form():
    m = moments()
    q = [0.01, 0.25, 0.5, 0.9, 0.999]
    quantiles = m.quantiles(q)
    assert quantiles.shape == (5,) + m.mean.shape
    expected = norm.ppf(np.asarray(q)[:, None, None], loc=m.mean, scale=m.std)
    np.testing.assert_allclose(quantiles, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.quantiles(0.5), m.mean)
    assert m.quantiles(0.975).shape == m.mean.shape
    np.testing.assert_allclose(m.quantiles(0.975), m.mean + 1.959963984540054 * m.std, rtol=1e-12)


def test_quantiles_match_seeded_monte_carlo():
    m = moments(lead=(), dim=2)
    samples = np.random.default_rng(1).multivariate_normal(m.mean, m.cov, size=200_000)
    np.testing.assert_allclose(m.quantiles([0.1, 0.9]), np.quantile(samples, [0.1, 0.9], axis=0), atol=0.03)
    lower, upper = m.interval(0.8)
    inside = ((samples >= lower) & (samples <= upper)).mean(0)
    np.testing.assert_allclose(inside, 0.8, atol=0.005)


@pytest.mark.parametrize("coverage", [0.5, 0.9, 0.95])
def test_interval_is_central_and_symmetric(coverage):
    m = moments()
    lower, upper = m.interval(coverage)
    z = norm.ppf(0.5 + coverage / 2)
    np.testing.assert_allclose(upper, m.mean + z * m.std, rtol=1e-12)
    np.testing.assert_allclose(lower, m.mean - z * m.std, rtol=1e-12)
    np.testing.assert_allclose((lower + upper) / 2, m.mean, atol=1e-12)


def test_marginal_variances_only_for_frames():
    mean = np.zeros((5, 4, 3))
    var = np.full((5, 4, 3), 4.0)
    m = GaussianMoments(mean, None, var)
    lower, upper = m.interval(0.9)
    np.testing.assert_allclose(upper, 2.0 * norm.ppf(0.95))
    assert lower.shape == (5, 4, 3) and m.cov is None


def test_dtype_nan_and_tiny_negative_variances():
    m = moments(dtype=np.float32)
    assert m.quantiles([0.1, 0.9]).dtype == np.float32 and m.interval()[0].dtype == np.float32
    mean = np.array([[0.0, np.nan]])
    m = GaussianMoments(mean, None, np.array([[-1e-12, 1.0]]))
    assert m.std[0, 0] == 0.0
    lower, upper = m.interval()
    assert lower[0, 0] == 0.0 and np.isnan(upper[0, 1])


def test_moment_errors():
    m = moments()
    for q in (0.0, 1.0, -0.1, 1.5, np.nan, [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="q must be a probability"):
            m.quantiles(q)
    for coverage in (0.0, 1.0, 1.5, -0.2, np.nan):
        with pytest.raises(ValueError, match="coverage must lie strictly between 0 and 1"):
            m.interval(coverage)
    with pytest.raises(ValueError, match="needs cov or var"):
        GaussianMoments(np.zeros(3))
    with pytest.raises(ValueError, match=r"var has shape \(2,\), mean \(3,\)"):
        GaussianMoments(np.zeros(3), None, np.ones(2))


# ------------------------------------------------------------------------------ results built on input layouts

COLUMNS = ["a", "b"]
S = 3


def grid_moments(sequences, dim=S, seed=0, names=None) -> GaussianMoments:
    """Moments on the input's grid, gathered at its rows, like the estimators build them."""
    n, T = sequences.values.shape[:2]
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(n, T, dim))
    root = rng.normal(size=(n, T, dim, dim))
    cov = root @ np.swapaxes(root, -1, -2) + np.eye(dim)
    return GaussianMoments(sequences.gather(mean), sequences.gather(cov), names=names)


def filter_result(X, targets=False, observations=True) -> FilterResult:
    sequences, schema = to_sequences(X)
    return FilterResult(
        state=grid_moments(sequences),
        observations=grid_moments(sequences, len(COLUMNS), 1, schema.feature_names) if observations else None,
        targets=grid_moments(sequences, 1, 2, ("pos",)) if targets else None,
        layout=sequences.layout,
        log_likelihood=sequences.gather(np.zeros(sequences.values.shape[:2])),
        observed_fraction=sequences.gather(sequences.observed_fraction),
    )


def forecast_result(X, horizon=3) -> ForecastResult:
    sequences, schema = to_sequences(X)
    n = sequences.layout.n_series
    rng = np.random.default_rng(3)
    lead = (horizon,) if sequences.layout.single else (n, horizon)
    mean = rng.normal(size=lead + (len(COLUMNS),))
    cov = np.broadcast_to(np.eye(len(COLUMNS)), lead + (2, 2)).copy()
    state = GaussianMoments(rng.normal(size=lead + (S,)), np.broadcast_to(np.eye(S), lead + (S, S)).copy())
    observations = GaussianMoments(mean, cov, names=schema.feature_names)
    return ForecastResult(state=state, observations=observations, targets=None, layout=sequences.layout, horizon=horizon)


@pytest.fixture
def frame():
    index = pd.date_range("2021-03-27 22:00", periods=6, freq="h", tz="Europe/Paris", name="when")
    data = np.random.default_rng(5).normal(size=(6, 2))
    data[2] = np.nan
    data[4, 1] = np.nan
    return pd.DataFrame(data, index=index, columns=COLUMNS)


def test_to_pandas_keeps_the_index_and_lays_out_columns(frame):
    result = filter_result(frame)
    table = result.to_pandas()
    assert table.index.equals(frame.index)
    assert table.index.name == "when" and str(table.index.tz) == "Europe/Paris" and table.index.freqstr == "h"
    assert set(table.columns) == {f"{v}{s}" for v in COLUMNS for s in ("", "_std", "_lower", "_upper")} | {"observed_fraction"}
    np.testing.assert_array_equal(table["a"], result.observations.mean[:, 0])
    np.testing.assert_array_equal(table["b_std"], result.observations.std[:, 1])
    lower, upper = result.observations.interval(0.8)
    table = result.to_pandas(coverage=0.8)
    np.testing.assert_array_equal(table["a_lower"], lower[:, 0])
    np.testing.assert_array_equal(table["b_upper"], upper[:, 1])
    np.testing.assert_allclose(table["observed_fraction"], [1, 1, 0, 1, 0.5, 1])


def test_to_pandas_spaces_and_names(frame):
    result = filter_result(frame, targets=True)
    state = result.to_pandas("state")
    assert list(state.columns[:S]) == [f"state_{k}" for k in range(S)]
    assert list(result.to_pandas("targets").columns[:4]) == ["pos", "pos_std", "pos_lower", "pos_upper"]
    no_obs = filter_result(frame, observations=False)
    assert no_obs.to_pandas().columns[0] == "state_0"
    with pytest.raises(ValueError, match=r"no observations beliefs"):
        no_obs.to_pandas("observations")
    with pytest.raises(ValueError, match=r"no targets beliefs \(needs fit_readout\(X, Y\)"):
        filter_result(frame).to_pandas("targets")
    with pytest.raises(ValueError, match=r"space must be one of \('state', 'observations', 'targets'\), got 'obs'"):
        result.to_pandas("obs")


def test_unnamed_observations_get_default_names(frame):
    result = filter_result(frame.to_numpy())
    assert list(result.to_pandas().columns[:2]) == ["obs_0", "obs_1"]
    assert list(result.to_xarray().feature.values) == ["obs_0", "obs_1"]
    assert result.to_pandas().index.equals(pd.RangeIndex(6, name="time"))


def test_a_variable_named_like_the_fraction_column_is_refused(frame):
    result = filter_result(frame.rename(columns={"a": "observed_fraction"}))
    with pytest.raises(ValueError, match="clashes"):
        result.to_pandas()


def test_irregular_index_is_kept_as_given(frame):
    irregular = frame.drop(frame.index[[1, 3]])
    table = filter_result(irregular).to_pandas()
    assert table.index.equals(irregular.index) and table.index.freq is None and len(table) == 4


def test_several_series_give_a_long_table(frame):
    long = pd.concat({"x": frame, "y": frame.iloc[:4]}, names=["unit", "when"])
    table = filter_result(long).to_pandas()
    assert table.index.names == ["unit", "when"]
    assert table.groupby(level="unit").size().to_dict() == {"x": 6, "y": 4}
    assert table.loc["y"].index.equals(frame.index[:4])
    assert np.isfinite(table.loc["y", "a_std"]).all()  # padding rows are dropped from the table
    table = filter_result([frame, frame]).to_pandas()
    assert table.index.names == ["series", "when"] and list(table.index.levels[0]) == [0, 1]


def test_forecast_tables_continue_each_series(frame):
    fc = forecast_result(frame, horizon=3)
    table = fc.to_pandas()
    expected = pd.date_range(frame.index[-1], periods=4, freq="h", name="when")[1:]
    pd.testing.assert_index_equal(table.index, expected)
    assert "observed_fraction" not in table.columns
    ragged = forecast_result([frame, frame.iloc[:4]], horizon=2).to_pandas()
    assert list(ragged.loc[0].index) == list(frame.index[-1] + pd.Timedelta("1h") * np.arange(1, 3))
    assert list(ragged.loc[1].index) == list(frame.index[3] + pd.Timedelta("1h") * np.arange(1, 3))
    numeric = forecast_result(frame.to_numpy()[:5], horizon=2).to_pandas()
    pd.testing.assert_index_equal(numeric.index, pd.RangeIndex(5, 7, name="time"))
    monthly = frame.set_axis(pd.date_range("2020-01-01", periods=6, freq="MS")).drop(pd.Timestamp("2020-03-01"))
    assert list(forecast_result(monthly, 2).to_pandas().index) == [pd.Timestamp("2020-07-01"), pd.Timestamp("2020-08-01")]


def test_to_pandas_refuses_frames():
    frames = np.random.default_rng(0).normal(size=(5, 2, 3))
    sequences, _ = to_sequences(xr.DataArray(frames, dims=("time", "y", "x")))
    result = FilterResult(
        state=grid_moments(sequences),
        observations=GaussianMoments(frames, None, np.ones_like(frames)),
        targets=None,
        layout=sequences.layout,
    )
    with pytest.raises(ValueError, match=r"to_pandas\(\) needs vector beliefs.*frames of shape \(2, 3\): use to_xarray"):
        result.to_pandas()
    ds = result.to_xarray()
    assert ds["mean"].dims == ("time", "y", "x") and "cov" not in ds
    assert result.to_pandas("state").shape == (5, 4 * S)


# ------------------------------------------------------------------------------ xarray


def test_to_xarray_dims_coords_and_covariances(frame):
    result = filter_result(frame, targets=True)
    ds = result.to_xarray()
    assert ds["mean"].dims == ("time", "feature")
    assert ds["cov"].dims == ("time", "feature", "feature_2")
    assert list(ds.feature.values) == COLUMNS and list(ds.feature_2.values) == COLUMNS
    assert ds["observed_fraction"].dims == ("time",) and ds["log_likelihood"].dims == ("time",)
    np.testing.assert_array_equal(ds["cov"].values, result.observations.cov)
    np.testing.assert_array_equal(ds["upper"].values, result.observations.interval(0.9)[1])
    assert ds.attrs["space"] == "observations" and ds.attrs["kind"] == "FilterResult"
    state = result.to_xarray("state", coverage=0.5)
    assert list(state.feature.values) == [f"state_{k}" for k in range(S)] and state.attrs["coverage"] == 0.5
    assert list(result.to_xarray("targets").feature_2.values) == ["pos"]


def test_tz_aware_time_becomes_naive_utc(frame):
    ds = filter_result(frame).to_xarray()
    assert ds.attrs["timezone"] == "Europe/Paris"
    expected = frame.index.tz_convert("UTC").tz_localize(None)
    np.testing.assert_array_equal(ds.time.values, expected.values)
    naive = filter_result(frame.tz_localize(None)).to_xarray()
    assert "timezone" not in naive.attrs


def test_to_xarray_series_and_ragged_timestamps(frame):
    same = filter_result([frame, frame]).to_xarray()
    assert same["mean"].dims == ("series", "time", "feature") and list(same.series.values) == [0, 1]
    assert "timestamp" not in same.coords
    long = pd.concat({"x": frame, "y": frame.iloc[:4]}, names=["unit", "when"])
    ragged = filter_result(long).to_xarray()
    assert list(ragged.series.values) == ["x", "y"]
    assert ragged["timestamp"].dims == ("series", "time")
    assert np.isnat(ragged["timestamp"].values[1, 4:]).all()
    assert np.isnan(ragged["mean"].values[1, 4:]).all() and np.isfinite(ragged["mean"].values[1, :4]).all()
    fc = forecast_result(long, 2).to_xarray()
    assert fc["timestamp"].values[1, 0] == np.datetime64(frame.index[4].tz_convert("UTC").tz_localize(None))
    assert "observed_fraction" not in fc and fc.attrs["kind"] == "ForecastResult"


def test_result_properties(frame):
    result = filter_result(frame)
    assert result.mean.shape == (6, S) and result.cov.shape == (6, S, S) and result.std.shape == (6, S)
    assert result.quantiles([0.1, 0.9]).shape == (2, 6, S)
    lower, upper = result.interval(0.9, space="observations")
    assert lower.shape == (6, 2) and (upper >= lower).all()
    assert result.time_index().equals(frame.index)
