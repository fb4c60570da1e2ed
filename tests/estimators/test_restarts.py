"""Restarts (``LDMFilter(n_init=K)``): which runs count by their loss, the agreement between runs, and the run
``fit`` keeps."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ldmfilter import LDMFilter
from ldmfilter.estimators import restarts
from ldmfilter.estimators.restarts import comparable_runs, restart_agreement

TINY = dict(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=3, batch_size=4, verbose=False)


def signal(n=2000, seed=0):
    """A 2-D signal every good run holds in its own affine coordinates."""
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(n, 2))


def affine_run(s, seed, hidden=2):
    """An affine image of ``s`` in the first two state dims, and hidden dims of unrelated content."""
    rng = np.random.default_rng(seed)
    extra = rng.normal(size=(s.shape[0], hidden))
    return np.c_[s @ rng.normal(size=(2, 2)) + rng.normal(size=2), extra]


def test_affine_runs_agree_and_warped_or_collapsed_runs_do_not():
    s = signal()
    warped = np.c_[np.tanh(2.0 * s) ** 3, np.random.default_rng(9).normal(size=(s.shape[0], 2))]
    collapsed = np.ones((s.shape[0], 4))
    runs = [warped, affine_run(s, 1), collapsed, affine_run(s, 2), affine_run(s, 3)]
    scores = restart_agreement(runs, dims=2)
    assert scores.shape == (5,)
    assert int(np.argmax(scores)) in (1, 3, 4)
    assert scores[2] == 0.0  # a constant state shares nothing
    assert min(scores[[1, 3, 4]]) > scores[0] > scores[2]
    # two affine images of the same signal agree perfectly in the 2 canonical directions
    assert restart_agreement([affine_run(s, 1), affine_run(s, 2)], dims=2) == pytest.approx([1.0, 1.0])


def test_agreement_is_symmetric_and_blind_to_affine_maps_of_a_run():
    s = signal(500)
    a, b, c = affine_run(s, 1), affine_run(s, 2) + 0.3 * np.random.default_rng(0).normal(size=(500, 4)), np.tanh(s)
    scores = restart_agreement([a, b, c], dims=2)
    mapped = restart_agreement([a @ np.random.default_rng(5).normal(size=(4, 4)) + 7.0, b, c], dims=2)
    np.testing.assert_allclose(mapped, scores, rtol=1e-9)
    assert restart_agreement([b, a, c], dims=2) == pytest.approx(scores[[1, 0, 2]])


def test_agreement_refuses_fewer_than_two_runs_or_unequal_lengths():
    with pytest.raises(ValueError, match="at least 2 runs"):
        restart_agreement([np.zeros((5, 2))], dims=2)
    with pytest.raises(ValueError, match="same time steps.*\\[5, 6\\]"):
        restart_agreement([np.zeros((5, 2)), np.zeros((6, 2))], dims=2)


def run_losses(level, n=2000, spread=25.0, seed=0):
    """A run's loss history ending around ``level``, heavy-tailed like the wobbly runs' (per-step spread ~25)."""
    rng = np.random.default_rng(seed)
    return level + 300.0 * np.exp(-np.arange(n) / 300.0) + spread * rng.standard_t(2, size=n)


def test_runs_that_end_clearly_worse_do_not_count():
    """The wobbly pattern: good runs within a spread of each other, collapsed runs 10+ spreads above."""
    histories = [run_losses(-192.0, seed=1), run_losses(140.0, seed=2), run_losses(-210.0, seed=3), run_losses(-130.0, seed=4)]
    final, kept = comparable_runs(histories)
    assert final == pytest.approx([h[-100:].mean() for h in histories])  # the last 5% of 2000 steps
    assert kept == [2, 0, 3]  # lowest final loss first; the collapsed run is out
    assert comparable_runs(histories, tolerance=0.0)[1] == [2]  # only the best one


def test_non_finite_runs_never_count():
    histories = [run_losses(-100.0), run_losses(-200.0, seed=1)]
    histories[1][-3] = np.nan
    final, kept = comparable_runs(histories)
    assert np.isnan(final[1]) and kept == [0]
    assert comparable_runs([np.full(100, np.inf)])[1] == []


@pytest.fixture(scope="module")
def series():
    return np.random.default_rng(0).normal(size=(8, 20, 3)).cumsum(1).astype(np.float32)


@pytest.mark.parametrize("kept", [[1, 0, 2], [2, 0]])
def test_fit_keeps_the_comparable_run_that_agrees_most_or_the_lowest_loss(series, monkeypatch, kept):
    """With 3 comparable runs, the one that agrees most with the other two; with fewer, the lowest final loss."""
    monkeypatch.setattr(restarts, "comparable_runs", lambda histories: (np.array([h[-1] for h in histories]), kept))
    model = LDMFilter(**TINY, n_init=3, random_state=7).fit(series)
    assert model.restart_seeds_ == [7, 107, 207] and model.random_state == 7 and model.n_init == 3
    runs = [LDMFilter(**TINY, random_state=seed).fit(series) for seed in model.restart_seeds_]
    np.testing.assert_allclose(model.restart_losses_, [run.loss_history_[-1] for run in runs], rtol=1e-6)
    if len(kept) == 3:
        states = [runs[k].filter(series).mean.reshape(-1, 3) for k in kept]
        np.testing.assert_allclose(model.restart_scores_[kept], restart_agreement(states, dims=2), rtol=1e-5)
        assert model.restart_index_ == int(np.nanargmax(model.restart_scores_))
    else:
        assert np.isnan(model.restart_scores_).all() and model.restart_index_ == 2
    chosen = runs[model.restart_index_]
    np.testing.assert_array_equal(model.filter(series).mean, chosen.filter(series).mean)
    assert model.loss_history_ == chosen.loss_history_


def test_fit_raises_when_every_restart_ended_non_finite(series, monkeypatch):
    monkeypatch.setattr(restarts, "comparable_runs", lambda histories: (np.full(len(histories), np.nan), []))
    with pytest.raises(FloatingPointError, match="every restart ended with a non-finite loss"):
        LDMFilter(**TINY, n_init=3).fit(series)


def test_n_init_refuses_what_it_cannot_serve(series):
    with pytest.raises(ValueError, match="n_init must be 1 or at least 3"):
        LDMFilter(**TINY, n_init=2).fit(series)
    with pytest.raises(ValueError, match="n_init must be a positive integer"):
        LDMFilter(**TINY, n_init=0).fit(series)
    with pytest.raises(ValueError, match="n_init > 1 needs the Kalman predictor"):
        LDMFilter(**TINY, n_init=3, predictor="rnn").fit(series)
    with pytest.raises(ValueError, match="n_init > 1 does not take checkpoint_dir"):
        LDMFilter(**TINY, n_init=3).fit(series, checkpoint_dir="unused")
    lazy = xr.DataArray(da.from_array(series, chunks=(4, 20, 3)), dims=("series", "time", "feature"), name="x")
    with pytest.raises(ValueError, match="n_init > 1 needs data in memory"):
        LDMFilter(**TINY, n_init=3).fit(lazy)
