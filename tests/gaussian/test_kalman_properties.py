"""Property tests (hypothesis) of the Kalman filter: invariants that hold for every model and data.

Hypothesis draws the sizes, a seed and the missingness; the model itself is a random
well-conditioned one from :mod:`reference`.  Examples are few and small so the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ldmfilter.gaussian import kalman_filter, kalman_smoother
from ldmfilter.gaussian.kalman import sequential_filter
from ldmfilter.gaussian.shared import shared_covariance_filter
from ldmfilter.gaussian.validation import prepare_linear_model
from reference import random_model, simulate, torch_kwargs

FAST = settings(max_examples=25, deadline=None)
ARG_ORDER = ("transition_matrix", "transition_cov", "observation_matrix", "observation_cov", "initial_mean",
             "initial_cov", "transition_offset", "mask")


@st.composite
def problems(draw, shared=None, missing=True):
    """(observations, kwargs) for a random model; ``shared`` forces (True) or forbids (False) a shared
    covariance recursion, None lets hypothesis choose."""
    seed = draw(st.integers(0, 2**32 - 1))
    S = draw(st.integers(1, 4))
    L = draw(st.integers(1, 3))
    T = draw(st.integers(1, 7))
    B = draw(st.integers(1, 3))
    share = draw(st.booleans()) if shared is None else shared
    time_varying = draw(st.booleans())
    offset = draw(st.sampled_from([None, "static", "time_varying"]))
    rng = np.random.default_rng(seed)
    params = random_model(rng, S, L, steps=T, time_varying=time_varying, offset=offset,
                          batch=() if share else (B,))
    z = simulate(rng, params, T, batch=(B,))
    mask = None
    if missing:
        rate = draw(st.sampled_from([0.0, 0.2, 0.5]))
        per_step = draw(st.booleans())
        pattern_shape = (T,) if per_step else (T, L)
        if share:  # one pattern for the whole batch, given as NaN in every series
            pattern = rng.random(pattern_shape) >= rate
            z = np.where(np.broadcast_to(pattern[..., None] if per_step else pattern, z.shape), z, np.nan)
        else:
            mask = rng.random((B,) + pattern_shape) >= rate
    kwargs = torch_kwargs(params)
    if mask is not None:
        kwargs["mask"] = torch.as_tensor(mask)
    return torch.as_tensor(z), kwargs


def _model(obs, kwargs):
    return prepare_linear_model(obs, *(kwargs.get(k) for k in ARG_ORDER))


def _cast(obs, kwargs, dtype):
    cast = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in kwargs.items()}
    return obs.to(dtype), cast


def _assert_symmetric_psd(cov):
    eps = torch.finfo(cov.dtype).eps
    scale = cov.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    torch.testing.assert_close(cov, cov.mT, rtol=0, atol=0)
    smallest = torch.linalg.eigvalsh((cov / scale).double())[..., 0]
    assert (smallest >= -100 * eps).all(), smallest.min()


@FAST
@given(problems(), st.sampled_from([torch.float32, torch.float64]))
def test_covariances_symmetric_psd(problem, dtype):
    """Filtered, predicted and smoothed covariances are exactly symmetric and positive semi-definite."""
    obs, kwargs = _cast(*problem, dtype)
    out = kalman_filter(obs, **kwargs)
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    for cov in (out.filtered_cov, out.predicted_cov, sm.smoothed_cov):
        assert cov.dtype == dtype
        _assert_symmetric_psd(cov)
    assert torch.isfinite(out.log_likelihood).all()


@FAST
@given(problems())
def test_update_never_increases_variance(problem):
    """Conditioning on data can only shrink each marginal variance: diag(P_t) <= diag(P⁻_t)."""
    obs, kwargs = problem
    out = kalman_filter(obs, **kwargs)
    filtered = out.filtered_cov.diagonal(dim1=-2, dim2=-1)
    predicted = out.predicted_cov.diagonal(dim1=-2, dim2=-1)
    assert (filtered <= predicted * (1 + 1e-12) + 1e-14).all()
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    assert (sm.smoothed_cov.diagonal(dim1=-2, dim2=-1) <= filtered * (1 + 1e-12) + 1e-14).all()


@FAST
@given(problems(missing=False), st.data())
def test_masked_step_is_predict_only(problem, data):
    """A fully masked step leaves the prediction unchanged (filtered = predicted) and adds 0 log-likelihood;
    the next prediction is A filtered + c."""
    obs, kwargs = problem
    B, T = obs.shape[0], obs.shape[1]
    mask = torch.ones(B, T, dtype=torch.bool)
    series = data.draw(st.integers(0, B - 1))
    step = data.draw(st.integers(0, T - 1))
    mask[series, step] = False
    out = kalman_filter(obs, **kwargs, mask=mask)
    i, t = series, step
    torch.testing.assert_close(out.filtered_mean[i, t], out.predicted_mean[i, t], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out.filtered_cov[i, t], out.predicted_cov[i, t], rtol=1e-13, atol=1e-13)
    assert out.log_likelihood[i, t] == 0
    if t + 1 < T:
        A, c = kwargs["transition_matrix"], kwargs["transition_offset"]
        A_t = A if A.ndim == 2 else A.expand(B, *A.shape[-3:])[i, t + 1]
        expected = A_t @ out.filtered_mean[i, t]
        if c is not None:
            expected = expected + (c if c.ndim == 1 else c.expand(B, *c.shape[-2:])[i, t + 1])
        torch.testing.assert_close(out.predicted_mean[i, t + 1], expected, rtol=1e-12, atol=1e-12)
    # the same step given as NaN observations instead of a mask
    nan_obs = obs.clone()
    nan_obs[i, t] = float("nan")
    again = kalman_filter(nan_obs, **kwargs)
    for field in ("filtered_mean", "filtered_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(again, field), getattr(out, field), rtol=1e-12, atol=1e-12)


@FAST
@given(problems())
def test_parallel_equals_sequential(problem):
    """parallel=True gives the same filter output as the sequential recursion."""
    obs, kwargs = problem
    seq = sequential_filter(_model(obs, kwargs))
    par = kalman_filter(obs, **kwargs, parallel=True)
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(par, field), getattr(seq, field), rtol=1e-9, atol=1e-9, msg=field)


@FAST
@given(problems(shared=True))
def test_shared_covariance_equals_per_series(problem):
    """With parameters and missingness shared by the batch, the shared-covariance path equals the per-series
    recursion (and the public entry point picks it)."""
    obs, kwargs = problem
    model = _model(obs, kwargs)
    assert model.covariance_is_shared
    shared = shared_covariance_filter(model)
    seq = sequential_filter(model)
    auto = kalman_filter(obs, **kwargs)
    assert shared.shared_covariance and auto.shared_covariance
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(shared, field), getattr(seq, field), rtol=1e-10, atol=1e-10, msg=field)
        torch.testing.assert_close(getattr(auto, field), getattr(seq, field), rtol=1e-10, atol=1e-10, msg=field)


@FAST
@given(problems())
def test_float32_close_to_float64(problem):
    """On well-conditioned models float32 agrees with float64 to float32 accuracy."""
    obs, kwargs = problem
    out64 = kalman_filter(obs, **kwargs)
    obs32, kwargs32 = _cast(obs, kwargs, torch.float32)
    out32 = kalman_filter(obs32, **kwargs32)
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        got = getattr(out32, field)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), getattr(out64, field), rtol=2e-3, atol=2e-3, msg=field)


@FAST
@given(problems(), st.data())
def test_series_alone_equals_series_in_batch(problem, data):
    """Filtering one series alone gives what it gets inside a batch (batch axes are independent)."""
    obs, kwargs = problem
    B = obs.shape[0]
    i = data.draw(st.integers(0, B - 1))
    out = kalman_filter(obs, **kwargs)

    def pick(name, value):
        if value is None:
            return None
        core = {"initial_mean": 1, "transition_offset": 1}.get(name, 2)
        has_time = name not in ("initial_mean", "initial_cov")
        if name == "mask":
            return value[i]
        return value[i] if value.ndim > core + has_time else value

    alone = kalman_filter(obs[i], **{k: pick(k, v) for k, v in kwargs.items()})
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(alone, field), getattr(out, field)[i], rtol=1e-12, atol=1e-12, msg=field)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gap", [False, True])
def test_steady_state_shared_equals_sequential(seed, gap):
    """A long (T=400) time-invariant series: the shared path (which freezes the converged covariance) matches
    the fully unrolled per-series recursion to ~1e-12; a missing step in the middle restarts the recursion."""
    rng = np.random.default_rng(seed)
    params = random_model(rng, 4, 2, offset="static")
    z = simulate(rng, params, 400, batch=(3,))
    if gap:
        z[:, 250] = np.nan
        z[:, 300, 0] = np.nan
    obs, kwargs = torch.as_tensor(z), torch_kwargs(params)
    model = _model(obs, kwargs)
    assert model.covariance_is_shared
    shared, seq = shared_covariance_filter(model), sequential_filter(model)
    for field in ("filtered_mean", "filtered_cov", "predicted_mean", "predicted_cov", "log_likelihood"):
        torch.testing.assert_close(getattr(shared, field), getattr(seq, field), rtol=1e-12, atol=1e-12, msg=field)
