"""Live streams: filter one new observation at a time with a fitted ``LDMFilter``.

``stream = model.stream(n_series)`` starts at the model's prior; ``stream.update(x_t)`` returns
the filtered belief after one more observation, ``stream.forecast(h)`` the beliefs ``h`` steps
ahead, and ``stream.save(path)`` / ``FilterStream.load(path, model)`` keep the state across
restarts.  The stream holds the current belief only (memory ``O(n_series · S²)``, no history)
and gives the beliefs ``model.filter`` gives on the whole sequence, to rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..gaussian import kalman_forecast, logdet_from_cholesky, nonlinear_forecast, propagate, symmetrize
from ..gaussian.moments import value_and_jacobian
from ..gaussian.steps import innovation_log_likelihood, predict_cov as engine_predict_cov, update_covariance, update_mean
from .base import StateSpaceEstimator
from .stream_belief import StreamBelief
from .stream_steps import CpuSettings, StreamModel, correct_shared, lean, predict_cov, update_cov_shared

from ..atomic import atomic_torch_save, read_torch_file

__all__ = ["FilterStream", "StreamBelief", "STREAM_FORMAT", "STREAM_FORMAT_VERSION"]

STREAM_FORMAT = "ldmfilter-stream"
STREAM_FORMAT_VERSION = 1
LOG_2PI = math.log(2.0 * math.pi)
RICCATI_CACHE = 16  # covariance steps remembered: enough for the cycles the recursion ends in


class _Readouts:
    """A snapshot of a model's read-outs and forecast calibration, used through the estimators' own
    ``_spaces`` and ``_calibrated``."""

    _spaces = StateSpaceEstimator._spaces
    _readout_moments = StateSpaceEstimator._readout_moments
    _calibrated = StateSpaceEstimator._calibrated

    def __init__(self, model):
        self.readouts_ = dict(getattr(model, "readouts_", {}))
        scale = getattr(model, "forecast_scale_", None)
        self.forecast_scale_ = None if scale is None else np.array(scale)
        self.schema_ = model.schema_
        if hasattr(model, "target_names_"):
            self.target_names_ = model.target_names_


class FilterStream:
    """A live Kalman filter over ``n_series`` streams: one ``update`` per new observation.

    Made by :meth:`LDMFilter.stream <ldmfilter.estimators.LDMFilter.stream>` (or
    ``FilterStream(model, n_series)``).  It takes what it needs of the fitted model (transition,
    noise, encoder, read-outs) when made and keeps it: after a refit, make a new stream.
    Feeding a sequence one step at a time gives the beliefs that ``model.filter`` gives on the
    whole sequence, to rounding: the stream does its ``S × S`` algebra in float64 whatever the
    model's dtype (and returns float64).

    Time steps.  The stream's first ``update`` is its step 0: the prior is updated with no
    predict, as in ``filter``.  ``update(x_t, dt=k)`` says that ``x_t`` lies ``k`` model time
    steps after the previous update's observation: ``k − 1`` predict-only steps (missing frames)
    then a predict and an update, exactly what ``filter`` does over a gap of ``k − 1`` missing
    grid steps.  ``dt`` is shared by all series; a series without a new observation gets an
    all-NaN row.

    Missing data.  NaN marks a missing value.  A series whose row is all NaN has a predict-only
    step; a row with some NaN channels is observed, its missing channels set to their training
    mean (as in ``filter``).

    Controls.  A model fitted with controls needs ``controls`` at every update: ``u_t`` drives
    the transition into the update's step (ignored at step 0, where there is no transition).
    Over a gap (``dt > 1``) the previous update's controls hold for the ``k − 1`` predict-only
    steps, as ``filter`` holds a control over the missing steps of an irregular index.

    Read-outs.  The returned :class:`StreamBelief` has the state moments at once and the
    observation and target moments (the model's read-outs) computed when first read.

    Save and resume.  :meth:`state_dict` / :meth:`load_state_dict` and :meth:`save` /
    :meth:`load` keep the current belief, the step count and the last controls; a resumed
    stream continues exactly as the uninterrupted one.  A saved state can only be loaded into a
    stream of a model of the same shape (observation shape, state and latent sizes, controls,
    dynamics, noise); a model of that shape with other weights gives a warning.

    Speed.  For one covariance shared by all series (one series; or linear dynamics, constant
    ``R`` and the same missing frames for every series) the Kalman algebra runs in numpy and
    LAPACK, and an MLP encoder in numpy, as long as numpy's BLAS stays on one thread (a few
    dozen series; above that the encoder and the means go through torch, see
    :mod:`~ldmfilter.estimators.stream_steps`); beliefs with a covariance per series go through
    the Gaussian engine's batched torch functions.  Under linear dynamics and a constant ``R``
    the covariance step is a fixed function of the previous covariance: it is cached, and reused
    once the recursion reaches its fixed point or cycle bit for bit (no approximation).
    ``update`` and ``forecast`` run with the model's ``num_threads`` and denormals flushed, as
    ``filter`` does.

    Parameters
    ----------
    model : LDMFilter
        Fitted, with ``predictor="kalman"``.
    n_series : int
        Number of series filtered together.

    Attributes
    ----------
    n_series : int
    n_steps : int
        Grid steps filtered so far (the sum of the updates' ``dt``); the last belief is at step
        ``n_steps − 1``.
    control_names : tuple of str or None
        The model's control inputs, in the order ``controls`` gives them.
    """

    def __init__(self, model, n_series: int = 1):
        if not (hasattr(model, "_check_fitted") and hasattr(model, "_check_kalman")):
            raise TypeError(f"FilterStream needs a fitted LDMFilter, got {type(model).__name__}")
        model._check_fitted()
        model._check_kalman("stream")
        if isinstance(n_series, (bool, np.bool_)) or not isinstance(n_series, (int, np.integer)) or n_series < 1:
            raise ValueError(f"n_series must be a positive integer, got {n_series!r}")
        self.n_series = int(n_series)
        self._model = StreamModel.of(model.model_, model.schema_.obs_shape)
        self._readouts = _Readouts(model)
        threads = getattr(model, "num_threads", None)
        self._settings = CpuSettings(None if threads is None else int(threads))
        self.control_names = model.control_names_
        m = self._model
        self._signature = {
            "estimator": type(model).__name__,
            "obs_shape": list(m.obs_shape),
            "state_dim": m.state_dim,
            "latent_dim": m.latent_dim,
            "control_names": None if self.control_names is None else list(self.control_names),
            "dynamics": "linear" if m.dynamics is None else "mlp",
            "moments": None if m.dynamics is None else m.moments,
            "noise": "constant" if m.observation_cov is not None else "input",
        }
        # A covariance shared by every series stays shared under linear dynamics and constant R.
        self._collapsible = m.dynamics is None and m.observation_cov is not None
        # numpy kernels while numpy's BLAS stays on one thread (see stream_steps), else torch: for
        # the (S, S) covariance algebra, and for the (n, S) means of all series.
        self._lean_cov = lean(1, m.state_dim, m.latent_dim)
        self._lean = lean(self.n_series, m.state_dim, m.latent_dim)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Back to the prior: no step filtered yet."""
        m = self._model
        self._mean = np.repeat(m.initial_mean[None], self.n_series, 0)
        self._cov, self._shared = m.initial_cov.copy(), True
        self._controls = None
        self._cache = {}  # shared covariance steps by their input's bytes (see _riccati)
        self.n_steps = 0

    def _cov_view(self, cov: np.ndarray, shared: bool) -> np.ndarray:
        if not shared:
            return cov
        return cov[None] if self.n_series == 1 else np.broadcast_to(cov, (self.n_series,) + cov.shape)

    def _moments(self, mean: np.ndarray, cov: np.ndarray, shared: bool) -> Callable[[], dict]:
        def compute() -> dict:
            cov_t = torch.from_numpy(cov)
            if shared:
                cov_t = cov_t.expand(mean.shape + mean.shape[-1:])
            return self._readouts._spaces(torch.from_numpy(mean), cov_t)

        return compute

    @property
    def belief(self) -> StreamBelief:
        """The current filtered belief (the prior before the first update)."""
        mean, cov, shared = self._mean, self._cov, self._shared
        view = self._cov_view(cov, shared)
        return StreamBelief(mean, view, self._moments(mean, cov, shared), step=max(self.n_steps - 1, 0))

    # ------------------------------------------------------------------ input
    def _observations(self, x_t) -> tuple[np.ndarray, np.ndarray, bool]:
        """``x_t`` as (n, *obs_shape) in the model's dtype, which series are observed (n,), and whether none is missing."""
        obs_shape, n = self._model.obs_shape, self.n_series
        values = np.asarray(x_t)
        if values.dtype.kind not in "fiu":
            raise TypeError(f"x_t must hold real numbers (NaN for missing), got dtype {values.dtype}")
        single = n == 1 and values.shape == obs_shape
        if single:
            values = values[None]
        elif values.shape != (n,) + obs_shape:
            expected = f"{obs_shape} or {(1,) + obs_shape}" if n == 1 else f"{(n,) + obs_shape}"
            raise ValueError(
                f"x_t must have shape {expected} (n_series={n}, observation shape {obs_shape}), got {values.shape}"
            )
        if values.dtype.itemsize > np.dtype(self._model.dtype).itemsize:
            with np.errstate(over="ignore"):  # values beyond the model's range become inf, refused below
                values = values.astype(self._model.dtype)
        else:
            values = values.astype(self._model.dtype, copy=False)
        finite = np.isfinite(values)
        if finite.all():
            return values, np.ones(n, dtype=bool), True
        if not np.isnan(values[~finite]).all():
            where = tuple(int(i) for i in np.argwhere(~finite & ~np.isnan(values))[0][int(single):])  # x_t's own index
            raise ValueError(
                f"x_t holds inf (or a value beyond the model's {values.dtype} range) at {where}; use NaN for missing values"
            )
        return values, finite.reshape(n, -1).any(1), False

    def _steps(self, dt) -> int:
        if dt is None:
            steps = 1
        elif isinstance(dt, (bool, np.bool_)) or not isinstance(dt, (int, np.integer, float, np.floating)):
            raise TypeError(f"dt must be a positive integer number of model time steps, got {dt!r}")
        elif isinstance(dt, (float, np.floating)) and not float(dt).is_integer():
            raise ValueError(f"dt must be a whole number of model time steps, got {dt!r}")
        else:
            steps = int(dt)
        if steps < 1:
            raise ValueError(f"dt must be at least 1 (model time steps since the previous update), got {dt!r}")
        if steps > 1 and self.n_steps == 0:
            raise ValueError(
                f"dt={dt!r} at the stream's first update: the first observation is its step 0; "
                "start with all-NaN rows to begin with missing steps"
            )
        return steps

    def _checked_controls(self, controls, shape: tuple, name: str) -> np.ndarray | None:
        """``controls`` as a finite float64 array of ``shape``, broadcasting a missing series axis."""
        U = self._model.control_dim
        if not U:
            if controls is not None:
                raise ValueError(f"this model was fitted without controls; do not pass {name}")
            return None
        if controls is None:
            raise ValueError(f"this model was fitted with controls {list(self.control_names)}: pass {name} of shape {shape}")
        values = np.asarray(controls)
        if values.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        if values.shape not in (shape, shape[1:]):
            raise ValueError(
                f"{name} must have shape {shape} or {shape[1:]} (controls {list(self.control_names)}), got {values.shape}"
            )
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name} must be finite: the transition needs every input (NaN or inf found)")
        return np.array(np.broadcast_to(values, shape))

    # ------------------------------------------------------------------ the filter
    def _predict(self, mean: np.ndarray, cov: np.ndarray, shared: bool, controls: np.ndarray | None):
        """One time update of every series: (mean (n, S), cov, shared)."""
        m = self._model
        if m.dynamics is None:
            pred_mean = self._predict_mean(mean, controls)
            if shared:
                return pred_mean, self._predict_cov(cov, m.transition_matrix), True
            with torch.inference_mode():
                A, Q = torch.from_numpy(m.transition_matrix), torch.from_numpy(m.transition_cov)
                return pred_mean, engine_predict_cov(torch.from_numpy(cov), A, Q).numpy(), False
        with torch.inference_mode():
            mean_t, Q = torch.from_numpy(mean), torch.from_numpy(m.transition_cov)
            inputs = None if controls is None else torch.from_numpy(controls)
            if m.moments == "linearize":  # the linear predict with A = J: P⁻ = J P Jᵀ + Q
                value, jac = value_and_jacobian(m.dynamics, mean_t, inputs)
                if shared and self.n_series == 1:
                    return value.numpy(), self._predict_cov(cov, jac[0].numpy()), True
                return value.numpy(), engine_predict_cov(torch.from_numpy(cov), jac, Q).numpy(), False
            moments = propagate(m.dynamics, mean_t, torch.from_numpy(cov), m.moments, inputs)
            pred_cov = symmetrize(moments.cov + Q).numpy()  # P⁻ = Cov[f(x)] + Q
            if shared and self.n_series == 1:
                return moments.mean.numpy(), pred_cov[0], True
            return moments.mean.numpy(), pred_cov, False

    def _predict_mean(self, mean: np.ndarray, controls: np.ndarray | None) -> np.ndarray:
        """``m⁻ = A m + c(u)`` of every series under linear dynamics, (n, S)."""
        m = self._model
        offset = m.transition_offset(controls)
        if self._lean:
            return mean @ m.transition_matrix.T + offset  # m⁻ = A m + c(u)
        with torch.inference_mode():
            A = torch.from_numpy(m.transition_matrix)
            return torch.addmm(torch.from_numpy(offset), torch.from_numpy(mean), A.mT).numpy()  # m⁻ = A m + c(u)

    def _predict_cov(self, cov: np.ndarray, transition: np.ndarray) -> np.ndarray:
        """``P⁻ = A P Aᵀ + Q`` of a covariance shared by every series (``A``: the Jacobian for MLP dynamics)."""
        Q = self._model.transition_cov
        if self._lean_cov:
            return predict_cov(cov, transition, Q)
        with torch.inference_mode():
            return engine_predict_cov(torch.from_numpy(cov), torch.from_numpy(transition), torch.from_numpy(Q)).numpy()

    def _update_cov(self, pred_cov: np.ndarray, R: np.ndarray):
        """Joseph-form update of a covariance shared by every series: (P, K, chol of Σ_e, log|Σ_e|)."""
        H = self._model.observation_matrix
        if self._lean_cov:
            return update_cov_shared(pred_cov, H, R)
        with torch.inference_mode():
            cov, gain, chol = update_covariance(torch.from_numpy(pred_cov), torch.from_numpy(H), torch.from_numpy(R))
            return cov.numpy(), gain.numpy(), chol.numpy(), float(logdet_from_cholesky(chol))

    def _update(self, mean: np.ndarray, cov: np.ndarray, shared: bool, z: np.ndarray, R: np.ndarray | None,
                observed: np.ndarray):
        """The measurement update of the observed series: (mean, cov, shared, log-likelihood (n,))."""
        m, n = self._model, self.n_series
        H, L = m.observation_matrix, m.latent_dim
        log_likelihood = np.zeros(n)
        if not observed.any():  # predict-only step (the masked update changes nothing)
            return mean, cov, shared, log_likelihood
        every = bool(observed.all())
        rows = slice(None) if every else np.flatnonzero(observed)
        if shared and (R is None or n == 1):
            new_cov, gain, chol, logdet = self._update_cov(cov, m.observation_cov if R is None else R[0])
            mean, log_likelihood[rows] = self._correct(mean, z, rows, gain, chol, logdet)
            if every:
                return mean, new_cov, True, log_likelihood
            covs = np.repeat(cov[None], n, 0)
            covs[rows] = new_cov
            return mean, covs, False, log_likelihood
        covs = np.broadcast_to(cov, (n,) + cov.shape) if shared else cov
        with torch.inference_mode():
            H_t = torch.from_numpy(H)
            R_t = torch.from_numpy(m.observation_cov if R is None else R[rows])
            new_cov, gain, chol = update_covariance(torch.from_numpy(np.ascontiguousarray(covs[rows])), H_t, R_t)
            new_mean, innovation = update_mean(torch.from_numpy(mean[rows]), gain, torch.from_numpy(z[rows]), H_t)
            log_likelihood[rows] = innovation_log_likelihood(innovation, chol, L).numpy()
        mean, covs = mean.copy(), covs.copy()
        mean[rows], covs[rows] = new_mean.numpy(), new_cov.numpy()
        if self._collapsible and (covs == covs[:1]).all():  # bitwise equal again: keep one
            return mean, covs[0].copy(), True, log_likelihood
        return mean, covs, False, log_likelihood

    def _correct(self, mean: np.ndarray, z: np.ndarray, rows, gain: np.ndarray, chol: np.ndarray, logdet: float):
        """``m = m⁻ + K e`` for the series ``rows`` sharing one gain: (new mean (n, S), their log-likelihoods)."""
        H, L = self._model.observation_matrix, self._model.latent_dim
        if self._lean:
            innovation = z[rows] - mean[rows] @ H.T  # e = z − H m⁻
            correction, mahalanobis = correct_shared(innovation, gain, chol)
            log_likelihood = -0.5 * (mahalanobis + logdet + L * LOG_2PI)
            updated = mean[rows] + correction  # m = m⁻ + K e
        else:
            with torch.inference_mode():  # one product per line for all series (the gain is shared)
                pred_mean = torch.from_numpy(mean[rows])
                innovation = torch.from_numpy(z[rows]) - pred_mean @ torch.from_numpy(H).mT  # e = z − H m⁻
                updated = torch.addmm(pred_mean, innovation, torch.from_numpy(gain).mT).numpy()  # m = m⁻ + K e
                log_likelihood = innovation_log_likelihood(innovation, torch.from_numpy(chol), L).numpy()
        if isinstance(rows, slice):
            return updated, log_likelihood
        mean = mean.copy()
        mean[rows] = updated
        return mean, log_likelihood

    def _riccati(self, cov: np.ndarray):
        """One predict and update of a covariance shared by every series: (P, K, chol of Σ_e, log|Σ_e|).

        Linear dynamics with a constant ``R`` only: the step is then a fixed function of the
        previous covariance, cached by its bytes.  The float64 covariance recursion ends in a
        fixed point or a short cycle bit for bit (here within ~200 steps, cycles of 1 to 4),
        after which the cached results are exactly what recomputing gives: no approximation.
        """
        key = cov.tobytes()
        result = self._cache.get(key)
        if result is None:
            m = self._model
            result = self._update_cov(self._predict_cov(cov, m.transition_matrix), m.observation_cov)
            if len(self._cache) >= RICCATI_CACHE:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _step(self, x: np.ndarray, observed: np.ndarray, complete: bool, steps: int, u: np.ndarray | None):
        """Encode, predict ``steps`` times (the first ``steps − 1`` with the held controls), update."""
        z, R = self._model.encode(x, complete)
        mean, cov, shared = self._mean, self._cov, self._shared
        if not self.n_steps:  # step 0: the prior is updated, with no predict
            return self._update(mean, cov, shared, z, R, observed)
        for _ in range(steps - 1):  # missing grid steps: the previous controls hold
            mean, cov, shared = self._predict(mean, cov, shared, self._controls)
        if shared and self._collapsible and observed.all():  # the common case: a cached covariance step
            cov, gain, chol, logdet = self._riccati(cov)
            mean, log_likelihood = self._correct(self._predict_mean(mean, u), z, slice(None), gain, chol, logdet)
            return mean, cov, True, log_likelihood
        mean, cov, shared = self._predict(mean, cov, shared, u)
        return self._update(mean, cov, shared, z, R, observed)

    # ------------------------------------------------------------------ public API
    def update(self, x_t, dt=None, controls=None) -> StreamBelief:
        """Filter one new observation of every series.

        Parameters
        ----------
        x_t : array-like, shape (n_series, *obs_shape), or obs_shape when ``n_series == 1``
            NaN marks a missing value; an all-NaN row is a missing frame (predict only).
        dt : int, optional
            Model time steps since the previous update (default 1): ``dt = k`` is ``k − 1``
            predict-only steps, then a predict and an update.  Must be 1 at the first update.
        controls : array-like, shape (n_series, U) or (U,), optional
            Required exactly when the model was fitted with controls: ``u_t`` of this step
            (``(U,)`` is used for every series).  Over ``dt > 1`` the previous controls hold
            for the predict-only steps.

        Returns
        -------
        StreamBelief
            ``mean`` (n_series, S), ``cov`` (n_series, S, S), ``log_likelihood`` (n_series,);
            ``observations`` / ``targets`` through the model's read-outs.

        Raises
        ------
        TypeError
            Non-numeric ``x_t`` or ``controls``, or a ``dt`` that is not a number.
        ValueError
            Wrong shapes, inf values, ``dt`` not a positive whole number, controls missing or
            not expected.  The stream's state is unchanged after an error.
        """
        x, observed, complete = self._observations(x_t)
        steps = self._steps(dt)
        u = self._checked_controls(controls, (self.n_series, self._model.control_dim), "controls")
        with self._settings:
            mean, cov, shared, log_likelihood = self._step(x, observed, complete, steps, u)
        self._mean, self._cov, self._shared, self._controls = mean, cov, shared, u
        self.n_steps += steps
        return StreamBelief(
            mean, self._cov_view(cov, shared), self._moments(mean, cov, shared), log_likelihood, observed, self.n_steps - 1
        )

    def forecast(self, horizon: int, controls=None) -> StreamBelief:
        """Beliefs over the ``horizon`` steps after the last update; the stream is unchanged.

        Parameters
        ----------
        horizon : int
            At least 1.
        controls : array-like, shape (n_series, horizon, U) or (horizon, U), optional
            Required exactly when the model has controls: row ``k`` drives the transition into
            the ``k + 1``-th step ahead (as ``future_controls`` of ``LDMFilter.forecast``).

        Returns
        -------
        StreamBelief
            ``mean`` (n_series, horizon, S), ``cov`` (n_series, horizon, S, S), recalibrated like
            ``LDMFilter.forecast`` when the model was (``calibrate_forecast``); ``step`` is the
            grid step of the first forecast belief.
        """
        if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if self.n_steps == 0:
            raise ValueError("forecast needs a filtered belief: call update at least once first")
        horizon, m = int(horizon), self._model
        u = self._checked_controls(controls, (self.n_series, horizon, m.control_dim), "controls")
        with self._settings, torch.inference_mode():
            mean, cov, Q = torch.from_numpy(self._mean), torch.from_numpy(self._cov), torch.from_numpy(m.transition_cov)
            if m.dynamics is None:
                offset = torch.from_numpy(m.transition_offset(u))
                belief = kalman_forecast(mean, cov, torch.from_numpy(m.transition_matrix), Q, horizon, offset)
            else:
                inputs = None if u is None else torch.from_numpy(u)
                belief = nonlinear_forecast(mean, cov, m.dynamics, Q, horizon, m.moments, transition_inputs=inputs)
            cov = self._readouts._calibrated(belief.cov.expand(belief.mean.shape + (m.state_dim,)))
            mean, cov = belief.mean.numpy(), cov.numpy()
        return StreamBelief(mean, cov, self._moments(mean, cov, False), step=self.n_steps)

    # ------------------------------------------------------------------ save and resume
    def _digest(self) -> str:
        """SHA-256 of the snapshot model's weights (to tell models of the same shape apart)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self._model._net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def state_dict(self) -> dict:
        """The stream's state: current belief, step count, last controls and the model's shape.

        Returns
        -------
        dict
            Plain types and tensors (copies), loadable with ``torch.load(weights_only=True)``.
        """
        return {
            "format": STREAM_FORMAT,
            "version": STREAM_FORMAT_VERSION,
            "model": json.dumps(self._signature),
            "digest": self._digest(),
            "n_series": self.n_series,
            "n_steps": self.n_steps,
            "shared": self._shared,
            "mean": torch.tensor(self._mean),
            "cov": torch.tensor(self._cov),
            "controls": None if self._controls is None else torch.tensor(self._controls),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state of :meth:`state_dict` (a stream of a model of the same shape).

        Raises
        ------
        ValueError
            Not a stream state, a newer format, another model shape or number of series, or
            arrays of the wrong shape or with non-finite values.
        """
        if not isinstance(state, dict) or state.get("format") != STREAM_FORMAT:
            raise ValueError("not an ldmfilter stream state (no 'format': 'ldmfilter-stream' entry)")
        version = state.get("version")
        if not isinstance(version, int) or version > STREAM_FORMAT_VERSION:
            raise ValueError(
                f"stream state of format version {version!r}; this ldmfilter reads up to {STREAM_FORMAT_VERSION}"
            )
        try:
            saved = json.loads(state["model"])
            if saved != self._signature:
                mine = self._signature
                differ = [f"{k} saved {saved.get(k)!r}, this model {mine[k]!r}" for k in mine if saved.get(k) != mine[k]]
                raise ValueError("this stream state belongs to a model of another shape: " + ", ".join(differ))
            if state["n_series"] != self.n_series:
                raise ValueError(f"this stream state has {state['n_series']} series, this stream {self.n_series}")
            n_steps, shared = state["n_steps"], state["shared"]
            if not isinstance(n_steps, int) or n_steps < 0 or not isinstance(shared, bool):
                raise ValueError(f"damaged stream state: n_steps={n_steps!r}, shared={shared!r}")
            n, S, U = self.n_series, self._model.state_dim, self._model.control_dim
            arrays = {"mean": (n, S), "cov": (S, S) if shared else (n, S, S)}
            if U and n_steps:
                arrays["controls"] = (n, U)
            values = {}
            for key, shape in arrays.items():
                value = state[key]
                tensor = isinstance(value, torch.Tensor)
                if not tensor or tuple(value.shape) != shape or not bool(torch.isfinite(value).all()):
                    got = tuple(value.shape) if tensor else type(value).__name__
                    raise ValueError(f"damaged stream state: {key!r} must be a finite tensor of shape {shape}, got {got}")
                values[key] = value.detach().cpu().to(torch.float64).numpy().copy()
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"damaged stream state ({type(error).__name__}: {error})") from None
        if state.get("digest") != self._digest():
            warnings.warn(
                "this stream state was saved with a model of the same shape but other weights; "
                "the stream continues with this model's",
                UserWarning,
                stacklevel=2,
            )
        self._mean, self._cov, self._shared = values["mean"], values["cov"], shared
        self._controls, self.n_steps = values.get("controls"), n_steps

    def save(self, path) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically (a temporary file, then a rename)."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path, model) -> "FilterStream":
        """A stream of ``model`` continuing from a file written by :meth:`save`.

        Read with ``torch.load(weights_only=True)``: a file cannot run code.

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            Not a readable stream file, or one of a model of another shape (see
            :meth:`load_state_dict`).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no stream file at {path}")
        state = read_torch_file(path, "ldmfilter stream file")
        if not isinstance(state, dict) or state.get("format") != STREAM_FORMAT or not isinstance(state.get("n_series"), int):
            raise ValueError(f"{path} is not an ldmfilter stream file")
        stream = cls(model, state["n_series"])
        stream.load_state_dict(state)
        return stream
