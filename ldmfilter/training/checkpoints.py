"""Training checkpoints: written every epoch, resumed to the same result as an uninterrupted run.

A checkpoint is Lightning's (weights, optimiser and scheduler state, loop progress) plus what
the LDM training run keeps besides: the objective's random generator, the loss and probe
histories and the training time (:class:`~ldmfilter.training.module.LDMTrainingModule`), and a
description of the run (data size, batches, seed) that a resumed run must match.  The shuffling
needs no state: each epoch's order depends only on the seed and the epoch
(:class:`~ldmfilter.training.data.EpochShuffle`).  Files are
written atomically (a temporary file in the same folder, then a rename), so an interruption
while writing leaves the previous checkpoint intact, and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from ..atomic import atomic_torch_save, read_torch_file

__all__ = ["LAST", "AtomicCheckpointIO", "checkpoint_callback", "resolve_checkpoint", "check_resume"]

LAST = "last.ckpt"  # the checkpoint of the latest finished epoch, in the checkpoint folder


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename (local paths)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(checkpoint, path)


def checkpoint_callback(directory) -> ModelCheckpoint:
    """A callback writing ``directory/last.ckpt`` at the end of every training epoch."""
    return ModelCheckpoint(  # one file, overwritten: no metric is monitored, so the "top 1" is the latest
        dirpath=str(directory),
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        save_last=False,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


def resolve_checkpoint(path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or ``last.ckpt`` inside a folder.

    Raises
    ------
    TypeError
        ``path`` is not a str or os.PathLike.
    FileNotFoundError
        No such file (or no ``last.ckpt`` in the folder).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"resume_from must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    file = path / LAST if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no training checkpoint at {file}")
    return file


def _read(path: Path) -> dict:
    checkpoint = read_torch_file(path, "training checkpoint")
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "ldmfilter"} <= set(checkpoint):
        raise ValueError(f"{path} is not a checkpoint of LDMFilter.fit (checkpoint_dir=...)")
    return checkpoint


def check_resume(path, module: torch.nn.Module, run: dict) -> Path:
    """Validate a checkpoint for resuming the training of ``module`` on the run ``run``.

    Parameters
    ----------
    path : str or Path
        A checkpoint file, or a checkpoint folder (its ``last.ckpt``).
    module : LightningModule
        The freshly built training module; the checkpoint's weights must fit it, and its input
        normalisation (computed from the data) must equal the checkpoint's.
    run : dict
        The run's description (``LDMTrainingModule.run``); everything but ``epochs`` must equal
        the checkpoint's.

    Returns
    -------
    Path
        The checkpoint file, for ``Trainer.fit(ckpt_path=...)``.

    Raises
    ------
    TypeError, FileNotFoundError
        See :func:`resolve_checkpoint`.
    ValueError
        Not a readable checkpoint of ``LDMFilter.fit``, or one of another model, other data or
        another training plan.
    """
    file = resolve_checkpoint(path)
    checkpoint = _read(file)
    theirs, mine = checkpoint["state_dict"], module.state_dict()
    shapes = {k: tuple(v.shape) for k, v in mine.items()}
    stored = {k: tuple(v.shape) for k, v in theirs.items() if isinstance(v, torch.Tensor)}
    if shapes != stored:
        differ = sorted(set(shapes) ^ set(stored) | {k for k in set(shapes) & set(stored) if shapes[k] != stored[k]})
        raise ValueError(
            f"{file} was written by a model of another configuration (weights that differ: {differ[:5]}); "
            "resume with the hyper-parameters of the interrupted fit"
        )
    normalisation = [k for k in mine if ".normalizer." in f".{k}"]
    if any(not torch.equal(mine[k].cpu(), theirs[k].to(mine[k].dtype)) for k in normalisation):
        raise ValueError(f"{file} was written while training on other data (its input normalisation differs); resume with the same X")
    stored_run = checkpoint["ldmfilter"].get("run") or {}
    differ = sorted(k for k in set(run) | set(stored_run) if k != "epochs" and run.get(k) != stored_run.get(k))
    if differ:
        raise ValueError(
            f"{file} was written by a training run with other {differ} "
            f"({ {k: stored_run.get(k) for k in differ} } there, { {k: run.get(k) for k in differ} } now); "
            "resume with the same data, batch size, window and seed"
        )
    return file
