"""Checkpoint and resume: training interrupted and resumed from its checkpoint continues to the same result.

A tiny ``LDMFilter`` (kNN objective, so the objective's generator matters; the paper's step
schedule, so the scheduler's state matters; several batches per epoch, so the shuffling
matters) is trained for 4 epochs without interruption, and again with a callback that stops the
run at the start of epoch 2 (after the checkpoint of epoch 1 was written), then resumed from
that checkpoint.  Weights, optimiser-dependent results and histories must agree.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

import ldmfilter
from ldmfilter.training.checkpoints import LAST

SETTINGS = dict(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=4, batch_size=2, objective="knn", verbose=False)


class Interrupted(Exception):
    """Stands for a crash, a time limit or Ctrl+C in the middle of training."""


class StopAt(L.Callback):
    """Interrupt training at the start of epoch ``epoch`` (epochs before it are checkpointed)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"stopped at epoch {self.epoch}")


def data(seed=0):
    return np.random.default_rng(seed).normal(size=(5, 30, 3)).cumsum(1)


def epoch_data(epoch):  # fresh noise every epoch (the data loader is rebuilt every epoch)
    return data() + 0.1 * np.random.default_rng(100 + epoch).normal(size=(5, 30, 3))


def fit(checkpoint_dir=None, resume_from=None, stop=None, with_epoch_data=False, **changes):
    model = ldmfilter.LDMFilter(**{**SETTINGS, **changes}, trainer_kwargs={"callbacks": [StopAt(stop)]} if stop is not None else None)
    return model.fit(data(), epoch_data=epoch_data if with_epoch_data else None,
                     checkpoint_dir=checkpoint_dir, resume_from=resume_from)


@pytest.fixture(scope="module")
def uninterrupted():
    return {False: fit(), True: fit(with_epoch_data=True)}


@pytest.mark.parametrize("with_epoch_data", [False, True])
def test_resumed_training_equals_uninterrupted_training(uninterrupted, tmp_path, with_epoch_data):
    reference = uninterrupted[with_epoch_data]
    with pytest.raises(Interrupted):
        fit(checkpoint_dir=tmp_path, stop=2, with_epoch_data=with_epoch_data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]  # written atomically: no temporaries left
    stored = torch.load(tmp_path / LAST, weights_only=True)  # plain tensors and containers only
    assert stored["epoch"] == 1 and len(stored["ldmfilter"]["loss_history"]) == 2 * 3  # 2 epochs × 3 batches
    resumed = fit(checkpoint_dir=tmp_path, resume_from=tmp_path, with_epoch_data=with_epoch_data)
    assert resumed.loss_history_ == pytest.approx(reference.loss_history_, rel=1e-5, abs=1e-6)
    for (name, a), (_, b) in zip(reference.model_.state_dict().items(), resumed.model_.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"weights {name} differ")
    np.testing.assert_allclose(resumed.filter(data()).mean, reference.filter(data()).mean, rtol=1e-4, atol=1e-5)
    assert resumed.training_seconds_ >= stored["ldmfilter"]["training_seconds"]


def test_resuming_a_finished_run_changes_nothing(uninterrupted, tmp_path):
    finished = fit(checkpoint_dir=tmp_path)
    again = fit(resume_from=tmp_path / LAST)
    assert again.loss_history_ == finished.loss_history_
    for a, b in zip(finished.model_.state_dict().values(), again.model_.state_dict().values()):
        torch.testing.assert_close(b, a)


def test_resume_refuses_other_models_data_and_plans(tmp_path):
    with pytest.raises(Interrupted):
        fit(checkpoint_dir=tmp_path, stop=1)
    with pytest.raises(ValueError, match="another configuration"):
        fit(resume_from=tmp_path, state_dim=4)
    with pytest.raises(ValueError, match="other data"):
        ldmfilter.LDMFilter(**SETTINGS).fit(data(seed=1), resume_from=tmp_path)
    with pytest.raises(ValueError, match="training run with other \\['batch_size'"):
        fit(resume_from=tmp_path, batch_size=3)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        fit(resume_from=tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        fit(resume_from=garbage)
    foreign = tmp_path / "weights.ckpt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a checkpoint of LDMFilter.fit"):
        fit(resume_from=foreign)
    with pytest.raises(TypeError, match="resume_from must be a str or os.PathLike"):
        fit(resume_from=3)
    with pytest.raises(ValueError, match="is a file"):
        fit(checkpoint_dir=garbage)


def test_no_checkpoint_is_written_without_checkpoint_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(max_epochs=1)
    assert list(tmp_path.iterdir()) == []
