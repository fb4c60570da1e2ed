"""``da.ldm``: filtering an xarray DataArray with a fitted model, xarray out.

Registered by :func:`register_when_imported`, which ``ldmfilter.estimators`` calls (as
``ldmfilter.LDMFilter`` and ``ldmfilter.load`` import it): at once when xarray is already
imported, else as soon as it is.  ldmfilter itself never imports xarray (nor pandas) for numpy
work, so a numpy-only process does not pay for them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

from .io.lazy import loaded

__all__ = ["LDMAccessor", "register_when_imported"]


class LDMAccessor:
    """``da.ldm.filter(model)``, ``.smooth(model)``, ``.forecast(model, horizon)``.

    Each returns the model's result object (see :mod:`ldmfilter.results`); call ``.to_xarray()``
    on it for a Dataset labelled like ``da``.
    """

    def __init__(self, data):
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


def _register(xarray) -> None:
    if getattr(xarray.DataArray, "ldm", None) is not LDMAccessor:
        xarray.register_dataarray_accessor("ldm")(LDMAccessor)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``xarray`` is about to be imported, wraps its loader so that the
    accessor is registered right after the package has run, then steps out of ``sys.meta_path``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "xarray":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the finders after this one (it has left sys.meta_path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register(module)

        spec.loader.exec_module = exec_module
        return spec


def register_when_imported() -> None:
    """Register ``DataArray.ldm`` now if xarray is imported, else when it is (once either way)."""
    xarray = loaded("xarray")
    if xarray is not None:
        _register(xarray)
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
