"""Gradients of the Kalman filter and smoother: finite differences (gradcheck, float64) and NaN safety.

Covariances are parametrised as ``M Mᵀ + εI`` inside the checked function so that finite-difference
perturbations stay symmetric positive definite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from ldmfilter.gaussian import kalman_filter, kalman_smoother
from ldmfilter.gaussian.kalman import sequential_filter
from ldmfilter.gaussian.shared import shared_covariance_filter
from ldmfilter.gaussian.validation import prepare_linear_model
from reference import random_model, simulate

S, L, T, B = 3, 2, 4, 2
EPS = 1e-2
PATHS = ["sequential", "shared", "parallel"]


def _spd(M):
    return M @ M.mT + EPS * torch.eye(M.shape[-1], dtype=M.dtype)


def _leaves(seed=0):
    """Differentiable leaves: A, M_Q, H, M_R, m0, M_P0, c, observations (float64, requires_grad)."""
    rng = np.random.default_rng(seed)
    params = random_model(rng, S, L, offset="static")
    z = simulate(rng, params, T, batch=(B,))
    chol = np.linalg.cholesky
    values = [params["A"], chol(params["Q"]), params["H"], chol(params["R"]), params["m0"], chol(params["P0"]),
              params["c"], z]
    return [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]


def _mask(path):
    """One missing entry (and a fully missing step): shared by the batch for the shared path, else per series."""
    if path == "shared":
        mask = torch.ones(T, L, dtype=torch.bool)
        mask[1, 0] = False
        mask[2] = False
        return mask
    mask = torch.ones(B, T, L, dtype=torch.bool)
    mask[0, 1, 0] = False
    mask[1, 2] = False
    return mask


def _run(path, A, Mq, H, Mr, m0, Mp, c, z, mask):
    args = (z, A, _spd(Mq), H, _spd(Mr), m0, _spd(Mp), c, mask)
    if path == "parallel":
        return kalman_filter(*args[:8], mask=mask, parallel=True)
    model = prepare_linear_model(*args)
    if path == "shared":
        assert model.covariance_is_shared
        return shared_covariance_filter(model)
    return sequential_filter(model)


@pytest.mark.parametrize("path", PATHS)
def test_gradcheck_filter(path):
    """d(total log-likelihood) and d(filtered means) w.r.t. A, Q, H, R, m0, P0, offset and observations match
    finite differences, with a missing entry and a missing step."""
    leaves = _leaves()
    mask = _mask(path)

    def f(*xs):
        out = _run(path, *xs, mask)
        return out.log_likelihood.sum(), out.filtered_mean

    assert gradcheck(f, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_filter_time_varying_offset():
    """Gradient w.r.t. a per-series time-varying offset (B, T, S)."""
    leaves = _leaves()
    leaves[6] = torch.randn(B, T, S, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                            requires_grad=True)
    mask = _mask("sequential")

    def f(*xs):
        out = _run("sequential", *xs, mask)
        return out.log_likelihood.sum(), out.filtered_mean

    assert gradcheck(f, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["sequential", "shared"])
def test_gradcheck_smoother(path):
    """Smoothed means, covariances and lag-one covariances are differentiable w.r.t. every input."""
    leaves = _leaves(seed=1)
    mask = _mask(path)

    def f(A, Mq, H, Mr, m0, Mp, c, z):
        out = _run(path, A, Mq, H, Mr, m0, Mp, c, z, mask)
        sm = kalman_smoother(out, A, _spd(Mq))
        return sm.smoothed_mean, sm.smoothed_cov, sm.lag_one_cov

    assert gradcheck(f, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["auto_shared", "auto_per_series", "parallel"])
def test_nan_observations_give_finite_gradients(path):
    """NaN (missing) observations give finite gradients everywhere, exactly zero at the missing entries."""
    A, Mq, H, Mr, m0, Mp, c, z = _leaves(seed=2)
    with torch.no_grad():
        if path == "auto_shared":
            z[:, 1, 0] = float("nan")
            z[:, 3] = float("nan")
        else:
            z[0, 1, 0] = float("nan")
            z[1, 0] = float("nan")
    out = kalman_filter(z, A, _spd(Mq), H, _spd(Mr), m0, _spd(Mp), c, parallel=path == "parallel")
    assert out.shared_covariance == (path == "auto_shared")
    sm = kalman_smoother(out, A, _spd(Mq))
    loss = out.log_likelihood.sum() + out.filtered_mean.square().sum() + sm.smoothed_mean.sum() + sm.smoothed_cov.sum()
    assert torch.isfinite(loss)
    loss.backward()
    for leaf in (A, Mq, H, Mr, m0, Mp, c, z):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    missing = torch.isnan(z.detach())
    assert (z.grad[missing] == 0).all()
    assert (z.grad[~missing] != 0).any()


def test_masked_entries_get_zero_gradient():
    """Entries hidden by ``mask`` (finite values) do not influence the outputs: zero gradient."""
    A, Mq, H, Mr, m0, Mp, c, z = _leaves(seed=3)
    mask = _mask("sequential")
    out = kalman_filter(z, A, _spd(Mq), H, _spd(Mr), m0, _spd(Mp), c, mask=mask)
    (out.log_likelihood.sum() + out.filtered_mean.sum()).backward()
    assert (z.grad[~mask] == 0).all()
    assert torch.isfinite(z.grad).all()
