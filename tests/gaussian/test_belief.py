"""GaussianBelief: closed-form marginal summaries against scipy, and shape checking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from ldmfilter.gaussian import GaussianBelief
from reference import random_spd


def _belief(batch=(2, 3), dim=4, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(batch + (dim,))
    cov = random_spd(rng, dim, batch=batch)
    return GaussianBelief(torch.as_tensor(mean, dtype=dtype), torch.as_tensor(cov, dtype=dtype)), mean, cov


def test_variance_and_std():
    """variance is the diagonal of cov, std its square root."""
    belief, mean, cov = _belief()
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    np.testing.assert_allclose(belief.variance.numpy(), var, rtol=1e-15)
    np.testing.assert_allclose(belief.std.numpy(), np.sqrt(var), rtol=1e-15)


@pytest.mark.parametrize("q", [[0.05, 0.5, 0.95], [0.001, 0.3], [0.999]])
def test_quantiles_match_scipy(q):
    """quantiles(q) has shape (len(q), *batch, dim) and equals scipy.stats.norm.ppf of each marginal."""
    belief, mean, cov = _belief()
    got = belief.quantiles(q)
    assert got.shape == (len(q),) + mean.shape
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    expected = norm.ppf(np.asarray(q)[:, None, None, None], loc=mean, scale=std)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_scalar_quantile():
    """A scalar q gives one quantile per marginal (no leading axis); q = 0.5 is the mean."""
    belief, mean, _ = _belief()
    got = belief.quantiles(0.5)
    assert got.shape == mean.shape
    np.testing.assert_allclose(got.numpy(), mean, rtol=1e-15, atol=1e-15)


def test_quantiles_accept_tensor():
    """q may be a float64 tensor of probabilities."""
    belief, _, _ = _belief()
    q = torch.tensor([0.1, 0.9], dtype=torch.float64)
    torch.testing.assert_close(belief.quantiles(q), belief.quantiles([0.1, 0.9]))


@pytest.mark.parametrize("coverage", [0.5, 0.9, 0.99])
def test_interval_matches_scipy(coverage):
    """interval(c) is the central interval of each marginal: scipy.stats.norm.interval."""
    belief, mean, cov = _belief()
    lower, upper = belief.interval(coverage)
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    lo, hi = norm.interval(coverage, loc=mean, scale=std)
    assert lower.shape == upper.shape == mean.shape
    np.testing.assert_allclose(lower.numpy(), lo, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(upper.numpy(), hi, rtol=1e-12, atol=1e-12)


def test_float32_quantiles():
    """float32 beliefs give float32 quantiles close to scipy."""
    belief, mean, cov = _belief(dtype=torch.float32)
    got = belief.quantiles([0.1, 0.9])
    assert got.dtype == torch.float32
    std = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    np.testing.assert_allclose(got.numpy(), norm.ppf(np.array([0.1, 0.9])[:, None, None, None], mean, std),
                               rtol=1e-5, atol=1e-5)


def test_log_prob_matches_scipy():
    """log_prob equals scipy.stats.multivariate_normal.logpdf for every batch entry."""
    belief, mean, cov = _belief()
    rng = np.random.default_rng(5)
    x = rng.standard_normal(mean.shape)
    got = belief.log_prob(torch.as_tensor(x))
    assert got.shape == mean.shape[:-1]
    for index in np.ndindex(*mean.shape[:-1]):
        expected = multivariate_normal(mean[index], cov[index]).logpdf(x[index])
        np.testing.assert_allclose(got[index].item(), expected, rtol=1e-12, atol=1e-12)


def test_log_prob_broadcasts_value():
    """A value with extra leading axes is broadcast against the belief's batch axes."""
    belief, mean, cov = _belief(batch=(3,), dim=2)
    x = torch.randn(5, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = belief.log_prob(x)
    assert got.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            expected = multivariate_normal(mean[j], cov[j]).logpdf(x[i, j].numpy())
            np.testing.assert_allclose(got[i, j].item(), expected, rtol=1e-12)


def test_unbatched_belief():
    """A single belief (no batch axes) works: quantiles (len(q), dim), log_prob a scalar."""
    belief, mean, cov = _belief(batch=(), dim=3)
    assert belief.quantiles([0.2, 0.8]).shape == (2, 3)
    x = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(belief.log_prob(torch.as_tensor(x)).item(), multivariate_normal(mean, cov).logpdf(x),
                               rtol=1e-12)


@pytest.mark.parametrize("mean_shape, cov_shape", [
    ((2, 3), (2, 3, 4)),  # cov not square
    ((2, 3), (2, 4, 4)),  # dim mismatch
    ((2, 3), (5, 3, 3)),  # batch mismatch
    ((3,), (2, 3, 3)),  # extra cov batch axis
    ((), (1, 1)),  # scalar mean
])
def test_shape_errors(mean_shape, cov_shape):
    """Mismatched mean/cov shapes are a ValueError quoting both shapes."""
    with pytest.raises(ValueError) as info:
        GaussianBelief(torch.zeros(mean_shape), torch.zeros(cov_shape))
    assert str(tuple(cov_shape)) in str(info.value) and str(tuple(mean_shape)) in str(info.value)


@pytest.mark.parametrize("q", [0.0, 1.0, [0.5, 1.2], [-0.1], [[0.1, 0.2]]])
def test_bad_probabilities(q):
    belief, _, _ = _belief()
    with pytest.raises(ValueError, match="q"):
        belief.quantiles(q)


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5, -0.2])
def test_bad_coverage(coverage):
    belief, _, _ = _belief()
    with pytest.raises(ValueError, match="coverage"):
        belief.interval(coverage)


def test_log_prob_wrong_dim():
    belief, _, _ = _belief(dim=4)
    with pytest.raises(ValueError) as info:
        belief.log_prob(torch.zeros(2, 3, 5, dtype=torch.float64))
    assert "(2, 3, 5)" in str(info.value)
