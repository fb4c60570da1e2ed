"""Result objects: Gaussian beliefs as numpy arrays, exported to pandas and xarray."""

from .moments import GaussianMoments
from .result import SPACES, FilterResult, ForecastResult

__all__ = ["GaussianMoments", "FilterResult", "ForecastResult", "SPACES"]
