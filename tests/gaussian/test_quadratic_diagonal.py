"""quadratic_diagonal: diag(W P Wᵀ) in bounded blocks, and shared covariances evaluated once."""

import pytest
import torch

from ldmfilter.gaussian import linalg
from ldmfilter.gaussian.linalg import broadcast_compact, quadratic_diagonal


def _stack(lead, S, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(*lead, S, S, generator=g, dtype=dtype)
    return root @ root.mT


def _reference(W, P):
    return torch.stack([torch.diagonal(W @ p @ W.mT) for p in P.reshape(-1, *P.shape[-2:])]).reshape(P.shape[:-2] + W.shape[:1])


@pytest.mark.parametrize("chunk_bytes", [None, 1, 8 * 7 * 3, 8 * 9 * 9 * 2])
def test_equals_the_diagonal_of_the_full_product_in_any_block_size(chunk_bytes):
    """1 byte: blocks of one row and one output column; the others split rows and columns unevenly."""
    W = torch.randn(7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    P = _stack((3, 5), 9)
    torch.testing.assert_close(quadratic_diagonal(W, P, chunk_bytes), _reference(W, P), rtol=1e-13, atol=0)
    torch.testing.assert_close(quadratic_diagonal(W, P, chunk_bytes), ((W @ P) * W).sum(-1), rtol=1e-13, atol=0)


def test_module_constant_bounds_the_blocks(monkeypatch):
    W = torch.randn(11, 4, dtype=torch.float64)
    P = _stack((40,), 4)
    expected = quadratic_diagonal(W, P)
    monkeypatch.setattr(linalg, "QUADRATIC_CHUNK_BYTES", 8 * 3)  # 1 column × 3 rows per block
    torch.testing.assert_close(quadratic_diagonal(W, P), expected, rtol=1e-14, atol=0)


def test_shared_covariance_is_evaluated_once_not_expanded():
    """A covariance broadcast over 10⁹ series: expanding it (or the result) would not fit in memory."""
    W = torch.randn(576, 6, dtype=torch.float64)
    P = _stack((3,), 6)
    shared = P.expand(10**9, 3, 6, 6)
    assert broadcast_compact(shared).shape == (1, 3, 6, 6)
    out = quadratic_diagonal(W, shared)
    assert out.shape == (10**9, 3, 576) and out.stride()[0] == 0
    torch.testing.assert_close(out[123_456_789], _reference(W, P), rtol=1e-13, atol=0)


def test_float32_and_bad_shapes():
    W = torch.randn(5, 3)
    P = _stack((4,), 3, dtype=torch.float32)
    out = quadratic_diagonal(W, P)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(W, P), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"weight \(D, S\) and cov"):
        quadratic_diagonal(W, _stack((4,), 2))
