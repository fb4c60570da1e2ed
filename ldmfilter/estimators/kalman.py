"""``KalmanFilter``: a linear-Gaussian state-space model learned by EM or by gradient MLE."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..gaussian import LinearGaussianParams, fit_em, kalman_filter, linear_gaussian_log_likelihood
from ..gaussian.em import PARAMETER_NAMES
from .classical import ClassicalStateSpace, check_names, data_driven_params, fill_parameters
from .parametrize import OPTIMIZERS, CovarianceParameter, StableMatrix, optimise

__all__ = ["KalmanFilter", "METHODS"]

METHODS = ("em", "mle")
CORE = ("A", "Q", "H", "R", "initial_mean", "initial_cov")


class _LinearGaussianModule(nn.Module):
    """The free parameters of a linear-Gaussian model for gradient MLE (fixed ones as buffers)."""

    def __init__(self, start: LinearGaussianParams, fixed: frozenset, diagonal_Q: bool, diagonal_R: bool, max_radius: float):
        super().__init__()
        self.fixed_values = {}
        for name in PARAMETER_NAMES:
            value = getattr(start, name)
            if name in fixed or value is None:
                self.fixed_values[name] = value
            elif name == "A":
                self.A = StableMatrix(value, max_radius)
            elif name in ("Q", "R", "initial_cov"):
                diagonal = (name == "Q" and diagonal_Q) or (name == "R" and diagonal_R)
                setattr(self, name, CovarianceParameter(value, diagonal))
            else:
                setattr(self, name, nn.Parameter(value.detach().clone()))

    def forward(self) -> LinearGaussianParams:
        values = {}
        for name in PARAMETER_NAMES:
            if name in self.fixed_values:
                values[name] = self.fixed_values[name]
            else:
                module = getattr(self, name)
                values[name] = module() if isinstance(module, nn.Module) else module
        return LinearGaussianParams(**values)


class KalmanFilter(ClassicalStateSpace):
    """Linear-Gaussian state-space model (the classical Kalman filter) behind the estimator API.

    Model (column vectors; ``z_t`` the observation vector, or its projection with ``projection``)::

        h_0 ~ N(μ_0, Σ_0)
        h_t = A h_{t-1} + c + w_t,   w_t ~ N(0, Q)
        z_t = H h_t + d + v_t,       v_t ~ N(0, R)

    ``fit`` learns the parameters by EM (pooled over all series, missing values handled exactly)
    or by maximising the exact log-likelihood with a gradient method.  ``filter``/``smooth``/
    ``forecast`` return state beliefs and the exact observation beliefs ``N(H m + d, H P Hᵀ + R)``.

    Parameters
    ----------
    state_dim : int
        ``S``.
    method : {"em", "mle"}
        Expectation–maximisation (:func:`~ldmfilter.gaussian.fit_em`), or gradient MLE of
        ``linear_gaussian_log_likelihood`` with Cholesky-parametrised covariances and ``A``
        parametrised to spectral radius below ``max_spectral_radius``.
    n_iter : int
        Most EM iterations / optimiser iterations.
    tol : float
        Stop once the log-likelihood changes by less than ``tol`` relative.
    fixed : dict or collection of str
        Parameters to keep: a dict ``name → value`` (e.g. ``{"H": H}``), or names, which keep
        their value from ``initial_params`` or else from the data-driven start.  Names: ``"A",
        "Q", "H", "R", "initial_mean", "initial_cov", "transition_offset",
        "observation_offset"`` (an offset given as None is zero).
    initial_params : dict, optional
        Starting values (learned further unless in ``fixed``); the rest start from a PCA /
        least-squares fit (:func:`~ldmfilter.gaussian.initial_params_from_data`, on delay
        embeddings when ``state_dim`` exceeds the observation size).
    diagonal_Q, diagonal_R : bool
        Keep the learned ``Q`` / ``R`` diagonal.
    transition_offset : bool
        Learn a transition offset ``c`` (else ``c = 0`` unless given).
    observation_offset : bool
        Learn an observation offset ``d`` (else ``d = 0`` unless given).
    optimizer : {"lbfgs", "adam"}
        Gradient method of ``method="mle"``.
    learning_rate : float, optional
        Its step size (default 1 for L-BFGS, 0.01 for Adam).
    max_spectral_radius : float
        Bound on the spectral radius of ``A`` under ``method="mle"``.
    projection : PCAProjection or RandomProjection, optional
        Front end for large observations (video frames): the model is fitted to the projected
        coordinates, and observation beliefs are mapped back through the basis.  Given
        ``H``/``R``/``d`` then live in the projected space.
    dtype : {"float64", "float32"}
    random_state : int
        Seed (the fit itself is deterministic; kept for the API's uniformity).

    Attributes
    ----------
    params_ : LinearGaussianParams
        The fitted parameters (``transition_offset``/``observation_offset`` None when zero).
    log_likelihood_history_ : list of float
        Total training log-likelihood before each iteration and after the last.
    n_iter_ : int
        Iterations run.
    """

    def __init__(
        self,
        state_dim: int = 2,
        method: str = "em",
        n_iter: int = 50,
        tol: float = 1e-6,
        fixed=(),
        initial_params: dict | None = None,
        diagonal_Q: bool = False,
        diagonal_R: bool = False,
        transition_offset: bool = False,
        observation_offset: bool = True,
        optimizer: str = "lbfgs",
        learning_rate: float | None = None,
        max_spectral_radius: float = 0.999,
        projection=None,
        dtype: str = "float64",
        random_state: int = 0,
    ):
        self.state_dim, self.method, self.n_iter, self.tol = state_dim, method, n_iter, tol
        self.fixed, self.initial_params = fixed, initial_params
        self.diagonal_Q, self.diagonal_R = diagonal_Q, diagonal_R
        self.transition_offset, self.observation_offset = transition_offset, observation_offset
        self.optimizer, self.learning_rate, self.max_spectral_radius = optimizer, learning_rate, max_spectral_radius
        self.projection, self.dtype, self.random_state = projection, dtype, random_state

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        self._check_common()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 0:
            raise ValueError(f"n_iter must be an integer >= 0, got {self.n_iter!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.learning_rate is not None and not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number or None, got {self.learning_rate!r}")
        if not (isinstance(self.max_spectral_radius, (int, float)) and self.max_spectral_radius > 0):
            raise ValueError(f"max_spectral_radius must be a positive number, got {self.max_spectral_radius!r}")
        fixed, _ = check_names(self.fixed, "fixed", PARAMETER_NAMES)
        initial, _ = check_names(self.initial_params, "initial_params", PARAMETER_NAMES)
        both = sorted(set(fixed) & set(initial))
        if both:
            raise ValueError(f"parameters {both} are given both in fixed and in initial_params; give each once")

    # ------------------------------------------------------------------ fitting
    def _start(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[LinearGaussianParams, frozenset]:
        """The starting parameters (given values over the data-driven start) and the fixed names."""
        fixed_values, fixed_names = check_names(self.fixed, "fixed", PARAMETER_NAMES)
        initial_values, _ = check_names(self.initial_params, "initial_params", PARAMETER_NAMES)
        given = {**initial_values, **fixed_values}
        S, D = int(self.state_dim), z.shape[-1]
        start = None
        if any(name not in given for name in CORE):
            start = data_driven_params(z, mask, S)
        values = fill_parameters(start, {}, S, D, z.dtype, "initial_params")
        zeros = {"transition_offset": torch.zeros(S, dtype=z.dtype), "observation_offset": torch.zeros(D, dtype=z.dtype)}
        for name, wanted in (("transition_offset", self.transition_offset), ("observation_offset", self.observation_offset)):
            if not wanted:
                values[name] = None
            elif values.get(name) is None:
                values[name] = zeros[name]
        values.update(fill_parameters(None, initial_values, S, D, z.dtype, "initial_params"))
        values.update(fill_parameters(None, fixed_values, S, D, z.dtype, "fixed"))
        return LinearGaussianParams(**values), fixed_names

    def fit(self, X, targets=None, readout: str = "linear") -> "KalmanFilter":
        """Learn the model's parameters from sequences, then set the read-outs.

        Parameters
        ----------
        X : array-like, DataFrame(s) or DataArray
            As for ``LDMFilter.fit``: numpy ``(T, D)``, ``(n_series, T, *obs_shape)`` or a list
            of series; DataFrames; an xarray DataArray.  NaN marks missing values; series are
            pooled.
        targets : like ``X``, optional
            Quantities to read out of the state (a read-out is fitted on the filtered states).
        readout : {"linear", "mlp"}
            Kind of the targets read-out.

        Returns
        -------
        self
        """
        sequences, schema, z, mask = self._fit_data(X)
        start, fixed = self._start(z, mask)
        free = [n for n in PARAMETER_NAMES if n not in fixed and getattr(start, n) is not None]
        if not free:  # nothing to learn: the given model as it is
            with torch.no_grad():
                params, history = start, [float(linear_gaussian_log_likelihood(z, start, mask))]
        elif self.method == "em":
            params, history = fit_em(
                z, start, mask, num_iters=int(self.n_iter), tol=float(self.tol), fixed=fixed,
                diagonal_Q=self.diagonal_Q, diagonal_R=self.diagonal_R,
            )
        else:
            params, history = self._fit_mle(z, mask, start, fixed)
        self.params_, self.log_likelihood_history_ = params, history
        self.n_iter_ = len(history) - 1
        self._finish_fit(sequences, schema, targets, readout)
        return self

    def _fit_mle(self, z, mask, start: LinearGaussianParams, fixed: frozenset):
        module = _LinearGaussianModule(start, fixed, self.diagonal_Q, self.diagonal_R, float(self.max_spectral_radius))
        count = max(int((~torch.isnan(z) & mask.unsqueeze(-1)).sum()), 1)
        best = {}

        def loss():
            return -linear_gaussian_log_likelihood(z, module(), mask) / count

        def snapshot():
            best["state"] = {k: v.detach().clone() for k, v in module.state_dict().items()}

        history = optimise(module.parameters(), loss, int(self.n_iter), float(self.tol), self.optimizer,
                           self.learning_rate, keep_best=snapshot)
        if best:
            module.load_state_dict(best["state"])
        with torch.no_grad():
            params = module()
        params = params.replace(**{n: None if getattr(params, n) is None else getattr(params, n).detach().clone()
                                   for n in PARAMETER_NAMES})
        return params, [-value * count for value in history]

    # ------------------------------------------------------------------ state-space hooks
    def _filter_grid(self, values: np.ndarray, observed: np.ndarray, controls=None):
        z, mask = self._observations(values, observed)
        p = self.params_
        d = p.observation_offset
        with torch.no_grad():
            return kalman_filter(
                z if d is None else z - d, p.A, p.Q, p.H, p.R, p.initial_mean, p.initial_cov,
                transition_offset=p.transition_offset, mask=mask,
            )

    def _transition(self):
        p = self.params_
        return p.A, p.Q, p.transition_offset

    def _observation_model(self):
        p = self.params_
        return p.H, p.observation_offset, p.R

    def log_likelihood(self, X) -> float:
        """Total log-likelihood ``Σ log p(z)`` of ``X`` under the fitted model (projected ``z`` with a projection)."""
        sequences = self._sequences(X)
        return float(self._filter_grid(sequences.values, sequences.observed).log_likelihood.sum())

    # ------------------------------------------------------------------ files
    def _state_dict(self) -> dict:
        state = {f"params.{name}": getattr(self.params_, name) for name in PARAMETER_NAMES
                 if getattr(self.params_, name) is not None}
        state["log_likelihood_history"] = torch.tensor(self.log_likelihood_history_, dtype=torch.float64)
        return {**state, **self._projection_state()}

    def _restore_model(self, state_dict: dict) -> None:
        self.params_ = LinearGaussianParams(**{name: state_dict.get(f"params.{name}") for name in PARAMETER_NAMES})
        self.log_likelihood_history_ = [float(v) for v in state_dict["log_likelihood_history"]]
        self.n_iter_ = len(self.log_likelihood_history_) - 1
