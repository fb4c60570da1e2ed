"""The Kalman filter and RTS smoother against independent implementations: pykalman and filterpy.

Step-0 conventions: pykalman's ``initial_state_mean`` is the prior of the state at step 0, the same
as ours.  filterpy's ``KalmanFilter`` runs predict-then-update, so its first step is a bare
``update`` from the prior (no ``predict``).  pykalman's time-varying ``transition_matrices[t]`` and
filterpy's ``rts_smoother`` ``Fs[t]`` are the transition from ``t`` to ``t + 1``, i.e. our entry
``t + 1`` (our entry 0 is unused).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from filterpy.kalman import KalmanFilter as FilterpyKF
from filterpy.kalman import predict as fp_predict
from filterpy.kalman import rts_smoother as fp_rts_smoother
from filterpy.kalman import update as fp_update
from pykalman import KalmanFilter as PykalmanKF
from pykalman.standard import _filter, _smooth, _smooth_pair
from scipy.stats import multivariate_normal

from ldmfilter.gaussian import kalman_filter, kalman_smoother
from reference import random_model, simulate, torch_kwargs

TOL = dict(rtol=1e-8, atol=1e-8)
S, L, T = 3, 2, 10


def _pykalman(params, T):
    """A pykalman filter for ``params`` (our time-varying convention mapped onto pykalman's)."""
    A, Q, c = params["A"], params["Q"], params["c"]
    tv = np.ndim(A) == 3
    return PykalmanKF(
        transition_matrices=A[1:] if tv else A,
        observation_matrices=params["H"],
        transition_covariance=Q[1:] if np.ndim(Q) == 3 else Q,
        observation_covariance=params["R"],
        transition_offsets=None if c is None else (c[1:] if np.ndim(c) == 2 else c),
        initial_state_mean=params["m0"],
        initial_state_covariance=params["P0"],
        n_dim_state=S,
        n_dim_obs=L,
    )


def _ours(params, z, mask=None):
    kwargs = torch_kwargs(params)
    out = kalman_filter(torch.as_tensor(z), **kwargs, mask=None if mask is None else torch.as_tensor(mask))
    sm = kalman_smoother(out, kwargs["transition_matrix"], kwargs["transition_cov"])
    return out, sm


def _time_varying_model(rng, offset):
    """Time-varying A, H and Q (no batch axes) with a static R, which pykalman supports."""
    params = random_model(rng, S, L, steps=T, time_varying=True, offset=offset)
    params["R"] = params["R"][0]
    return params


MODELS = ["static", "static_offset", "time_varying", "time_varying_offset"]


def _model(name, seed):
    rng = np.random.default_rng(seed)
    if name.startswith("static"):
        params = random_model(rng, S, L, offset="static" if name.endswith("offset") else None)
    else:
        params = _time_varying_model(rng, "time_varying" if name.endswith("offset") else None)
    return rng, params


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("missing", [False, True])
def test_against_pykalman_filter_smooth_loglikelihood(name, missing):
    """filter, smooth, loglikelihood and the lag-one covariances of pykalman (masked array = missing step)."""
    rng, params = _model(name, 11)
    z = simulate(rng, params, T)
    kf = _pykalman(params, T)
    data = z
    if missing:
        z = z.copy()
        z[[0, 4, 5]] = np.nan  # pykalman only drops whole steps
        data = np.ma.masked_invalid(z)
    out, sm = _ours(params, z)
    fm, fc = kf.filter(data)
    np.testing.assert_allclose(out.filtered_mean.numpy(), fm, **TOL)
    np.testing.assert_allclose(out.filtered_cov.numpy(), fc, **TOL)
    np.testing.assert_allclose(out.log_likelihood.sum().item(), kf.loglikelihood(data), **TOL)
    smm, smc = kf.smooth(data)
    np.testing.assert_allclose(sm.smoothed_mean.numpy(), smm, **TOL)
    np.testing.assert_allclose(sm.smoothed_cov.numpy(), smc, **TOL)
    np.testing.assert_allclose(sm.lag_one_cov.numpy(), _pykalman_lag_one(kf, data), **TOL)


def _pykalman_lag_one(kf, data):
    """pykalman's lag-one smoothed covariances, ``Cov(x_{t+1}, x_t | all)`` for ``t = 0..T-2``."""
    A, b, Q, H, d, R, m0, P0 = kf._initialize_parameters()
    pm, pc, _, fm, fc = _filter(A, H, Q, R, b, d, m0, P0, kf._parse_observations(data))
    _, smc, gains = _smooth(A, fm, fc, pm, pc)
    return _smooth_pair(smc, gains)[1:]  # pykalman's entry t is Cov(x_t, x_{t-1})


@pytest.mark.parametrize("name", MODELS)
def test_against_pykalman_filter_update(name):
    """Step by step with pykalman's ``filter_update``: step 0 is an update of the prior (identity, zero-noise
    predict), later steps predict with our entry t (pykalman index t-1) and update."""
    rng, params = _model(name, 12)
    z = simulate(rng, params, T)
    z[3] = np.nan
    out, _ = _ours(params, z)
    kf = _pykalman(params, T)
    A, Q, H, c = params["A"], params["Q"], params["H"], params["c"]

    def at(x, t, core):
        return None if x is None else (x[t] if np.ndim(x) == core + 1 else x)

    mean, cov = params["m0"], params["P0"]
    for t in range(T):
        obs = None if np.isnan(z[t]).any() else z[t]
        if t == 0:
            mean, cov = kf.filter_update(mean, cov, obs, transition_matrix=np.eye(S),
                                         transition_covariance=np.zeros((S, S)), transition_offset=np.zeros(S),
                                         observation_matrix=at(H, t, 2))
        else:
            mean, cov = kf.filter_update(mean, cov, obs, transition_matrix=at(A, t, 2),
                                         transition_covariance=at(Q, t, 2),
                                         transition_offset=np.zeros(S) if c is None else at(c, t, 1),
                                         observation_matrix=at(H, t, 2))
        np.testing.assert_allclose(out.filtered_mean[t].numpy(), mean, **TOL)
        np.testing.assert_allclose(out.filtered_cov[t].numpy(), cov, **TOL)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("missing", [False, True])
def test_against_filterpy_kalman_filter(name, missing):
    """filterpy's ``KalmanFilter`` (update at step 0, then predict/update; ``update(None)`` when missing),
    per-step log-likelihoods, and ``rts_smoother``."""
    rng, params = _model(name, 13)
    z = simulate(rng, params, T)
    if missing:
        z[[2, 7]] = np.nan
    out, sm = _ours(params, z)
    A, Q, H, R, c = (params[k] for k in ("A", "Q", "H", "R", "c"))

    def at(x, t, core):
        return None if x is None else (x[t] if np.ndim(x) == core + 1 else x)

    kf = FilterpyKF(dim_x=S, dim_z=L)
    kf.x, kf.P, kf.R = params["m0"].copy(), params["P0"].copy(), R.copy()
    means, covs, logliks = [], [], []
    for t in range(T):
        if t > 0:
            kf.F, kf.Q = at(A, t, 2), at(Q, t, 2)
            kf.predict(u=None if c is None else at(c, t, 1), B=np.eye(S))
        kf.H = at(H, t, 2)
        if np.isnan(z[t]).any():
            kf.update(None)
            logliks.append(0.0)
        else:
            kf.update(z[t])
            logliks.append(kf.log_likelihood)
        means.append(kf.x.copy())
        covs.append(kf.P.copy())
    np.testing.assert_allclose(out.filtered_mean.numpy(), np.array(means), **TOL)
    np.testing.assert_allclose(out.filtered_cov.numpy(), np.array(covs), **TOL)
    np.testing.assert_allclose(out.log_likelihood.numpy(), np.array(logliks), **TOL)
    if c is None:  # filterpy's RTS smoother has no transition offsets
        # filterpy's rts_smoother uses Fs[k] for the transition k -> k+1, i.e. our entry k+1 (last one unused)
        Fs = np.roll(A, -1, axis=0) if np.ndim(A) == 3 else np.repeat(A[None], T, 0)
        Qs = np.roll(Q, -1, axis=0) if np.ndim(Q) == 3 else np.repeat(Q[None], T, 0)
        smm, smc, _, _ = fp_rts_smoother(np.array(means), np.array(covs), Fs, Qs)
        np.testing.assert_allclose(sm.smoothed_mean.numpy(), smm, **TOL)
        np.testing.assert_allclose(sm.smoothed_cov.numpy(), smc, **TOL)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_partial_missing_against_filterpy_reduced_update(seed):
    """A partially missing step equals filterpy's functional update with the observed rows of H and R only;
    the per-step log-likelihood is the density of the observed innovation components."""
    rng = np.random.default_rng(seed)
    S_, L_ = 3, 3
    params = random_model(rng, S_, L_)
    z = simulate(rng, params, T)
    observed = rng.random((T, L_)) > 0.35
    observed[1] = [True, False, True]
    observed[2] = False
    z_nan = np.where(observed, z, np.nan)
    out = kalman_filter(torch.as_tensor(z_nan), **torch_kwargs(params))
    A, Q, H, R = (params[k] for k in ("A", "Q", "H", "R"))
    x, P = params["m0"].copy(), params["P0"].copy()
    for t in range(T):
        if t > 0:
            x, P = fp_predict(x, P, F=A, Q=Q)
        keep = observed[t]
        loglik = 0.0
        if keep.any():
            H_t, R_t = H[keep], R[np.ix_(keep, keep)]
            x_prior = x
            x, P, y, _, S_e, _ = fp_update(x, P, z[t, keep], R_t, H_t, return_all=True)
            loglik = multivariate_normal(np.zeros(keep.sum()), S_e).logpdf(z[t, keep] - H_t @ x_prior)
        np.testing.assert_allclose(out.filtered_mean[t].numpy(), x, **TOL)
        np.testing.assert_allclose(out.filtered_cov[t].numpy(), P, **TOL)
        np.testing.assert_allclose(out.log_likelihood[t].item(), loglik, **TOL)


def test_batched_against_pykalman_per_series():
    """A batch of series filtered at once equals pykalman run on each series separately."""
    rng, params = _model("static_offset", 31)
    z = simulate(rng, params, T, batch=(4,))
    z[1, 3] = np.nan
    z[2, 0] = np.nan
    out, sm = _ours(params, z)
    kf = _pykalman(params, T)
    for i in range(4):
        data = np.ma.masked_invalid(z[i])
        fm, fc = kf.filter(data)
        smm, smc = kf.smooth(data)
        np.testing.assert_allclose(out.filtered_mean[i].numpy(), fm, **TOL)
        np.testing.assert_allclose(out.filtered_cov[i].numpy(), fc, **TOL)
        np.testing.assert_allclose(out.log_likelihood[i].sum().item(), kf.loglikelihood(data), **TOL)
        np.testing.assert_allclose(sm.smoothed_mean[i].numpy(), smm, **TOL)
        np.testing.assert_allclose(sm.smoothed_cov[i].numpy(), smc, **TOL)
