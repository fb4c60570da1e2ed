"""Restarts of ``LDMFilter.fit`` (``n_init``), and the run among them whose state the others share.

With the paper's linear predictor the LDM objective identifies the latent state up to an affine
map (METHOD.md §1), so every run that reaches that solution holds the same ``L``-dimensional
signal, each in its own affine coordinates.  A run that failed holds something else: a collapsed
run keeps almost nothing of it, and a run whose encoder warped it (possible once the transition
has a nonlinear residual, ``docs/nonlinear.md``) holds it only through a nonlinear map.  Canonical
correlations measure how much of an affine signal two runs share, so the run that shares the most
with the others is one of the majority that agree — when the majority succeeded.  The training
loss does not tell warps apart (a warped wobbly run scored a better held-out loss than good
ones), but it does tell collapses: a run that never learned the signal ends with a loss far above
the others'.  So :func:`fit_restarts` first sets aside the runs whose final loss is clearly worse
than the best run's (:func:`comparable_runs`), then picks by agreement among the rest.
"""

from __future__ import annotations

import numpy as np

from ..training.divergence import loss_limit, loss_windows
from .persistence import constructor_params

__all__ = ["RESTART_SEED_STEP", "MAX_AGREEMENT_SERIES", "LOSS_TOLERANCE", "comparable_runs", "fit_restarts",
           "restart_agreement"]

RESTART_SEED_STEP = 100  # restart k trains with random_state + 100·k
MAX_AGREEMENT_SERIES = 1000  # the runs are compared on the filtered states of at most this many training series
LOSS_TOLERANCE = 5.0  # per-step spreads a run's final loss may lie above the best run's and still count


def comparable_runs(histories: list, tolerance: float = LOSS_TOLERANCE) -> tuple[np.ndarray, list]:
    """The runs whose final loss is not clearly worse than the best run's.

    A run's final loss is the mean over the last window of :func:`~ldmfilter.training.late_divergence`'s
    grid (5% of its steps).  A run counts when that mean lies at most ``tolerance`` per-step spreads
    (the median absolute deviation of the best run's last window) above the lowest one.  On the
    wobbly video (10,000 × 4, clamp map, three runs on each of seeds 0–6; spreads 21–26) the
    collapsed runs (probe R² ≈ 0) ended 15–21 spreads above the best, the good runs 0–3.4 (one
    8.1), and the warped ones (R² 0.82–0.91) 0–7.5: the loss sets aside collapses, not warps.

    Parameters
    ----------
    histories : list of sequences of float
        Each run's ``loss_history_``.
    tolerance : float

    Returns
    -------
    final : ndarray, shape (len(histories),)
        Each run's final loss (NaN or inf where the last window is not finite).
    kept : list of int
        The runs that count, lowest final loss first.
    """
    windows = []
    for history in histories:
        history = np.asarray(history, dtype=np.float64)
        windows.append(history[-loss_windows(history.size)[0]:])
    final = np.array([w.mean() for w in windows])
    finite = np.isfinite(final)
    if not finite.any():
        return final, []
    best = int(np.argmin(np.where(finite, final, np.inf)))
    _, limit = loss_limit(windows[best], tolerance)
    kept = [k for k in np.argsort(np.where(finite, final, np.inf), kind="stable") if finite[k] and final[k] <= limit]
    return final, [int(k) for k in kept]


def _whitened_basis(states: np.ndarray) -> np.ndarray:
    """An orthonormal basis (N, rank) of the centred columns of ``states`` (N, S), without near-null directions."""
    centred = states - states.mean(axis=0)
    u, singular, _ = np.linalg.svd(centred, full_matrices=False)
    keep = singular > 1e-8 * max(float(singular[0]) if singular.size else 0.0, np.finfo(np.float64).tiny)
    return u[:, keep]


def restart_agreement(states: list, dims: int) -> np.ndarray:
    """How much of an affine signal each run shares with the other runs.

    For two runs, the canonical correlations between their states measure the largest
    correlations that affine maps of the one reach with affine maps of the other; the agreement
    of a pair is the mean of the ``dims`` largest.  A run's score is its mean agreement with
    every other run.

    Parameters
    ----------
    states : list of arrays, each (N, S_k)
        Each run's filtered means at the same N time steps (any state sizes).
    dims : int
        How many canonical directions to count (the latent dimension ``L``).

    Returns
    -------
    ndarray, shape (len(states),)
        Scores in [0, 1]; higher: the run shares more of the others' affine signal.  A run
        whose state is constant scores 0.
    """
    if len(states) < 2:
        raise ValueError(f"restart_agreement needs at least 2 runs, got {len(states)}")
    n = {np.shape(s)[0] for s in states}
    if len(n) != 1:
        raise ValueError(f"every run's states must cover the same time steps, got lengths {sorted(n)}")
    bases = [_whitened_basis(np.asarray(s, dtype=np.float64)) for s in states]
    pair = np.zeros((len(states), len(states)))
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            correlations = np.linalg.svd(bases[i].T @ bases[j], compute_uv=False)
            top = np.zeros(dims)
            top[: min(dims, correlations.size)] = np.clip(correlations[:dims], 0.0, 1.0)
            pair[i, j] = pair[j, i] = float(top.mean())
    return pair.sum(axis=1) / (len(states) - 1)


def fit_restarts(estimator, X, controls, fit_options: dict):
    """Fit ``estimator.n_init`` runs and keep one (see the module's doc).

    Restart ``k`` is the same model with ``random_state + RESTART_SEED_STEP·k`` (so restart 0 is
    the single run ``n_init=1`` gives).  Of the runs :func:`comparable_runs` keeps, the one that
    agrees most with the others (:func:`restart_agreement` on the filtered means of the first
    ``MAX_AGREEMENT_SERIES`` training series) when there are at least 3 of them, else the one
    with the lowest final loss.  The estimator takes the chosen run's fitted state and records
    ``restart_seeds_``, ``restart_losses_`` (final losses), ``restart_scores_`` (agreement among
    the comparable runs; NaN for the others, and for all when fewer than 3 are comparable) and
    ``restart_index_``.
    """
    if fit_options.get("checkpoint_dir") is not None or fit_options.get("resume_from") is not None:
        raise ValueError("n_init > 1 does not take checkpoint_dir or resume_from; fit the restarts one by one to checkpoint them")
    params = constructor_params(estimator)
    seeds = [int(estimator.random_state) + RESTART_SEED_STEP * k for k in range(estimator.n_init)]
    runs = [type(estimator)(**{**params, "n_init": 1, "random_state": seed}).fit(X, controls=controls, **fit_options)
            for seed in seeds]
    final, kept = comparable_runs([run.loss_history_ for run in runs])
    if not kept:
        raise FloatingPointError(f"every restart ended with a non-finite loss (final losses {final.tolist()})")
    scores = np.full(len(runs), np.nan)
    best = kept[0]
    if len(kept) >= 3:
        sequences, u = runs[0]._inputs(X, controls)  # the same grid for every run
        count = min(sequences.values.shape[0], MAX_AGREEMENT_SERIES)
        values, observed, u = sequences.values[:count], sequences.observed[:count], None if u is None else u[:count]
        states = []
        for k in kept:
            mean = runs[k]._filter_grid(values, observed, u).filtered_mean
            states.append(mean.double().reshape(-1, mean.shape[-1]).numpy())
        scores[kept] = restart_agreement(states, estimator.latent_dim)
        best = kept[int(np.argmax(scores[kept]))]
    estimator.__dict__.update({name: value for name, value in vars(runs[best]).items() if name not in params})
    estimator.restart_seeds_, estimator.restart_losses_ = seeds, final
    estimator.restart_scores_, estimator.restart_index_ = scores, best
    return estimator
