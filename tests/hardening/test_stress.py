"""Numerical stress: long float32 filtering with near-singular covariances.

The model: ``Q = 1e-8 I``, ``R = 1e-6 I``, a near-unit-root ``A`` (eigenvalues 0.99999, 0.9999,
0.999) whose third state is seen only through a combination with the second, observations with
an offset of 1e4 (so float32 resolves them to ~1e-3, the noise level), and a prior ``N(1e4, I)``.
The covariances then span ~1e-7 … 1 during the transient — more than float32's 1/eps — which
made the float32 filter lose positive semi-definiteness within 20 steps and diverge before these
tests (now the covariance update and the parallel scan work in float64).

Every path of :func:`ldmfilter.gaussian.kalman_filter` (shared covariance with steady state,
sequential per-series covariances, ``parallel=True``) and a fitted ``LDMFilter.filter`` must
return finite means, positive semi-definite covariances and a log-likelihood without NaN.  The
5,000-step versions run in the default suite; the 100,000-step ones are marked slow.  With
``-s`` each test prints a line of results (steps, dtype, smallest eigenvalue, largest |mean|,
wall time, largest deviation from the float64 filter) for ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import ldmfilter
from ldmfilter.gaussian import kalman_filter
from malformed import assert_finite

S, L, OFFSET = 3, 2, 1e4
A = [[0.99999, 1e-3, 0.0], [0.0, 0.9999, 1e-3], [0.0, 0.0, 0.999]]
H = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]


def model(dtype):
    """The near-singular model's parameters (A, Q, H, R, μ0, Σ0) in ``dtype``."""
    return (torch.tensor(A, dtype=dtype), 1e-8 * torch.eye(S, dtype=dtype), torch.tensor(H, dtype=dtype),
            1e-6 * torch.eye(L, dtype=dtype), torch.full((S,), OFFSET, dtype=dtype), torch.eye(S, dtype=dtype))


def simulate(steps: int, series: int = 2, seed: int = 0) -> torch.Tensor:
    """Observations (series, steps, L) in float64: the model's process plus the offset."""
    rng = np.random.default_rng(seed)
    noise = 1e-4 * rng.normal(size=(series, steps, S))
    x = np.zeros((series, S))
    states = np.empty((series, steps, S))
    transition = np.asarray(A)
    for t in range(steps):
        x = x @ transition.T + noise[:, t]
        states[:, t] = x
    z = states @ np.asarray(H).T + 1e-3 * rng.normal(size=(series, steps, L)) + OFFSET
    return torch.as_tensor(z)


def smallest_eigenvalue(cov: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(cov.detach().to(torch.float64)).min())


def check_and_report(label, result, steps, seconds, reference=None) -> dict:
    """Finite, PSD, no NaN log-likelihood; prints and returns the numbers of the report."""
    assert_finite(result.filtered_mean, "filtered mean")
    assert_finite(result.filtered_cov, "filtered covariance")
    assert not bool(torch.isnan(result.log_likelihood).any()), "log-likelihood holds NaN"
    cov = result.filtered_cov
    if result.shared_covariance:
        cov = cov[(0,) * (cov.ndim - 3)]
    smallest = smallest_eigenvalue(cov)
    largest = float(cov.abs().amax())
    assert smallest >= -1e-6 * largest, f"{label}: smallest eigenvalue {smallest:.3g}"
    numbers = {"path": label, "steps": steps, "dtype": str(result.filtered_mean.dtype).replace("torch.", ""),
               "min_eig": smallest, "max_abs_mean": float(result.filtered_mean.abs().max()), "seconds": seconds}
    if reference is not None:  # float64 filter of the same data: the float32 error
        scale = float(reference.filtered_cov.abs().amax())
        numbers["cov_error"] = float((cov.to(torch.float64) - reference.filtered_cov[(0,) * (cov.ndim - 2)]).abs().max() / scale) \
            if result.shared_covariance and reference.shared_covariance else float(
                (result.filtered_cov.to(torch.float64) - reference.filtered_cov).abs().max() / scale)
        numbers["mean_error"] = float((result.filtered_mean.to(torch.float64) - reference.filtered_mean).abs().max())
    print("STRESS", numbers)
    return numbers


def run_engine(path: str, steps: int):
    z = simulate(steps)
    mask = None
    if path == "sequential":  # a missing step in one series only: per-series covariances
        mask = torch.ones(z.shape[:2], dtype=torch.bool)
        mask[1, ::97] = False
    reference = kalman_filter(z, *model(torch.float64), mask=mask)
    start = time.perf_counter()
    result = kalman_filter(z.to(torch.float32), *model(torch.float32), mask=mask, parallel=path == "parallel")
    seconds = time.perf_counter() - start
    assert result.shared_covariance == (path == "shared")
    numbers = check_and_report(path, result, steps, seconds, reference)
    assert numbers["cov_error"] < 1e-2
    if path == "parallel":  # computed in float64 inside: only the data's float32 rounding remains
        assert numbers["mean_error"] < 1.0
    # The float32 means of the other paths drift by up to ~5e3 along the direction only the 1e-3
    # coupling observes (closed-loop eigenvalue within ~1e-7 of 1 integrates float32 rounding of
    # |m| ~ 1e4): a precision limit, reported in benchmarks/results/reliability.md, not asserted.


@pytest.mark.parametrize("path", ["shared", "sequential", "parallel"])
def test_float32_near_singular_filter_stays_psd(path):
    run_engine(path, 5_000)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["shared", "sequential", "parallel"])
def test_float32_near_singular_filter_stays_psd_for_100k_steps(path):
    run_engine(path, 100_000)


def fitted_ldm() -> ldmfilter.LDMFilter:
    """A tiny float32 LDMFilter fitted on the offset process, then given the near-singular dynamics."""
    z = simulate(400, series=1, seed=1)[0].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_ = ldmfilter.LDMFilter(state_dim=S, latent_dim=L, hidden=(8,), max_epochs=1, verbose=False,
                                     trainer_kwargs={"max_steps": 3}).fit(z)
    dyn = model_.model_.dynamics
    with torch.no_grad():  # R = exp(s) I = 1e-6 I, Q = exp(s) diag(exp(q)) = 1e-8 I, near-unit-root A
        dyn.log_scale.fill_(np.log(1e-6))
        dyn.log_process_noise.fill_(np.log(1e-2))
        dyn.transition.copy_(torch.tensor(A))
    return model_


def run_ldm(steps: int):
    model_ = fitted_ldm()
    index = pd.date_range("2024-01-01", periods=steps, freq="s")
    X = pd.DataFrame(simulate(steps, series=1, seed=2)[0].numpy().copy(), index=index, columns=["u", "v"])
    start = time.perf_counter()
    result = model_.filter(X)
    seconds = time.perf_counter() - start
    for space in ("state", "observations"):
        assert_finite(result.space(space).mean, f"{space} mean")
        assert_finite(result.space(space).cov, f"{space} covariance")
    assert not np.isnan(result.log_likelihood).any()
    smallest = smallest_eigenvalue(torch.as_tensor(result.cov))
    assert smallest >= -1e-6 * float(np.abs(result.cov).max())
    print("STRESS", {"path": "LDMFilter.filter", "steps": steps, "dtype": str(result.mean.dtype), "min_eig": smallest,
                     "max_abs_mean": float(np.abs(result.mean).max()), "seconds": seconds})


def test_ldm_filter_on_a_long_near_singular_series():
    run_ldm(5_000)


@pytest.mark.slow
def test_ldm_filter_on_a_100k_step_near_singular_series():
    run_ldm(100_000)
