"""Fits run by tests/training/test_distributed.py on 2 CPU processes (Lightning DDP, gloo).

``python ddp_fit_script.py OUT`` starts the second process itself (Lightning re-runs this
script).  Every process fits; each saves its model to ``OUT/<case>.ldm`` (only rank 0 may
write it) and to ``OUT/<case>-rank<r>.ldm`` (a file only rank 0 may create), and rank 0 writes
the loss histories to ``OUT/<case>-loss.npy``.  The ``on_disk`` case trains on the data left in
a Zarr store (``OUT/data.zarr``, written before the second process starts).
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist
import xarray as xr

from ldmfilter import LDMFilter

CASES = {  # hyper-parameters beside the shared ones, per case
    "stopgrad": {"objective": "stopgrad"},
    "knn": {"objective": "knn"},
    "on_disk": {"objective": "stopgrad"},
}
SHARED = {"state_dim": 4, "latent_dim": 2, "max_epochs": 2, "batch_size": 8, "dtype": "float64", "verbose": False}


def data() -> np.ndarray:
    """32 random-walk series of 20 steps × 6 channels, with some missing frames."""
    X = np.random.default_rng(0).normal(size=(32, 20, 6)).cumsum(1) * 0.1
    X[3, 5:8] = np.nan
    return X


def on_disk(out: Path):
    """``data()`` as a dask-backed DataArray of a Zarr store in ``out``, written by rank 0."""
    store = out / "data.zarr"
    if os.environ.get("LOCAL_RANK", "0") == "0":
        frames = xr.DataArray(data(), dims=("series", "time", "feature"), name="frames")
        frames.to_dataset().to_zarr(store, mode="w", encoding={"frames": {"chunks": (1, 20, 6)}})
    if dist.is_initialized():  # the processes exist already (earlier cases): wait for the store
        dist.barrier()
    return xr.open_zarr(store)["frames"]


def main(out: Path) -> None:
    for case, params in CASES.items():
        X = on_disk(out) if case == "on_disk" else data()
        ddp = {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}
        model = LDMFilter(**SHARED, **params, trainer_kwargs=ddp).fit(X, checkpoint_dir=out / f"{case}-checkpoints")
        rank = dist.get_rank()
        model.save(out / f"{case}.ldm")
        model.save(out / f"{case}-rank{rank}.ldm")
        if rank == 0:
            np.save(out / f"{case}-loss.npy", np.asarray(model.loss_history_))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
