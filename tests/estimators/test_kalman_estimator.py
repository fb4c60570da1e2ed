"""``KalmanFilter``: EM / MLE behind the estimator API, against the engine and pykalman.

Pinned down: with every parameter fixed to the truth the estimator is the engine's
``kalman_filter``/``kalman_smoother``/``kalman_forecast`` and pykalman's filter/smoother (1e-8),
including the observation offset and the exact observation beliefs ``N(H m + d, H P Hᵀ + R)``;
EM never lowers the likelihood and recovers a known model (held-out log-likelihood within 1% of
the truth's); partial NaN is filtered exactly; numpy and pandas give the same numbers; the PCA /
random-projection front end returns frames; save/load is exact; bad input is refused clearly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pykalman import KalmanFilter as PykalmanKF

import ldmfilter
from ldmfilter import KalmanFilter, PCAProjection, RandomProjection
from ldmfilter.gaussian import kalman_filter, kalman_forecast, kalman_smoother

S, D = 2, 3
THETA = 0.3


def _truth():
    rng = np.random.default_rng(42)
    A = 0.95 * np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
    return {
        "A": A,
        "Q": np.array([[0.10, 0.02], [0.02, 0.08]]),
        "H": rng.normal(size=(D, S)),
        "R": np.diag([0.20, 0.10, 0.30]),
        "initial_mean": np.array([0.5, -0.5]),
        "initial_cov": np.eye(S),
        "transition_offset": np.array([0.05, -0.02]),
        "observation_offset": np.array([1.0, -2.0, 0.5]),
    }


TRUTH = _truth()


def simulate(n: int, T: int, seed: int, params=TRUTH) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = params
    z = np.zeros((n, T, D))
    h = rng.multivariate_normal(p["initial_mean"], p["initial_cov"], size=n)
    for t in range(T):
        if t > 0:
            h = h @ p["A"].T + p["transition_offset"] + rng.multivariate_normal(np.zeros(S), p["Q"], size=n)
        z[:, t] = h @ p["H"].T + p["observation_offset"] + rng.multivariate_normal(np.zeros(D), p["R"], size=n)
    return z


def _engine(z: np.ndarray, p=TRUTH, mask=None):
    t = {k: torch.as_tensor(v) for k, v in p.items()}
    out = kalman_filter(
        torch.as_tensor(z) - t["observation_offset"], t["A"], t["Q"], t["H"], t["R"], t["initial_mean"],
        t["initial_cov"], transition_offset=t["transition_offset"], mask=mask,
    )
    return out, t


def _pykalman(p=TRUTH):
    return PykalmanKF(
        transition_matrices=p["A"], observation_matrices=p["H"], transition_covariance=p["Q"],
        observation_covariance=p["R"], transition_offsets=p["transition_offset"],
        observation_offsets=p["observation_offset"], initial_state_mean=p["initial_mean"],
        initial_state_covariance=p["initial_cov"],
    )


@pytest.fixture(scope="module")
def data():
    return simulate(12, 80, seed=0)


@pytest.fixture(scope="module")
def true_model(data):
    return KalmanFilter(S, fixed=TRUTH).fit(data)


@pytest.fixture(scope="module")
def em_model(data):
    return KalmanFilter(S, n_iter=200, tol=1e-9, transition_offset=True).fit(data)


# --------------------------------------------------------------------------------------------
# the fixed true model is the engine and pykalman
# --------------------------------------------------------------------------------------------


def test_fixed_truth_equals_engine_filter_smoother_forecast(true_model, data):
    engine, t = _engine(data)
    result = true_model.filter(data)
    np.testing.assert_allclose(result.mean, engine.filtered_mean.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(result.cov, engine.filtered_cov.expand(12, 80, S, S).numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(result.log_likelihood, engine.log_likelihood.numpy(), rtol=1e-10, atol=1e-10)
    smoothed = kalman_smoother(engine, t["A"], t["Q"])
    np.testing.assert_allclose(true_model.smooth(data).mean, smoothed.smoothed_mean.numpy(), rtol=1e-10, atol=1e-10)
    forecast = kalman_forecast(engine.filtered_mean[:, -1], engine.filtered_cov[:, -1], t["A"], t["Q"], 4, t["transition_offset"])
    ours = true_model.forecast(data, 4)
    np.testing.assert_allclose(ours.mean, forecast.mean.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.cov, forecast.cov.numpy(), rtol=1e-10, atol=1e-10)
    assert true_model.log_likelihood_history_ == pytest.approx([float(engine.log_likelihood.sum())], rel=1e-12)


def test_fixed_truth_equals_pykalman_and_observation_beliefs_are_exact(true_model, data):
    reference = _pykalman()
    z = data[3]
    means, covs = reference.filter(z)
    smoothed_means, smoothed_covs = reference.smooth(z)
    result, smoothed = true_model.filter(z), true_model.smooth(z)
    np.testing.assert_allclose(result.mean, means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.cov, covs, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(smoothed.mean, smoothed_means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(smoothed.cov, smoothed_covs, rtol=1e-8, atol=1e-8)
    assert result.log_likelihood.sum() == pytest.approx(reference.loglikelihood(z), rel=1e-8)
    H, d, R = TRUTH["H"], TRUTH["observation_offset"], TRUTH["R"]
    np.testing.assert_allclose(result.observations.mean, means @ H.T + d, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.observations.cov, H @ covs @ H.T + R, rtol=1e-8, atol=1e-8)


def test_fully_missing_steps_equal_pykalman_masked_rows(true_model, data):
    z = data[0].copy()
    z[[5, 6, 20, 41]] = np.nan
    means, covs = _pykalman().filter(np.ma.masked_invalid(z))
    result = true_model.filter(z)
    np.testing.assert_allclose(result.mean, means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.cov, covs, rtol=1e-8, atol=1e-8)


def test_partially_missing_values_are_filtered_exactly(true_model, data):
    z = data.copy()
    rng = np.random.default_rng(3)
    z[rng.random(z.shape) < 0.2] = np.nan
    engine, _ = _engine(z)
    result = true_model.filter(z)
    np.testing.assert_allclose(result.mean, engine.filtered_mean.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(result.log_likelihood, engine.log_likelihood.numpy(), rtol=1e-10, atol=1e-10)
    assert np.isfinite(result.observations.mean).all()


# --------------------------------------------------------------------------------------------
# learning
# --------------------------------------------------------------------------------------------


def test_em_is_monotone_and_recovers_the_model(em_model, true_model):
    history = np.array(em_model.log_likelihood_history_)
    assert em_model.n_iter_ == len(history) - 1 > 5
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[:-1]))
    held_out = simulate(12, 80, seed=7)
    truth_ll, fitted_ll = true_model.log_likelihood(held_out), em_model.log_likelihood(held_out)
    assert abs(fitted_ll - truth_ll) < 0.01 * abs(truth_ll)
    radius = np.abs(np.linalg.eigvals(em_model.params_.A.numpy())).max()
    assert radius == pytest.approx(0.95, abs=0.05)  # rotation by 0.3 rad, damped by 0.95


def test_em_with_missing_values_is_monotone_and_close(data, em_model):
    z = data.copy()
    rng = np.random.default_rng(5)
    z[rng.random(z.shape) < 0.15] = np.nan
    z[:, 10:14] = np.nan
    model = KalmanFilter(S, n_iter=60, tol=0).fit(z)
    history = np.array(model.log_likelihood_history_)
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[:-1]))
    held_out = simulate(12, 80, seed=7)
    assert model.log_likelihood(held_out) == pytest.approx(em_model.log_likelihood(held_out), rel=0.02)


def test_fixed_parameters_are_kept(data):
    H = TRUTH["H"]
    model = KalmanFilter(S, fixed={"H": H, "observation_offset": TRUTH["observation_offset"]}, n_iter=20).fit(data)
    np.testing.assert_array_equal(model.params_.H.numpy(), H)
    np.testing.assert_array_equal(model.params_.observation_offset.numpy(), TRUTH["observation_offset"])
    names_only = KalmanFilter(S, fixed=("A",), initial_params={"A": 0.5 * np.eye(S)}, n_iter=5).fit(data)
    np.testing.assert_array_equal(names_only.params_.A.numpy(), 0.5 * np.eye(S))
    diagonal = KalmanFilter(S, n_iter=5, diagonal_R=True, diagonal_Q=True).fit(data)
    for name in ("Q", "R"):
        value = getattr(diagonal.params_, name).numpy()
        np.testing.assert_array_equal(value, np.diag(np.diag(value)))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_mle_improves_the_likelihood_with_a_stable_transition(data, optimizer, em_model):
    model = KalmanFilter(S, method="mle", optimizer=optimizer, n_iter=25 if optimizer == "lbfgs" else 60,
                         max_spectral_radius=0.9, fixed={"H": TRUTH["H"]}).fit(data[:6, :60])
    history = model.log_likelihood_history_
    assert history[-1] > history[0] + 10
    assert np.abs(np.linalg.eigvals(model.params_.A.numpy())).max() < 0.9
    np.testing.assert_array_equal(model.params_.H.numpy(), TRUTH["H"])
    for name in ("Q", "R", "initial_cov"):
        assert np.linalg.eigvalsh(getattr(model.params_, name).numpy()).min() > 0


def test_mle_reaches_the_em_optimum(data):
    em = KalmanFilter(S, n_iter=200, tol=1e-10).fit(data)
    mle = KalmanFilter(S, method="mle", n_iter=60, tol=1e-12).fit(data)
    assert mle.log_likelihood_history_[-1] == pytest.approx(em.log_likelihood_history_[-1], rel=2e-3)
    assert mle.log_likelihood_history_[-1] == pytest.approx(mle.log_likelihood(data), rel=1e-10)


def test_state_dim_above_observation_size_uses_delay_embedding():
    z = simulate(6, 60, seed=1)[..., :1]  # one observed channel of the 2-d rotation
    model = KalmanFilter(S, n_iter=30).fit(z)
    history = np.array(model.log_likelihood_history_)
    assert model.params_.H.shape == (1, S) and np.all(np.diff(history) >= -1e-8 * np.abs(history[:-1]))
    assert model.filter(z).observations.mean.shape == z.shape


def test_targets_read_out(data):
    targets = data[..., :2] * 2.0 + 1.0
    model = KalmanFilter(S, n_iter=10).fit(data, targets=targets)
    result = model.filter(data)
    assert result.targets.mean.shape == targets.shape
    assert np.abs(result.targets.mean - targets).mean() < np.abs(targets - targets.mean()).mean()
    refitted = KalmanFilter(S, n_iter=10).fit(data).fit_readout(data, targets)
    np.testing.assert_allclose(refitted.filter(data).targets.mean, result.targets.mean, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# input formats
# --------------------------------------------------------------------------------------------


def test_numpy_and_dataframe_give_equal_results(true_model, data):
    z = data[0]
    index = pd.date_range("2024-01-01", periods=len(z), freq="h", name="when")
    frame = pd.DataFrame(z, index=index, columns=["a", "b", "c"])
    model = KalmanFilter(S, fixed=TRUTH).fit(frame)
    from_frame, from_numpy = model.filter(frame), true_model.filter(z)
    np.testing.assert_allclose(from_frame.mean, from_numpy.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(from_frame.observations.mean, from_numpy.observations.mean, rtol=1e-12, atol=1e-12)
    table = from_frame.to_pandas()
    assert table.index.equals(index) and "a" in table.columns
    forecast = model.forecast(frame, 3).to_pandas()
    assert forecast.index[0] == index[-1] + pd.Timedelta("1h")
    irregular = frame.drop(index[[4, 5, 9]])  # irregular index → the grid with missing steps
    z_missing = z.copy()
    z_missing[[4, 5, 9]] = np.nan
    keep = np.setdiff1d(np.arange(len(z)), [4, 5, 9])
    np.testing.assert_allclose(model.filter(irregular).mean, true_model.filter(z_missing).mean[keep], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# projection front end
# --------------------------------------------------------------------------------------------


def _frames(n=6, T=40, size=8, seed=0):
    """Two Gaussian blobs whose brightness follows the 2-d rotation, plus pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blob1 = np.exp(-((yy - 2) ** 2 + (xx - 2) ** 2) / 4.0)
    blob2 = np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / 4.0)
    params = dict(TRUTH, H=np.eye(S)[:, :S], R=0.01 * np.eye(S), observation_offset=np.zeros(S))
    states = np.zeros((n, T, S))
    h = rng.normal(size=(n, S))
    for t in range(T):
        if t > 0:
            h = h @ params["A"].T + rng.multivariate_normal(np.zeros(S), params["Q"], size=n)
        states[:, t] = h
    clean = states[..., 0, None, None] * blob1 + states[..., 1, None, None] * blob2
    return clean + 0.05 * rng.normal(size=clean.shape), clean


@pytest.mark.parametrize("projection", [PCAProjection(4), RandomProjection(12, seed=3)])
def test_projection_front_end_filters_frames(projection):
    frames, clean = _frames()
    model = KalmanFilter(S, projection=projection, n_iter=30).fit(frames)
    assert model.projection_ is not projection and model.params_.H.shape == (projection.n_components, S)
    result = model.filter(frames)
    assert result.observations.mean.shape == frames.shape and result.observations.cov is None
    assert result.observations.var.shape == frames.shape and (result.observations.var > 0).all()
    p, B = model.params_, model.projection_.components_.numpy()
    y_mean = result.mean @ p.H.numpy().T + p.observation_offset.numpy()  # μ + B (H m + d), the exact map back
    expected = (y_mean @ B.T + model.projection_.mean_.numpy()).reshape(frames.shape)
    np.testing.assert_allclose(result.observations.mean, expected, rtol=1e-10, atol=1e-10)
    y_cov = p.H.numpy() @ result.cov @ p.H.numpy().T + p.R.numpy()
    expected_var = np.einsum("dk,ntkl,dl->ntd", B, y_cov, B) + model.projection_.residual_var_.numpy()
    np.testing.assert_allclose(result.observations.var, expected_var.reshape(frames.shape), rtol=1e-10, atol=1e-12)
    if isinstance(projection, PCAProjection):  # the top principal directions hold the blobs
        error = np.sqrt(((result.observations.mean - clean) ** 2).mean())
        assert error < 0.5 * np.sqrt(((clean - clean.mean()) ** 2).mean())
    assert model.forecast(frames, 2).observations.mean.shape == (6, 2, 8, 8)
    missing = frames.copy()
    missing[:, 5, :3] = np.nan  # part of a frame
    missing[:, 7] = np.nan  # a whole frame
    assert np.isfinite(model.filter(missing).mean).all()


def test_pca_projection_basis_and_transform():
    frames, _ = _frames()
    rows = frames.reshape(-1, 64)
    pca = PCAProjection(3).fit(rows)
    B = pca.components_.numpy()
    np.testing.assert_allclose(B.T @ B, np.eye(3), atol=1e-12)
    _, _, vh = np.linalg.svd(rows - rows.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(vh[:3] @ B), np.eye(3), atol=1e-8)
    y = pca.transform(torch.as_tensor(rows))
    np.testing.assert_allclose(y.numpy(), (rows - rows.mean(0)) @ B, atol=1e-12)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        PCAProjection(0).fit(rows)
    with pytest.raises(ValueError, match="n_components=100"):
        PCAProjection(100).fit(rows)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path, data):
    frames, _ = _frames()
    targets = frames[..., 0, :2]
    for model, X in [
        (KalmanFilter(S, n_iter=5, transition_offset=True).fit(data, targets=data[..., :1]), data),
        (KalmanFilter(S, n_iter=5, projection=PCAProjection(4), fixed={"R": 0.01 * np.eye(4)}).fit(frames, targets=targets), frames),
    ]:
        loaded = ldmfilter.load(model.save(tmp_path / "kf.ldm"))
        assert type(loaded) is KalmanFilter and loaded.log_likelihood_history_ == model.log_likelihood_history_
        for method in ("filter", "smooth"):
            a, b = getattr(model, method)(X), getattr(loaded, method)(X)
            for space in ("state", "observations", "targets"):
                np.testing.assert_array_equal(a.space(space).mean, b.space(space).mean)
                np.testing.assert_array_equal(a.space(space).var, b.space(space).var)
        np.testing.assert_array_equal(model.forecast(X, 3).observations.mean, loaded.forecast(X, 3).observations.mean)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"fixed": {"B": np.eye(2)}}, ValueError, r"fixed has unknown parameter names \['B'\]"),
        ({"fixed": ("A", "C")}, ValueError, r"unknown parameter names \['C'\]"),
        ({"initial_params": {"H": np.ones((2, 2))}}, ValueError, r"initial_params\['H'\] must have shape \(3, 2\), got \(2, 2\)"),
        ({"fixed": {"Q": np.ones((3, 3))}}, ValueError, r"fixed\['Q'\] must have shape \(2, 2\)"),
        ({"fixed": {"R": -np.eye(3)}}, ValueError, "not positive semi-definite"),
        ({"fixed": {"A": np.eye(2)}, "initial_params": {"A": np.eye(2)}}, ValueError, "both in fixed and in initial_params"),
        ({"fixed": {"A": [["a", "b"], ["c", "d"]]}}, TypeError, "must be an array of numbers"),
        ({"fixed": 3}, TypeError, "fixed must be"),
        ({"method": "gibbs"}, ValueError, "method must be one of"),
        ({"state_dim": 0}, ValueError, "state_dim must be a positive integer"),
        ({"n_iter": -1}, ValueError, "n_iter must be an integer >= 0"),
        ({"optimizer": "sgd"}, ValueError, "optimizer must be one of"),
        ({"dtype": "float16"}, ValueError, "dtype must be one of"),
        ({"projection": "pca"}, TypeError, "projection must be a PCAProjection"),
    ],
)
def test_bad_parameters_are_refused_at_fit(data, kwargs, error, match):
    params = {"state_dim": S, **kwargs}
    with pytest.raises(error, match=match):
        KalmanFilter(**params).fit(data)


def test_not_fitted_and_mismatched_input(true_model, data, tmp_path):
    for call in (lambda m: m.filter(data), lambda m: m.smooth(data), lambda m: m.forecast(data, 2), lambda m: m.save(tmp_path / "x")):
        with pytest.raises(RuntimeError, match="not fitted"):
            call(KalmanFilter(S))
    with pytest.raises(ValueError):
        true_model.filter(data[..., :2])
    with pytest.raises(ValueError, match="horizon"):
        true_model.forecast(data, 0)
