"""filterpy ``KalmanFilter.batch_filter``, one series at a time.

filterpy's default ``batch_filter`` predicts before every update, including at step 0.  The
benchmark's convention (ldmfilter, pykalman, dynamax) is that the initial mean/covariance are
the prior of the state *at* step 0, so step 0 is an update without a predict.  Calling
``batch_filter(..., update_first=True)`` gives exactly that: update with ``z_0``, predict,
update with ``z_1``, ...; the returned means/covariances are the post-update ones.  (It also
runs one trailing predict after the last step, which is negligible.)

Missing observation vectors are passed as ``None``, which filterpy treats as predict-only.
filterpy's update uses an explicit inverse of the innovation covariance and the Joseph form.
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

__all__ = ["prepare_measurements", "filterpy_filter"]


def prepare_measurements(observations):
    """filterpy measurement lists, ``None`` for a missing row.

    Parameters
    ----------
    observations : ndarray, shape (B, T, L)
        A row with any NaN counts as missing (the benchmark only drops whole rows).

    Returns
    -------
    list of list
        One list of ``T`` measurements (``ndarray (L,)`` or ``None``) per series.
    """
    missing = np.isnan(observations).any(-1)
    return [
        [None if missing[b, t] else observations[b, t] for t in range(observations.shape[1])]
        for b in range(observations.shape[0])
    ]


def filterpy_filter(measurements, A, Q, H, R, initial_mean, initial_cov):
    """Filter each series with a fresh ``filterpy.kalman.KalmanFilter``.

    Parameters
    ----------
    measurements : list of list
        From :func:`prepare_measurements`.
    A, Q, H, R : ndarray
        Shapes (S, S), (S, S), (L, S), (L, L).
    initial_mean : ndarray, shape (S,)
    initial_cov : ndarray, shape (S, S)

    Returns
    -------
    ndarray, shape (B, T, S)
        Filtered means.
    """
    state_dim, obs_dim = A.shape[0], H.shape[0]
    means = []
    for zs in measurements:
        kf = KalmanFilter(dim_x=state_dim, dim_z=obs_dim)
        kf.F, kf.Q, kf.H, kf.R = A, Q, H, R
        kf.x, kf.P = initial_mean.copy(), initial_cov.copy()
        filtered, _, _, _ = kf.batch_filter(zs, update_first=True)
        means.append(filtered)
    return np.stack(means)
