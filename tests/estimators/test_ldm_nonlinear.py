"""``LDMFilter(dynamics="mlp")``: filter/smooth/forecast through the engine's nonlinear routines,
long-horizon read-out intervals, files, and the linear reduction at the estimator level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmfilter import LDMFilter, load
from ldmfilter.gaussian import MOMENT_RULES, nonlinear_forecast, nonlinear_smoother


def pendulum_like(n=12, T=50, seed=0):
    """A damped nonlinear oscillator observed through a random 8-dim linear map with noise."""
    rng = np.random.default_rng(seed)
    angle, velocity = rng.uniform(-2, 2, n), rng.normal(0, 1, n)
    states = np.zeros((n, T, 2))
    for t in range(T):
        states[:, t] = np.stack([np.sin(angle), np.cos(angle)], -1)
        velocity = 0.97 * velocity - 0.3 * np.sin(angle) + 0.05 * rng.normal(size=n)
        angle = angle + 0.3 * velocity
    X = states @ rng.normal(size=(2, 8)) + 0.05 * rng.normal(size=(n, T, 8))
    return X, states


@pytest.fixture(scope="module")
def fitted():
    X, states = pendulum_like()
    models = {
        rule: LDMFilter(state_dim=4, latent_dim=2, dynamics="mlp", moments=rule, dynamics_hidden=(16,), max_epochs=4,
                        verbose=False, dtype="float64").fit(X, targets=states)
        for rule in sorted(MOMENT_RULES)
    }
    return X, states, models


def test_parameters_are_checked():
    X, _ = pendulum_like(n=2, T=5)
    for bad, match in [({"dynamics": "gru"}, "dynamics must be one of"), ({"moments": "sampling"}, "moments must be one of"),
                       ({"dynamics_hidden": (0,)}, "dynamics_hidden"), ({"dynamics_hidden": ()}, "dynamics_hidden"),
                       ({"dynamics_activation": "relu"}, "dynamics_activation must be one of")]:
        with pytest.raises(ValueError, match=match):
            LDMFilter(verbose=False, **bad).fit(X)


@pytest.mark.parametrize("rule", sorted(MOMENT_RULES))
def test_smooth_and_forecast_use_the_moment_rule(fitted, rule):
    X, _, models = fitted
    model = models[rule]
    dyn = model.model_.dynamics
    grid = model._filter_grid(X, np.ones(X.shape[:2], bool))
    with torch.no_grad():
        smoothed = nonlinear_smoother(grid, dyn, dyn.transition_cov(), rule)
        ahead = nonlinear_forecast(grid.filtered_mean[:, -1], grid.filtered_cov[:, -1], dyn, dyn.transition_cov(), 6, rule)
    np.testing.assert_allclose(model.smooth(X).mean, smoothed.smoothed_mean.numpy())
    np.testing.assert_allclose(model.forecast(X, 6).mean, ahead.mean.numpy())
    np.testing.assert_allclose(model.smooth(X).mean[:, -1], model.filter(X).mean[:, -1])
    with pytest.raises(ValueError, match="nonlinear"):
        model._transition()


def test_smoothing_uses_the_future(fitted):
    X, states, models = fitted
    model = models["linearize"]
    err = lambda r: float(np.mean((r.targets.mean - states) ** 2))  # noqa: E731
    filtered, smoothed = model.filter(X), model.smooth(X)
    assert not np.allclose(filtered.mean[:, :-1], smoothed.mean[:, :-1])
    assert err(smoothed) <= err(filtered) * 1.05
    assert (smoothed.state.var.sum(-1) <= filtered.state.var.sum(-1) + 1e-9).all()


def test_long_horizon_intervals_follow_the_state_covariance(fitted):
    X, _, models = fitted
    model = models["unscented"]
    ahead = model.forecast(X, 40)
    readout = model.readouts_["targets"]
    with torch.no_grad():
        mean, cov = readout(torch.as_tensor(ahead.state.mean), torch.as_tensor(ahead.state.cov))
    np.testing.assert_allclose(ahead.targets.cov, cov.numpy())
    np.testing.assert_allclose(ahead.targets.mean, mean.numpy())
    spread = ahead.targets.var.sum(-1)
    assert np.isfinite(spread).all() and (spread[:, 20:] > spread[:, :1]).all()


def test_round_trip_keeps_the_nonlinear_model(fitted, tmp_path):
    X, _, models = fitted
    model = models["cubature"]
    again = load(model.save(tmp_path / "mlp.pt"))
    assert (again.dynamics, again.moments, again.dynamics_hidden) == ("mlp", "cubature", (16,))
    np.testing.assert_array_equal(again.forecast(X, 5).mean, model.forecast(X, 5).mean)
    np.testing.assert_array_equal(again.smooth(X).mean, model.smooth(X).mean)


def test_localized_residual_units_train_and_round_trip(tmp_path):
    X, states = pendulum_like()
    options = dict(state_dim=4, latent_dim=2, dynamics="mlp", dynamics_hidden=(16,), max_epochs=4, verbose=False,
                   dtype="float64")
    model = LDMFilter(dynamics_activation="localized", **options).fit(X, targets=states)
    tanh = LDMFilter(**options).fit(X, targets=states)
    units = [type(layer).__name__ for layer in model.model_.dynamics.residual]
    assert units == ["Linear", "LocalizedUnit", "Linear"]
    assert not np.allclose(model.loss_history_, tanh.loss_history_)  # the units change training
    assert np.isfinite(model.loss_history_).all() and model.loss_history_[-1] < model.loss_history_[0]
    again = load(model.save(tmp_path / "localized.pt"))
    assert again.dynamics_activation == "localized"
    np.testing.assert_array_equal(again.forecast(X, 5).mean, model.forecast(X, 5).mean)
    np.testing.assert_array_equal(again.smooth(X).mean, model.smooth(X).mean)


def test_mlp_model_with_zero_residual_matches_the_linear_one():
    X, _ = pendulum_like(n=4, T=20)
    options = dict(state_dim=4, latent_dim=2, max_epochs=1, verbose=False, dtype="float64", random_state=3)
    linear = LDMFilter(**options).fit(X)
    mlp = LDMFilter(dynamics="mlp", **options)
    mlp._restore(linear.schema_, {**mlp_state(linear), **linear.model_.state_dict()}, linear.readouts_, None)
    for method in ("filter", "smooth"):
        np.testing.assert_allclose(getattr(mlp, method)(X).mean, getattr(linear, method)(X).mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mlp.forecast(X, 7).state.cov, linear.forecast(X, 7).state.cov, rtol=1e-10, atol=1e-12)


def mlp_state(linear: LDMFilter) -> dict:
    """A zero-output residual MLP's weights for the dynamics of ``linear``."""
    from ldmfilter.nn import MLPDynamics

    dyn = MLPDynamics(linear.state_dim, linear.latent_dim, hidden=(64,)).double()
    return {f"dynamics.{k}": v for k, v in dyn.state_dict().items() if k.startswith("residual")}


def test_training_on_long_sequences_stays_finite():
    X, _ = pendulum_like(n=4, T=400, seed=2)
    model = LDMFilter(state_dim=4, latent_dim=2, dynamics="mlp", dynamics_hidden=(16,), max_epochs=3, window=None,
                      batch_size=4, verbose=False).fit(10.0 * X)
    assert np.isfinite(model.loss_history_).all()
    assert np.isfinite(model.filter(10.0 * X).mean).all()
