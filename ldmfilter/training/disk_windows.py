"""Training windows read from storage on demand, for data larger than memory."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

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
        steps = mask.shape[1]
        self.window = steps if window is None else int(window)
        self.stride = self.window if stride is None else int(stride)
        if not 2 <= self.window <= steps:
            raise ValueError(f"window must lie in [2, T={steps}], got {self.window}")
        if self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}")
        if controls is not None and tuple(controls.shape[:2]) != tuple(mask.shape):
            raise ValueError(f"controls must have shape (n, T, U) = {tuple(mask.shape)} + (U,), got {tuple(controls.shape)}")
        self.read, self.mask, self.dtype, self.controls = read, mask, dtype, controls
        self.starts = list(range(0, steps - self.window + 1, self.stride))

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
