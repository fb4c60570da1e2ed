"""pykalman ``KalmanFilter.filter``, one series at a time.

pykalman's convention matches the benchmark's: ``initial_state_mean``/``initial_state_covariance``
are the prior of the state at step 0.  Missing observations are masked rows of a numpy masked
array (whole observation vectors, as pykalman requires).  ``filter`` returns means and
covariances only; pykalman computes the log-likelihood in a separate pass, so only the means are
compared.
"""

from __future__ import annotations

import numpy as np
from pykalman import KalmanFilter

__all__ = ["prepare_measurements", "pykalman_filter"]


def prepare_measurements(observations):
    """One masked array per series (NaN entries masked).

    Parameters
    ----------
    observations : ndarray, shape (B, T, L)

    Returns
    -------
    list of numpy.ma.MaskedArray, each shape (T, L)
    """
    return [np.ma.masked_invalid(series) for series in observations]


def pykalman_filter(measurements, A, Q, H, R, initial_mean, initial_cov):
    """Filter each series with ``pykalman.KalmanFilter.filter``.

    Parameters
    ----------
    measurements : list of numpy.ma.MaskedArray
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
    kf = KalmanFilter(
        transition_matrices=A, observation_matrices=H, transition_covariance=Q,
        observation_covariance=R, initial_state_mean=initial_mean, initial_state_covariance=initial_cov,
    )
    return np.stack([kf.filter(series)[0] for series in measurements])
