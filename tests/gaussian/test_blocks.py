"""Row-block scans: the blocks cover every row once, in order and within the bound; the checks find what a whole-array check finds."""

import numpy as np
import pytest
import torch

from ldmfilter.gaussian.blocks import any_in_blocks, row_blocks


@pytest.mark.parametrize("shape,itemsize,budget", [((10, 3), 8, 48), ((10, 3), 8, 50), ((7, 2, 2), 1, 4), ((5, 100), 8, 16), ((0, 4), 8, 64)])
def test_row_blocks_cover_the_rows_in_order_within_the_bound(shape, itemsize, budget):
    blocks = row_blocks(shape, itemsize, budget)
    rows = [i for block in blocks for i in range(shape[0])[block]]
    assert rows == list(range(shape[0]))
    row_bytes = itemsize * int(np.prod(shape[1:]))
    for block in blocks:
        size = len(range(shape[0])[block])
        assert size >= 1
        assert size == 1 or size * row_bytes <= budget  # one row at least, even when a row exceeds the bound


@pytest.mark.parametrize("where", [None, (0, 0), (6, 2), (9, 4)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_any_in_blocks_finds_a_value_in_any_block(where, kind):
    values = np.zeros((10, 5))
    if where is not None:
        values[where] = np.nan
    array, test = (values, np.isnan) if kind == "numpy" else (torch.as_tensor(values), torch.isnan)
    assert any_in_blocks(array, test, block_bytes=8 * 5 * 2) is (where is not None)  # blocks of two rows
