"""Control inputs of ``LDMFilter``: arrays, DataFrame columns and xarray channels; zero-order hold
on irregular indexes; future controls in forecasts; every misuse gives a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ldmfilter import LDMFilter, load

T = 120


def driven(seed=0, n=None):
    """A state driven by a control: ``x_t = 0.8 x_{t-1} + u_t``, observed in 3 channels."""
    rng = np.random.default_rng(seed)
    shape = (T,) if n is None else (n, T)
    u = rng.normal(size=shape)
    x = np.zeros(shape)
    for t in range(1, T):
        x[..., t] = 0.8 * x[..., t - 1] + u[..., t] + 0.05 * rng.normal(size=shape[:-1])
    obs = x[..., None] * np.array([1.0, -0.5, 2.0]) + 0.05 * rng.normal(size=shape + (3,))
    return obs, u[..., None]


@pytest.fixture(scope="module")
def frame():
    obs, u = driven()
    index = pd.date_range("2025-03-01", periods=T, freq="D", name="day")
    return pd.DataFrame({"a": obs[:, 0], "b": obs[:, 1], "c": obs[:, 2], "heat": u[:, 0]}, index=index)


@pytest.fixture(scope="module", params=["linear", "mlp"])
def model(request, frame):
    return LDMFilter(state_dim=2, latent_dim=1, dynamics=request.param, dynamics_hidden=(8,), max_epochs=200,
                     verbose=False, dtype="float64").fit(frame, controls=["heat"])


def test_control_columns_are_split_off(model, frame):
    assert model.control_names_ == ("heat",)
    assert model.schema_.feature_names == ("a", "b", "c")
    by_name = model.filter(frame, controls=["heat"])
    automatic = model.filter(frame)
    separate = model.filter(frame[["a", "b", "c"]], controls=frame[["heat"]])
    np.testing.assert_array_equal(automatic.mean, by_name.mean)
    np.testing.assert_array_equal(separate.mean, by_name.mean)
    assert list(automatic.to_pandas().columns[:3]) == ["a", "b", "c"]


def test_the_model_uses_the_controls(model, frame):
    """The learned transition responds to u: forecasts move with the future controls."""
    future_index = pd.date_range(frame.index[-1] + pd.Timedelta("1D"), periods=5, freq="D", name="day")
    up = model.forecast(frame, 5, future_controls=pd.DataFrame({"heat": np.full(5, 2.0)}, index=future_index))
    down = model.forecast(frame, 5, future_controls=pd.DataFrame({"heat": np.full(5, -2.0)}, index=future_index))
    gap = (up.observations.mean - down.observations.mean)[:, 2]  # channel c = 2 x
    truth = 2.0 * 4.0 * np.cumsum(0.8 ** np.arange(5))  # a step of 4 in u, x_t = 0.8 x_{t-1} + u_t
    assert 0.6 * truth[0] < gap[0] < 1.4 * truth[0]
    assert 0.5 * truth[-1] < gap[-1] < 1.5 * truth[-1]
    assert up.to_pandas().index.equals(future_index)


def test_irregular_index_holds_controls_over_gaps(model, frame):
    gappy = frame.drop(frame.index[[10, 11, 12, 60]])
    filled = frame.copy()
    filled.loc[frame.index[[10, 11, 12, 60]], ["a", "b", "c"]] = np.nan
    filled.loc[frame.index[[10, 11, 12]], "heat"] = frame["heat"].iloc[9]
    filled.loc[frame.index[60], "heat"] = frame["heat"].iloc[59]
    np.testing.assert_allclose(model.filter(gappy).mean, model.filter(filled).mean[~filled["a"].isna().to_numpy()])


def test_arrays_and_xarray_controls():
    obs, u = driven(n=6, seed=1)
    model = LDMFilter(state_dim=2, latent_dim=1, max_epochs=2, verbose=False).fit(obs, controls=u)
    assert model.control_names_ == ("control_0",)
    result = model.forecast(obs, 4, controls=u, future_controls=np.zeros((6, 4, 1)))
    assert result.mean.shape == (6, 4, 2)
    data = xr.DataArray(
        np.concatenate([obs, u], -1), dims=("series", "time", "feature"),
        coords={"feature": ["a", "b", "c", "u"], "time": np.arange(T)},
    )
    labelled = LDMFilter(state_dim=2, latent_dim=1, max_epochs=2, verbose=False).fit(data, controls="u")
    assert labelled.control_names_ == ("u",) and labelled.schema_.feature_names == ("a", "b", "c")
    assert labelled.filter(data).mean.shape == (6, T, 2)
    np.testing.assert_array_equal(labelled.transform(data), labelled.transform(data.sel(feature=["a", "b", "c"])))


def test_round_trip_keeps_the_controls(model, frame, tmp_path):
    again = load(model.save(tmp_path / "controls.pt"))
    assert again.control_names_ == ("heat",)
    np.testing.assert_array_equal(again.filter(frame).mean, model.filter(frame).mean)


def test_misuse_is_reported(model, frame):
    bad = [
        (lambda: model.filter(frame[["a", "b", "c"]]), "fitted with controls \\['heat'\\]"),
        (lambda: model.forecast(frame, 3), "pass future_controls for the 3"),
        (lambda: model.forecast(frame, 3, future_controls=np.zeros((2, 1))), "each of the 3 forecast steps"),
        (lambda: model.forecast(frame, 2, future_controls=pd.DataFrame({"heat": [0.0, 1.0]}, index=frame.index[:2])),
         "indexed by the 2 steps after X's end"),
        (lambda: model.forecast(frame, 2, future_controls=np.array([[0.0], [np.nan]])), "finite"),
        (lambda: model.filter(frame.assign(heat=frame["heat"].where(frame.index != frame.index[5]))),
         "finite at every given row.*row 5"),
        (lambda: model.filter(frame, controls=["wind"]), "'wind'.* not columns"),
        (lambda: model.filter(frame[["a", "b", "c"]], controls=frame[["a"]]), "controls has different columns.*missing \\[.heat.\\]"),
    ]
    for call, match in bad:
        with pytest.raises(ValueError, match=match):
            call()
    plain = LDMFilter(state_dim=2, latent_dim=1, max_epochs=1, verbose=False).fit(frame[["a", "b", "c"]])
    with pytest.raises(ValueError, match="fitted without controls"):
        plain.filter(frame[["a", "b", "c"]], controls=frame[["heat"]])
    with pytest.raises(ValueError, match="fitted without controls"):
        plain.forecast(frame[["a", "b", "c"]], 2, future_controls=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="no columns left"):
        LDMFilter(max_epochs=1, verbose=False).fit(frame[["heat"]], controls=["heat"])
    with pytest.raises(TypeError, match="need X as DataFrame"):
        LDMFilter(max_epochs=1, verbose=False).fit(frame.to_numpy(), controls=["heat"])
    with pytest.raises(ValueError, match="RNN predictor takes no inputs"):
        LDMFilter(predictor="rnn", max_epochs=1, verbose=False).fit(frame, controls=["heat"])
    with pytest.raises(ValueError, match="probe is not available with controls"):
        obs, u = driven(n=2)
        LDMFilter(max_epochs=1, verbose=False).fit(obs, controls=u, probe=(obs, obs[..., :1], obs, obs[..., :1]))
