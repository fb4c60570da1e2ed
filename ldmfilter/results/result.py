"""Result objects of ``filter``, ``smooth`` and ``forecast``: beliefs in several spaces."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..io.layout import SeriesLayout
from ..io.lazy import pandas as pd
from .moments import GaussianMoments

__all__ = ["FilterResult", "ForecastResult", "SPACES"]

SPACES = ("state", "observations", "targets")


@dataclass(frozen=True)
class _Beliefs(ABC):
    """Gaussian beliefs over the state and, when the model has read-outs, the observations and targets.

    Arrays are laid out like the input: ``(n_series, T, …)``, or ``(T, …)`` for a single series;
    ragged series are padded with NaN after their last row.
    """

    state: GaussianMoments
    observations: GaussianMoments | None
    targets: GaussianMoments | None
    layout: SeriesLayout

    # the state's moments, for convenience
    @property
    def mean(self) -> np.ndarray:
        """State means, shape (…, T, S)."""
        return self.state.mean

    @property
    def cov(self) -> np.ndarray:
        """State covariances, shape (…, T, S, S)."""
        return self.state.cov

    @property
    def std(self) -> np.ndarray:
        """State standard deviations, shape (…, T, S)."""
        return self.state.std

    def space(self, space: str | None = None) -> GaussianMoments:
        """The beliefs of one space; None: observations when the model reads them out, else the state."""
        if space is None:
            space = "observations" if self.observations is not None else "state"
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        moments = getattr(self, space)
        if moments is None:
            hint = "fit_readout(X, Y) or fit(X, targets=Y)" if space == "targets" else "a model with an observation read-out"
            raise ValueError(f"this result has no {space} beliefs (needs {hint})")
        return moments

    def quantiles(self, q, space: str = "state") -> np.ndarray:
        """Closed-form marginal quantiles of one space (see :meth:`GaussianMoments.quantiles`)."""
        return self.space(space).quantiles(q)

    def interval(self, coverage: float = 0.9, space: str = "state") -> tuple[np.ndarray, np.ndarray]:
        """Central interval of one space: (lower, upper)."""
        return self.space(space).interval(coverage)

    @abstractmethod
    def time_index(self, i: int = 0) -> pd.Index:
        """The time index of series ``i``'s rows."""

    def to_pandas(self, space: str | None = None, coverage: float = 0.9) -> pd.DataFrame:
        """Means, standard deviations and a central interval as a DataFrame.

        Columns ``v``, ``v_std``, ``v_lower``, ``v_upper`` for every variable ``v`` of the space;
        the index is the input's (name, tz and freq kept; forecasts continue it).  Several series
        give a long table indexed by (series, time).
        """
        from .tables import to_pandas

        return to_pandas(self, space, coverage)

    def to_xarray(self, space: str | None = None, coverage: float = 0.9):
        """The same as an ``xarray.Dataset`` with dims (``series``,) ``time``, ``feature`` (covariance: ``feature_2``)."""
        from .tables import to_xarray

        return to_xarray(self, space, coverage)

    def plot(self, space: str | None = None, **options):
        """Plot beliefs with interval bands; see :func:`ldmfilter.plotting.plot_result`."""
        from ..plotting import plot_result

        return plot_result(self, space, **options)


@dataclass(frozen=True)
class FilterResult(_Beliefs):
    """Filtered or smoothed beliefs at every row of the input.

    Attributes
    ----------
    state : GaussianMoments
        mean (…, T, S), cov (…, T, S, S).
    observations : GaussianMoments or None
        Denoised observations: mean (…, T, *obs_shape) with covariances (…, T, D, D) for vector
        observations up to 64 channels, marginal variances only otherwise.
    targets : GaussianMoments or None
        Read-out targets: mean (…, T, D_y), cov (…, T, D_y, D_y).
    log_likelihood : ndarray, shape (…, T), or None
        One-step predictive log-density of each step's latent (0 at missing frames); None for
        smoothed results.
    observed_fraction : ndarray, shape (…, T)
        Fraction of each row's values that were present (0: a missing row, in (0, 1): missing
        channels).
    smoothed : bool
    """

    log_likelihood: np.ndarray | None = None
    observed_fraction: np.ndarray | None = None
    smoothed: bool = False

    def time_index(self, i: int = 0) -> pd.Index:
        grid = self.layout.grids[i]
        if grid is None:
            return pd.RangeIndex(self.layout.lengths[i], name=self.layout.time_name)
        return grid.index


@dataclass(frozen=True)
class ForecastResult(_Beliefs):
    """Beliefs over the ``horizon`` steps after the end of each series.

    Attributes
    ----------
    state : GaussianMoments
        mean (…, horizon, S), cov (…, horizon, S, S).
    observations, targets : GaussianMoments or None
        As in :class:`FilterResult`, over the horizon.
    horizon : int
    """

    horizon: int = 0

    def time_index(self, i: int = 0) -> pd.Index:
        grid = self.layout.grids[i]
        if grid is None:
            start = self.layout.lengths[i]
            return pd.RangeIndex(start, start + self.horizon, name=self.layout.time_name)
        return grid.future(self.horizon)
