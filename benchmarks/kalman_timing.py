"""Timing and checking helpers of the Kalman speed benchmark (machine load, best-of timings)."""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TOLERANCE = 1e-8  # max |Δ| / max(1, max |reference|) for means, relative for the total log-lik
QUIET_THRESHOLD = 0.25  # cores used by other processes below which the machine counts as quiet
# --------------------------------------------------------------------------------------------
# Timing and checking
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    key: str
    implementation: str
    threads: str
    throughput: float | None
    note: str = ""

    @property
    def is_ldmfilter(self):
        """True for ldmfilter's own rows (the numerators of the ratios)."""
        return self.key.startswith("ldmfilter")


@dataclass
class Report:
    """Everything measured in one run."""

    rows: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    max_wait: float = 0.0  # seconds to wait for other processes to go quiet before each timing


def machine_busy_seconds():
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``), or None."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU seconds used by this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """Context manager: average number of cores used by *other* processes while inside it.

    ``cores`` is None where ``/proc/stat`` is unavailable.
    """

    def __enter__(self):
        self._start = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())
        self.cores = None
        return self

    def __exit__(self, *exc):
        wall0, busy0, own0 = self._start
        busy1 = machine_busy_seconds()
        if busy0 is not None and busy1 is not None:
            wall = max(time.perf_counter() - wall0, 1e-9)
            self.cores = max(0.0, ((busy1 - busy0) - (own_cpu_seconds() - own0)) / wall)
        return False


def wait_until_quiet(max_wait, window=0.5):
    """Sleep in ``window``-second steps until other processes use < QUIET_THRESHOLD cores.

    Returns
    -------
    float or None
        Load (cores) of the last window; gives up after ``max_wait`` seconds.
    """
    deadline = time.perf_counter() + max_wait
    while True:
        with OtherLoad() as load:
            time.sleep(window)
        if load.cores is None or load.cores < QUIET_THRESHOLD or time.perf_counter() >= deadline:
            return load.cores


def time_best(report, fn, repeats, warm_up=1):
    """Best wall time of ``fn()`` over ``repeats`` calls, after ``warm_up`` calls.

    Waits (up to ``report.max_wait`` s) for other processes to go quiet first, and measures how
    many cores other processes used during the timed calls.  Prints best and median.

    Returns
    -------
    best : float
        Seconds.
    load_note : str
        Empty, or a warning that other processes competed for the CPUs.
    """
    for _ in range(warm_up):
        fn()
    if report.max_wait > 0:
        wait_until_quiet(report.max_wait)
    times = []
    with OtherLoad() as load:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    busy = load.cores is not None and load.cores >= QUIET_THRESHOLD
    note = f"other processes used {load.cores:.1f} cores while timing" if busy else ""
    print(f"      best {min(times) * 1e3:.2f} ms, median {statistics.median(times) * 1e3:.2f} ms "
          f"over {repeats} repeats{'; ' + note if note else ''}", flush=True)
    return min(times), note


def relative_error(value, reference):
    """``max |value − reference| / max(1, max |reference|)``."""
    value, reference = np.asarray(value), np.asarray(reference)
    return float(np.max(np.abs(value - reference)) / max(1.0, float(np.max(np.abs(reference)))))


def check(report, workload, label, means, reference_means, loglik=None, reference_loglik=None,
          tolerance=TOLERANCE):
    """Compare a peer's filtered means (and total log-likelihood) with ldmfilter's; log the verdict.

    Returns
    -------
    bool
        True when everything compared agrees to ``tolerance``.
    """
    errors = {"mean": relative_error(means, reference_means)}
    if loglik is not None:
        errors["loglik"] = abs(loglik - reference_loglik) / max(1.0, abs(reference_loglik))
    ok = all(e <= tolerance for e in errors.values())
    detail = ", ".join(f"rel. err. {k} {v:.1e}" for k, v in errors.items())
    line = f"{'ok  ' if ok else 'FAIL'} {workload} {label}: {detail} (tolerance {tolerance:.0e})"
    print(("CHECK " if ok else "CHECK FAIL: ") + line, flush=True)
    report.checks.append(line)
    return ok


def throughput_row(workload, key, implementation, threads, series_steps, seconds, notes=(), ok=True):
    """A table row from a best time; a failed check is flagged in the note."""
    notes = (() if ok else ("FAILED CHECK",)) + tuple(notes)
    note = "; ".join(n for n in notes if n)
    return Row(workload, key, implementation, threads, series_steps / seconds, note)
