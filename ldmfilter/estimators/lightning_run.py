"""How ``LDMFilter.fit`` runs Lightning: the Trainer and its distributed checks, quiet logs.

Imported by ``fit`` only: loading a model and filtering never import Lightning.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

from ..training.checkpoints import AtomicCheckpointIO, checkpoint_callback

__all__ = ["build_trainer", "quiet_lightning"]


def build_trainer(trainer_kwargs: dict | None, verbose: bool, batch_size: int, epochs: int, reload_every_epoch: bool,
                  checkpoint_dir=None) -> L.Trainer:
    """The Trainer of a fit: the package's defaults, then ``trainer_kwargs``, then checkpointing.

    Parameters
    ----------
    trainer_kwargs : dict or None
        The user's Trainer arguments (e.g. ``{"strategy": "ddp", "devices": 2}``).
    verbose : bool
        Progress bar and model summary.
    batch_size : int
        The global batch; under DDP a multiple of the number of processes.
    epochs : int
    reload_every_epoch : bool
        New training data every epoch (``epoch_data``).
    checkpoint_dir : str or Path, optional
        Write ``checkpoint_dir/last.ckpt`` (atomically, from rank 0) after every epoch.

    Raises
    ------
    ValueError
        Trainer arguments Lightning refuses; ``use_distributed_sampler=True``; strategies that
        train in spawned or forked child processes; a ``batch_size`` that the processes cannot
        share evenly.
    """
    options = dict(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=verbose,
        enable_model_summary=verbose,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1 if reload_every_epoch else 0,
        use_distributed_sampler=False,  # the data module shards each global batch itself (EpochShuffle)
    )
    options.update(trainer_kwargs or {})
    if options["use_distributed_sampler"]:
        raise ValueError("trainer_kwargs: use_distributed_sampler=True is not supported; LDMFilter shards its batches itself")
    if checkpoint_dir is not None:  # every epoch to checkpoint_dir/last.ckpt, written atomically
        callbacks = options.get("callbacks") or []
        callbacks = [callbacks] if isinstance(callbacks, L.Callback) else list(callbacks)
        plugins = options.get("plugins") or []
        plugins = [plugins] if not isinstance(plugins, (list, tuple)) else list(plugins)
        options.update(enable_checkpointing=True, callbacks=callbacks + [checkpoint_callback(checkpoint_dir)],
                       plugins=plugins + [AtomicCheckpointIO()])
    try:
        trainer = L.Trainer(**options)
    except MisconfigurationException as error:
        raise ValueError(f"trainer_kwargs: {error}") from None
    _check_distributed(trainer, batch_size)
    return trainer


def _check_distributed(trainer: L.Trainer, batch_size: int) -> None:
    """Refuse distributed set-ups that ``fit`` cannot serve (see ``docs/distributed.md``)."""
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise ValueError(
            "trainer_kwargs: strategies that train in spawned or forked child processes (ddp_spawn, ddp_fork, "
            "ddp_notebook) are not supported: the fitted model would stay in the children. Use strategy='ddp' "
            "from a script (python script.py, torchrun or srun), where every process runs fit"
        )
    if trainer.world_size > 1 and batch_size % trainer.world_size:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the number of processes ({trainer.world_size}): "
            "it is the global batch, split evenly across the processes"
        )


@contextlib.contextmanager
def quiet_lightning(verbose: bool):
    """Silence Lightning's start-up chatter unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*treespec.*")
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
