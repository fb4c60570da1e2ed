"""Estimators with ``fit`` / ``filter`` / ``smooth`` / ``forecast``."""

from .. import xarray_accessor as _xarray_accessor  # noqa: F401  (registers ``DataArray.ldm``)
from .base import StateSpaceEstimator
from .ldm import LDMFilter
from .persistence import load_model

__all__ = ["StateSpaceEstimator", "LDMFilter", "load_model"]
