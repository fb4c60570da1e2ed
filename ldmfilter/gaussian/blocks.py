"""Row blocks of bounded size, for scans of large arrays (numpy or torch) without full-size temporaries.

A check such as ``torch.isinf(x).any()`` makes a temporary as large as ``x`` (for a float tensor,
an absolute value and a boolean mask); on a stack of many frames that doubles the peak memory of
a fit.  Scanning the first axis in blocks bounds the temporaries instead.
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["BLOCK_BYTES", "row_blocks", "any_in_blocks"]

BLOCK_BYTES = 16 * 2**20  # default bound on one block, counted at ``itemsize`` bytes an element


def row_blocks(shape: tuple[int, ...], itemsize: int = 8, block_bytes: int = BLOCK_BYTES) -> list[slice]:
    """Slices of the first axis of an array of ``shape``, each block at most ``block_bytes`` (one row at least).

    Parameters
    ----------
    shape : tuple of int
        ``(n_rows, *row_shape)``.
    itemsize : int
        Bytes an element is counted at (8: the block's float64 temporaries).
    block_bytes : int

    Returns
    -------
    list of slice
        Covering ``range(n_rows)`` in order.
    """
    row_bytes = itemsize * math.prod(shape[1:])
    step = max(1, int(block_bytes) // max(row_bytes, 1))
    return [slice(start, start + step) for start in range(0, shape[0], step)]


def any_in_blocks(array, test: Callable, block_bytes: int = BLOCK_BYTES) -> bool:
    """Whether the elementwise boolean ``test(block)`` holds anywhere, over row blocks of ``array``.

    Parameters
    ----------
    array : ndarray or Tensor, shape (n_rows, *row_shape)
    test : callable
        E.g. ``torch.isnan`` or ``np.isinf``; gets a block ``array[rows]``.
    block_bytes : int

    Returns
    -------
    bool
    """
    return any(bool(test(array[rows]).any()) for rows in row_blocks(tuple(array.shape), 8, block_bytes))
