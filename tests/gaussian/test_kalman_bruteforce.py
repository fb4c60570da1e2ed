"""The Kalman filter, smoother and forecast against dense conditioning of the joint Gaussian.

Every quantity is compared in float64 to 1e-9 with :mod:`reference` (no recursion in it), for
each code path: the public entry point, ``sequential_filter``, ``shared_covariance_filter`` (when
the model allows it) and ``parallel=True``.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ldmfilter.gaussian import kalman_filter, kalman_forecast, kalman_smoother
from ldmfilter.gaussian.kalman import sequential_filter
from ldmfilter.gaussian.shared import shared_covariance_filter
from ldmfilter.gaussian.validation import prepare_linear_model
from reference import (
    brute_force_batch,
    forecast_reference,
    random_model,
    random_transition,
    series_models,
    simulate,
    torch_kwargs,
)

TOL = dict(rtol=1e-9, atol=1e-9)
S, L, T = 3, 2, 6

CASES = [
    "no_missing", "missing_steps", "partial_components", "per_series_nan", "per_series_step_mask",
    "per_series_component_mask", "shared_mask_argument", "time_varying", "time_varying_unbatched",
    "offset_static", "offset_time_varying", "offset_time_varying_unbatched", "offset_batched_static_params",
    "batched_initial_mean", "batched_initial_cov", "two_batch_axes",
]
# scenarios whose covariance recursion is the same for every series (no batched A/Q/H/R/P0, one mask)
SHARED_CASES = {
    "no_missing", "missing_steps", "partial_components", "shared_mask_argument", "time_varying_unbatched",
    "offset_static", "offset_time_varying_unbatched", "offset_batched_static_params", "batched_initial_mean",
}


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def _case(name: str):
    """(params, observations, mask, expects_shared_covariance) for a named scenario."""
    rng = np.random.default_rng(_seed(name))
    batch, mask, tv, offset = (3,), None, False, None
    if name == "time_varying":
        tv = True
    elif name == "time_varying_unbatched":
        tv, batch = True, ()
    elif name == "offset_static":
        offset = "static"
    elif name == "offset_time_varying":
        tv, offset = True, "time_varying"
    params = random_model(rng, S, L, steps=T, time_varying=tv, offset=offset, batch=batch)
    if name == "time_varying_unbatched":  # params (T, ...) without batch axes, data batched
        batch = (3,)
    if name == "offset_time_varying_unbatched":  # static matrices, offset (T, S)
        params["c"] = rng.standard_normal((T, S))
    if name == "two_batch_axes":  # data (2, 3, T, L), A (3, T, S, S) broadcast over the first axis
        batch = (2, 3)
        params["A"] = random_transition(rng, S, batch=(3, T))
    if name == "offset_batched_static_params":  # per-series time-varying offsets, shared matrices
        params["c"] = rng.standard_normal(batch + (T, S))
    if name == "batched_initial_mean":
        params["m0"] = rng.standard_normal(batch + (S,))
    if name == "batched_initial_cov":
        params["m0"] = rng.standard_normal(batch + (S,))
        params["P0"] = np.stack([random_model(rng, S, L)["P0"] for _ in range(3)])
    z = simulate(rng, params, T, batch=batch)
    if name == "missing_steps":  # the same fully missing steps (including step 0) in every series
        z[..., [0, 3], :] = np.nan
    elif name == "partial_components":  # the same partial pattern in every series
        z[..., 1, 0] = np.nan
        z[..., 4, 1] = np.nan
        z[..., 2, :] = np.nan
    elif name == "per_series_nan":
        z[0, 2, :] = np.nan
        z[1, 3, 1] = np.nan
        z[2, 0, 0] = np.nan
        z[2, 5, :] = np.nan
    elif name == "per_series_step_mask":
        mask = np.ones(batch + (T,), bool)
        mask[0, 1] = mask[1, 4] = mask[2, 0] = False
    elif name == "per_series_component_mask":
        mask = rng.random(batch + (T, L)) > 0.3
        z[1, 2, 0] = np.nan  # combined with NaN
    elif name == "shared_mask_argument":  # a (T,) mask broadcast over the batch: shared path
        mask = np.ones((T,), bool)
        mask[[1, 2]] = False
    elif name == "time_varying_unbatched":
        z[..., 2, 1] = np.nan
    elif name == "two_batch_axes":
        z[1, 2, 3, 0] = np.nan
    return params, z, mask, name in SHARED_CASES


def _reference_mask(mask, z):
    """The reference wants a mask with the full batch axes of ``z``."""
    if mask is None:
        return None
    if mask.ndim == 1:
        return np.broadcast_to(mask, z.shape[:-1])
    return mask


def _inputs(name):
    params, z, mask, shared = _case(name)
    kwargs = torch_kwargs(params)
    if mask is not None:
        kwargs["mask"] = torch.as_tensor(mask)
    return params, z, mask, shared, kwargs


def _assert_filter_matches(out, ref):
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        got = getattr(out, field).detach().numpy()
        np.testing.assert_allclose(got, ref[field], **TOL, err_msg=field)
    np.testing.assert_allclose(out.log_likelihood.sum(-1).numpy(), ref["total_log_likelihood"], **TOL)


@pytest.mark.parametrize(
    "name, path",
    [(n, p) for n in CASES for p in ("auto", "sequential", "shared", "parallel") if p != "shared" or n in SHARED_CASES],
)
def test_filter_matches_brute_force(name, path):
    """Filtered/predicted marginals and per-step log-likelihoods equal dense conditioning."""
    params, z, mask, shared, kwargs = _inputs(name)
    obs = torch.as_tensor(z)
    ref = brute_force_batch(params, z, _reference_mask(mask, z))
    if path == "auto":
        out = kalman_filter(obs, **kwargs)
        assert out.shared_covariance == shared
    elif path == "parallel":
        out = kalman_filter(obs, **kwargs, parallel=True)
    else:
        model = prepare_linear_model(obs, *(kwargs.get(k) for k in (
            "transition_matrix", "transition_cov", "observation_matrix", "observation_cov",
            "initial_mean", "initial_cov", "transition_offset", "mask")))
        assert model.covariance_is_shared == shared
        out = shared_covariance_filter(model) if path == "shared" else sequential_filter(model)
    assert out.filtered_mean.shape == z.shape[:-1] + (S,)
    assert out.filtered_cov.shape == z.shape[:-1] + (S, S)
    _assert_filter_matches(out, ref)


def test_missing_step_log_likelihood_is_zero():
    """A fully missing step contributes exactly 0 to the log-likelihood."""
    params, z, mask, _, kwargs = _inputs("missing_steps")
    out = kalman_filter(torch.as_tensor(z), **kwargs)
    assert (out.log_likelihood[..., [0, 3]] == 0).all()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("parallel", [False, True])
def test_smoother_matches_brute_force(name, parallel):
    """RTS smoothed marginals and lag-one cross-covariances equal dense conditioning on all data."""
    params, z, mask, _, kwargs = _inputs(name)
    ref = brute_force_batch(params, z, _reference_mask(mask, z))
    out = kalman_filter(torch.as_tensor(z), **kwargs, parallel=parallel)
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    np.testing.assert_allclose(sm.smoothed_mean.numpy(), ref["smoothed_mean"], **TOL)
    np.testing.assert_allclose(sm.smoothed_cov.numpy(), ref["smoothed_cov"], **TOL)
    assert sm.lag_one_cov.shape == z.shape[:-2] + (T - 1, S, S)
    np.testing.assert_allclose(sm.lag_one_cov.numpy(), ref["lag_one_cov"], **TOL)


def test_smoother_last_step_equals_filter():
    """The smoother's last step is the filter's last step (nothing after it to condition on)."""
    params, z, mask, _, kwargs = _inputs("offset_time_varying")
    out = kalman_filter(torch.as_tensor(z), **kwargs)
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    torch.testing.assert_close(sm.smoothed_mean[..., -1, :], out.filtered_mean[..., -1, :], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sm.smoothed_cov[..., -1, :, :], out.filtered_cov[..., -1, :, :], rtol=1e-12,
                               atol=1e-12)


def test_single_step_series():
    """T = 1: one update of the prior; the smoother returns it and has no lag-one entries."""
    rng = np.random.default_rng(7)
    params = random_model(rng, S, L)
    z = simulate(rng, params, 1, batch=(2,))
    ref = brute_force_batch(params, z)
    kwargs = torch_kwargs(params)
    out = kalman_filter(torch.as_tensor(z), **kwargs)
    _assert_filter_matches(out, ref)
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    np.testing.assert_allclose(sm.smoothed_mean.numpy(), ref["smoothed_mean"], **TOL)
    assert sm.lag_one_cov.shape == (2, 0, S, S)


FORECAST_CASES = ["static", "static_offset", "time_varying", "time_varying_offset", "batched_params"]


def _future(rng, name, horizon, batch):
    """Forecast parameters: static, or with a time axis of length ``horizon`` (per series for "batched_params")."""
    if name in ("static", "static_offset"):
        fut = random_model(rng, S, L, offset="static" if name == "static_offset" else None)
    else:
        fut = random_model(rng, S, L, steps=horizon, time_varying=True,
                           offset=None if name == "time_varying" else "time_varying",
                           batch=batch if name == "batched_params" else ())
    return fut


@pytest.mark.parametrize("name", FORECAST_CASES)
def test_forecast_matches_brute_force(name):
    """Forecast entry k = marginal of x_{T+k} given all data, i.e. k+1 predicts from the last filtered belief."""
    rng = np.random.default_rng(_seed("forecast" + name))
    horizon, batch = 4, (3,)
    params = random_model(rng, S, L, offset="static")
    z = simulate(rng, params, T, batch=batch)
    z[1, -1, :] = np.nan  # one series' last step is missing: its forecast starts from a predict-only belief
    z[2, -1, 0] = np.nan
    out = kalman_filter(torch.as_tensor(z), **torch_kwargs(params))
    fut = _future(rng, name, horizon, batch)
    fk = torch_kwargs(fut)
    belief = kalman_forecast(out.filtered_mean[..., -1, :], out.filtered_cov[..., -1, :, :],
                             fk["transition_matrix"], fk["transition_cov"], horizon,
                             transition_offset=fk["transition_offset"])
    assert belief.mean.shape == batch + (horizon, S)
    assert belief.cov.shape == batch + (horizon, S, S)
    models, fut_models = series_models(params, T, batch), series_models(fut, horizon, batch)
    for index in np.ndindex(*batch):
        f = fut_models[index]
        ref_mean, ref_cov = forecast_reference(models[index], z[index], horizon, f.A, f.Q, f.c)
        np.testing.assert_allclose(belief.mean[index].numpy(), ref_mean, **TOL)
        np.testing.assert_allclose(belief.cov[index].numpy(), ref_cov, **TOL)


@pytest.mark.parametrize("name", FORECAST_CASES)
def test_forecast_batched_equals_per_series(name):
    """A batched forecast equals forecasting each series alone (batch axes of belief and parameters)."""
    rng = np.random.default_rng(_seed("forecast-batch" + name))
    horizon, batch = 3, (3,)
    params = random_model(rng, S, L)
    z = simulate(rng, params, T, batch=batch)
    out = kalman_filter(torch.as_tensor(z), **torch_kwargs(params))
    fk = torch_kwargs(_future(rng, name, horizon, batch))
    A_f, Q_f, c_f = fk["transition_matrix"], fk["transition_cov"], fk["transition_offset"]
    whole = kalman_forecast(out.filtered_mean[..., -1, :], out.filtered_cov[..., -1, :, :], A_f, Q_f, horizon,
                            transition_offset=c_f)
    for i in range(batch[0]):
        pick = (lambda x: x[i]) if name == "batched_params" else (lambda x: x)  # noqa: B023
        one = kalman_forecast(out.filtered_mean[i, -1], out.filtered_cov[i, -1], pick(A_f), pick(Q_f), horizon,
                              transition_offset=None if c_f is None else pick(c_f))
        torch.testing.assert_close(whole.mean[i], one.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(whole.cov[i], one.cov, rtol=1e-12, atol=1e-12)
