"""Linear read-out: exact moments, recovered parameters and calibrated intervals."""

import numpy as np
import torch

from ldmfilter.nn import LinearReadout


def _data(n=4000, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n, 3, generator=g, dtype=torch.float64)
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]], dtype=torch.float64)
    targets = states @ weight.T + torch.tensor([0.5, -1.0], dtype=torch.float64)
    return states, targets + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), weight


def test_recovers_weights_bias_and_noise():
    states, targets, weight = _data()
    readout = LinearReadout.fit(states, targets)
    torch.testing.assert_close(readout.weight, weight, atol=0.03, rtol=0)
    torch.testing.assert_close(readout.bias, torch.tensor([0.5, -1.0], dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(readout.noise_cov, 0.09 * torch.eye(2, dtype=torch.float64), atol=0.01, rtol=0)


def test_moments_are_the_exact_linear_push_forward():
    states, targets, _ = _data(n=200)
    readout = LinearReadout.fit(states, targets)
    mean = torch.randn(5, 3, dtype=torch.float64)
    root = torch.randn(5, 3, 3, dtype=torch.float64)
    cov = root @ root.mT
    out_mean, out_cov = readout(mean, cov)
    torch.testing.assert_close(out_mean, mean @ readout.weight.T + readout.bias)
    torch.testing.assert_close(out_cov, readout.weight @ cov @ readout.weight.T + readout.noise_cov)


def test_state_uncertainty_is_not_counted_twice_and_intervals_are_calibrated():
    """Targets = W h + noise with h only known as N(m, P): 90% intervals cover about 90%."""
    g = torch.Generator().manual_seed(1)
    n, P = 40000, 0.2 * torch.eye(3, dtype=torch.float64)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64)
    hidden = means + torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P).T
    weight = torch.tensor([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    targets = hidden @ weight.T + 0.2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    covs = P.expand(n, 3, 3)
    readout = LinearReadout.fit(means[:30000], targets[:30000], covs[:30000])
    torch.testing.assert_close(readout.noise_cov, 0.04 * torch.eye(2, dtype=torch.float64), atol=0.03, rtol=0)
    mean, cov = readout(means[30000:], covs[30000:])
    z = ((targets[30000:] - mean) / cov.diagonal(dim1=-2, dim2=-1).sqrt()).abs()
    coverage = float((z <= 1.6449).double().mean())
    assert abs(coverage - 0.9) < 0.015
    assert np.all(np.linalg.eigvalsh(readout.noise_cov.numpy()) > 0)
