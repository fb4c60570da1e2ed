"""Detecting a training loss that blew up at the end of a run (``late_divergence``) and the warning of ``fit``."""

from __future__ import annotations

import numpy as np
import pytest

from ldmfilter.estimators import LDMFilter
from ldmfilter.training import TrainingDivergedWarning, late_divergence


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
    assert "gradient_clip_val" in message and "loss_history_" in message


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
