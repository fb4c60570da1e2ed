"""What a live stream returns: :class:`StreamBelief`, state moments with the read-outs on demand."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..results import GaussianMoments

__all__ = ["StreamBelief"]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class StreamBelief:
    """Beliefs returned by :class:`~ldmfilter.estimators.FilterStream`: state moments, and read-outs on demand.

    Attributes
    ----------
    mean : ndarray, shape (n_series, S), or (n_series, horizon, S) for a forecast
        float64, read-only.
    cov : ndarray, shape (n_series, S, S), or (n_series, horizon, S, S) for a forecast
        float64, read-only; a broadcast view when every series has the same covariance.
    log_likelihood : ndarray, shape (n_series,), or None
        ``log p(z_t | z_{<t})`` of the latents of the update's observation (0 for a missing
        frame), as ``filter`` reports it; None for a forecast.
    observed : ndarray of bool, shape (n_series,), or None
        Which series had an observation at this update (None for a forecast).
    step : int
        Grid step of the (first) belief, counting the stream's first update as step 0.

    Parameters
    ----------
    mean, cov, log_likelihood, observed, step
        As the attributes (made read-only views here).
    moments : callable
        ``() → dict`` of the ``"state"``, ``"observations"`` and ``"targets"`` moments, called
        when one of them is first read.
    """

    __slots__ = ("mean", "cov", "log_likelihood", "observed", "step", "_moments", "_spaces")

    def __init__(self, mean, cov, moments: Callable[[], dict], log_likelihood=None, observed=None, step: int = 0):
        self.mean, self.cov = _read_only(mean), _read_only(cov)
        self.log_likelihood = None if log_likelihood is None else _read_only(log_likelihood)
        self.observed = None if observed is None else _read_only(observed)
        self.step = int(step)
        self._moments, self._spaces = moments, None

    def _space(self, name: str):
        if self._spaces is None:
            self._spaces = self._moments()
        return self._spaces[name]

    @property
    def state(self) -> GaussianMoments:
        """State beliefs as :class:`~ldmfilter.results.GaussianMoments`."""
        return self._space("state")

    @property
    def observations(self) -> GaussianMoments | None:
        """Observation beliefs through the model's read-out (computed on first access), or None."""
        return self._space("observations")

    @property
    def targets(self) -> GaussianMoments | None:
        """Target beliefs through the model's target read-out (computed on first access), or None."""
        return self._space("targets")

    def __repr__(self) -> str:
        return f"StreamBelief(step={self.step}, mean shape {self.mean.shape})"
