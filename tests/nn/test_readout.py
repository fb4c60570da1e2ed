"""Linear read-out: exact moments, recovered parameters and calibrated intervals."""

import numpy as np
import pytest
import torch

from ldmfilter.gaussian import propagate
from ldmfilter.nn import LinearReadout, MLPReadout, fit_affine, readout_from_spec


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


# ------------------------------------------------------------------------------ missing targets, penalty, marginals


def test_missing_target_rows_and_values_are_left_out():
    states, targets, _ = _data(n=500)
    with_rows = targets.clone()
    with_rows[::7] = float("nan")  # whole rows missing: the fit on the complete rows
    torch.testing.assert_close(fit_affine(states, with_rows), fit_affine(states[~torch.isnan(with_rows[:, 0])], targets[~torch.isnan(with_rows[:, 0])]))
    with_values = targets.clone()
    with_values[::5, 1] = float("nan")  # one column missing more often: each column on its own rows
    coef = fit_affine(states, with_values)
    keep = ~torch.isnan(with_values[:, 1])
    torch.testing.assert_close(coef[:, :1], fit_affine(states, targets[:, :1]))
    torch.testing.assert_close(coef[:, 1:], fit_affine(states[keep], targets[keep, 1:]))
    readout = LinearReadout.fit(states, with_values)
    assert torch.isfinite(readout.noise_cov).all()


def test_marginal_is_the_diagonal_of_the_full_moments():
    states, targets, _ = _data(n=300)
    readout = LinearReadout.fit(states, targets, 0.1 * torch.eye(3, dtype=torch.float64).expand(300, 3, 3))
    mean = torch.randn(4, 3, dtype=torch.float64)
    root = torch.randn(4, 3, 3, dtype=torch.float64)
    cov = root @ root.mT
    full_mean, full_cov = readout(mean, cov)
    marginal_mean, marginal_var = readout.marginal(mean, cov)
    torch.testing.assert_close(marginal_mean, full_mean)
    torch.testing.assert_close(marginal_var, full_cov.diagonal(dim1=-2, dim2=-1))


def test_uncertain_state_directions_get_small_weights_and_intervals_stay_calibrated():
    """A state direction with tiny mean spread but large belief variance must not be amplified."""
    g = torch.Generator().manual_seed(3)
    n = 20000
    signal = torch.randn(n, generator=g, dtype=torch.float64)
    nuisance = 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)  # barely varies, poorly known
    means = torch.stack([signal, nuisance], 1)
    cov = torch.diag(torch.tensor([0.01, 1.0], dtype=torch.float64)).expand(n, 2, 2)
    targets = (2 * signal + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)).unsqueeze(1)
    targets[:, 0] += 50 * nuisance  # a spurious fit on the nuisance would need a weight of 50
    readout = LinearReadout.fit(means[:15000], targets[:15000], cov[:15000])
    assert abs(float(readout.weight[0, 1])) < 5
    mean, out_cov = readout(means[15000:], cov[15000:])
    z = ((targets[15000:] - mean) / out_cov.diagonal(dim1=-2, dim2=-1).sqrt()).abs()
    assert abs(float((z <= 1.6449).double().mean()) - 0.9) < 0.03


def test_mlp_readout_moments_come_from_the_moment_rule():
    readout = MLPReadout(3, 2, hidden=(8,)).to(torch.float64)
    mean = torch.randn(5, 3, dtype=torch.float64)
    root = 0.3 * torch.randn(5, 3, 3, dtype=torch.float64)
    cov = root @ root.mT + 0.01 * torch.eye(3, dtype=torch.float64)
    out_mean, out_cov = readout(mean, cov)
    expected = propagate(readout._mean_function, mean, cov, method="unscented")
    torch.testing.assert_close(out_mean, expected.mean)
    torch.testing.assert_close(out_cov, expected.cov + torch.diag(readout.log_var.exp()))
    marginal_mean, marginal_var = readout.marginal(mean, cov)
    torch.testing.assert_close(marginal_var, out_cov.diagonal(dim1=-2, dim2=-1))


def test_mlp_readout_fits_a_nonlinear_map_with_calibrated_intervals():
    g = torch.Generator().manual_seed(4)
    n = 6000
    means = torch.randn(n, 2, generator=g, dtype=torch.float64)
    P = 0.05 * torch.eye(2, dtype=torch.float64)
    hidden = means + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P).mT
    targets = torch.stack([torch.sin(2 * hidden[:, 0]), hidden[:, 0] * hidden[:, 1]], 1)
    targets = targets + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    readout = MLPReadout.fit(means[:5000], targets[:5000], P.expand(5000, 2, 2), hidden=(32,), steps=600, batch_size=1000)
    mean, var = readout.marginal(means[5000:], P.expand(1000, 2, 2))
    residual = targets[5000:] - mean
    linear = LinearReadout.fit(means[:5000], targets[:5000])
    assert float((residual**2).mean()) < 0.5 * float(((targets[5000:] - linear(means[5000:], P.expand(1000, 2, 2))[0]) ** 2).mean())
    coverage = float(((residual / var.sqrt()).abs() <= 1.6449).double().mean())
    assert abs(coverage - 0.9) < 0.04


def test_readouts_rebuild_from_their_spec():
    states, targets, _ = _data(n=300)
    cov = 0.1 * torch.eye(3, dtype=torch.float64).expand(300, 3, 3)
    for fitted in (LinearReadout.fit(states, targets, cov), MLPReadout.fit(states, targets, cov, hidden=(4,), steps=5)):
        rebuilt = readout_from_spec(fitted.spec())
        rebuilt.load_state_dict(fitted.state_dict())
        for a, b in zip(fitted(states[:3], cov[:3]), rebuilt(states[:3], cov[:3])):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="kind"):
        readout_from_spec({"kind": "spline", "state_dim": 2, "target_dim": 1})
