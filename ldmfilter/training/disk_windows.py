"""Training windows read from storage on demand, for data larger than memory."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import window_plan

__all__ = ["DiskWindows"]


class DiskWindows(Dataset):
    """The windows of :class:`~ldmfilter.training.data.SequenceWindows`, each read when it is served.

    Same window/stride plan and item order (item ``k`` is window ``k % len(starts)`` of series
    ``k // len(starts)``), same items, but the values stay in storage: item ``k`` calls ``read``
    for that window only.  Pass it as ``SequenceDataModule(windows=...)``; its sampler shuffles
    (and, under DDP, shards) the indices.

    Parameters
    ----------
    read : callable
        ``read(series, start, stop)`` → array (stop − start, *obs_shape): the window's frames on
        the grid, NaN where missing (e.g. :meth:`ldmfilter.io.disk_array.DiskArray.read_window`).
    mask : Tensor of bool, shape (n, T)
        True = observed frame.
    window : int, optional
        Window length (default: whole sequences).
    stride : int, optional
        Step between window starts (default: ``window``).
    dtype : torch.dtype
        The model's dtype; frames are converted to it.
    controls : Tensor, shape (n, T, U), optional
        Control inputs (in memory), windowed with the frames (items are then ``(x, mask, u)``).
    """

    def __init__(
        self,
        read: Callable[[int, int, int], np.ndarray],
        mask: torch.Tensor,
        window: int | None = None,
        stride: int | None = None,
        dtype: torch.dtype = torch.float32,
        controls: torch.Tensor | None = None,
    ):
        self.window, self.stride, self.starts = window_plan(tuple(mask.shape), window, stride, controls)
        self.read, self.mask, self.dtype, self.controls = read, mask, dtype, controls

    def __len__(self) -> int:
        return self.mask.shape[0] * len(self.starts)

    def __getitem__(self, index: int):
        series, which = divmod(int(index), len(self.starts))
        start = self.starts[which]
        span = slice(start, start + self.window)
        x = torch.tensor(self.read(series, start, start + self.window), dtype=self.dtype)
        if self.controls is None:
            return x, self.mask[series, span]
        return x, self.mask[series, span], self.controls[series, span]
