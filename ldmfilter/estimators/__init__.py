"""Estimators with ``fit`` / ``filter`` / ``smooth`` / ``forecast``."""

from .ldm import LDMFilter
from .persistence import load_model

__all__ = ["LDMFilter", "load_model"]
