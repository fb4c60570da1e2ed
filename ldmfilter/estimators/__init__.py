"""Estimators with ``fit`` / ``filter`` / ``smooth`` / ``forecast``."""

from .ldm import LDMFilter

__all__ = ["LDMFilter"]
