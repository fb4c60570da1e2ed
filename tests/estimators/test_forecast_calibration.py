"""Forecast recalibration: the factor search, the likelihood sums, the origins, and
``calibrate_forecast`` on estimators (a well-specified model keeps factors near 1, a model with too
little state noise gets factors above 1 and intervals that cover again; ``forecast`` and streams
apply the factors; files keep them; bad input gives clear errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

import ldmfilter
from ldmfilter import ExtendedKalmanFilter, KalmanFilter, LDMFilter, UnscentedKalmanFilter, metrics
from ldmfilter.estimators import FilterStream
from ldmfilter.estimators.forecast_calibration import (
    LOG_SCALE_RANGE,
    MAX_ORIGINS,
    fit_coverage_scales,
    fit_scales,
    forecast_origins,
    gaussian_nll_sums,
    marginal_coverage,
    scale_forecast_cov,
)

A_TRUE = np.array([[0.95, 0.1], [-0.1, 0.95]])
Q_TRUE, R_TRUE = 0.09 * np.eye(2), 0.25 * np.eye(2)


def rotating_walk(n, steps, seed):
    """Observations (n, T, 2) of the linear-Gaussian model ``A_TRUE``, ``Q_TRUE``, ``R_TRUE`` (H = I)."""
    rng = np.random.default_rng(seed)
    state = np.zeros((n, steps, 2))
    state[:, 0] = rng.normal(size=(n, 2))
    for t in range(1, steps):
        state[:, t] = state[:, t - 1] @ A_TRUE.T + rng.multivariate_normal(np.zeros(2), Q_TRUE, size=n)
    return state + rng.multivariate_normal(np.zeros(2), R_TRUE, size=(n, steps))


def known_model(q_factor=1.0, R=R_TRUE):
    """A KalmanFilter with every parameter fixed at the truth, except Q times ``q_factor`` (and ``R``)."""
    fixed = {"A": A_TRUE, "Q": q_factor * Q_TRUE, "H": np.eye(2), "R": R, "observation_offset": None,
             "initial_mean": np.zeros(2), "initial_cov": 3.0 * np.eye(2)}
    return KalmanFilter(state_dim=2, fixed=fixed).fit(rotating_walk(4, 20, seed=99))


def heavy_tailed_walk(n, steps, seed, R, df=2.5):
    """Like :func:`rotating_walk`, with Student-t process noise of covariance ``Q_TRUE`` and observation noise ``R``."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(Q_TRUE[0, 0] * (df - 2.0) / df)
    state = np.zeros((n, steps, 2))
    state[:, 0] = rng.normal(size=(n, 2))
    for t in range(1, steps):
        state[:, t] = state[:, t - 1] @ A_TRUE.T + scale * rng.standard_t(df, size=(n, 2))
    return state + rng.multivariate_normal(np.zeros(2), R, size=(n, steps))


@pytest.fixture(scope="module")
def walks():
    return rotating_walk(150, 100, seed=0), rotating_walk(150, 100, seed=1)


# ------------------------------------------------------------------ the pieces


def test_fit_scales_finds_the_maximum_likelihood_factor_of_each_horizon():
    # errors e ~ N(0, c*·v) scored with variance exp(log c)·v: the optimum is mean(e² / v) per horizon
    rng = np.random.default_rng(0)
    v = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=torch.float64)
    true_c = torch.tensor([0.3, 1.0, 7.0, 40.0], dtype=torch.float64)
    e = torch.as_tensor(rng.normal(size=(500, 4)), dtype=torch.float64) * torch.sqrt(true_c * v)
    expected = (e.square() / v).mean(0)

    def nll_at(log_c):
        var = torch.exp(log_c) * v
        return 0.5 * (torch.log(var) + e.square() / var).sum(0)

    np.testing.assert_allclose(fit_scales(nll_at, 4), expected.numpy(), rtol=1e-5)


def test_fit_scales_refuses_a_likelihood_that_is_never_finite():
    with pytest.raises(FloatingPointError, match=r"horizons \[2\]"):
        fit_scales(lambda log_c: torch.tensor([0.0, float("inf")], dtype=torch.float64) + log_c.square(), 2)


def test_fit_coverage_scales_finds_the_smallest_factor_that_reaches_the_level():
    # heavy-tailed errors scored with variance exp(log c)·v: the answer is an order statistic of |e|/√v
    rng = np.random.default_rng(1)
    v = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    e = torch.as_tensor(rng.standard_t(2.5, size=(400, 3, 2)), dtype=torch.float64) * torch.sqrt(v)[:, None]
    valid = torch.ones(400, 3, dtype=torch.bool)

    def coverage_at(log_c):
        var = (torch.exp(log_c) * v)[None, :, None].expand_as(e)
        return marginal_coverage(e, valid, torch.zeros_like(e), var, 0.9)

    z = norm.ppf(0.95)
    ratios = (e.abs() / torch.sqrt(v)[:, None]).permute(1, 0, 2).reshape(3, -1).sort(-1).values
    expected = (ratios[:, int(np.ceil(0.9 * 800)) - 1] / z).square()
    found = fit_coverage_scales(coverage_at, 3, 0.9)
    np.testing.assert_allclose(found, expected.numpy(), rtol=1e-6)
    assert np.all(coverage_at(torch.log(torch.as_tensor(found))).numpy() >= 0.9)
    assert np.all(coverage_at(torch.log(torch.as_tensor(found * (1 - 1e-4)))).numpy() < 0.9)


def test_fit_coverage_scales_stops_at_the_ends_of_its_range():
    always, never = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    both = lambda log_c: torch.cat([always, never])  # noqa: E731
    low, high = fit_coverage_scales(both, 2, 0.9)
    np.testing.assert_allclose([np.log(low), np.log(high)], LOG_SCALE_RANGE, atol=1e-9)


def test_marginal_coverage_equals_the_metric_and_skips_invalid_rows():
    rng = np.random.default_rng(2)
    values, mean = rng.normal(size=(50, 2, 3)), rng.normal(size=(50, 2, 3)) * 0.3
    var = rng.uniform(0.5, 2.0, size=(50, 2, 3))
    valid = np.ones((50, 2), dtype=bool)
    valid[::4, 1] = False
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    got = marginal_coverage(as_t(values), torch.as_tensor(valid), as_t(mean), as_t(var), 0.8).numpy()
    for h in range(2):
        keep = valid[:, h]
        expected = metrics.gaussian_interval_coverage(values[keep, h], mean[keep, h], np.sqrt(var[keep, h]), 0.8)
        assert got[h] == pytest.approx(expected, abs=1e-12)


def test_nll_sums_equal_scipy_with_full_and_marginal_covariances_and_skip_invalid_rows():
    rng = np.random.default_rng(1)
    values, mean = rng.normal(size=(6, 3, 2)), rng.normal(size=(6, 3, 2))
    factor = rng.normal(size=(6, 3, 2, 2))
    cov = factor @ np.swapaxes(factor, -1, -2) + 0.5 * np.eye(2)
    valid = np.ones((6, 3), bool)
    valid[2, 1] = valid[4, 0] = False
    values[2, 1] = np.nan  # an unknown value in a left-out row
    expected = np.zeros(3)
    for i in range(6):
        for h in range(3):
            if valid[i, h]:
                expected[h] -= multivariate_normal(mean[i, h], cov[i, h]).logpdf(values[i, h])
    t = lambda a: torch.as_tensor(np.array(a))  # noqa: E731
    np.testing.assert_allclose(gaussian_nll_sums(t(values), t(valid), t(mean), t(cov), None).numpy(), expected)
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    diagonal = np.einsum("...i,ij->...ij", var, np.eye(2))
    full = gaussian_nll_sums(t(values), t(valid), t(mean), t(diagonal), None)
    np.testing.assert_allclose(gaussian_nll_sums(t(values), t(valid), t(mean), None, t(var)).numpy(), full.numpy())


def test_nll_sums_are_infinite_where_a_covariance_is_not_positive_definite():
    values = torch.zeros(2, 2, 2, dtype=torch.float64)
    cov = torch.eye(2, dtype=torch.float64).repeat(2, 2, 1, 1)
    cov[1, 0] = -cov[1, 0]
    sums = gaussian_nll_sums(values, torch.ones(2, 2, dtype=torch.bool), values, cov, None)
    assert np.isinf(sums[0].item()) and np.isfinite(sums[1].item())
    var = torch.ones(2, 2, 2, dtype=torch.float64)
    var[0, 1, 0] = 0.0
    sums = gaussian_nll_sums(values, torch.ones(2, 2, dtype=torch.bool), values, None, var)
    assert np.isfinite(sums[0].item()) and np.isinf(sums[1].item())


def test_origins_skip_the_burn_in_keep_the_horizon_inside_and_thin_out_to_the_cap():
    series, steps = forecast_origins([10, 7], horizon=3, burn_in=None, every=None)
    # series 0: steps 2..6 (10 // 4 = 2, 6 + 3 = 9 < 10); series 1: steps 1..3
    assert list(zip(series, steps)) == [(0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (1, 1), (1, 2), (1, 3)]
    series, steps = forecast_origins([10, 7], horizon=3, burn_in=0, every=3)
    assert list(zip(series, steps)) == [(0, 0), (0, 3), (0, 6), (1, 0), (1, 3)]
    series, steps = forecast_origins([1000] * 10, horizon=5, burn_in=0, every=None)
    assert len(series) <= MAX_ORIGINS and len(series) > MAX_ORIGINS // 2
    with pytest.raises(ValueError, match="no series is long enough to calibrate 5-step forecasts"):
        forecast_origins([8, 9], horizon=5, burn_in=4, every=None)


def test_scale_forecast_cov_holds_the_last_factor_beyond_the_calibrated_horizon():
    cov = torch.ones(2, 4, 3, 3, dtype=torch.float64)
    scaled = scale_forecast_cov(cov, np.array([2.0, 3.0]))
    np.testing.assert_array_equal(scaled[:, :, 0, 0].numpy(), [[2, 3, 3, 3]] * 2)


# ------------------------------------------------------------------ on estimators


def test_a_well_specified_model_keeps_factors_near_one(walks):
    model = known_model().calibrate_forecast(walks[0], 10)
    assert model.forecast_scale_.shape == (10,)
    assert np.all(np.abs(np.log(model.forecast_scale_)) < np.log(1.25)), model.forecast_scale_


def test_too_little_state_noise_is_found_and_the_intervals_cover_again(walks):
    calibration, test = walks
    model = known_model(q_factor=0.2)
    before = model.forecast(test[:, :80], 10).observations
    model.calibrate_forecast(calibration, 10)
    after = model.forecast(test[:, :80], 10).observations
    assert np.all(model.forecast_scale_[2:] > 2.0), model.forecast_scale_
    assert np.all(np.diff(model.forecast_scale_) > -0.5)  # the shortfall grows with the horizon
    truth = test[:, 89]
    coverage = [metrics.gaussian_interval_coverage(truth, f.mean[:, 9], f.std[:, 9], 0.9) for f in (before, after)]
    assert coverage[0] < 0.8 and abs(coverage[1] - 0.9) < 0.06, coverage
    np.testing.assert_array_equal(before.mean, after.mean)  # only the spread changes


def test_coverage_factors_hit_the_level_where_heavy_tails_mislead_the_likelihood():
    # Student-t process noise: a Gaussian interval of the right variance covers more than its level
    R = 0.01 * np.eye(2)
    calibration, test = heavy_tailed_walk(150, 100, 0, R), heavy_tailed_walk(300, 100, 1, R)

    def coverage(model, level):
        scores = []
        for t0 in (60, 70, 80):
            f = model.forecast(test[:, :t0], 3).observations
            scores.append(metrics.gaussian_interval_coverage(test[:, t0:t0 + 3], f.mean, f.std, level))
        return np.mean(scores)

    model = known_model(R=R)
    model.calibrate_forecast(calibration, 3)
    likelihood = coverage(model, 0.9)
    model.calibrate_forecast(calibration, 3, method="coverage")
    assert np.all(model.forecast_scale_ < 0.8), model.forecast_scale_  # narrower than the variance-matched intervals
    assert likelihood > 0.925 and abs(coverage(model, 0.9) - 0.9) < 0.015, (likelihood, coverage(model, 0.9))
    model.calibrate_forecast(calibration, 3, method="coverage", level=0.5)
    assert abs(coverage(model, 0.5) - 0.5) < 0.03


def test_coverage_factors_of_a_well_specified_model_stay_near_one(walks):
    model = known_model().calibrate_forecast(walks[0], 5, method="coverage")
    assert np.all(np.abs(np.log(model.forecast_scale_)) < np.log(1.3)), model.forecast_scale_


def test_forecast_multiplies_the_state_covariance_and_reads_it_out(walks):
    model = known_model(q_factor=0.5)
    raw = model.forecast(walks[1][:5, :60], 6)
    model.calibrate_forecast(walks[0], 4)
    calibrated = model.forecast(walks[1][:5, :60], 6)
    factors = model.forecast_scale_[[0, 1, 2, 3, 3, 3]]
    np.testing.assert_allclose(calibrated.state.cov, raw.state.cov * factors[None, :, None, None], rtol=1e-12)
    H_cov_H = calibrated.observations.cov - R_TRUE  # H = I: the observation belief is the state's plus R
    np.testing.assert_allclose(H_cov_H, calibrated.state.cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("estimator", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_learned_nonlinear_classical_filters_calibrate_too(walks, estimator):
    model = estimator(2, n_iter=3, hidden=(8,)).fit(walks[0][:20, :60])
    raw = model.forecast(walks[1][:4, :60], 5)
    model.calibrate_forecast(walks[0][20:60], 5)
    assert model.forecast_scale_.shape == (5,) and np.all(np.isfinite(model.forecast_scale_))
    calibrated = model.forecast(walks[1][:4, :60], 5)
    np.testing.assert_allclose(calibrated.state.cov, raw.state.cov * model.forecast_scale_[None, :, None, None], rtol=1e-10)


def test_calibrating_against_targets_uses_the_target_read_out():
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(12, 60, 2)).cumsum(1) * 0.3
    X = latent @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(12, 60, 5))
    model = LDMFilter(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=2, verbose=False, dtype="float64")
    with pytest.raises(ValueError, match="needs the target read-out"):
        model.fit(X).calibrate_forecast(X, 5, Y=latent)
    model.fit(X, targets=latent)
    by_targets = model.calibrate_forecast(X, 5, Y=latent).forecast_scale_.copy()
    by_observations = model.calibrate_forecast(X, 5).forecast_scale_
    assert by_targets.shape == by_observations.shape == (5,)
    assert np.all(np.isfinite(by_targets)) and not np.allclose(by_targets, by_observations)
    unknown = latent.copy()
    unknown[:, 40:] = np.nan  # values after step 40 are left out, not used as numbers
    partial = model.calibrate_forecast(X, 5, Y=unknown).forecast_scale_
    assert np.all(np.isfinite(partial)) and not np.allclose(partial, by_targets)
    unknown[:, 15:] = np.nan
    with pytest.raises(ValueError, match=r"no known targets value at horizon\(s\) \[1, 2, 3, 4, 5\]"):
        model.calibrate_forecast(X, 5, Y=unknown)


def test_controls_of_each_origin_drive_its_forecast():
    rng = np.random.default_rng(4)
    U = rng.normal(size=(6, 40, 1))
    X = np.cumsum(U, 1) @ rng.normal(size=(1, 3)) + 0.1 * rng.normal(size=(6, 40, 3))
    model = LDMFilter(state_dim=2, latent_dim=2, hidden=(8,), max_epochs=2, verbose=False, dtype="float64")
    model.fit(X, controls=U).calibrate_forecast(X, 3, controls=U, burn_in=30, every=1)
    origins = [(i, t) for i in range(6) for t in range(30, 37)]  # t + 3 < 40
    scale = model.forecast_scale_

    def nll(factors):  # the observation-space likelihood, with forecasts made one origin at a time
        total = np.zeros(3)
        for i, t in origins:
            model.forecast_scale_ = factors
            f = model.forecast(X[i, : t + 1], 3, controls=U[i, : t + 1], future_controls=U[i, t + 1 : t + 4]).observations
            for h in range(3):
                total[h] -= multivariate_normal(f.mean[h], f.cov[h]).logpdf(X[i, t + 1 + h])
        return total

    best = nll(scale)
    for bump in (0.97, 1.03):
        assert np.all(nll(scale * bump) >= best - 1e-9)
    model.forecast_scale_ = scale


def test_a_stream_forecasts_with_the_calibrated_covariance():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 50, 3)).cumsum(1) * 0.2
    model = LDMFilter(state_dim=2, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False, dtype="float64").fit(X)
    model.calibrate_forecast(X, 4)
    stream = FilterStream(model, n_series=4)
    for t in range(50):
        stream.update(X[:, t])
    np.testing.assert_allclose(stream.forecast(6).cov, model.forecast(X, 6).state.cov, rtol=1e-9, atol=1e-12)


def test_files_keep_the_factors_and_a_refit_removes_them(tmp_path, walks):
    model = known_model(q_factor=0.5).calibrate_forecast(walks[0], 3)
    loaded = ldmfilter.load(model.save(tmp_path / "m.ldm"))
    np.testing.assert_array_equal(loaded.forecast_scale_, model.forecast_scale_)
    np.testing.assert_array_equal(loaded.forecast(walks[1][:3], 5).state.cov, model.forecast(walks[1][:3], 5).state.cov)
    model.fit(walks[0][:4, :20])
    assert not hasattr(model, "forecast_scale_")


def test_a_file_with_damaged_factors_is_refused(tmp_path, walks):
    from ldmfilter.estimators.persistence import checksum

    path = known_model().calibrate_forecast(walks[0], 3).save(tmp_path / "m.ldm")
    payload = torch.load(path, weights_only=True)
    payload["forecast_scale"] = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    payload["checksum"] = checksum(payload)  # consistent, but the factors are not
    torch.save(payload, path)
    with pytest.raises(ValueError, match="damaged.*forecast calibration"):
        ldmfilter.load(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"horizon": 0}, "horizon must be an integer >= 1"),
        ({"horizon": 2.5}, "horizon must be an integer >= 1"),
        ({"horizon": 3, "burn_in": -1}, "burn_in must be an integer >= 0"),
        ({"horizon": 3, "every": 0}, "every must be an integer >= 1"),
        ({"horizon": 200}, "no series is long enough"),
        ({"horizon": 3, "method": "quantile"}, "method must be one of"),
        ({"horizon": 3, "method": "coverage", "level": 1.0}, r"level must be a number in \(0, 1\)"),
        ({"horizon": 3, "method": "coverage", "level": True}, r"level must be a number in \(0, 1\)"),
    ],
)
def test_bad_arguments_are_named(walks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        known_model().calibrate_forecast(walks[0][:5], **kwargs)


def test_the_rnn_predictor_has_no_forecasts_to_calibrate():
    X = np.random.default_rng(6).normal(size=(8, 30, 3))
    model = LDMFilter(predictor="rnn", objective="knn", latent_dim=2, hidden=(8,), max_epochs=1, verbose=False).fit(X)
    with pytest.raises(ValueError, match="calibrate_forecast needs predictor='kalman'"):
        model.calibrate_forecast(X, 3)


def test_observations_of_another_width_are_refused(walks):
    with pytest.raises(ValueError, match="X"):
        known_model().calibrate_forecast(walks[0][..., :1], 3)
