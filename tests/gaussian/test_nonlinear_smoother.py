"""``nonlinear_smoother`` and ``nonlinear_forecast``: the moment-rule RTS smoother and forecaster.

On an affine transition every rule equals ``kalman_smoother`` / ``kalman_forecast`` (1e-10),
with missing steps, partial masks, batches, time-varying ``Q`` and controls; on a pendulum the
smoother beats the filter; covariances stay symmetric PSD; bad arguments are refused.
"""

from __future__ import annotations

import math

import pytest
import torch

from ldmfilter.gaussian import (
    kalman_filter,
    kalman_forecast,
    kalman_smoother,
    nonlinear_filter,
    nonlinear_forecast,
    nonlinear_smoother,
)

DTYPE = torch.float64
METHODS = ["linearize", "unscented", "cubature"]
TOL = dict(rtol=1e-10, atol=1e-10)
S, L, T, B = 3, 2, 12, 4


def _model(seed: int, time_varying_Q: bool = False):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(S, S, generator=gen, dtype=DTYPE)
    A = 0.9 * A / torch.linalg.matrix_norm(A, ord=2)
    c = torch.randn(S, generator=gen, dtype=DTYPE)
    H = torch.randn(L, S, generator=gen, dtype=DTYPE)
    if time_varying_Q:
        a = torch.randn(B, T, S, S, generator=gen, dtype=DTYPE)
        Q = 0.3 * (a @ a.mT / S + 0.3 * torch.eye(S, dtype=DTYPE))
    else:
        Q = 0.2 * torch.eye(S, dtype=DTYPE) + 0.05
    R = 0.4 * torch.eye(L, dtype=DTYPE)
    z = torch.randn(B, T, L, generator=gen, dtype=DTYPE)
    z[0, 3] = math.nan
    z[1, 5, 0] = math.nan
    z[2, -1] = math.nan
    return A, c, Q, H, R, z


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("time_varying_Q", [False, True])
def test_affine_transition_equals_rts_smoother(method, time_varying_Q):
    A, c, Q, H, R, z = _model(0, time_varying_Q)
    m0, P0 = torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE)
    linear = kalman_filter(z, A, Q, H, R, m0, P0, transition_offset=c)
    expected = kalman_smoother(linear, A, Q)
    f = lambda x: x @ A.mT + c  # noqa: E731
    filtered = nonlinear_filter(z, f, Q, H, R, m0, P0, method=method)
    got = nonlinear_smoother(filtered, f, Q, method=method)
    for name in ("smoothed_mean", "smoothed_cov", "lag_one_cov"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), **TOL)
    # the linear filter's own result (shared covariances) works too
    torch.testing.assert_close(nonlinear_smoother(linear, f, Q, method=method).smoothed_mean, expected.smoothed_mean, **TOL)


@pytest.mark.parametrize("method", METHODS)
def test_controls_act_like_a_time_varying_offset(method):
    A, _, Q, H, R, z = _model(1)
    gen = torch.Generator().manual_seed(9)
    u = torch.randn(B, T, S, generator=gen, dtype=DTYPE)
    m0, P0 = torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE)
    linear = kalman_filter(z, A, Q, H, R, m0, P0, transition_offset=u)
    f = lambda x, inputs: x @ A.mT + inputs  # noqa: E731
    filtered = nonlinear_filter(z, f, Q, H, R, m0, P0, method=method, transition_inputs=u)
    got = nonlinear_smoother(filtered, f, Q, method=method, transition_inputs=u)
    torch.testing.assert_close(got.smoothed_mean, kalman_smoother(linear, A, Q).smoothed_mean, **TOL)


@pytest.mark.parametrize("method", METHODS)
def test_affine_forecast_equals_kalman_forecast(method):
    A, c, Q, H, R, z = _model(2)
    filtered = kalman_filter(z, A, Q, H, R, torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE), transition_offset=c)
    mean, cov = filtered.filtered_mean[:, -1], filtered.filtered_cov[:, -1]
    got = nonlinear_forecast(mean, cov, lambda x: x @ A.mT + c, Q, 6, method=method)
    expected = kalman_forecast(mean, cov, A, Q, 6, c)
    torch.testing.assert_close(got.mean, expected.mean, **TOL)
    torch.testing.assert_close(got.cov, expected.cov, **TOL)


def _pendulum(steps: int, seed: int, dt: float = 0.1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor([1.5, 0.0], dtype=DTYPE)
    states, obs = [], []
    for _ in range(steps):
        states.append(x)
        obs.append(torch.sin(x[:1]) + 0.3 * torch.randn(1, generator=gen, dtype=DTYPE))
        x = torch.stack([x[0] + dt * x[1], x[1] - dt * 9.81 * torch.sin(x[0])]) + 0.02 * torch.randn(2, generator=gen, dtype=DTYPE)
    return torch.stack(states), torch.stack(obs)


def _pendulum_fn(x, dt=0.1):
    return torch.stack([x[:, 0] + dt * x[:, 1], x[:, 1] - dt * 9.81 * torch.sin(x[:, 0])], -1)


@pytest.mark.parametrize("method", METHODS)
def test_smoother_beats_filter_on_a_pendulum_and_stays_psd(method):
    states, obs = _pendulum(150, seed=0)
    Q = 0.02**2 * torch.eye(2, dtype=DTYPE) + 1e-6 * torch.eye(2, dtype=DTYPE)
    R = torch.tensor([[0.09]], dtype=DTYPE)
    m0, P0 = torch.tensor([1.5, 0.0], dtype=DTYPE), 0.1 * torch.eye(2, dtype=DTYPE)
    h = lambda x: torch.sin(x[:, :1])  # noqa: E731
    filtered = nonlinear_filter(obs, _pendulum_fn, Q, None, R, m0, P0, method=method, observation_fn=h)
    smoothed = nonlinear_smoother(filtered, _pendulum_fn, Q, method=method)
    filter_error = (filtered.filtered_mean - states).square().mean()
    smoother_error = (smoothed.smoothed_mean - states).square().mean()
    assert smoother_error < 0.8 * filter_error
    cov = smoothed.smoothed_cov
    torch.testing.assert_close(cov, cov.mT, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(cov).min() > 0
    assert (cov.diagonal(dim1=-2, dim2=-1) <= filtered.filtered_cov.diagonal(dim1=-2, dim2=-1) + 1e-9).all()


def test_bad_arguments():
    A, c, Q, H, R, z = _model(3)
    f = lambda x: x @ A.mT  # noqa: E731
    filtered = nonlinear_filter(z, f, Q, H, R, torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE))
    with pytest.raises(TypeError, match="FilterResult"):
        nonlinear_smoother((filtered.filtered_mean, filtered.filtered_cov), f, Q)
    with pytest.raises(ValueError, match="method must be one of"):
        nonlinear_smoother(filtered, f, Q, method="particle")
    with pytest.raises(TypeError, match="callable"):
        nonlinear_smoother(filtered, A, Q)
    with pytest.raises(ValueError, match="transition_cov must have shape"):
        nonlinear_smoother(filtered, f, torch.eye(2, dtype=DTYPE))
    with pytest.raises(ValueError, match="transition_inputs must have shape"):
        nonlinear_smoother(filtered, f, Q, transition_inputs=torch.zeros(B, T + 1, 1, dtype=DTYPE))
    mean, cov = filtered.filtered_mean[:, -1], filtered.filtered_cov[:, -1]
    with pytest.raises(ValueError, match="horizon must be at least 1"):
        nonlinear_forecast(mean, cov, f, Q, 0)
    with pytest.raises(TypeError, match="horizon must be an int"):
        nonlinear_forecast(mean, cov, f, Q, 2.0)
    with pytest.raises(ValueError, match="cov must have shape"):
        nonlinear_forecast(mean, cov[..., :2, :2], f, Q, 2)
    one_step = nonlinear_filter(z[:, :1], f, Q, H, R, torch.zeros(S, dtype=DTYPE), torch.eye(S, dtype=DTYPE))
    single = nonlinear_smoother(one_step, f, Q)
    assert single.smoothed_mean.shape == (B, 1, S) and single.lag_one_cov.shape == (B, 0, S, S)
