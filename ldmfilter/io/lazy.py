"""pandas, imported on first use: a process that only passes numpy arrays never loads it.

``from .lazy import pandas as pd`` gives an object whose attributes are the module's, imported the
first time one is read (xarray is imported inside the functions that need it).  Code that only
needs to know whether an input *is* a pandas object asks :func:`loaded` first: if pandas was never
imported, no object of it can exist.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["LazyModule", "pandas", "loaded"]


class LazyModule:
    """Stands for the module ``name``; importing it is deferred to the first attribute read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"


def loaded(name: str) -> ModuleType | None:
    """The module ``name`` if it has been imported (by anyone), else None; never imports it."""
    return sys.modules.get(name)


pandas = LazyModule("pandas")
