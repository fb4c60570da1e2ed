"""Estimators with ``fit`` / ``filter`` / ``smooth`` / ``forecast``."""

from ..xarray_accessor import register_when_imported
from .base import StateSpaceEstimator
from .kalman import KalmanFilter
from .ldm import LDMFilter
from .nonlinear import ExtendedKalmanFilter, UnscentedKalmanFilter
from .persistence import load_model
from .projection import PCAProjection, RandomProjection
from .stream import FilterStream, StreamBelief

register_when_imported()  # ``DataArray.ldm``, now or once xarray is imported

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
