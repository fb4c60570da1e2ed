"""Windows of in-memory sequences, served to Lightning."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["SequenceWindows", "EpochShuffle", "SequenceDataModule"]


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
        steps = sequences.shape[1]
        self.window = steps if window is None else int(window)
        self.stride = self.window if stride is None else int(stride)
        if not 2 <= self.window <= steps:
            raise ValueError(f"window must lie in [2, T={steps}], got {self.window}")
        if self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}")
        if controls is not None and tuple(controls.shape[:2]) != tuple(sequences.shape[:2]):
            raise ValueError(f"controls must have shape (n, T, U) = {tuple(sequences.shape[:2])} + (U,), got {tuple(controls.shape)}")
        self.sequences, self.controls = sequences, controls
        self.mask = torch.ones(sequences.shape[:2], dtype=torch.bool) if mask is None else mask
        self.starts = list(range(0, steps - self.window + 1, self.stride))

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

    Iterated in epoch ``e`` (``epoch()`` at that time), it yields ``randperm(n)`` of a generator
    seeded ``seed + e`` after one 64-bit draw (the draw a ``DataLoader`` takes from the generator
    it shares with a ``RandomSampler``: epoch 0 keeps the order of that pairing).  The order does
    not depend on how often or when the loader was built or iterated before, which Lightning
    varies between a fresh and a resumed run.

    Parameters
    ----------
    n : int
    seed : int
    epoch : callable
        ``() -> int``, the current epoch.
    """

    def __init__(self, n: int, seed: int, epoch: Callable[[], int]):
        self.n, self.seed, self.epoch = int(n), int(seed), epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + int(self.epoch()))
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class SequenceDataModule(L.LightningDataModule):
    """Serves shuffled mini-batches of windows; optionally new training data every epoch.

    Parameters
    ----------
    sequences : Tensor, shape (n, T, *obs_shape)
    mask : Tensor of bool, shape (n, T), optional
    batch_size : int
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
    """

    def __init__(
        self,
        sequences: torch.Tensor,
        mask: torch.Tensor | None = None,
        batch_size: int = 8,
        window=None,
        stride=None,
        epoch_data: Callable[[int], tuple] | None = None,
        seed: int = 0,
        controls: torch.Tensor | None = None,
    ):
        super().__init__()
        self.sequences, self.mask, self.controls = sequences, mask, controls
        self.batch_size, self.window, self.stride = int(batch_size), window, stride
        self.epoch_data, self.seed = epoch_data, int(seed)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        epoch = self._epoch()
        sequences, mask = (self.sequences, self.mask) if self.epoch_data is None or epoch == 0 else self.epoch_data(epoch)
        dataset = SequenceWindows(sequences, mask, self.window, self.stride, self.controls)
        sampler = EpochShuffle(len(dataset), self.seed, self._epoch)
        # the loader's own generator only feeds worker seeds (none here); it keeps the global RNG untouched
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, generator=torch.Generator().manual_seed(self.seed))
