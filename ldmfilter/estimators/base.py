"""The user surface shared by the state-space estimators.

``filter``, ``smooth``, ``forecast`` and ``fit_readout`` on numpy, pandas and xarray input, with
results labelled like the input.  A subclass provides the filter on regular grids and the
transition model; this class does the conversions (observations, targets and control inputs),
the smoothing and forecasting maths calls and the read-outs from the state to observations and
targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import numpy as np
import torch

from ..gaussian import FilterResult as GridFilterResult
from ..gaussian import kalman_forecast, kalman_smoother
from ..io import InputSchema, Sequences, to_sequences
from ..nn.readout import LinearReadout, MLPReadout
from ..results import FilterResult, ForecastResult, GaussianMoments
from .controls import ControlInputs
from .forecast_calibration import (
    METHODS, fit_coverage_scales, fit_scales, forecast_origins, gaussian_nll_sums, marginal_coverage, scale_forecast_cov,
)

__all__ = ["StateSpaceEstimator", "FULL_COVARIANCE_MAX_DIM", "READOUTS"]

FULL_COVARIANCE_MAX_DIM = 64  # observation spaces up to this size keep full covariances
READOUTS = ("linear", "mlp")


class StateSpaceEstimator(ControlInputs, ABC):
    """Shared ``filter`` / ``smooth`` / ``forecast`` / ``fit_readout`` of the estimators.

    Subclasses set ``schema_`` (an :class:`~ldmfilter.io.InputSchema`) when fitted and implement
    ``_filter_grid(values, observed, controls)`` (a :class:`ldmfilter.gaussian.FilterResult` over
    the regular grid) and ``_transition()`` (``A``, ``Q``, offset ``c`` as tensors).  Read-outs
    from the state live in ``readouts_`` under ``"observations"`` and ``"targets"``.  A model
    fitted with control inputs records their names in ``schema_.control_names``; every method
    then takes ``controls`` (and ``forecast`` the future ones) and passes them, on the grid, to
    the hooks.
    """

    # ------------------------------------------------------------------ hooks
    def _check_fitted(self) -> None:
        if not hasattr(self, "schema_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    @abstractmethod
    def _filter_grid(self, values: np.ndarray, observed: np.ndarray, controls: np.ndarray | None = None) -> GridFilterResult:
        """The filter over grid arrays ``values`` (n, T, *obs_shape), NaN where missing, ``observed`` (n, T)
        and ``controls`` (n, T, U) (None for a model without inputs)."""

    @abstractmethod
    def _transition(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The fitted transition ``A`` (S, S), ``Q`` (S, S) and offset ``c`` (S,) or None."""

    def _smooth_grid(self, grid: GridFilterResult, controls: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed means (n, T, S) and covariances over the grid; RTS with ``_transition()`` by default."""
        A, Q, _ = self._transition()
        with torch.no_grad():
            smoothed = kalman_smoother(grid, A, Q)
        return smoothed.smoothed_mean, smoothed.smoothed_cov

    def _forecast_grid(self, mean: torch.Tensor, cov: torch.Tensor, horizon: int, controls: np.ndarray | None = None):
        """Beliefs (n, horizon, S) after filtered beliefs (n, S) given future ``controls`` (n, horizon, U);
        ``kalman_forecast`` with ``_transition()`` by default."""
        A, Q, c = self._transition()
        with torch.no_grad():
            return kalman_forecast(mean, cov, A, Q, horizon, c)

    # ------------------------------------------------------------------ input
    def _sequences(self, X, name: str = "X", min_steps: int = 1) -> Sequences:
        """Validated input on regular grids, checked against what the model was fitted on."""
        self._check_fitted()
        sequences, _ = to_sequences(X, name, self.schema_, min_steps)
        return sequences

    def _targets(
        self, Y, sequences: Sequences, name: str = "targets", schema: InputSchema | None = None, prefix: str = "target"
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Targets laid out like ``sequences`` on its grid: (n, T, D) with NaN where missing, and names.

        ``schema`` (optional) is what ``Y`` must match (shape, channel names matched by name);
        unnamed channels are called ``{prefix}_k``.
        """
        targets, schema = to_sequences(Y, name, schema, 1)
        mine, theirs = sequences.layout, targets.layout
        if len(schema.obs_shape) != 1:
            raise ValueError(f"{name} must hold vectors (T, D) per series, got observations of shape {schema.obs_shape}")
        if mine.n_series != theirs.n_series or mine.lengths != theirs.lengths:
            raise ValueError(
                f"{name} must have the same series and rows as X: X has {mine.n_series} series of lengths "
                f"{list(mine.lengths)[:5]}, {name} {theirs.n_series} of lengths {list(theirs.lengths)[:5]}"
            )
        for i, (a, b) in enumerate(zip(mine.grids, theirs.grids)):
            if a is not None and b is not None and not a.same_as(b):
                raise ValueError(f"{name} series {mine.series[i]!r} has a different time index from X's")
        values = np.full(sequences.observed.shape + schema.obs_shape, np.nan)
        for i in range(mine.n_series):
            values[i, mine.positions(i)] = targets.values[i, theirs.positions(i)]
        names = schema.feature_names or tuple(f"{prefix}_{k}" for k in range(schema.obs_shape[0]))
        return values, names

    # ------------------------------------------------------------------ read-outs
    def _fit_readout(self, space: str, grid: GridFilterResult, values: np.ndarray, kind: str, options: dict):
        """Fit a read-out from the filtered states to ``values`` (n, T, *shape) on the same grid."""
        if kind not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {kind!r}")
        flat = torch.as_tensor(values.reshape(values.shape[:2] + (-1,)))  # not copied: the linear fit reads it in blocks
        mean, cov = grid.filtered_mean.detach(), grid.filtered_cov.detach()
        if kind == "linear":
            readout = LinearReadout.fit(mean, flat, cov, diagonal=flat.shape[-1] > FULL_COVARIANCE_MAX_DIM)
        else:
            readout = MLPReadout.fit(mean, flat, cov.expand(mean.shape[:-1] + cov.shape[-2:]), **options)
        self.readouts_[space] = readout

    def fit_readout(self, X, Y, readout: str = "linear", controls=None, **options) -> "StateSpaceEstimator":
        """Fit (or refit) the read-out from the filtered state to targets ``Y``.

        Parameters
        ----------
        X : input like ``fit``'s
        Y : array-like, DataFrame(s) or DataArray, laid out like ``X`` with vector targets
            ``(T, D_y)`` per series (NaN where unknown; left out of the fit).
        readout : {"linear", "mlp"}
            Exact linear push-forward, or an MLP with unscented moments.
        controls : like ``fit``'s, optional
            Control inputs of ``X`` (models fitted with controls).
        **options
            For ``"mlp"``: ``hidden``, ``rule``, ``steps``, ``batch_size``, ``learning_rate``.

        Returns
        -------
        self
        """
        sequences, u = self._inputs(X, controls)
        values, names = self._targets(Y, sequences)
        self._fit_readout("targets", self._filter_grid(sequences.values, sequences.observed, u), values, readout, options)
        self.target_names_ = names
        return self

    def _readout_moments(self, space: str, mean: torch.Tensor, cov: torch.Tensor):
        """Moments of ``space`` ("observations" or "targets") read out of state moments (…, S).

        Returns the mean (…, D) and either full covariances (…, D, D) and None, or None and the
        marginal variances (…, D) (observation spaces of more than ``FULL_COVARIANCE_MAX_DIM``
        values, or of frames).
        """
        readout = self.readouts_[space]
        shape = self.schema_.obs_shape
        if space == "observations" and (int(np.prod(shape)) > FULL_COVARIANCE_MAX_DIM or len(shape) != 1):
            obs_mean, obs_var = readout.marginal(mean, cov)
            return obs_mean, None, obs_var
        read_mean, read_cov = readout(mean, cov)
        return read_mean, read_cov, None

    def _spaces(self, mean: torch.Tensor, cov: torch.Tensor) -> dict:
        """State moments (…, S) and, through the read-outs, observation and target moments."""
        readouts = getattr(self, "readouts_", {})
        spaces = {"state": GaussianMoments(mean.numpy(), np.ascontiguousarray(cov.numpy())), "observations": None, "targets": None}
        with torch.no_grad():
            if "observations" in readouts:
                obs_mean, obs_cov, obs_var = self._readout_moments("observations", mean, cov)
                if obs_cov is not None:
                    spaces["observations"] = GaussianMoments(obs_mean.numpy(), obs_cov.numpy(), names=self.schema_.feature_names)
                else:
                    shape = mean.shape[:-1] + self.schema_.obs_shape
                    spaces["observations"] = GaussianMoments(
                        obs_mean.reshape(shape).numpy(), None, obs_var.reshape(shape).numpy(), names=self.schema_.feature_names
                    )
            if "targets" in readouts:
                target_mean, target_cov, _ = self._readout_moments("targets", mean, cov)
                spaces["targets"] = GaussianMoments(target_mean.numpy(), target_cov.numpy(), names=self.target_names_)
        return spaces

    # ------------------------------------------------------------------ public API
    def _gathered(self, sequences: Sequences, mean: torch.Tensor, cov: torch.Tensor) -> dict:
        """Moments on the grid → at the user's rows (padding NaN for ragged input) → all spaces."""
        cov = cov.expand(mean.shape + mean.shape[-1:])  # shared covariances are broadcast views
        return self._spaces(torch.as_tensor(sequences.gather(mean.numpy())), torch.as_tensor(sequences.gather(cov.numpy())))

    def filter(self, X, controls=None) -> FilterResult:
        """Filtered beliefs ``p(h_t | x_{≤t})`` at every row of ``X``.

        Parameters
        ----------
        X : array-like, DataFrame(s) or DataArray
            Laid out as in ``fit``; NaN marks missing values.
        controls : array-like, DataFrame(s), DataArray or names, optional
            For a model fitted with control inputs: laid out like ``X`` (``(T, U)`` per series),
            or the names of ``X``'s control columns (found by themselves when ``X`` holds the
            columns the model was fitted with).

        Returns
        -------
        FilterResult
            State beliefs, and observation/target beliefs when the model has read-outs, laid out
            like ``X``; ``to_pandas()``/``to_xarray()`` label them like ``X``.
        """
        sequences, u = self._inputs(X, controls)
        grid = self._filter_grid(sequences.values, sequences.observed, u)
        return FilterResult(
            **self._gathered(sequences, grid.filtered_mean, grid.filtered_cov),
            layout=sequences.layout,
            log_likelihood=sequences.gather(grid.log_likelihood.numpy()),
            observed_fraction=sequences.gather(sequences.observed_fraction),
        )

    def smooth(self, X, controls=None) -> FilterResult:
        """Smoothed beliefs ``p(h_t | x_{0:T-1})`` at every row of ``X``.

        Rauch–Tung–Striebel for linear transitions; for nonlinear ones its Gaussian counterpart
        with the model's moment rule (:func:`~ldmfilter.gaussian.nonlinear_smoother`).
        ``controls`` as in :meth:`filter`.
        """
        sequences, u = self._inputs(X, controls)
        grid = self._filter_grid(sequences.values, sequences.observed, u)
        smoothed_mean, smoothed_cov = self._smooth_grid(grid, u)
        return FilterResult(
            **self._gathered(sequences, smoothed_mean, smoothed_cov),
            layout=sequences.layout,
            observed_fraction=sequences.gather(sequences.observed_fraction),
            smoothed=True,
        )

    def forecast(self, X, horizon: int, controls=None, future_controls=None) -> ForecastResult:
        """Beliefs over the ``horizon`` steps after the end of each series of ``X``.

        Parameters
        ----------
        X : input like ``filter``'s
        horizon : int
        controls : optional
            Control inputs of ``X``, as in :meth:`filter`.
        future_controls : array-like, DataFrame(s) or DataArray, optional
            For a model with control inputs: the controls of the ``horizon`` forecast steps,
            ``(horizon, U)`` per series (row ``k`` drives the transition into step ``k + 1``
            after the series' end).

        Returns
        -------
        ForecastResult
            Arrays (…, horizon, …); its time index continues each series' index at its step.
            After :meth:`calibrate_forecast`, the state covariance of step ``h`` is multiplied by
            ``forecast_scale_[h - 1]`` (the last factor beyond the calibrated horizon).
        """
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        sequences, u = self._inputs(X, controls)
        future = self._future_controls(future_controls, sequences, int(horizon))
        grid = self._filter_grid(sequences.values, sequences.observed, u)
        last = sequences.layout.grid_lengths() - 1
        belief = self._forecast_grid(*_filtered_at(grid, np.arange(len(last)), last), int(horizon), future)
        mean, cov = belief.mean, self._calibrated(belief.cov)
        if sequences.layout.single:
            mean, cov = mean[0], cov[0]
        return ForecastResult(**self._spaces(mean, cov), layout=sequences.layout, horizon=int(horizon))

    def _calibrated(self, cov: torch.Tensor) -> torch.Tensor:
        """Forecast state covariances (…, horizon, S, S) times ``forecast_scale_`` when calibrated."""
        scale = getattr(self, "forecast_scale_", None)
        return cov if scale is None else scale_forecast_cov(cov, scale)

    def calibrate_forecast(self, X, horizon: int, Y=None, controls=None, burn_in: int | None = None, every: int | None = None,
                           method: str = "likelihood", level: float = 0.9):
        """Recalibrate the forecast covariances on data, one factor per horizon.

        Forecasts ``horizon`` steps from many origins of ``X``, reads them out to the targets
        ``Y`` (or, without ``Y``, to the observations ``X`` themselves) and sets
        ``forecast_scale_[h - 1]``: the factor on the state forecast covariance of step ``h``
        that maximises the Gaussian likelihood of the values ``h`` steps after each origin
        (``method="likelihood"``), or the smallest at which the central ``level`` intervals of
        those values cover ``level`` of them (``method="coverage"``; marginal intervals, pooled
        over the values' dimensions).  :meth:`forecast` applies it (and the last factor beyond
        ``horizon``); ``filter`` and ``smooth`` are unchanged.  Use series the model was not
        fitted on.  A factor above 1 says the model's ``h``-step intervals were too narrow, below
        1 too wide.  Calibrating again replaces the factors; ``fit`` removes them.  See
        :mod:`~ldmfilter.estimators.forecast_calibration`.

        Parameters
        ----------
        X : input like ``filter``'s
        horizon : int
            Steps ahead to calibrate (at least 1).
        Y : like ``fit_readout``'s, optional
            Targets laid out like ``X``; needs the target read-out (``fit(X, targets=...)`` or
            :meth:`fit_readout`).  Without ``Y`` the observation read-out is calibrated against
            ``X`` (marginal variances for frames and for more than ``FULL_COVARIANCE_MAX_DIM``
            values).  Rows with an unknown value are left out.
        controls : optional
            Control inputs of ``X``, as in :meth:`filter` (the future controls of each origin are
            read from them).
        burn_in : int, optional
            First origin step of each series (default: a quarter of its length, past the
            filter's initial transient).
        every : int, optional
            Steps between origins (default: the smallest spacing that gives at most
            ``MAX_ORIGINS`` = 2048 origins).
        method : {"likelihood", "coverage"}
            What the factors optimise.  The two agree for Gaussian errors; with heavy-tailed
            errors the likelihood's factors can leave the intervals too wide or too narrow at a
            given level, while the coverage factors hit it on the calibration data.
        level : float in (0, 1)
            The interval level of ``method="coverage"`` (ignored otherwise).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Bad ``horizon``, ``burn_in``, ``every``, ``method`` or ``level``; no read-out for the
            space; no series long enough for one origin; no known value at some horizon.
        """
        for name, value, least in (("horizon", horizon, 1), ("burn_in", burn_in, 0), ("every", every, 1)):
            if value is None and name != "horizon":
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.number)) or not 0 < level < 1:
            raise ValueError(f"level must be a number in (0, 1), got {level!r}")
        horizon = int(horizon)
        sequences, u = self._inputs(X, controls)
        space = "observations" if Y is None else "targets"
        if space not in getattr(self, "readouts_", {}):
            raise ValueError(
                "calibrating against targets needs the target read-out: fit(X, targets=...) or fit_readout(X, Y) first"
                if Y is not None else "this model has no observation read-out to calibrate against; pass targets Y"
            )
        if Y is None:
            values = sequences.values.reshape(sequences.values.shape[:2] + (-1,))
        else:
            values, _ = self._targets(Y, sequences, "Y")
        series, steps = forecast_origins(sequences.layout.grid_lengths(), horizon, burn_in, every)
        grid = self._filter_grid(sequences.values, sequences.observed, u)
        ahead = steps[:, None] + np.arange(1, horizon + 1)  # (N, H) grid steps forecast
        future = None if u is None else u[series[:, None], ahead]
        belief = self._forecast_grid(*_filtered_at(grid, series, steps), horizon, future)
        truth = torch.as_tensor(values[series[:, None], ahead], dtype=torch.float64)
        valid = torch.isfinite(truth).all(-1)
        if not bool(valid.any(0).all()):
            missing = [h + 1 for h in range(horizon) if not bool(valid[:, h].any())]
            raise ValueError(f"no known {space} value at horizon(s) {missing} after any origin; cannot calibrate them")
        mean = belief.mean.detach().to(torch.float64)
        state_cov = belief.cov.detach().to(torch.float64).expand(mean.shape + mean.shape[-1:])

        def read_out(log_scale: torch.Tensor) -> tuple:
            with torch.no_grad():
                moments = self._readout_moments(space, mean, state_cov * torch.exp(log_scale)[:, None, None])
            return tuple(None if t is None else t.to(torch.float64) for t in moments)

        def nll_at(log_scale: torch.Tensor) -> torch.Tensor:
            return gaussian_nll_sums(truth, valid, *read_out(log_scale))

        def coverage_at(log_scale: torch.Tensor) -> torch.Tensor:
            read_mean, read_cov, read_var = read_out(log_scale)
            var = torch.diagonal(read_cov, dim1=-2, dim2=-1) if read_cov is not None else read_var
            return marginal_coverage(truth, valid, read_mean, var, float(level))

        if method == "likelihood":
            self.forecast_scale_ = fit_scales(nll_at, horizon)
        else:
            self.forecast_scale_ = fit_coverage_scales(coverage_at, horizon, float(level))
        return self


def _filtered_at(grid: GridFilterResult, series: np.ndarray, steps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered means (N, S) and covariances (N, S, S) of ``grid`` at (series, step) pairs (shared covariances too)."""
    mean = grid.filtered_mean
    index = torch.as_tensor(series), torch.as_tensor(steps)
    return mean[index], grid.filtered_cov.expand(mean.shape + mean.shape[-1:])[index]
