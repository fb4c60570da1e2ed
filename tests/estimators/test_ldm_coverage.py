"""Calibration: on a well-specified linear-Gaussian series, read-out intervals cover as promised.

Data: a damped 2-D rotation observed through 6 noisy linear channels.  The targets are the true
states.  LDMFilter learns the encoder and dynamics without labels; a linear read-out to the
targets is fitted on training series.  On held-out series the 50/90/95% intervals of the
filtered targets and of the observation read-out must cover within ±5 points of nominal.
"""

import numpy as np
import pytest
from scipy.stats import norm

from ldmfilter import LDMFilter

NOMINAL = (0.5, 0.9, 0.95)


def simulate(n, T, seed):
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi / 25
    A = 0.97 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    H = np.random.default_rng(123).normal(size=(6, 2))
    x = np.zeros((n, T, 2))
    x[:, 0] = rng.normal(size=(n, 2)) * 2
    for t in range(1, T):
        x[:, t] = x[:, t - 1] @ A.T + 0.3 * rng.normal(size=(n, 2))
    y = x @ H.T + 0.5 * rng.normal(size=(n, T, 6))
    return y, x


@pytest.fixture(scope="module")
def fitted():
    y, x = simulate(32, 100, seed=0)
    model = LDMFilter(state_dim=4, latent_dim=2, max_epochs=150, random_state=0, verbose=False)
    return model.fit(y, targets=x)


def coverage(truth, moments, level):
    lower, upper = moments.interval(level)
    return float(np.mean((truth >= lower) & (truth <= upper)))


@pytest.mark.parametrize("level", NOMINAL)
def test_filtered_target_intervals_are_calibrated(fitted, level):
    y, x = simulate(32, 100, seed=1)
    result = fitted.filter(y)
    assert abs(coverage(x[:, 10:], type(result.targets)(result.targets.mean[:, 10:], result.targets.cov[:, 10:]), level) - level) <= 0.05


@pytest.mark.parametrize("level", NOMINAL)
def test_observation_intervals_are_calibrated(fitted, level):
    y, _ = simulate(32, 100, seed=2)
    observations = fitted.filter(y).observations
    assert abs(coverage(y, observations, level) - level) <= 0.05


def test_forecast_target_intervals_are_calibrated(fitted):
    y, x = simulate(64, 60, seed=3)
    forecast = fitted.forecast(y[:, :50], 10)
    for level in NOMINAL:
        assert abs(coverage(x[:, 50:], forecast.targets, level) - level) <= 0.05


def test_filtered_targets_are_accurate(fitted):
    y, x = simulate(32, 100, seed=1)
    mean = fitted.filter(y).targets.mean
    r2 = 1 - ((mean - x) ** 2).sum() / ((x - x.mean((0, 1))) ** 2).sum()
    assert r2 > 0.9
    # the read-out's standardised errors look standard normal (not only at three levels)
    z = (x - mean) / fitted.filter(y).targets.std
    assert abs(np.mean(np.abs(z) <= norm.ppf(0.75)) - 0.5) <= 0.05
