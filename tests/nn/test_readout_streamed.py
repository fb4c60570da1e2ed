"""The linear read-out fitted from targets streamed in blocks equals the one fitted on targets in memory."""

import pytest
import torch

from ldmfilter.nn import LinearReadout
from ldmfilter.nn.affine import reduce_affine, reduce_affine_streamed
from ldmfilter.nn.readout import _lead_mean

f64 = torch.float64


def _data(n=9, T=20, S=4, D=3, seed=0, missing=False):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, T, S, generator=g, dtype=f64)
    root = 0.3 * torch.randn(n, T, S, S, generator=g, dtype=f64)
    covs = root @ root.mT + 1e-3 * torch.eye(S, dtype=f64)
    targets = 0.5 + means @ torch.randn(S, D, generator=g, dtype=f64) + 0.2 * torch.randn(n, T, D, generator=g, dtype=f64)
    if missing:  # whole frames missing, as in data left on disk
        targets[1, 3:6] = float("nan")
        targets[4] = float("nan")
    return means, covs, targets


def _blocks(targets, size, seed):
    """A reader of (row indices, rows) blocks of the flattened targets, in a shuffled order."""
    flat = targets.reshape(-1, targets.shape[-1])
    order = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(seed))

    def read():
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            yield rows, flat[rows]

    return read


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("D,diagonal", [(3, False), (3, True), (70, True)])
def test_streamed_reduction_gives_the_in_memory_read_out(missing, D, diagonal):
    means, covs, targets = _data(D=D, seed=D, missing=missing)
    present = ~torch.isnan(targets).any(-1)
    cross = not diagonal or D <= 64
    streamed = reduce_affine_streamed(means, _blocks(targets, 17, D), D, present, cross)
    loaded = reduce_affine(means, targets, cross)
    assert streamed.missing == loaded.missing == missing
    torch.testing.assert_close(streamed.counts, loaded.counts)
    for state_cov in (None, covs):
        expected = LinearReadout.fit(means, targets, state_cov, diagonal=diagonal)
        mean_cov = None if state_cov is None else _lead_mean(state_cov)
        fitted = LinearReadout.from_problem(streamed, mean_cov, diagonal)
        for name in ("weight", "bias", "noise_cov"):
            value = getattr(expected, name)
            torch.testing.assert_close(getattr(fitted, name), value, rtol=1e-10, atol=1e-10 * float(value.abs().max()))


def test_lead_mean_of_a_broadcast_stack_reads_one_covariance():
    """A stride-0 leading axis repeats one covariance: 10¹⁰ copies must not be materialised."""
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    huge = cov.expand(10**5, 10**5, 2, 2)  # 3.2 TB if copied to float64
    torch.testing.assert_close(_lead_mean(huge), cov.to(f64), rtol=0, atol=0)
    per_step = torch.randn(7, 2, 2, dtype=torch.float32)
    mixed = per_step.expand(5, 7, 2, 2)  # (series, time): shared across series, not across time
    torch.testing.assert_close(_lead_mean(mixed), per_step.to(f64).mean(0), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("chunk_bytes", [1, 8 * 16 * 3, None])
def test_lead_mean_in_blocks_equals_the_mean_in_float64(chunk_bytes):
    _, covs, _ = _data(n=9, T=20, S=4)
    stacked = covs.to(torch.float32).transpose(0, 1).contiguous().transpose(0, 1)  # time-major storage, as the filter stacks it
    assert not stacked.is_contiguous()
    expected = stacked.to(f64).mean((0, 1))
    torch.testing.assert_close(_lead_mean(stacked, chunk_bytes), expected, rtol=1e-14, atol=1e-14)
