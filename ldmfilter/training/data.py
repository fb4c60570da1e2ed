"""Windows of in-memory sequences, served to Lightning."""

from __future__ import annotations

import itertools
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["window_plan", "SequenceWindows", "EpochShuffle", "SequenceDataModule"]


def window_plan(shape: tuple, window=None, stride=None, controls: torch.Tensor | None = None) -> tuple[int, int, list[int]]:
    """Window length, stride and window starts for sequences of ``shape = (n, T)``, checked.

    Parameters
    ----------
    shape : tuple
        ``(n, T)``.
    window, stride : int, optional
        See :class:`SequenceWindows`.
    controls : Tensor, shape (n, T, U), optional
        Checked against ``shape``.

    Raises
    ------
    ValueError
        A window outside [2, T], a stride below 1, controls of another (n, T).
    """
    steps = shape[1]
    window = steps if window is None else int(window)
    stride = window if stride is None else int(stride)
    if not 2 <= window <= steps:
        raise ValueError(f"window must lie in [2, T={steps}], got {window}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if controls is not None and tuple(controls.shape[:2]) != tuple(shape):
        raise ValueError(f"controls must have shape (n, T, U) = {tuple(shape)} + (U,), got {tuple(controls.shape)}")
    return window, stride, list(range(0, steps - window + 1, stride))


class SequenceWindows(Dataset):
    """All windows of length ``window`` (every ``stride`` steps) of a stack of sequences.

    Parameters
    ----------
    sequences : Tensor, shape (n, T, *obs_shape)
    mask : Tensor of bool, shape (n, T), optional
        True = observed frame.
    window : int, optional
        Window length (default: whole sequences).
    stride : int, optional
        Step between window starts (default: ``window``).
    controls : Tensor, shape (n, T, U), optional
        Control inputs, windowed with the sequences (items are then ``(x, mask, u)``).
    """

    def __init__(self, sequences: torch.Tensor, mask: torch.Tensor | None = None, window=None, stride=None, controls=None):
        self.window, self.stride, self.starts = window_plan(sequences.shape[:2], window, stride, controls)
        self.sequences, self.controls = sequences, controls
        self.mask = torch.ones(sequences.shape[:2], dtype=torch.bool) if mask is None else mask

    def __len__(self) -> int:
        return self.sequences.shape[0] * len(self.starts)

    def __getitem__(self, index: int):
        series, which = divmod(index, len(self.starts))
        start = self.starts[which]
        span = slice(start, start + self.window)
        if self.controls is None:
            return self.sequences[series, span], self.mask[series, span]
        return self.sequences[series, span], self.mask[series, span], self.controls[series, span]


class EpochShuffle(Sampler):
    """A random order of ``n`` items that depends only on ``seed`` and the epoch being trained.

    Iterated in epoch ``e`` (``epoch()`` at that time), it orders the items by ``randperm(n)`` of
    a generator seeded ``seed + e`` after one 64-bit draw (the draw a ``DataLoader`` takes from
    the generator it shares with a ``RandomSampler``: epoch 0 keeps the order of that pairing).
    The order does not depend on how often or when the loader was built or iterated before,
    which Lightning varies between a fresh and a resumed run.

    With ``num_replicas`` processes (distributed training), every process draws the same order
    and cuts it into global batches of ``batch_size`` items; process ``rank`` yields the
    ``rank``-th of ``num_replicas`` equal slices of each global batch, so that a loader of
    ``batch_size // num_replicas`` on every process serves, step by step, exactly the items of
    the single-process loader of ``batch_size``.  A last global batch whose size is not a
    multiple of ``num_replicas`` is completed with items from the start of the epoch's order
    (as torch's ``DistributedSampler`` does), so that every process runs the same number of
    steps on equal batches.

    Parameters
    ----------
    n : int
    seed : int
    epoch : callable
        ``() -> int``, the current epoch.
    batch_size : int, optional
        The global batch size; needed when ``num_replicas > 1`` and a multiple of it.
    num_replicas, rank : int
        Number of processes and this process's rank (default: one process).
    """

    def __init__(self, n: int, seed: int, epoch: Callable[[], int], batch_size: int | None = None, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.epoch = int(n), int(seed), epoch
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={self.num_replicas}), got {rank}")
        self.batch_size = self.n if batch_size is None else int(batch_size)
        if self.num_replicas > 1 and (batch_size is None or self.batch_size % self.num_replicas):
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of the number of processes ({self.num_replicas}): "
                "it is the global batch, split evenly across them"
            )

    def _shares(self) -> list[int]:
        """Items this process takes from each global batch."""
        full, last = divmod(self.n, self.batch_size)
        sizes = [self.batch_size] * full + ([last] if last else [])
        return [-(-size // self.num_replicas) for size in sizes]

    def __len__(self) -> int:
        return sum(self._shares())

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + int(self.epoch()))
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.num_replicas == 1:
            return iter(order)
        mine = []
        for k, share in enumerate(self._shares()):
            batch = order[k * self.batch_size : (k + 1) * self.batch_size]
            batch += list(itertools.islice(itertools.cycle(order), share * self.num_replicas - len(batch)))  # complete a ragged last batch
            mine += batch[self.rank * share : (self.rank + 1) * share]
        return iter(mine)


class SequenceDataModule(L.LightningDataModule):
    """Serves shuffled mini-batches of windows; optionally new training data every epoch.

    Under distributed training (Lightning's DDP), ``batch_size`` stays the global batch: each of
    the ``N`` processes loads ``batch_size / N`` windows per step, the slices of one global batch
    (:class:`EpochShuffle`), so that ``N`` processes take the same optimiser steps on the same
    batches as one process.  The Trainer must not add its own distributed sampler
    (``use_distributed_sampler=False``).

    Parameters
    ----------
    sequences : Tensor, shape (n, T, *obs_shape)
    mask : Tensor of bool, shape (n, T), optional
    batch_size : int
        The global batch size (a multiple of the number of processes).
    window, stride : int, optional
        See :class:`SequenceWindows`.
    epoch_data : callable, optional
        ``epoch ↦ (sequences, mask)`` giving the training data of each epoch (e.g. the same
        clean frames with fresh pixel noise); requires the Trainer's
        ``reload_dataloaders_every_n_epochs=1``.
    seed : int
        Seed of the shuffling: epoch ``e`` visits the windows in an order drawn from a generator
        seeded ``seed + e`` (:class:`EpochShuffle`), whatever happened before, so that a run
        resumed from a checkpoint shuffles its later epochs exactly as the uninterrupted run.
    controls : Tensor, shape (n, T, U), optional
        Control inputs of the sequences (the same every epoch).
    windows : Dataset, optional
        The training windows themselves, served instead of those of ``sequences`` (items like
        :class:`SequenceWindows`'), e.g. windows read from disk; then ``sequences`` is ignored
        and ``epoch_data`` is not allowed.
    """

    def __init__(
        self,
        sequences: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        batch_size: int = 8,
        window=None,
        stride=None,
        epoch_data: Callable[[int], tuple] | None = None,
        seed: int = 0,
        controls: torch.Tensor | None = None,
        windows: Dataset | None = None,
    ):
        super().__init__()
        if windows is not None and epoch_data is not None:
            raise ValueError("epoch_data cannot be combined with windows given as a dataset")
        self.sequences, self.mask, self.controls, self.windows = sequences, mask, controls, windows
        self.batch_size, self.window, self.stride = int(batch_size), window, stride
        self.epoch_data, self.seed = epoch_data, int(seed)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _dataset(self) -> Dataset:
        if self.windows is not None:
            return self.windows
        epoch = self._epoch()
        sequences, mask = (self.sequences, self.mask) if self.epoch_data is None or epoch == 0 else self.epoch_data(epoch)
        return SequenceWindows(sequences, mask, self.window, self.stride, self.controls)

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset()
        processes, rank = (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)
        sampler = EpochShuffle(len(dataset), self.seed, self._epoch, self.batch_size, processes, rank)
        # the loader's own generator only feeds worker seeds (none here); it keeps the global RNG untouched
        return DataLoader(dataset, batch_size=self.batch_size // processes, sampler=sampler, generator=torch.Generator().manual_seed(self.seed))
