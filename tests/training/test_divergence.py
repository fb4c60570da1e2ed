"""Training that blew up: finding it in the loss history (``late_divergence``), the copy of the best window's
weights (``BestWindowWeights``), and what ``fit`` does with both (``on_divergence``)."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from ldmfilter.estimators import LDMFilter
from ldmfilter.training import TrainingDivergedWarning, late_divergence
from ldmfilter.training.divergence import BestWindowWeights, loss_windows


def noisy_run(n=1000, seed=0, level=-100.0, spread=60.0):
    """A healthy run's losses: falling towards ``level`` with per-step noise of about ``spread``."""
    rng = np.random.default_rng(seed)
    return level + 300.0 * np.exp(-np.arange(n) / 150.0) + spread * rng.standard_normal(n)


def test_a_healthy_noisy_run_is_not_called_diverged():
    for seed in range(20):
        assert late_divergence(noisy_run(seed=seed)) is None


def test_a_loss_that_levels_off_or_rises_a_little_is_not_called_diverged():
    run = noisy_run()
    assert late_divergence(np.r_[run, np.full(200, run[-200:].mean())]) is None
    assert late_divergence(run + np.linspace(0.0, 150.0, run.size)) is None  # drifts up by 2.5 spreads
    assert late_divergence(np.full(500, 3.0)) is None  # no spread at all


def test_the_wobbly_blow_up_is_found_with_where_it_started():
    """The shape of wobbly seed 3's run: about −100 to −300 for 4,750 steps, then 1.7e5."""
    run = np.r_[noisy_run(4750, level=-250.0), np.geomspace(10.0, 1.7e5, 250)]
    message = late_divergence(run)
    assert message is not None
    assert "last 250 optimiser steps" in message
    start = int(message.split("in the window from step ")[1].split(".")[0])
    assert 4750 <= start <= 5000


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_end_counts_as_diverged(bad):
    run = noisy_run()
    run[-5:] = bad
    assert late_divergence(run) is not None


def test_a_blow_up_that_recovered_is_not_reported():
    run = noisy_run(2000)
    run[1000:1100] = 1e5
    assert late_divergence(run) is None


def test_short_runs_are_not_judged():
    assert late_divergence([1.0, 2.0, 1e9]) is None
    assert late_divergence(np.r_[np.zeros(30), [1e9] * 9]) is None  # three windows of 10 and a rest
    assert late_divergence(np.r_[np.random.default_rng(0).normal(size=30), [1e9] * 10]) is not None  # four windows


def test_fit_warns_when_its_run_blew_up(monkeypatch):
    """``fit`` passes its loss history to the check and warns with what the check says."""
    import ldmfilter.estimators.ldm as ldm

    seen = []
    monkeypatch.setattr(ldm, "late_divergence", lambda losses: seen.append(list(losses)) or "it blew up")
    X = np.random.default_rng(0).normal(size=(8, 12, 3)).astype(np.float32)
    with pytest.warns(TrainingDivergedWarning, match="it blew up") as caught:
        model = LDMFilter(state_dim=2, latent_dim=2, hidden=(4,), max_epochs=2, verbose=False).fit(X)
    assert seen == [model.loss_history_]
    assert [w.filename for w in caught if w.category is TrainingDivergedWarning] == [__file__]  # points at the call of fit


# ------------------------------------------------------------------------------ the best window's weights


def test_the_kept_windows_are_those_the_check_judges():
    """``BestWindowWeights`` keeps the weights at the end of the lowest window on ``late_divergence``'s grid."""
    run = np.r_[noisy_run(4750, level=-250.0), np.geomspace(10.0, 1.7e5, 250)]
    width, count, offset = loss_windows(run.size)
    assert (width, count, offset) == (250, 20, 0)
    layer = torch.nn.Linear(1, 1, bias=False)
    best, ends = BestWindowWeights(run.size), {}
    for step in range(run.size):
        layer.weight.data.fill_(float(step))  # the weights after step `step` are that step's number
        best.observe(list(run[: step + 1]), layer)
        ends[step] = best.steps
    means = run.reshape(count, width).mean(1)
    first, last = best.steps
    assert (first, last) == (int(np.argmin(means)) * width, int(np.argmin(means)) * width + width - 1)
    assert best.mean == pytest.approx(means.min())
    assert ends[249] == (0, 249) and ends[248] is None  # a copy as soon as the first window closes, not before
    f"{late_divergence(run)}".index(f"over steps {first}–{last}")  # the window the check compared with
    layer.weight.data.fill_(-1.0)
    assert f"after optimiser step {last}," in best.restore(layer)
    assert layer.weight.item() == float(last)


def test_windows_with_non_finite_losses_are_never_kept_and_the_copy_is_detached():
    run = np.r_[np.full(10, 5.0), np.full(10, 4.0), np.full(20, np.nan), np.full(10, -np.inf), np.full(10, 1.0)]
    layer = torch.nn.Linear(1, 1, bias=False)
    best = BestWindowWeights(run.size)
    for step in range(run.size):
        layer.weight.data.fill_(float(step))
        best.observe(list(run[: step + 1]), layer)
        if step == 19:
            assert best.steps == (10, 19)
        if step == 49:
            assert best.steps == (10, 19)  # the NaN and −inf windows do not count
    assert best.steps == (50, 59) and best.weights["weight"].item() == 59.0
    layer.weight.data.fill_(-3.0)
    assert best.weights["weight"].item() == 59.0
    assert BestWindowWeights(float("inf")).width == 0  # an open-ended run keeps nothing


def test_a_checkpointed_copy_is_taken_over_only_on_the_same_grid():
    layer = torch.nn.Linear(1, 1, bias=False)
    best = BestWindowWeights(100)
    for step in range(40):
        best.observe([1.0] * 30 + [0.5] * (step - 29) if step >= 30 else [1.0] * (step + 1), layer)
    state = best.state_dict()
    same, other = BestWindowWeights(100), BestWindowWeights(200)
    same.load_state_dict(state), other.load_state_dict(state)
    assert same.steps == best.steps == (30, 39) and same.mean == 0.5 and same.weights is not None
    assert other.steps is None and other.weights is None


# ------------------------------------------------------------------------------ fit and on_divergence


class Record(L.Callback):
    """Copy the weights after every optimiser step (at the next step's start, after the radius clip), and
    from step ``blow_up`` on scale the encoder's output layer up by ``factor`` before every step."""

    def __init__(self, blow_up=None, factor=10.0, nan_from=None):
        self.after, self.blow_up, self.factor, self.nan_from = {}, blow_up, factor, nan_from

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step:
            self.after[step - 1] = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        if self.blow_up is not None and step >= self.blow_up:
            with torch.no_grad():
                pl_module.model.encoder.body[1][-1].weight.mul_(self.factor)
        if self.nan_from is not None and step == self.nan_from:
            pl_module.model.dynamics.transition.register_hook(lambda grad: grad * float("nan"))


def series():
    return np.random.default_rng(0).normal(size=(8, 20, 3)).cumsum(1).astype(np.float32)


def tiny(record, **changes):  # 8 series, batch 2, 15 epochs: 60 steps, windows of 10 from step 0
    settings = dict(state_dim=2, latent_dim=2, hidden=(8,), max_epochs=15, batch_size=2, verbose=False,
                    trainer_kwargs={"callbacks": [record]})
    return LDMFilter(**{**settings, **changes})


@pytest.mark.parametrize("on_divergence", ["restore", "keep"])
def test_a_late_blow_up_restores_the_best_window_or_keeps_the_last_weights(on_divergence):
    record = Record(blow_up=50)
    with pytest.warns(TrainingDivergedWarning) as caught:
        model = tiny(record, on_divergence=on_divergence).fit(series())
    message = str(caught[0].message)
    assert caught[0].filename == __file__  # points at the call of fit
    assert "blew up" in message and "gradient_clip_val" in message and "loss_history_" in message
    assert len(model.loss_history_) == 60 and late_divergence(model.loss_history_) is not None
    weights = model.model_.state_dict()
    if on_divergence == "restore":
        means = np.reshape(model.loss_history_, (6, 10))[:-1].mean(1)
        last = 10 * int(np.argmin(means)) + 9
        assert f"The model holds the weights after optimiser step {last}," in message
        for name, value in record.after[last].items():
            torch.testing.assert_close(weights[name], value, msg=name)
    else:
        assert "The model holds the weights of the last step" in message
        assert weights["encoder.body.1.2.weight"].abs().max() > 10 * record.after[last_before(record, 50)]["encoder.body.1.2.weight"].abs().max()
    assert np.isfinite(model.filter(series()).mean).all()


def last_before(record, step):
    return max(k for k in record.after if k < step)


def test_a_nan_transition_stops_training_and_restores_the_best_window():
    record = Record(nan_from=35)
    with pytest.warns(TrainingDivergedWarning, match="training diverged at optimiser step 36") as caught:
        model = tiny(record).fit(series())
    message = str(caught[0].message)
    assert caught[0].filename == __file__
    assert len(model.loss_history_) == 36  # stopped after the step that made A NaN
    means = np.reshape(model.loss_history_[:30], (3, 10)).mean(1)
    last = 10 * int(np.argmin(means)) + 9
    assert f"Training stopped there, and the model holds the weights after optimiser step {last}," in message
    for name, value in record.after[last].items():
        torch.testing.assert_close(model.model_.state_dict()[name], value, msg=name)
    assert np.isfinite(model.filter(series()).mean).all()


def test_a_nan_transition_raises_with_keep_or_before_any_window_closed():
    with pytest.raises(FloatingPointError, match="training diverged at optimiser step 36"):
        tiny(Record(nan_from=35), on_divergence="keep").fit(series())
    with pytest.raises(FloatingPointError, match="training diverged at optimiser step 6 "):
        tiny(Record(nan_from=5)).fit(series())


def test_on_divergence_is_checked():
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        LDMFilter(on_divergence="ignore").fit(series())


def test_a_resumed_run_keeps_the_same_best_window(tmp_path):
    """The copy travels in the checkpoint: a resumed run falls back on the same weights as an uninterrupted one."""

    class Interrupted(Exception):
        pass

    class StopAt(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 8:
                raise Interrupted

    reference = tiny(Record()).fit(series())
    with pytest.raises(Interrupted):
        tiny(StopAt()).fit(series(), checkpoint_dir=tmp_path)
    stored = torch.load(tmp_path / "last.ckpt", weights_only=True)["ldmfilter"]["best_weights"]
    assert stored["steps"] == [20, 29]  # the windows closed by then: steps 0–9, 10–19, 20–29
    resumed = tiny(Record()).fit(series(), resume_from=tmp_path)
    ours, theirs = resumed.module_.best_weights, reference.module_.best_weights
    assert ours.steps == theirs.steps and ours.mean == pytest.approx(theirs.mean, rel=1e-5)
    for name, value in theirs.weights.items():
        torch.testing.assert_close(ours.weights[name], value, rtol=1e-5, atol=1e-6, msg=name)
