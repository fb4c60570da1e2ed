"""Estimators with ``fit`` / ``filter`` / ``smooth`` / ``forecast``."""

from .. import xarray_accessor as _xarray_accessor  # noqa: F401  (registers ``DataArray.ldm``)
from .base import StateSpaceEstimator
from .kalman import KalmanFilter
from .ldm import LDMFilter
from .nonlinear import ExtendedKalmanFilter, UnscentedKalmanFilter
from .persistence import load_model
from .projection import PCAProjection, RandomProjection
from .stream import FilterStream, StreamBelief

__all__ = [
    "StateSpaceEstimator",
    "LDMFilter",
    "KalmanFilter",
    "ExtendedKalmanFilter",
    "UnscentedKalmanFilter",
    "PCAProjection",
    "RandomProjection",
    "load_model",
    "FilterStream",
    "StreamBelief",
]
