"""Distributed (DDP) training: 2 CPU processes give the single-process model; batch sharding."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ldmfilter
from ldmfilter import LDMFilter
from ldmfilter.training.data import EpochShuffle

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")
sys.path.insert(0, str(SCRIPT.parent))
import ddp_fit_script  # noqa: E402


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """The output folder of one run of the script on 2 processes."""
    out = tmp_path_factory.mktemp("ddp")
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, cwd=out)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.parametrize("case", sorted(ddp_fit_script.CASES))
def test_two_processes_train_the_single_process_model(ddp_run, case):
    X = ddp_fit_script.data()
    single = LDMFilter(**ddp_fit_script.SHARED, **ddp_fit_script.CASES[case]).fit(X)
    distributed = ldmfilter.load(ddp_run / f"{case}.ldm")
    # the same optimiser steps on the same global batches: equal up to float64 rounding
    np.testing.assert_allclose(np.load(ddp_run / f"{case}-loss.npy"), single.loss_history_, rtol=1e-10)
    ours, theirs = distributed.model_.state_dict(), single.model_.state_dict()
    for name in theirs:
        np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), rtol=1e-8, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(distributed.filter(X).mean, single.filter(X).mean, rtol=1e-8, atol=1e-10)


def test_only_rank_zero_writes_files(ddp_run):
    for case in ddp_fit_script.CASES:
        assert (ddp_run / f"{case}-rank0.ldm").is_file()
        assert not (ddp_run / f"{case}-rank1.ldm").exists()
        assert (ddp_run / f"{case}-checkpoints" / "last.ckpt").is_file()


def _batches(n, batch_size, processes, epoch=0):
    """Per process, its loader's batches of item indices."""
    loaders = []
    for rank in range(processes):
        order = list(EpochShuffle(n, 7, lambda: epoch, batch_size, processes, rank))
        step = batch_size // processes
        loaders.append([order[i : i + step] for i in range(0, len(order), step)])
    return loaders


@pytest.mark.parametrize("n", [32, 30])
def test_processes_split_each_single_process_batch(n):
    (single,) = _batches(n, 8, 1)
    per_process = _batches(n, 8, 2)
    assert [len(b) for b in per_process[0]] == [len(b) for b in per_process[1]]
    for k, batch in enumerate(single):
        assert per_process[0][k] + per_process[1][k] == batch


def test_a_ragged_last_batch_is_completed_from_the_start_of_the_epoch():
    per_process = _batches(29, 8, 2, epoch=3)
    (single,) = _batches(29, 8, 1, epoch=3)
    assert single[-1] == per_process[0][-1] + per_process[1][-1][:2]  # 5 items: 3 + 2, then one repeated
    assert per_process[1][-1][2] == single[0][0]
    assert all(len(a) == len(b) for a, b in zip(*per_process))


def test_sharding_needs_a_global_batch_that_divides():
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        EpochShuffle(10, 0, lambda: 0, batch_size=5, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank must lie in"):
        EpochShuffle(10, 0, lambda: 0, batch_size=4, num_replicas=2, rank=2)


@pytest.mark.parametrize(
    "trainer_kwargs, message",
    [
        ({"strategy": "ddp", "devices": 3, "accelerator": "cpu"}, "batch_size=8 must be a multiple of the number of processes"),
        ({"strategy": "ddp_spawn", "devices": 2, "accelerator": "cpu"}, "spawned or forked"),
        ({"use_distributed_sampler": True}, "use_distributed_sampler"),
    ],
)
def test_unsupported_distributed_set_ups_are_refused(trainer_kwargs, message):
    X = np.zeros((8, 5, 2))
    with pytest.raises(ValueError, match=message):
        LDMFilter(state_dim=2, latent_dim=1, max_epochs=1, verbose=False, trainer_kwargs=trainer_kwargs).fit(X)
    assert not torch.distributed.is_initialized()
