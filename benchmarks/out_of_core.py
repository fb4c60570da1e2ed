"""Out-of-core training: ``LDMFilter.fit`` on a Zarr store several times larger than the RAM it may use.

Data: synthetic video, a bright Gaussian blob on a random walk plus pixel noise, 64×64 float32
frames, 100 frames per series, about 1% of the frames missing (NaN).  The store is written chunk
by chunk (chunks ``(1, 100, 64, 64)``: one series, 1.6 MB) until its uncompressed size is
``--ratio`` times the RAM budget; its pages are then dropped from the OS page cache
(``posix_fadvise(DONTNEED)`` on its files) so that the fit reads it from the disk.

The fit runs in a child process whose data segment is capped at the budget
(``setrlimit(RLIMIT_DATA)``: heap and anonymous mappings beyond it fail), on
``xr.open_zarr(store)["frames"]``, with a bounded number of optimiser steps
(``trainer_kwargs={"max_steps": ...}``).  The child reports its peak resident set
(``getrusage(RUSAGE_SELF).ru_maxrss``) after the imports and after each phase: the streaming
statistics pass (``open_disk``), training (windows read from the store when served) and the
block-wise read-out pass (one pass to filter, two to fit the observation read-out).  The phases
are timed by wrapping those functions of ``ldmfilter.estimators.ldm``.  Before the fit, the child
times one plain read of the store in the same slabs (from the disk, nothing computed), the speed
the passes cannot beat.  For comparison a second
child fits the same model, for the same steps, on a slice of the store loaded into memory.

    python benchmarks/out_of_core.py [--quick] [--budget-gib 1] [--ratio 4.2] [--steps 300]
                                     [--workdir DIR] [--keep] [--no-write] [--output PATH]

Writes ``benchmarks/results/out_of_core.md`` (``out_of_core_quick.md`` with ``--quick``, whose
store is small: the ratio to the budget is not met there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ldmfilter.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30


@dataclass(frozen=True)
class Settings:
    budget_gib: float = 1.0  # RAM the fitting process may use
    ratio: float = 4.2  # uncompressed data / budget
    frame: int = 64  # frames are frame × frame float32
    steps: int = 100  # time steps per series (one chunk)
    missing: float = 0.01  # fraction of missing frames
    train_steps: int = 300  # optimiser steps of the fit
    batch_size: int = 8
    memory_series: int = 64  # series of the in-memory comparison
    write_series: int = 16  # series generated and written at once


FULL = Settings()
QUICK = replace(FULL, ratio=0.05, train_steps=10, memory_series=16)
MODEL = dict(state_dim=10, latent_dim=5, hidden=(100,), verbose=False, num_threads=1)


def n_series(settings: Settings) -> int:
    frame_bytes = settings.frame**2 * 4
    return max(settings.batch_size, math.ceil(settings.ratio * settings.budget_gib * GIB / (settings.steps * frame_bytes)))


# ------------------------------------------------------------------------------ the store


def frames(first: int, count: int, settings: Settings) -> np.ndarray:
    """Series ``first … first + count − 1``: (count, steps, frame, frame) float32, NaN at missing frames."""
    rng = np.random.default_rng(first)
    size, steps = settings.frame, settings.steps
    walk = np.cumsum(rng.normal(scale=1.5, size=(count, steps, 2)), 1) + size / 2
    walk = size / 2 + (size / 2 - 8) * np.tanh((walk - size / 2) / (size / 2))  # stays inside the frame
    grid = np.arange(size, dtype=np.float32)
    along_y = np.exp(-0.5 * ((grid - walk[..., :1]) / 4.0) ** 2).astype(np.float32)
    along_x = np.exp(-0.5 * ((grid - walk[..., 1:]) / 4.0) ** 2).astype(np.float32)
    out = along_y[..., :, None] * along_x[..., None, :]
    out += 0.2 * rng.standard_normal(out.shape, dtype=np.float32)
    out[rng.random((count, steps)) < settings.missing] = np.nan
    return out


def write_store(path: Path, settings: Settings) -> tuple[float, int]:
    """Write the store chunk by chunk; returns (seconds, bytes on disk)."""
    import dask.array as da
    import xarray as xr

    started = time.perf_counter()
    n, size = n_series(settings), settings.frame
    shape, chunks = (n, settings.steps, size, size), (1, settings.steps, size, size)
    template = xr.Dataset({"frames": (("series", "time", "y", "x"), da.zeros(shape, chunks=chunks, dtype=np.float32))})
    template.to_zarr(path, mode="w", compute=False, encoding={"frames": {"chunks": chunks}})
    for first in range(0, n, settings.write_series):
        count = min(settings.write_series, n - first)
        block = xr.Dataset({"frames": (("series", "time", "y", "x"), frames(first, count, settings))})
        block.to_zarr(path, region={"series": slice(first, first + count)})
    return time.perf_counter() - started, sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to drop the store's cached pages, so that the fit reads from the disk."""
    for file in path.rglob("*"):
        if file.is_file():
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.fsync(descriptor)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


# ------------------------------------------------------------------------------ the fitting child


def peak_rss() -> int:
    """Peak resident set of this process, bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(options: dict) -> dict:
    """Fit in this process (started by :func:`run_child`) and report times and peak RSS."""
    if options["limit"]:
        resource.setrlimit(resource.RLIMIT_DATA, (options["limit"], options["limit"]))
    report = {"limit": options["limit"]}
    import xarray as xr

    from ldmfilter import LDMFilter
    from ldmfilter.estimators import ldm
    from ldmfilter.io.disk_array import DiskArray
    from ldmfilter.training.disk_windows import DiskWindows

    report["rss_imports"] = peak_rss()
    phases = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            report[f"rss_before_{name}"] = peak_rss()
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] = time.perf_counter() - started
                report[f"rss_{name}"] = peak_rss()

        return wrapper

    reads = {"seconds": 0.0, "items": 0}
    original = DiskWindows.__getitem__

    def counted(self, index):
        started = time.perf_counter()
        item = original(self, index)
        reads["seconds"] += time.perf_counter() - started
        reads["items"] += 1
        return item

    if options["reference"]:  # one cold read of the store in the passes' slabs, nothing computed
        store = Path(options["store"])
        drop_from_page_cache(store)
        X = xr.open_zarr(store)["frames"]
        array = DiskArray(X, ("y", "x"), False, np.arange(X.sizes["time"]))
        started = time.perf_counter()
        for series, rows in array.slabs():
            array.read_rows(series, rows)
        report["reference_read_seconds"] = time.perf_counter() - started
        drop_from_page_cache(store)
    ldm.open_disk = timed("scan", ldm.open_disk)
    ldm.fit_disk_readouts = timed("readouts", ldm.fit_disk_readouts)
    DiskWindows.__getitem__ = counted
    X = xr.open_zarr(options["store"])["frames"]
    if options["series"] is not None:
        X = X.isel(series=slice(0, options["series"])).load()
    model = LDMFilter(batch_size=options["batch_size"], trainer_kwargs={"max_steps": options["steps"]}, **MODEL)
    started = time.perf_counter()
    model.fit(X)
    report.update(
        fit_seconds=time.perf_counter() - started,
        training_seconds=model.training_seconds_,
        steps=len(model.loss_history_),
        final_loss=model.loss_history_[-1],
        read_seconds=reads["seconds"],
        read_items=reads["items"],
        rss_peak=peak_rss(),
        **{f"{k}_seconds": v for k, v in phases.items()},
    )
    return report


def run_child(options: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(options)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the fitting process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ report


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def render(settings: Settings, store: dict, disk: dict, memory: dict, quick: bool) -> str:
    budget = settings.budget_gib * GIB
    met = disk["rss_peak"] <= budget
    disk_rate, memory_rate = disk["steps"] / disk["training_seconds"], memory["steps"] / memory["training_seconds"]
    lines = [
        f"## Out-of-core fit{' (--quick)' if quick else ''}: {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads 1",
        "",
        f"Data: {store['series']:,} series × {settings.steps} frames of {settings.frame}×{settings.frame} float32 "
        f"({store['frames']:,} frames, {settings.missing:.0%} missing), Zarr chunks (1, {settings.steps}, "
        f"{settings.frame}, {settings.frame}), default compression. Model: `LDMFilter(state_dim=10, latent_dim=5, "
        f"hidden=(100,), batch_size={settings.batch_size})`, MLP encoder on whole 100-frame sequences, "
        f"{disk['steps']} optimiser steps (`trainer_kwargs={{'max_steps': {settings.train_steps}}}`).",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| data, uncompressed (in memory) | {store['bytes'] / GIB:.2f} GiB |",
        f"| data on disk (Zarr store) | {store['disk_bytes'] / GIB:.2f} GiB (written in {store['write_seconds']:.0f} s) |",
        f"| RAM budget | {settings.budget_gib:g} GiB (data = {store['bytes'] / budget:.2f} × budget); enforced: "
        f"`RLIMIT_DATA` = {mib(disk['limit'])} in the fitting process |",
        f"| peak RSS of the fit (whole process) | **{mib(disk['rss_peak'])}** — budget "
        f"{'MET' if met else 'MISSED'} |",
        f"| peak RSS after imports (torch, Lightning, xarray, dask, zarr) | {mib(disk['rss_imports'])} |",
        f"| peak RSS after the statistics pass / training / read-outs | {mib(disk['rss_scan'])} / "
        f"{mib(disk['rss_before_readouts'])} / {mib(disk['rss_readouts'])} |",
        f"| statistics pass (validation, missing frames, normalisation; one read) | {disk['scan_seconds']:.1f} s "
        f"({store['bytes'] / GIB / disk['scan_seconds']:.2f} GiB/s) |",
        f"| reference: one read of the store in the same slabs, nothing computed (cold) | "
        f"{disk['reference_read_seconds']:.1f} s ({store['bytes'] / GIB / disk['reference_read_seconds']:.2f} GiB/s) |",
        f"| training from disk | {disk_rate:.2f} steps/s ({disk['steps']} steps in {disk['training_seconds']:.1f} s; "
        f"reading windows {disk['read_seconds']:.1f} s for {disk['read_items']} windows, "
        f"{1e3 * disk['read_seconds'] / max(1, disk['read_items']):.1f} ms each) |",
        f"| training in memory ({settings.memory_series} series loaded) | {memory_rate:.2f} steps/s "
        f"(peak RSS {mib(memory['rss_peak'])}) |",
        f"| disk / memory training speed | {disk_rate / memory_rate:.2f} |",
        f"| block-wise read-out pass (filter + 2 passes for the observation read-out; three reads) | "
        f"{disk['readouts_seconds']:.1f} s ({3 * store['bytes'] / GIB / disk['readouts_seconds']:.2f} GiB/s read) |",
        f"| whole `fit` | {disk['fit_seconds']:.1f} s |",
        "",
        "Peak RSS counts the whole process, libraries included; the store's pages in the OS page cache are not "
        "part of it. The store was dropped from the page cache before the fit, so the first pass read it from the "
        "disk; the later passes may partly hit the cache (this machine has more RAM than the budget).",
        "",
    ]
    return "\n".join(lines)


def run(settings: Settings, workdir: Path | None, keep: bool) -> tuple[dict, dict, dict]:
    folder = Path(tempfile.mkdtemp(prefix="ldmfilter-out-of-core-", dir=workdir))
    store_path = folder / "frames.zarr"
    try:
        n = n_series(settings)
        print(f"writing {n} series to {store_path} ...", file=sys.stderr, flush=True)
        seconds, disk_bytes = write_store(store_path, settings)
        frames_count = n * settings.steps
        store = dict(series=n, frames=frames_count, bytes=frames_count * settings.frame**2 * 4, disk_bytes=disk_bytes,
                     write_seconds=seconds)
        drop_from_page_cache(store_path)
        limit = int(settings.budget_gib * GIB)
        common = dict(store=str(store_path), steps=settings.train_steps, batch_size=settings.batch_size)
        print("fitting from disk ...", file=sys.stderr, flush=True)
        disk = run_child({**common, "series": None, "limit": limit, "reference": True})
        print("fitting in memory ...", file=sys.stderr, flush=True)
        memory = run_child({**common, "series": settings.memory_series, "limit": None, "reference": False})
        return store, disk, memory
    finally:
        if keep:
            print(f"kept {store_path}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small store (~50 MB) and 10 steps (under a minute)")
    parser.add_argument("--budget-gib", type=float, help="RAM budget of the fitting process (default 1)")
    parser.add_argument("--ratio", type=float, help="uncompressed data / budget (default 4.2)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default 300)")
    parser.add_argument("--workdir", type=Path, help="folder for the temporary store (default: the system's temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    parser.add_argument("--output", type=Path, help="results file (default: results/out_of_core[_quick].md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return ""
    settings = QUICK if args.quick else FULL
    given = {"budget_gib": args.budget_gib, "ratio": args.ratio, "train_steps": args.steps}
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    store, disk, memory = run(settings, args.workdir, args.keep)
    text = render(settings, store, disk, memory, args.quick)
    print(text)
    print(json.dumps({"settings": asdict(settings), "store": store, "disk": disk, "memory": memory}), file=sys.stderr)
    if not args.no_write:
        path = args.output or RESULTS / ("out_of_core_quick.md" if args.quick else "out_of_core.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: Path(temporary).write_text(f"# Out-of-core training\n\n{text}"))
    return text


if __name__ == "__main__":
    main()
