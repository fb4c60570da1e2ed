"""The CPU settings every ``LDMFilter`` computation runs under: the thread count and denormal flushing."""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["cpu_settings"]


def cpu_settings(method):
    """Run an estimator method with ``self.num_threads`` intra-op threads and denormals flushed.

    Denormal floats (below ~1e-38 in float32) are computed in microcode on x86 CPUs. Training
    produces them after a few thousand steps and slowed training down 2–6× here. Flushing them
    to zero changes nothing measurable. Afterwards the thread count is restored and flushing is
    switched back off (torch's default; torch offers no way to read the flag).
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        previous = torch.get_num_threads()
        threads = self.num_threads
        if threads is not None:
            if not isinstance(threads, (int, np.integer)) or isinstance(threads, (bool, np.bool_)) or threads < 1:
                raise ValueError(f"num_threads must be a positive integer or None, got {threads!r}")
            torch.set_num_threads(int(threads))
        torch.set_flush_denormal(True)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)
            torch.set_flush_denormal(False)

    return wrapper
