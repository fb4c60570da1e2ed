"""``DiskWindows`` serves the items of ``SequenceWindows``, in the same order, reading one window per item."""

import numpy as np
import pytest
import torch

from ldmfilter.training.data import SequenceDataModule, SequenceWindows
from ldmfilter.training.disk_windows import DiskWindows


@pytest.mark.parametrize("window, stride", [(None, None), (5, None), (6, 2), (7, 3)])
@pytest.mark.parametrize("with_controls", [False, True])
def test_items_and_order_equal_sequence_windows(window, stride, with_controls):
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(3, 17, 2, 2))
    mask = torch.as_tensor(rng.random((3, 17)) > 0.2)
    controls = torch.as_tensor(rng.normal(size=(3, 17, 1))) if with_controls else None
    reads = []

    def read(series, start, stop):
        reads.append((series, start, stop))
        return stored[series, start:stop]

    disk = DiskWindows(read, mask, window, stride, torch.float32, controls)
    memory = SequenceWindows(torch.as_tensor(stored, dtype=torch.float32), mask, window, stride, controls)
    assert len(disk) == len(memory) and disk.starts == memory.starts
    for k in range(len(memory)):
        for a, b in zip(disk[k], memory[k]):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        start = memory.starts[k % len(memory.starts)]
        assert reads[-1] == (k // len(memory.starts), start, start + memory.window)  # that window only


def test_data_module_serves_the_same_batches():
    stored = np.random.default_rng(1).normal(size=(5, 12, 3))
    mask = torch.ones(5, 12, dtype=torch.bool)
    disk = DiskWindows(lambda i, a, b: stored[i, a:b], mask, 4, 2, torch.float64)
    on_disk = SequenceDataModule(None, batch_size=4, seed=3, windows=disk).train_dataloader()
    in_memory = SequenceDataModule(torch.as_tensor(stored), mask, 4, 4, 2, seed=3).train_dataloader()
    for (xa, ma), (xb, mb) in zip(on_disk, in_memory, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ma, mb)


def test_bad_plans_are_refused():
    mask = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"window must lie in \[2, T=6\], got 7"):
        DiskWindows(lambda *a: None, mask, 7)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        DiskWindows(lambda *a: None, mask, 3, 0)
    with pytest.raises(ValueError, match="controls must have shape"):
        DiskWindows(lambda *a: None, mask, 3, controls=torch.zeros(2, 5, 1))
