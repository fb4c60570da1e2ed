"""``da.ldm``: filtering an xarray DataArray with a fitted model, xarray out.

Registered when ``ldmfilter.estimators`` is imported (as it is by ``ldmfilter.LDMFilter`` and
``ldmfilter.load``).
"""

from __future__ import annotations

import xarray as xr

__all__ = ["LDMAccessor"]


@xr.register_dataarray_accessor("ldm")
class LDMAccessor:
    """``da.ldm.filter(model)``, ``.smooth(model)``, ``.forecast(model, horizon)``.

    Each returns the model's result object (see :mod:`ldmfilter.results`); call ``.to_xarray()``
    on it for a Dataset labelled like ``da``.
    """

    def __init__(self, data: xr.DataArray):
        self._data = data

    def filter(self, model):
        """``model.filter(da)``: filtered beliefs at every time of ``da``."""
        return model.filter(self._data)

    def smooth(self, model):
        """``model.smooth(da)``: smoothed beliefs at every time of ``da``."""
        return model.smooth(self._data)

    def forecast(self, model, horizon: int):
        """``model.forecast(da, horizon)``: beliefs over the next ``horizon`` steps."""
        return model.forecast(self._data, horizon)
