"""Atomic file writes: write a temporary file in the target's folder, then rename it onto the target.

A reader never sees a half-written file, and a failed write leaves the previous file in place.
Used for model files, stream states, training checkpoints and result files; they are read back
with :func:`read_torch_file`, which cannot run code from the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_torch_save", "read_torch_file"]


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


def read_torch_file(path, what: str):
    """``torch.load(path, weights_only=True)`` onto the CPU; ValueError naming ``what`` when unreadable.

    Parameters
    ----------
    path : Path
    what : str
        What the file should be, for the message (e.g. ``"ldmfilter model file"``).

    Raises
    ------
    ValueError
        Not a torch file, truncated or corrupt, or holding objects beyond plain types and tensors.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean "not such a file"
        raise ValueError(f"{path} is not a readable {what} ({type(error).__name__}: {error})") from None
