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
    """Register ``LDMAccessor`` as ``DataArray.ldm`` on the imported ``xarray`` module, unless it already is."""
    if getattr(xarray.DataArray, "ldm", None) is not LDMAccessor:
        xarray.register_dataarray_accessor("ldm")(LDMAccessor)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it hands out xarray's own spec with the loader wrapped, so that the
    accessor is registered right after the package has run; then it leaves ``sys.meta_path``.

    It stays in place until xarray is really imported: libraries probe for xarray with
    ``importlib.util.find_spec``, which asks this finder without running the module.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "xarray" or self._searching:
            return None
        self._searching = True
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders (this one declines while searching)
        finally:
            self._searching = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_module
        return spec


def register_when_imported() -> None:
    """Register ``DataArray.ldm`` now if xarray is imported, else when it is (once either way)."""
    xarray = loaded("xarray")
    if xarray is not None:
        _register(xarray)
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
