"""Windowed datasets, the data module (fresh data every epoch) and the LightningModule:
per-group learning rates and the spectral-radius bound after every optimiser step."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from ldmfilter.estimators import LDMFilter
from ldmfilter.nn import LatentKalmanFilter, LinearDynamics, MLPEncoder, make_noise, spectral_radius
from ldmfilter.simulate import make_dotmotion
from ldmfilter.training.data import SequenceDataModule, SequenceWindows
from ldmfilter.training.module import DEFAULT_LR_MULTIPLIERS, LDMTrainingModule, ProbeData


def trainer(**kwargs):
    options = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)


@pytest.fixture(scope="module")
def tiny():
    """Standardised flattened figure-8 frames: (48, 30, 100) float32, positions (48, 30, 2)."""
    data = make_dotmotion("figure8", 48, T=30)
    x = torch.as_tensor(data.flat_frames())
    return (x - x.mean()) / x.std(), torch.as_tensor(data.positions)


def make_model(noise="fixed", state_dim=4, latent_dim=2, seed=0):
    torch.manual_seed(seed)
    dyn = LinearDynamics(state_dim, latent_dim, torch.Generator().manual_seed(seed))
    return LatentKalmanFilter(MLPEncoder((100,), latent_dim, hidden=(16,)), dyn, make_noise(noise, (100,), latent_dim, (8,)))


# ------------------------------------------------------------------------------ windows


def test_sequence_windows_lengths_and_contents():
    seqs = torch.arange(3 * 10 * 2, dtype=torch.float32).reshape(3, 10, 2)
    mask = torch.rand(3, 10, generator=torch.Generator().manual_seed(0)) > 0.3
    ds = SequenceWindows(seqs, mask, window=4, stride=3)
    assert ds.starts == [0, 3, 6]
    assert len(ds) == 9
    for index in range(9):
        series, which = divmod(index, 3)
        start = 3 * which
        x, m = ds[index]
        assert torch.equal(x, seqs[series, start : start + 4])
        assert torch.equal(m, mask[series, start : start + 4])
    # defaults: whole sequences, all observed
    ds = SequenceWindows(seqs)
    assert len(ds) == 3 and ds.window == 10
    x, m = ds[2]
    assert torch.equal(x, seqs[2]) and m.dtype == torch.bool and bool(m.all())
    # stride 1: every start; stride defaults to the window (non-overlapping)
    assert len(SequenceWindows(seqs, window=4, stride=1)) == 3 * 7
    assert SequenceWindows(seqs, window=4).starts == [0, 4]
    assert len(SequenceWindows(seqs, window=2, stride=1)) == 27
    # frames keep their shape
    video = torch.zeros(2, 5, 3, 4)
    x, m = SequenceWindows(video, window=3, stride=2)[1]
    assert x.shape == (3, 3, 4) and m.shape == (3,)


@pytest.mark.parametrize("window,stride", [(1, None), (0, None), (11, None), (4, 0), (4, -1)])
def test_sequence_windows_rejects_bad_window(window, stride):
    with pytest.raises(ValueError, match="window|stride"):
        SequenceWindows(torch.zeros(2, 10, 3), window=window, stride=stride)


def test_data_module_serves_epoch_data_from_epoch_one():
    seqs = torch.zeros(4, 6, 2)
    calls = []

    def epoch_data(epoch):
        calls.append(epoch)
        return torch.full((4, 6, 2), float(epoch)), torch.ones(4, 6, dtype=torch.bool)

    dm = SequenceDataModule(seqs, batch_size=2, epoch_data=epoch_data, seed=0)
    for epoch in range(4):
        dm.trainer = SimpleNamespace(current_epoch=epoch, world_size=1, global_rank=0)
        batches = list(dm.train_dataloader())
        assert len(batches) == 2
        values = torch.cat([b[0] for b in batches])
        assert values.shape == (4, 6, 2)
        assert bool((values == float(epoch)).all())  # epoch 0: the initial (zero) data
    assert calls == [1, 2, 3]


def test_data_module_shuffles_reproducibly_per_epoch():
    seqs = torch.arange(16, dtype=torch.float32).reshape(16, 1, 1).expand(16, 3, 1).contiguous()

    def order(seed, epoch):
        dm = SequenceDataModule(seqs, batch_size=16, seed=seed)
        dm.trainer = SimpleNamespace(current_epoch=epoch, world_size=1, global_rank=0)
        (x, _), = list(dm.train_dataloader())
        return x[:, 0, 0].tolist()

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(16))
    assert order(0, 0) != order(0, 1)  # a new shuffle each epoch
    assert order(0, 1) == order(1, 0)  # epoch e uses seed + e


def test_ldm_filter_fit_asks_epoch_data_for_every_later_epoch(tiny):
    data = make_dotmotion("figure8", 16, T=20)
    calls = []

    def epoch_data(epoch):
        calls.append(epoch)
        return data.frames.reshape(16, 20, -1) + np.float32(0.01 * epoch)

    model = LDMFilter(state_dim=4, latent_dim=2, hidden=(16,), max_epochs=3, verbose=False)
    model.fit(data.flat_frames(), epoch_data=epoch_data)
    assert calls == [1, 2]
    assert len(model.loss_history_) == 3 * 2  # 16 series / batch 8 = 2 steps an epoch


# ------------------------------------------------------------------------------ learning rates


def test_parameter_group_learning_rates(tiny):
    x, _ = tiny
    model = make_model("input")
    base = 0.002
    module = LDMTrainingModule(model, learning_rate=base, schedule="constant", weight_decay=3e-4)
    trainer(max_steps=1).fit(module, datamodule=SequenceDataModule(x[:8], batch_size=8))
    (optimizer,) = module.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"encoder", "predictor", "noise_head"}  # linear dynamics and observation: no residual groups
    assert groups["encoder"]["lr"] == pytest.approx(base * 1.0)
    assert groups["predictor"]["lr"] == pytest.approx(base * 100.0)
    assert groups["noise_head"]["lr"] == pytest.approx(base * 1.0)
    assert all(g["weight_decay"] == 3e-4 for g in optimizer.param_groups)
    by_name = model.parameter_groups()
    for name, group in groups.items():
        assert {id(p) for p in group["params"]} == {id(p) for p in by_name[name]}
    assert DEFAULT_LR_MULTIPLIERS == {"encoder": 1.0, "predictor": 100.0, "residual": 100.0, "noise_head": 1.0,
                                      "observation": 100.0}


def test_parameter_group_learning_rates_default_schedule_and_overrides(tiny):
    x, _ = tiny
    module = LDMTrainingModule(make_model("fixed"), learning_rate=0.01, lr_multipliers={"predictor": 10.0})
    trainer(max_steps=1).fit(module, datamodule=SequenceDataModule(x[:8], batch_size=8))
    groups = {g["name"]: g for g in module.trainer.optimizers[0].param_groups}
    assert set(groups) == {"encoder", "predictor"}  # empty noise head: no group
    assert groups["encoder"]["initial_lr"] == pytest.approx(0.01)
    assert groups["predictor"]["initial_lr"] == pytest.approx(0.1)
    # the step schedule has already halved twice after the single step (1 ≥ 2/3 of 1)
    assert groups["encoder"]["lr"] == pytest.approx(0.01 * 0.25)


# ------------------------------------------------------------------------------ spectral radius


class RadiusRecorder(L.Callback):
    """Spectral radius of A at the start of every batch (after the previous step's clip) and
    right after every optimiser step (callbacks run before the module's on_train_batch_end)."""

    def __init__(self):
        self.at_start, self.after_step = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at_start.append(float(spectral_radius(pl_module.model.dynamics.transition)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step.append(float(spectral_radius(pl_module.model.dynamics.transition)))


def test_spectral_radius_bounded_after_every_step(tiny):
    x, _ = tiny
    model = make_model("fixed", state_dim=4, latent_dim=2)
    dyn = model.dynamics
    clipped = []
    original = dyn.clip_spectral_radius_

    def recording_clip(max_radius=1.02):
        clipped.append(bool(original(max_radius)))
        return clipped[-1]

    dyn.clip_spectral_radius_ = recording_clip
    recorder = RadiusRecorder()
    module = LDMTrainingModule(model, learning_rate=0.05, schedule="constant")
    trainer(max_epochs=3, callbacks=[recorder]).fit(module, datamodule=SequenceDataModule(x, batch_size=8))
    steps = 3 * 6
    assert len(recorder.at_start) == len(recorder.after_step) == len(clipped) == steps
    assert all(np.isfinite(recorder.after_step))
    assert all(r <= 1.02 + 1e-6 for r in recorder.at_start), recorder.at_start
    final = float(spectral_radius(dyn.transition))
    assert final <= 1.02 + 1e-6
    # clipping did happen: some optimiser step pushed A beyond the bound …
    assert max(recorder.after_step) > 1.02 + 1e-4, recorder.after_step
    assert any(clipped)
    # … and exactly those steps were clipped
    assert clipped == [r > 1.02 for r in recorder.after_step]
    # after a clip the radius is exactly the bound
    following = recorder.at_start[1:] + [final]
    for was_clipped, radius in zip(clipped, following):
        if was_clipped:
            assert radius == pytest.approx(1.02, abs=1e-5)


def test_a_diverged_transition_stops_training_with_a_clear_error(tiny):
    """A non-finite gradient makes A NaN: the radius clip raises instead of handing NaN to the
    eigenvalue routine (where MKL crashed the process)."""
    x, _ = tiny
    for clip, advice in ((None, r"gradient clipping \(trainer_kwargs"), (0.5, "a smaller clipping value than 0.5$")):
        model = make_model("fixed")
        model.dynamics.transition.register_hook(lambda grad: grad * float("nan"))
        module = LDMTrainingModule(model, learning_rate=0.05, schedule="constant")
        with pytest.raises(FloatingPointError, match=f"training diverged at optimiser step 1 .*smaller learning_rate.*{advice}"):
            trainer(max_epochs=1, gradient_clip_val=clip).fit(module, datamodule=SequenceDataModule(x, batch_size=8))


# ------------------------------------------------------------------------------ loop, probe


def test_training_module_loss_history_and_probe(tiny):
    x, y = tiny
    probe = ProbeData(x[:16], y[:16], x[16:24], y[16:24])
    module = LDMTrainingModule(make_model("fixed"), probe=probe)
    trainer(max_epochs=2).fit(module, datamodule=SequenceDataModule(x[:16], batch_size=8))
    assert len(module.loss_history) == 4 and all(np.isfinite(module.loss_history))
    assert [h[0] for h in probe.history] == [0, 1]
    assert [h[1] for h in probe.history] == [2, 4]
    assert all(h[2] >= 0 for h in probe.history)
    assert all(-10 < h[3] <= 1 for h in probe.history)


def test_training_step_with_missing_frames(tiny):
    x, _ = tiny
    x = x[:8].clone()
    mask = torch.ones(8, 30, dtype=torch.bool)
    mask[:, 5] = False
    mask[3, 10:12] = False
    x[~mask] = float("nan")
    model = make_model("fixed")
    module = LDMTrainingModule(model, objective="logdet")
    trainer(max_steps=2).fit(module, datamodule=SequenceDataModule(x, mask, batch_size=4))
    assert len(module.loss_history) == 2 and all(np.isfinite(module.loss_history))
    assert all(torch.isfinite(p).all() for p in model.parameters())
