"""Atomic file writes: write a temporary file in the target's folder, then rename it onto the target.

A reader never sees a half-written file, and a failed write leaves the previous file in place.
Used for model files, stream states, training checkpoints and result files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_torch_save"]


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file onto ``path``.

    Parameters
    ----------
    path : str or Path
        The file to (re)place; its folder must exist.
    write : callable
        Writes the whole content to the path it is given.

    Returns
    -------
    Path
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    import torch

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))
