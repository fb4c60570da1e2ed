"""ldmfilter: Bayesian filtering and forecasting of high-dimensional time series.

Layers (imports flow downwards only): :mod:`ldmfilter.gaussian` (pure torch Kalman maths),
:mod:`ldmfilter.nn` (networks), :mod:`ldmfilter.training` (objectives, Lightning),
:mod:`ldmfilter.estimators` (``LDMFilter``), and the edges (``io``, ``results``, ``simulate``).
Estimators are imported lazily so that ``import ldmfilter.gaussian`` stays free of Lightning.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "LDMFilter",
    "KalmanFilter",
    "ExtendedKalmanFilter",
    "UnscentedKalmanFilter",
    "PCAProjection",
    "RandomProjection",
    "load",
]
_ESTIMATORS = ("LDMFilter", "KalmanFilter", "ExtendedKalmanFilter", "UnscentedKalmanFilter", "PCAProjection", "RandomProjection")


def load(path):
    """Read a model file written by an estimator's ``save`` (see :func:`ldmfilter.estimators.load_model`)."""
    from .estimators import load_model

    return load_model(path)


def __getattr__(name):
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'ldmfilter' has no attribute {name!r}")
