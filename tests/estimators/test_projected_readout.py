"""ProjectedReadout.marginal: the diagonal of the full moments, in bounded blocks, shared covariances not expanded."""

import pytest
import torch

from ldmfilter.estimators.projection import ProjectedReadout
from ldmfilter.gaussian import linalg

f64 = torch.float64


def _readout(D, K, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D, K, generator=g, dtype=f64))[0]
    R = torch.randn(K, K, generator=g, dtype=f64)
    return ProjectedReadout(
        basis, torch.randn(D, generator=g, dtype=f64), torch.rand(D, generator=g, dtype=f64),
        torch.randn(K, S, generator=g, dtype=f64), torch.randn(K, generator=g, dtype=f64), R @ R.mT,
    )


def _covs(*lead, S, seed=1):
    root = torch.randn(*lead, S, S, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return root @ root.mT


def _reference(readout, mean, cov):
    """Straight from the model: x ~ N(μ + B (H m + d), B (H P Hᵀ + R) Bᵀ + diag(r)), per row."""
    B, H = readout.basis, readout.weight
    y_cov = H @ cov @ H.mT + readout.noise_cov
    var = torch.einsum("dk,...kl,dl->...d", B, y_cov, B) + readout.residual_var
    return (mean @ H.mT + readout.bias) @ B.mT + readout.centre, var


@pytest.mark.parametrize("K,S", [(3, 5), (6, 4)])  # through Σ_y (K < S) or through G = B H
def test_marginal_equals_the_full_moments_in_any_block_size(monkeypatch, K, S):
    readout = _readout(30, K, S)
    mean, cov = torch.randn(4, 7, S, dtype=f64), _covs(4, 7, S=S)
    expected = _reference(readout, mean, cov)
    full_mean, full_cov = readout(mean, cov)
    for chunk in (None, 8 * S * S):  # default, and one output column per block
        monkeypatch.setattr(linalg, "QUADRATIC_CHUNK_BYTES", chunk or 64 * 2**20)
        got_mean, got_var = readout.marginal(mean, cov)
        torch.testing.assert_close(got_mean, expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_var, expected[1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_var, full_cov.diagonal(dim1=-2, dim2=-1), rtol=1e-12, atol=1e-12)


def test_shared_covariance_is_not_expanded():
    """A (T, S, S) covariance broadcast over series goes through ``H P Hᵀ + R`` once per step."""
    readout = _readout(30, 3, 4)  # K < S: through Σ_y, which must be formed on the distinct covariances only
    mean, shared = torch.randn(5, 7, 4, dtype=f64), _covs(7, S=4)
    expected = _reference(readout, mean, shared.expand(5, 7, 4, 4))
    shapes = []
    projected_cov = readout._projected_cov
    readout._projected_cov = lambda cov: shapes.append(tuple(cov.shape)) or projected_cov(cov)
    for cov in (shared.expand(5, 7, 4, 4), shared):  # a broadcast view, or fewer leading axes than the mean
        out_mean, var = readout.marginal(mean, cov)
        torch.testing.assert_close(out_mean, expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, expected[1], rtol=1e-12, atol=1e-12)
        assert var.shape == (5, 7, 30) and var.is_contiguous()
    assert shapes == [(1, 7, 4, 4), (7, 4, 4)]
