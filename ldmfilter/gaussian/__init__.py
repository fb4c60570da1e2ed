"""Exact, batched, differentiable Gaussian filtering maths in pure torch.

No ``nn.Module`` state, no Lightning, no pandas: functions on tensors with axes
``(*batch, time, dim)``.
"""

from .belief import GaussianBelief
from .em import LinearGaussianParams, em_step, fit_em, initial_params_from_data, linear_gaussian_log_likelihood
from .forecast import kalman_forecast
from .kalman import FilterResult, kalman_filter
from .moments import MOMENT_RULES, PropagatedMoments, cubature, linearize, propagate, unscented
from .nonlinear import nonlinear_filter
from .nonlinear_forecast import nonlinear_forecast
from .nonlinear_smoother import nonlinear_smoother
from .scoring import belief_log_likelihood, function_belief_log_likelihood, predictive_log_likelihood
from .smoother import SmootherResult, kalman_smoother
from .linalg import NotPositiveDefiniteError, cholesky, cholesky_solve, logdet_from_cholesky, symmetrize, triangular_solve

__all__ = [
    "GaussianBelief",
    "FilterResult",
    "kalman_filter",
    "SmootherResult",
    "kalman_smoother",
    "LinearGaussianParams",
    "em_step",
    "fit_em",
    "initial_params_from_data",
    "linear_gaussian_log_likelihood",
    "kalman_forecast",
    "nonlinear_filter",
    "nonlinear_smoother",
    "nonlinear_forecast",
    "predictive_log_likelihood",
    "belief_log_likelihood",
    "function_belief_log_likelihood",
    "PropagatedMoments",
    "linearize",
    "unscented",
    "cubature",
    "propagate",
    "MOMENT_RULES",
    "NotPositiveDefiniteError",
    "cholesky",
    "cholesky_solve",
    "logdet_from_cholesky",
    "symmetrize",
    "triangular_solve",
]
