"""``ExtendedKalmanFilter`` / ``UnscentedKalmanFilter`` behind the estimator API.

Pinned down: with an affine model (given as torch functions) both equal ``KalmanFilter`` fixed to
the same model — filter, smoother, forecast, log-likelihood, observation beliefs (1e-8); a
nonlinear observation function gives moment-rule observation beliefs; the learned MLP transition
beats the linear Kalman filter's held-out log-likelihood on a noisy pendulum; ``refine_noise``
re-estimates ``Q``/``R``; save/load of an MLP model is exact and a model with user functions is
refused; bad configurations are refused clearly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ldmfilter
from ldmfilter import ExtendedKalmanFilter, KalmanFilter, PCAProjection, UnscentedKalmanFilter
from ldmfilter.estimators.nonlinear import ResidualMLPTransition

S, D = 2, 3
CLASSES = [ExtendedKalmanFilter, UnscentedKalmanFilter]


def _affine():
    rng = np.random.default_rng(1)
    theta = 0.25
    return {
        "A": 0.9 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]),
        "c": np.array([0.1, -0.05]),
        "Q": np.array([[0.05, 0.01], [0.01, 0.04]]),
        "H": rng.normal(size=(D, S)),
        "R": 0.1 * np.eye(D),
        "initial_mean": np.array([1.0, 0.0]),
        "initial_cov": 0.5 * np.eye(S),
        "d": np.array([0.3, -0.2, 1.0]),
    }


AFFINE = _affine()


def _simulate_affine(n, T, seed):
    rng = np.random.default_rng(seed)
    p = AFFINE
    h = rng.multivariate_normal(p["initial_mean"], p["initial_cov"], size=n)
    z = np.zeros((n, T, D))
    for t in range(T):
        if t > 0:
            h = h @ p["A"].T + p["c"] + rng.multivariate_normal(np.zeros(S), p["Q"], size=n)
        z[:, t] = h @ p["H"].T + p["d"] + rng.multivariate_normal(np.zeros(D), p["R"], size=n)
    return z


@pytest.fixture(scope="module")
def affine_data():
    z = _simulate_affine(4, 30, seed=0)
    z[1, 7] = np.nan
    z[2, 9, 1] = np.nan
    return z


@pytest.fixture(scope="module")
def kalman(affine_data):
    p = AFFINE
    fixed = {"A": p["A"], "transition_offset": p["c"], "Q": p["Q"], "H": p["H"], "R": p["R"],
             "initial_mean": p["initial_mean"], "initial_cov": p["initial_cov"], "observation_offset": p["d"]}
    return KalmanFilter(S, fixed=fixed).fit(affine_data)


def _affine_transition():
    A, c = torch.as_tensor(AFFINE["A"]), torch.as_tensor(AFFINE["c"])
    return lambda h: h @ A.mT + c


def _given(with_H=True):
    names = ["Q", "R", "initial_mean", "initial_cov"] + (["H"] if with_H else [])
    given = {name: AFFINE[name] for name in names}
    if with_H:
        given["observation_offset"] = AFFINE["d"]
    return given


@pytest.mark.parametrize("cls", CLASSES)
def test_affine_model_equals_kalman_filter(cls, affine_data, kalman):
    model = cls(S, transition=_affine_transition(), initial_params=_given()).fit(affine_data)
    assert model.n_iter_ == 0
    tol = dict(rtol=1e-8, atol=1e-8)
    for method in ("filter", "smooth"):
        ours, reference = getattr(model, method)(affine_data), getattr(kalman, method)(affine_data)
        np.testing.assert_allclose(ours.mean, reference.mean, **tol)
        np.testing.assert_allclose(ours.cov, reference.cov, **tol)
        np.testing.assert_allclose(ours.observations.mean, reference.observations.mean, **tol)
        np.testing.assert_allclose(ours.observations.cov, reference.observations.cov, **tol)
    np.testing.assert_allclose(model.filter(affine_data).log_likelihood, kalman.filter(affine_data).log_likelihood, **tol)
    ours, reference = model.forecast(affine_data, 5), kalman.forecast(affine_data, 5)
    np.testing.assert_allclose(ours.mean, reference.mean, **tol)
    np.testing.assert_allclose(ours.cov, reference.cov, **tol)
    np.testing.assert_allclose(ours.observations.mean, reference.observations.mean, **tol)


@pytest.mark.parametrize("cls", CLASSES)
def test_observation_function_gives_moment_rule_beliefs(cls, affine_data, kalman):
    H, d = torch.as_tensor(AFFINE["H"]), torch.as_tensor(AFFINE["d"])
    linear_fn = cls(S, transition=_affine_transition(), observation=lambda h: h @ H.mT + d,
                    initial_params=_given(with_H=False)).fit(affine_data)
    tol = dict(rtol=1e-8, atol=1e-8)
    ours, reference = linear_fn.smooth(affine_data), kalman.smooth(affine_data)
    np.testing.assert_allclose(ours.mean, reference.mean, **tol)
    np.testing.assert_allclose(ours.observations.mean, reference.observations.mean, **tol)
    np.testing.assert_allclose(ours.observations.cov, reference.observations.cov, **tol)
    ragged = [affine_data[0], affine_data[1, :20]]  # padding rows come back NaN, the rest finite
    result = linear_fn.filter(ragged)
    assert np.isnan(result.observations.mean[1, 20:]).all() and np.isfinite(result.observations.mean[1, :20]).all()

    squash = cls(S, transition=_affine_transition(), observation=lambda h: torch.tanh(h @ H.mT),
                 initial_params=_given(with_H=False)).fit(np.tanh(affine_data))
    result = squash.filter(np.tanh(affine_data))
    assert result.observations.mean.shape == affine_data.shape
    assert np.isfinite(result.observations.mean).all() and (np.abs(result.observations.mean) < 1).all()


@pytest.mark.parametrize("cls", CLASSES)
def test_refine_noise_improves_the_likelihood(cls, affine_data):
    given = dict(_given(), Q=np.eye(S), R=2.0 * np.eye(D))  # far too noisy
    model = cls(S, transition=_affine_transition(), initial_params=given, refine_noise=True, n_iter=15,
                optimizer="lbfgs", fixed=("H",)).fit(affine_data)
    history = model.log_likelihood_history_
    assert history[-1] > history[0] + 10
    np.testing.assert_array_equal(model.params_["H"].numpy(), AFFINE["H"])
    np.testing.assert_array_equal(model.params_["initial_mean"].numpy(), AFFINE["initial_mean"])
    assert np.abs(model.params_["R"].numpy() - AFFINE["R"]).max() < np.abs(2.0 * np.eye(D) - AFFINE["R"]).max()


# --------------------------------------------------------------------------------------------
# the learned MLP transition on a pendulum
# --------------------------------------------------------------------------------------------


def pendulum(n: int, T: int, seed: int, dt: float = 0.1) -> np.ndarray:
    """Noisy pendulums with large swings, observed as (sin θ, cos θ) plus noise."""
    rng = np.random.default_rng(seed)
    theta, omega = rng.uniform(-2.5, 2.5, n), rng.normal(0, 0.5, n)
    out = np.zeros((n, T, 2))
    for t in range(T):
        out[:, t] = np.stack([np.sin(theta), np.cos(theta)], -1)
        theta, omega = theta + dt * omega, omega - dt * 4.9 * np.sin(theta) + rng.normal(0, 0.06, n)
    return out + rng.normal(0, 0.1, out.shape)


@pytest.fixture(scope="module")
def pendulum_models():
    train, test = pendulum(8, 60, seed=0), pendulum(8, 60, seed=1)
    linear = KalmanFilter(S, n_iter=50).fit(train)
    ukf = UnscentedKalmanFilter(S, n_iter=60, learning_rate=0.02, hidden=(16,)).fit(train)
    return train, test, linear, ukf


def test_mlp_transition_beats_the_linear_filter_on_a_pendulum(pendulum_models):
    train, test, linear, ukf = pendulum_models
    history = ukf.log_likelihood_history_
    # training starts at the linear model (EM start, MLP output zero), and improves on it
    assert history[0] == pytest.approx(
        KalmanFilter(S, n_iter=ukf.init_iter, tol=0).fit(train).log_likelihood_history_[-1], rel=1e-8
    )
    assert history[-1] > history[0] + 0.1 * abs(history[0])
    assert ukf.log_likelihood(test) > linear.log_likelihood(test) + 0.2 * abs(linear.log_likelihood(test))
    assert isinstance(ukf.transition_, ResidualMLPTransition)
    smoothed, forecast = ukf.smooth(test), ukf.forecast(test, 5)
    assert smoothed.observations.mean.shape == test.shape and forecast.observations.mean.shape == (8, 5, 2)
    assert np.isfinite(smoothed.cov).all() and np.isfinite(forecast.cov).all()


def test_ekf_mlp_training_improves_the_likelihood(pendulum_models):
    train = pendulum_models[0][:4, :40]
    ekf = ExtendedKalmanFilter(S, n_iter=8, learning_rate=0.02, hidden=(8,)).fit(train)
    assert ekf.log_likelihood_history_[-1] > ekf.log_likelihood_history_[0]
    assert ekf.log_likelihood(train) == pytest.approx(ekf.log_likelihood_history_[-1], rel=1e-10)


# --------------------------------------------------------------------------------------------
# files and front end
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path, pendulum_models):
    _, test, _, ukf = pendulum_models
    loaded = ldmfilter.load(ukf.save(tmp_path / "ukf.ldm"))
    assert type(loaded) is UnscentedKalmanFilter and loaded.hidden == ukf.hidden
    for method in ("filter", "smooth"):
        a, b = getattr(ukf, method)(test), getattr(loaded, method)(test)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.cov, b.cov)
        np.testing.assert_array_equal(a.observations.mean, b.observations.mean)
    np.testing.assert_array_equal(ukf.forecast(test, 3).cov, loaded.forecast(test, 3).cov)


def test_models_with_user_functions_cannot_be_saved(tmp_path, affine_data):
    model = ExtendedKalmanFilter(S, transition=_affine_transition(), initial_params=_given()).fit(affine_data)
    with pytest.raises(ValueError, match="hyper-parameter transition: it is a Python function"):
        model.save(tmp_path / "ekf.ldm")
    assert not list(tmp_path.iterdir())


def test_projection_front_end_with_a_learned_transition(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:6, 0:6]
    blob = np.exp(-((yy - 2.5) ** 2 + (xx - 2.5) ** 2) / 3.0)
    signal = pendulum(4, 30, seed=2)
    frames = signal[..., 0, None, None] * blob + signal[..., 1, None, None] * blob.T[::-1] + 0.05 * rng.normal(size=(4, 30, 6, 6))
    model = UnscentedKalmanFilter(S, n_iter=5, projection=PCAProjection(3), hidden=(8,)).fit(frames)
    result = model.filter(frames)
    assert result.observations.mean.shape == frames.shape and result.observations.cov is None
    loaded = ldmfilter.load(model.save(tmp_path / "ukf.ldm"))
    np.testing.assert_array_equal(loaded.filter(frames).observations.var, result.observations.var)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"transition": "gru"}, ValueError, "transition must be 'mlp' or a callable"),
        ({"transition": 3}, TypeError, "transition must be 'mlp' or a callable"),
        ({"observation": "quadratic"}, ValueError, "observation must be 'linear' or a callable"),
        ({"fixed": {"A": np.eye(2)}}, ValueError, r"fixed has unknown parameter names \['A'\]"),
        ({"initial_params": {"Q": np.eye(3)}}, ValueError, r"initial_params\['Q'\] must have shape \(2, 2\), got \(3, 3\)"),
        ({"observation": torch.sin, "initial_params": {"R": np.eye(3), "H": np.eye(3, 2)}}, ValueError, r"unknown parameter names \['H'\]"),
        ({"observation": torch.sin, "projection": PCAProjection(2)}, ValueError, "projection front end needs observation='linear'"),
        ({"transition": torch.sin, "initial_params": {"Q": np.eye(2)}}, ValueError, r"give \['R', 'H'\]"),
        ({"hidden": (0,)}, ValueError, "hidden must be positive"),
        ({"n_iter": 1.5}, ValueError, "n_iter must be an integer"),
        ({"rule_options": [1]}, TypeError, "rule_options must be a dict"),
    ],
)
def test_bad_configurations_are_refused(affine_data, kwargs, error, match):
    with pytest.raises(error, match=match):
        UnscentedKalmanFilter(S, **kwargs).fit(affine_data)


def test_not_fitted(affine_data):
    with pytest.raises(RuntimeError, match="not fitted"):
        ExtendedKalmanFilter(S).filter(affine_data)
