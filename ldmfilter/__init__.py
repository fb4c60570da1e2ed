"""ldmfilter: Bayesian filtering and forecasting of high-dimensional time series.

Layers (imports flow downwards only): :mod:`ldmfilter.gaussian` (pure torch Kalman maths).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
