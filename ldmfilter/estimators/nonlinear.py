"""``ExtendedKalmanFilter`` and ``UnscentedKalmanFilter``: nonlinear Gaussian filters behind the estimator API.

Model (column vectors)::

    h_0 ~ N(μ_0, Σ_0)
    h_t = f(h_{t-1}) + w_t,                 w_t ~ N(0, Q)
    z_t = H h_t + d + v_t   or   h(h_t) + v_t,   v_t ~ N(0, R)

Either the user gives ``f`` (and optionally ``h``) as torch callables with ``Q``, ``R`` and the
other parameters, and ``fit`` only records the input schema (and, with ``refine_noise=True``,
re-estimates ``Q``/``R`` by maximum likelihood); or ``transition="mlp"`` learns
``f(h) = h + W h + b + g(h)``, ``g`` a small tanh MLP (its output layer starting at zero), with
``H``, ``d``, ``Q``, ``R``, ``μ_0``, ``Σ_0`` by gradient ascent on the predictive log-likelihood
through :func:`~ldmfilter.gaussian.nonlinear_filter`.  The start is the linear model fitted by a
few EM iterations (``W = A − I``, ``b = c``), so training starts from the best linear model.

Filtering, smoothing (:func:`~ldmfilter.gaussian.nonlinear_smoother`, the Gaussian RTS smoother
with the same moment rule) and forecasting (:func:`~ldmfilter.gaussian.nonlinear_forecast`) use
the estimator's moment rule: first-order linearisation (EKF) or the unscented transform (UKF).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..gaussian import (
    fit_em,
    kalman_filter,
    nonlinear_filter,
    nonlinear_forecast,
    nonlinear_smoother,
    propagate,
)
from ..nn.encoders import make_mlp
from .classical import ClassicalStateSpace, check_names, data_driven_params, fill_parameters
from .parametrize import OPTIMIZERS, CovarianceParameter, optimise

__all__ = ["ExtendedKalmanFilter", "UnscentedKalmanFilter", "ResidualMLPTransition", "NONLINEAR_NAMES"]

NONLINEAR_NAMES = frozenset({"Q", "R", "H", "observation_offset", "initial_mean", "initial_cov"})


class ResidualMLPTransition(nn.Module):
    """``f(h) = h + W h + b + g((h − centre) / scale)`` with ``g`` a tanh MLP.

    Parameters
    ----------
    state_dim : int
    hidden : tuple of int
        Hidden widths of ``g``; its output layer starts at zero, so ``f`` starts affine.
    """

    def __init__(self, state_dim: int, hidden=(32,)):
        super().__init__()
        self.linear = nn.Linear(state_dim, state_dim)
        self.net = make_mlp(state_dim, tuple(hidden), state_dim, activation="tanh")
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        self.register_buffer("centre", torch.zeros(state_dim))
        self.register_buffer("scale", torch.ones(state_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(h) + self.net((h - self.centre) / self.scale)


class _FunctionReadout(nn.Module):
    """Observation beliefs through a nonlinear ``h``: the moment rule's ``N(E[h], Cov[h] + R)``."""

    def __init__(self, fn: Callable, noise_cov: torch.Tensor, method: str, options: dict):
        super().__init__()
        self.fn, self.method, self.options = fn, method, dict(options)
        self.register_buffer("noise_cov", noise_cov.detach().clone())

    def forward(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cov = cov.expand(mean.shape + mean.shape[-1:])
        missing = torch.isnan(mean).any(-1)  # padding of ragged input: pushed through as N(0, I), NaN after
        eye = torch.eye(mean.shape[-1], dtype=mean.dtype)
        safe_mean = torch.where(missing.unsqueeze(-1), torch.zeros((), dtype=mean.dtype), mean)
        safe_cov = torch.where(missing[..., None, None], eye, cov)
        moments = propagate(self.fn, safe_mean, safe_cov, self.method, None, **self.options)
        out_cov = moments.cov + self.noise_cov.to(mean.dtype)
        out_mean = moments.mean.masked_fill(missing.unsqueeze(-1), math.nan)
        return out_mean, out_cov.masked_fill(missing[..., None, None], math.nan)

    def marginal(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_mean, out_cov = self(mean, cov)
        return out_mean, out_cov.diagonal(dim1=-2, dim2=-1)


class _NonlinearModel(nn.Module):
    """Transition function and the (free or fixed) Gaussian parameters of a nonlinear model."""

    def __init__(self, transition: Callable, values: dict, free: frozenset, diagonal_Q: bool, diagonal_R: bool):
        super().__init__()
        self.transition = transition  # an nn.Module is registered (and trained when it is the MLP)
        self.fixed_values = {}
        for name, value in values.items():
            if name not in free or value is None:
                self.fixed_values[name] = value
            elif name in ("Q", "R", "initial_cov"):
                diagonal = (name == "Q" and diagonal_Q) or (name == "R" and diagonal_R)
                setattr(self, name, CovarianceParameter(value, diagonal))
            else:
                setattr(self, name, nn.Parameter(value.detach().clone()))

    def values(self) -> dict:
        out = dict(self.fixed_values)
        for name in NONLINEAR_NAMES - set(self.fixed_values):
            module = getattr(self, name)
            out[name] = module() if isinstance(module, nn.Module) else module
        return out


class _NonlinearKalmanEstimator(ClassicalStateSpace):
    """Shared by ``ExtendedKalmanFilter`` (``_method = "linearize"``) and ``UnscentedKalmanFilter``."""

    _method = "linearize"

    def __init__(
        self,
        state_dim: int = 2,
        transition="mlp",
        observation="linear",
        initial_params: dict | None = None,
        fixed=(),
        hidden=(32,),
        n_iter: int = 200,
        learning_rate: float | None = None,
        optimizer: str = "adam",
        tol: float = 0.0,
        refine_noise: bool = False,
        init_iter: int = 20,
        diagonal_Q: bool = False,
        diagonal_R: bool = False,
        projection=None,
        rule_options: dict | None = None,
        dtype: str = "float64",
        random_state: int = 0,
    ):
        self.state_dim, self.transition, self.observation = state_dim, transition, observation
        self.initial_params, self.fixed, self.hidden = initial_params, fixed, tuple(hidden)
        self.n_iter, self.learning_rate, self.optimizer, self.tol = n_iter, learning_rate, optimizer, tol
        self.refine_noise, self.init_iter = refine_noise, init_iter
        self.diagonal_Q, self.diagonal_R = diagonal_Q, diagonal_R
        self.projection, self.rule_options = projection, rule_options
        self.dtype, self.random_state = dtype, random_state

    # ------------------------------------------------------------------ checks
    @property
    def _learns_transition(self) -> bool:
        return isinstance(self.transition, str)

    @property
    def _observation_fn(self) -> Callable | None:
        return None if isinstance(self.observation, str) else self.observation

    def _check_params(self) -> None:
        self._check_common()
        if isinstance(self.transition, str):
            if self.transition != "mlp":
                raise ValueError(f"transition must be 'mlp' or a callable (N, S) -> (N, S), got {self.transition!r}")
        elif not callable(self.transition):
            raise TypeError(f"transition must be 'mlp' or a callable, got {type(self.transition).__name__}")
        if isinstance(self.observation, str):
            if self.observation != "linear":
                raise ValueError(f"observation must be 'linear' or a callable (N, S) -> (N, D), got {self.observation!r}")
        elif not callable(self.observation):
            raise TypeError(f"observation must be 'linear' or a callable, got {type(self.observation).__name__}")
        elif self.projection is not None:
            raise ValueError("a projection front end needs observation='linear' (the read-out maps back through H)")
        for name, low in (("n_iter", 0), ("init_iter", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.learning_rate is not None and not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number or None, got {self.learning_rate!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if not all(isinstance(w, (int, np.integer)) and w >= 1 for w in self.hidden):
            raise ValueError(f"hidden must be positive integer widths, got {self.hidden!r}")
        if self.rule_options is not None and not isinstance(self.rule_options, dict):
            raise TypeError(f"rule_options must be a dict (alpha, beta, kappa of the unscented rule), got {self.rule_options!r}")
        allowed = NONLINEAR_NAMES if self._observation_fn is None else NONLINEAR_NAMES - {"H", "observation_offset"}
        fixed, _ = check_names(self.fixed, "fixed", allowed)
        initial, _ = check_names(self.initial_params, "initial_params", allowed)
        both = sorted(set(fixed) & set(initial))
        if both:
            raise ValueError(f"parameters {both} are given both in fixed and in initial_params; give each once")

    @property
    def _options(self) -> dict:
        return dict(self.rule_options or {})

    # ------------------------------------------------------------------ fitting
    def _given(self, S: int, D: int, dtype) -> tuple[dict, frozenset]:
        """Checked given values (``initial_params`` then ``fixed``) and the fixed names."""
        allowed = NONLINEAR_NAMES if self._observation_fn is None else NONLINEAR_NAMES - {"H", "observation_offset"}
        fixed_values, fixed_names = check_names(self.fixed, "fixed", allowed)
        initial_values, _ = check_names(self.initial_params, "initial_params", allowed)
        values = fill_parameters(None, initial_values, S, D, dtype, "initial_params")
        values.update(fill_parameters(None, fixed_values, S, D, dtype, "fixed"))
        return values, fixed_names

    def _linear_start(self, z, mask, given: dict, fixed: frozenset) -> tuple[dict, ResidualMLPTransition]:
        """EM on the linear model (``init_iter`` iterations) → parameters and an MLP transition starting at ``A``."""
        S = int(self.state_dim)
        start = data_driven_params(z, mask, S)
        start = start.replace(**{n: v for n, v in given.items()})
        params, _ = fit_em(z, start, mask, num_iters=int(self.init_iter), tol=0.0, fixed=fixed,
                           diagonal_Q=self.diagonal_Q, diagonal_R=self.diagonal_R)
        torch.manual_seed(int(self.random_state))
        transition = ResidualMLPTransition(S, self.hidden).to(z.dtype)
        d = params.observation_offset
        with torch.no_grad():
            transition.linear.weight.copy_(params.A - torch.eye(S, dtype=z.dtype))
            if params.transition_offset is not None:
                transition.linear.bias.copy_(params.transition_offset)
            states = kalman_filter(z if d is None else z - d, params.A, params.Q, params.H, params.R,
                                   params.initial_mean, params.initial_cov, mask=mask).filtered_mean.reshape(-1, S)
            transition.centre.copy_(states.mean(0))
            transition.scale.copy_(states.std(0).clamp_min(1e-6))
        values = {n: getattr(params, n) for n in NONLINEAR_NAMES}
        return values, transition

    def _user_start(self, given: dict, S: int, D: int, dtype) -> dict:
        required = ["R"] + ([] if self._learns_transition else ["Q"])
        if self._observation_fn is None and not self._learns_transition:
            required.append("H")
        missing = [n for n in required if n not in given]
        if missing:
            raise ValueError(
                f"with a user-given {'observation' if self._learns_transition else 'transition'} function, "
                f"give {missing} in initial_params or fixed"
            )
        values = {"Q": 0.1 * torch.eye(S, dtype=dtype), "initial_mean": torch.zeros(S, dtype=dtype),
                  "initial_cov": torch.eye(S, dtype=dtype), "H": None, "observation_offset": None}
        values.update(given)
        return values

    def fit(self, X, targets=None, readout: str = "linear"):
        """Record the input schema and learn what the configuration leaves free.

        Parameters
        ----------
        X : array-like, DataFrame(s) or DataArray
            As for ``KalmanFilter.fit``; NaN marks missing values.
        targets : like ``X``, optional
            Quantities to read out of the state.
        readout : {"linear", "mlp"}
            Kind of the targets read-out.

        Returns
        -------
        self
        """
        sequences, schema, z, mask = self._fit_data(X)
        S, D = int(self.state_dim), z.shape[-1]
        given, fixed = self._given(S, D, z.dtype)
        obs_fn = self._observation_fn
        if self._learns_transition and obs_fn is None:
            values, transition = self._linear_start(z, mask, given, fixed)
            free = NONLINEAR_NAMES - fixed
        else:
            values = self._user_start(given, S, D, z.dtype)
            if self._learns_transition:
                torch.manual_seed(int(self.random_state))
                transition = ResidualMLPTransition(S, self.hidden).to(z.dtype)
                free = NONLINEAR_NAMES - fixed - {"H", "observation_offset"}
            else:
                transition = self.transition
                free = (frozenset({"Q", "R"}) - fixed) if self.refine_noise else frozenset()
        model = _NonlinearModel(transition, values, free, self.diagonal_Q, self.diagonal_R)
        trainable = [p for name, p in model.named_parameters() if self._learns_transition or not name.startswith("transition.")]
        count = max(int((~torch.isnan(z) & mask.unsqueeze(-1)).sum()), 1)
        best = {}

        def loss():
            return -self._log_likelihood(z, mask, model.transition, model.values()).sum() / count

        def snapshot():
            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        user_flags = []  # a user's transition module is used as given: no gradients into it
        if not self._learns_transition and isinstance(transition, nn.Module):
            user_flags = [(p, p.requires_grad) for p in transition.parameters()]
            transition.requires_grad_(False)
        try:
            if trainable and self.n_iter > 0:
                history = optimise(trainable, loss, int(self.n_iter), float(self.tol), self.optimizer,
                                   self.learning_rate, keep_best=snapshot)
                if best:
                    model.load_state_dict(best["state"])
            else:
                with torch.no_grad():
                    history = [float(loss())]
        finally:
            for p, flag in user_flags:
                p.requires_grad_(flag)
        if self._learns_transition:
            model.transition.requires_grad_(False).eval()
        with torch.no_grad():
            self.params_ = {n: None if v is None else v.detach().clone() for n, v in model.values().items()}
        self.transition_ = model.transition
        self.log_likelihood_history_ = [-value * count for value in history]
        self.n_iter_ = len(history) - 1
        self._finish_fit(sequences, schema, targets, readout)
        return self

    def _log_likelihood(self, z, mask, transition, values) -> torch.Tensor:
        d = values["observation_offset"]
        return nonlinear_filter(
            z if d is None else z - d, transition, values["Q"], values["H"], values["R"],
            values["initial_mean"], values["initial_cov"], method=self._method, mask=mask,
            observation_fn=self._observation_fn, **self._options,
        ).log_likelihood

    # ------------------------------------------------------------------ state-space hooks
    def _filter_grid(self, values: np.ndarray, observed: np.ndarray, controls=None):
        z, mask = self._observations(values, observed)
        p = self.params_
        d = p["observation_offset"]
        with torch.no_grad():
            return nonlinear_filter(
                z if d is None else z - d, self.transition_, p["Q"], p["H"], p["R"], p["initial_mean"],
                p["initial_cov"], method=self._method, mask=mask, observation_fn=self._observation_fn, **self._options,
            )

    def _transition(self):
        raise ValueError(
            f"{type(self).__name__} has a nonlinear transition, not a matrix; smooth/forecast use its moment rule"
        )

    def _smooth_grid(self, grid, controls=None):
        with torch.no_grad():
            smoothed = nonlinear_smoother(grid, self.transition_, self.params_["Q"], self._method, **self._options)
        return smoothed.smoothed_mean, smoothed.smoothed_cov

    def _forecast_grid(self, mean, cov, horizon: int, controls=None):
        with torch.no_grad():
            return nonlinear_forecast(mean, cov, self.transition_, self.params_["Q"], horizon, self._method, **self._options)

    def _observation_model(self):
        p = self.params_
        return p["H"], p["observation_offset"], p["R"]

    def _observation_function_readout(self):
        return _FunctionReadout(self._observation_fn, self.params_["R"], self._method, self._options).eval()

    def log_likelihood(self, X) -> float:
        """Total predictive log-likelihood of ``X`` under the fitted model (the filter's Gaussian approximation)."""
        sequences = self._sequences(X)
        return float(self._filter_grid(sequences.values, sequences.observed).log_likelihood.sum())

    # ------------------------------------------------------------------ files
    def _state_dict(self) -> dict:
        state = {f"params.{n}": v for n, v in self.params_.items() if v is not None}
        state.update({f"transition.{k}": v for k, v in self.transition_.state_dict().items()})
        state["log_likelihood_history"] = torch.tensor(self.log_likelihood_history_, dtype=torch.float64)
        return {**state, **self._projection_state()}

    def _restore_model(self, state_dict: dict) -> None:
        if not self._learns_transition:
            raise KeyError("a model with a user transition function cannot be restored")
        self.params_ = {n: state_dict.get(f"params.{n}") for n in NONLINEAR_NAMES}
        dtype = self.params_["Q"].dtype
        transition = ResidualMLPTransition(int(self.state_dim), self.hidden).to(dtype)
        transition.load_state_dict({k.split(".", 1)[1]: v for k, v in state_dict.items() if k.startswith("transition.")})
        self.transition_ = transition.eval().requires_grad_(False)
        self.log_likelihood_history_ = [float(v) for v in state_dict["log_likelihood_history"]]
        self.n_iter_ = len(self.log_likelihood_history_) - 1


_DOC = """{title}

    {summary}

    Parameters
    ----------
    state_dim : int
        ``S``.
    transition : "mlp" or callable
        ``"mlp"``: learn ``f(h) = h + W h + b + g(h)`` (``g`` a tanh MLP with widths ``hidden``)
        by gradient MLE through the filter, starting from the linear model of ``init_iter`` EM
        iterations.  A callable ``f: (N, S) -> (N, S)`` (torch operations, rows independent) is
        used as given.
    observation : "linear" or callable
        ``"linear"``: ``z = H h + d + v`` (``H``, ``d`` learned with the MLP, or given).  A
        callable ``h: (N, S) -> (N, D)``.
    initial_params : dict, optional
        Values of ``"Q", "R", "H", "observation_offset", "initial_mean", "initial_cov"``
        (starting values when learned).  With a user transition ``Q`` and ``R`` (and ``H`` for
        linear observations) are required; the prior defaults to ``N(0, I)``, ``d`` to 0.
    fixed : dict or collection of str
        Parameters kept at their given (or starting) value.
    hidden : tuple of int
        Hidden widths of the MLP transition.
    n_iter : int
        Optimiser iterations (full batch) of the MLE.
    learning_rate : float, optional
        Default 0.01 (Adam) / 1 (L-BFGS).
    optimizer : {{"adam", "lbfgs"}}
    tol : float
        Stop once the log-likelihood changes by less than ``tol`` relative (0: run ``n_iter``).
    refine_noise : bool
        With a user transition: re-estimate ``Q`` and ``R`` (those not fixed) by MLE.
    init_iter : int
        EM iterations of the linear start of ``transition="mlp"``.
    diagonal_Q, diagonal_R : bool
        Keep learned noise covariances diagonal.
    projection : PCAProjection or RandomProjection, optional
        Front end for large observations (linear observation only).
    rule_options : dict, optional
        {rule_doc}
    dtype : {{"float64", "float32"}}
    random_state : int
        Seed of the MLP's initial weights.

    Attributes
    ----------
    params_ : dict of Tensor
        ``Q``, ``R``, ``H``, ``observation_offset``, ``initial_mean``, ``initial_cov`` (None
        where absent).
    transition_ : callable
        The fitted transition (a :class:`ResidualMLPTransition` with ``"mlp"``).
    log_likelihood_history_ : list of float
        Training log-likelihood before each iteration and at the end (the best iterate is kept).
    """


class ExtendedKalmanFilter(_NonlinearKalmanEstimator):
    _method = "linearize"


class UnscentedKalmanFilter(_NonlinearKalmanEstimator):
    _method = "unscented"


ExtendedKalmanFilter.__doc__ = _DOC.format(
    title="Extended Kalman filter: first-order linearisation of the transition (and observation) functions.",
    summary="Jacobians by forward-mode autodiff; with an affine model it equals ``KalmanFilter``.",
    rule_doc="Unused by the linearisation rule.",
)
UnscentedKalmanFilter.__doc__ = _DOC.format(
    title="Unscented Kalman filter: ``2S + 1`` sigma points through the transition (and observation) functions.",
    summary="Sampling-free moments; with an affine model it equals ``KalmanFilter``.",
    rule_doc="``alpha``, ``beta``, ``kappa`` of the unscented transform (default 1, 2, 0).",
)
