"""Figures of results and the xarray accessor, on a tiny fitted model."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib import pyplot as plt

from ldmfilter import LDMFilter
from ldmfilter.plotting import plot_frames, plot_result


@pytest.fixture(scope="module")
def sensors():
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-05-01", periods=80, freq="h", name="time")
    frame = pd.DataFrame(rng.normal(size=(80, 3)).cumsum(0), index=index, columns=["a", "b", "c"])
    model = LDMFilter(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False).fit(frame, targets=frame[["a"]])
    return model, frame


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(1)
    frames = rng.random((4, 12, 6, 5))
    model = LDMFilter(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False).fit(frames)
    return model, frames


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_result_draws_one_panel_per_variable_with_bands(sensors):
    model, frame = sensors
    figure = model.filter(frame).plot(data=frame, coverage=(0.5, 0.9))
    axes = figure.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["a", "b", "c"]
    first = axes[0]
    assert len(first.collections) == 2  # two bands
    mean_line, dots = first.get_lines()
    np.testing.assert_allclose(mean_line.get_ydata(), model.filter(frame).observations.mean[:, 0])
    np.testing.assert_allclose(dots.get_ydata(), frame["a"].to_numpy())
    # bands are the closed-form intervals
    lower, upper = model.filter(frame).observations.interval(0.9)
    band = first.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.min(), min(lower[:, 0].min(), upper[:, 0].min()), atol=1e-5)


def test_forecast_fan_follows_the_history(sensors):
    model, frame = sensors
    figure = model.forecast(frame, 10).plot("targets", history=model.filter(frame), variables=["a"], title="fan")
    (ax,) = figure.get_axes()
    history, forecast = ax.get_lines()[:2]
    assert pd.Timestamp(history.get_xdata()[-1]) < pd.Timestamp(forecast.get_xdata()[0])
    assert len(forecast.get_xdata()) == 10 and figure._suptitle.get_text() == "fan"


def test_plot_frames_shows_inputs_above_reconstructions(video):
    model, frames = video
    result = model.filter(frames)
    figure = plot_frames(result, frames, series=1, steps=[0, 5, 11])
    axes = np.array(figure.get_axes()).reshape(2, 3)
    np.testing.assert_allclose(axes[0, 1].get_images()[0].get_array(), frames[1, 5])
    np.testing.assert_allclose(axes[1, 2].get_images()[0].get_array(), result.observations.mean[1, 11])
    assert isinstance(result.plot(frames=frames), matplotlib.figure.Figure)  # frame-valued: frames


def test_plot_errors(sensors, video):
    model, frame = sensors
    with pytest.raises(ValueError, match="series"):
        plot_result(model.filter(frame), series=3)
    with pytest.raises(ValueError, match="frames"):
        video[0].filter(video[1]).plot()
    with pytest.raises(ValueError, match="shape"):
        plot_result(model.filter(frame), data=np.zeros((5, 3)))


def test_xarray_accessor_matches_the_estimator(video):
    model, frames = video
    array = xr.DataArray(frames, dims=("series", "time", "y", "x"),
                         coords={"time": pd.date_range("2024-01-01", periods=12, freq="D")})
    filtered = array.ldm.filter(model)
    np.testing.assert_array_equal(filtered.mean, model.filter(frames).mean)
    np.testing.assert_array_equal(array.ldm.smooth(model).mean, model.smooth(frames).mean)
    forecast = array.ldm.forecast(model, 3).to_xarray("observations")
    assert forecast["mean"].dims == ("series", "time", "y", "x")
    assert pd.Timestamp(forecast["time"].values[0]) == pd.Timestamp("2024-01-13")
