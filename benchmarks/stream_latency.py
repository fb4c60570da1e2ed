"""Per-update latency of live streams (``LDMFilter.stream``): one series and 1,000 series at once.

Model: the issue's setting, ``S = 10``, ``L = 5``, an MLP encoder on 20 inputs with one hidden
layer of 32 units, fixed ``R``, float32 (the default), fitted for a few epochs on a simulated
random walk seen through a random 20-dim linear map.  Linear dynamics, and ``dynamics="mlp"``
(hidden (64,)) with the first-order and the unscented moment rules.

Every update call is timed on its own (``perf_counter_ns``, and this thread's CPU time) after a
warm-up; the table gives the median and the 90th percentile per call and, for 1,000 series,
per series.  Cases:

* ``all observed``: every series observed at every step (the covariance is shared by the
  series under linear dynamics, and its step is reused once the recursion reaches its fixed
  point or cycle bit for bit);
* ``no cache``: the same, with the covariance step recomputed at every update (the cost
  before the fixed point, or after a missing frame);
* ``10% missing``: each series misses a frame with probability 0.1 at each step (one
  covariance per series, through the engine's batched torch functions);
* ``+ read-out``: the update plus reading ``belief.observations`` (computed on demand).

Profiles time the stages of one update separately (input checks, encoder, covariance step,
mean step, result object) for one and for 1,000 series, and the floor set by the libraries (one
numpy / torch call on 10×10 matrices).  Before timing, the stream's beliefs are checked against ``model.filter`` on the same
sequence.

    python benchmarks/stream_latency.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ldmfilter import LDMFilter
from ldmfilter.estimators import StreamBelief

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers
from bench_common import machine, publish  # noqa: E402

TARGET_US = 100.0  # the target for one series, S = 10, small MLP encoder


@dataclass(frozen=True)
class Settings:
    updates_one: int = 5000  # timed updates of one series
    updates_many: int = 300  # timed updates of 1,000 series
    warmup: int = 300
    many: int = 1000
    profile_calls: int = 3000
    train_series: int = 16
    train_steps: int = 200
    epochs: int = 3


FULL = Settings()
QUICK = replace(FULL, updates_one=500, updates_many=30, warmup=200, many=200, profile_calls=300, train_series=8, epochs=1)

VARIANTS = (("linear", {"dynamics": "linear"}), ("MLP, linearize", {"dynamics": "mlp", "moments": "linearize"}),
            ("MLP, unscented", {"dynamics": "mlp", "moments": "unscented"}))


def simulate(n: int, steps: int, seed: int) -> np.ndarray:
    """Observations (n, steps, 20): a 2-dim random walk through a fixed random linear map, plus noise."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, steps, 2)), 1) * 0.2
    mixing = np.random.default_rng(0).normal(size=(2, 20))
    return walk @ mixing + 0.1 * rng.normal(size=(n, steps, 20))


def fit(options: dict, settings: Settings) -> LDMFilter:
    X = simulate(settings.train_series, settings.train_steps, 1)
    model = LDMFilter(state_dim=10, latent_dim=5, hidden=(32,), max_epochs=settings.epochs, verbose=False, num_threads=1, **options)
    return model.fit(X)


def percentiles(samples_ns: list) -> tuple[float, float]:
    """Median and 90th percentile in µs."""
    values = np.asarray(samples_ns) / 1e3
    return float(np.median(values)), float(np.percentile(values, 90))


def time_updates(stream, rows: np.ndarray, count: int, warmup: int, uncached=False, readout=False) -> tuple[list, list]:
    """Wall and CPU (this thread's) ns of ``count`` update calls after ``warmup`` untimed ones, cycling through ``rows`` (T, n, D)."""
    wall, cpu = [], []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(warmup + count):
        row = rows[i % len(rows)]
        if uncached:
            stream._cache.clear()
        start, start_cpu = clock(), cpu_clock()
        belief = stream.update(row)
        if readout:
            belief.observations
        elapsed, elapsed_cpu = clock() - start, cpu_clock() - start_cpu
        if i >= warmup:
            wall.append(elapsed)
            cpu.append(elapsed_cpu)
    return wall, cpu


def stage_us(fn, calls: int) -> float:
    """Median µs of ``fn()`` over ``calls`` calls timed one by one."""
    clock, samples = time.perf_counter_ns, []
    for _ in range(calls):
        start = clock()
        fn()
        samples.append(clock() - start)
    return float(np.median(samples)) / 1e3


def check(model: LDMFilter, n: int) -> float:
    """Largest |Δ| between the stream's filtered means and ``model.filter``'s on a sequence with gaps."""
    X = simulate(n, 60, 7)
    X[np.random.default_rng(3).random(X.shape[:2]) < 0.1] = np.nan
    stream = model.stream(n)
    means = np.stack([stream.update(X[:, t]).mean for t in range(X.shape[1])], 1)
    reference = model.filter(X).mean
    return float(np.abs(means - reference).max() / max(1.0, np.abs(reference).max()))


def profile(model: LDMFilter, n: int, settings: Settings) -> list[tuple[str, float]]:
    """Stage timings (µs) of one update of ``n`` series, every series observed."""
    stream = model.stream(n)
    rows = simulate(n, settings.warmup + 1, 2).transpose(1, 0, 2)
    for row in rows[:-1]:
        stream.update(row)
    x = rows[-1]
    values, observed, complete = stream._observations(x)
    m = stream._model
    z, _ = m.encode(values, complete)
    calls = settings.profile_calls if n == 1 else max(20, settings.profile_calls // 20)
    kernels = "numpy/LAPACK" if stream._lean else "torch"  # of the means of all series
    cov_kernels = "numpy/LAPACK" if stream._lean_cov else "torch"  # of the shared (S, S) covariance
    stages = [
        ("input checks (x_t, dt, controls)", stage_us(lambda: (stream._observations(x), stream._steps(None),
                                                                 stream._checked_controls(None, (n, 0), "controls")), calls)),
        ("encoder (numpy MLP 20→32→5, standardised input)" if m.numpy_encoder(n) else "encoder (torch MLP 20→32→5, standardised input)",
         stage_us(lambda: m.encode(values, complete), calls)),
    ]
    if m.dynamics is None:
        cov = stream._cov

        def uncached():
            stream._cache.clear()
            stream._riccati(cov)

        def mean_step():
            _, gain, chol, logdet = stream._riccati(cov)
            stream._correct(stream._predict_mean(stream._mean, None), z, slice(None), gain, chol, logdet)

        stages += [
            (f"covariance step, recomputed (predict + Joseph update, {cov_kernels})", stage_us(uncached, calls)),
            ("covariance step, fixed point or cycle reached (cache look-up)", stage_us(lambda: stream._riccati(cov), calls)),
            (f"mean step (m⁻ = A m + c, K e, log-likelihood, {kernels}; includes a look-up)", stage_us(mean_step, calls)),
        ]
    else:
        mean, cov = stream._mean, stream._cov
        pred = stream._predict(mean, cov, True, None)
        stages += [
            (f"predict ({m.moments}: torch, MLPDynamics)", stage_us(lambda: stream._predict(mean, cov, True, None), calls)),
            (f"update (Joseph form, {cov_kernels}, + mean step)",
             stage_us(lambda: stream._update(pred[0], pred[1], True, z, None, observed), calls)),
        ]
    log_likelihood = np.zeros(n)
    cov_view = stream._cov_view(stream._cov, stream._shared)
    stages += [
        ("result object (read-only views, lazy read-outs)",
         stage_us(lambda: StreamBelief(stream._mean, cov_view, dict, log_likelihood, observed, 0), calls)),
        ("thread/denormal settings (enter + exit)", stage_us(lambda: (stream._settings.__enter__(), stream._settings.__exit__()), calls)),
    ]
    if n == 1:
        A, P = np.random.default_rng(0).normal(size=(2, 10, 10))
        At, Pt = torch.from_numpy(A), torch.from_numpy(P)
        stages += [
            ("floor: one numpy 10×10 matmul", stage_us(lambda: A @ P, calls)),
            ("floor: one torch 10×10 matmul", stage_us(lambda: At @ Pt, calls)),
        ]
    return stages


def run(settings: Settings) -> str:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows_one = simulate(1, 400, 11).transpose(1, 0, 2)  # (T, 1, 20)
    rows_many = simulate(settings.many, 40, 12).transpose(1, 0, 2)  # (T, n, 20)
    gappy = rows_many.copy()
    gappy[np.random.default_rng(5).random(gappy.shape[:2]) < 0.1] = np.nan
    table, checks, profiles = [], [], {}
    for name, options in VARIANTS:
        model = fit(options, settings)
        checks.append((name, check(model, 4)))
        cases = [("1", "all observed", rows_one, {}, settings.updates_one)]
        if name == "linear":
            cases += [("1", "no cache", rows_one, {"uncached": True}, settings.updates_one),
                      ("1", "+ read-out", rows_one, {"readout": True}, settings.updates_one)]
        cases += [(f"{settings.many:,}", "all observed", rows_many, {}, settings.updates_many)]
        if name == "linear":
            cases += [(f"{settings.many:,}", "no cache", rows_many, {"uncached": True}, settings.updates_many),
                      (f"{settings.many:,}", "10% missing", gappy, {}, settings.updates_many)]
        for series, case, rows, flags, count in cases:
            stream = model.stream(rows.shape[1])
            wall, cpu = time_updates(stream, rows, count, settings.warmup if rows is rows_one else 20, **flags)
            (median, p90), (_, cpu_p90) = percentiles(wall), percentiles(cpu)
            table.append((name, series, case, median, p90, cpu_p90, median / rows.shape[1], count))
        profiles[f"{name}, 1 series"] = profile(model, 1, settings)
        if name == "linear":
            profiles[f"{name}, {settings.many:,} series"] = profile(model, settings.many, settings)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    return report(settings, table, checks, profiles, load_before, load_after, wall)


def report(settings, table, checks, profiles, load_before, load_after, wall) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    single = next(row for row in table if row[0] == "linear" and row[1] == "1" and row[2] == "all observed")
    lines = [
        "# Live stream latency (`LDMFilter.stream`)",
        "",
        f"Run of {when} ({'quick' if settings is QUICK else 'full'} settings, {wall:.0f} s). Machine: {machine()}; "
        f"torch intra-op threads: {torch.get_num_threads()} (the model's `num_threads=1`). "
        f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"(the machine was shared with other runs: medians are robust to that, p90 less so).",
        "",
        "Model: `LDMFilter(state_dim=10, latent_dim=5, hidden=(32,))`, MLP encoder on 20 inputs, fixed R, float32, "
        f"fitted for {settings.epochs} epoch(s) on {settings.train_series} simulated series of {settings.train_steps} steps; "
        "`dynamics=\"mlp\"` with `dynamics_hidden=(64,)`. "
        f"Each update call timed on its own after a warm-up; {settings.updates_one} timed calls for one series, "
        f"{settings.updates_many} for {settings.many:,}.",
        "",
        f"**Single-series update, linear dynamics, S = 10: median {single[3]:.1f} µs, p90 {single[4]:.1f} µs "
        f"(target ≤ {TARGET_US:.0f} µs: {'MET' if single[3] <= TARGET_US else 'MISSED'}).**",
        "",
        "| dynamics | series | case | median µs / update | p90 µs / update | p90 CPU µs / update | median µs / series | timed calls |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, series, case, median, p90, cpu_p90, per_series, count in table:
        lines.append(f"| {name} | {series} | {case} | {median:.1f} | {p90:.1f} | {cpu_p90:.1f} | {per_series:.3g} | {count} |")
    lines += ["", "µs are wall-clock time per `update` call; *p90 CPU* is the 90th percentile of the CPU time of this "
              "thread in the call (`time.thread_time_ns`): where it stays near the median while the wall-clock p90 "
              "does not, the slow calls were waiting for a core (other processes), not computing."]
    lines += ["", "Exactness check (largest |Δ| of the filtered means against `model.filter`, relative to max(1, max |mean|), "
              "4 series × 60 steps with 10% missing frames): "
              + "; ".join(f"{name}: {delta:.1e}" for name, delta in checks) + ".", ""]
    for name, stages in profiles.items():
        lines += [f"### Profile of one update: {name}", "", "| stage | median µs |", "| --- | ---: |"]
        lines += [f"| {stage} | {us:.2f} |" for stage, us in stages]
        lines.append("")
    lines += [
        "### What bounds the latency",
        "",
        "- One series, linear dynamics: an update is ~20 numpy/LAPACK calls on arrays of at most 20 numbers "
        "(plus ~10 more while the covariance step is recomputed), so it is bounded by the fixed cost of a "
        "library call (~0.5–1 µs for numpy, ~1–2 µs for a LAPACK call through scipy) and the Python around them, "
        "not by arithmetic (a few thousand flops). Once the covariance recursion reaches its fixed point or cycle "
        "bit for bit (the step is a fixed function of the previous covariance), the step is a dictionary look-up; "
        "what is left is the encoder (standardise, two affine layers), the mean step (m⁻ = A m + c, K e and the "
        "log-likelihood through the Cholesky factor) and the input checks. The same algebra in torch eager would "
        "cost ~5–10 µs per operation, which is why the single-series path avoids it.",
        "- Read-outs are computed when first read, through the estimator's own `_spaces` in torch: reading "
        "`belief.observations` adds ~100 µs.",
        "- MLP dynamics: the predict is `MLPDynamics.value_and_jacobian` (first-order rule) or the engine's "
        "sigma-point `propagate`, ~15–40 torch operations: torch's per-operation dispatch dominates.",
        "- 1,000 series: numpy's BLAS (OpenBLAS) switches to several threads from modest sizes on (a 5 × 1000 "
        "triangular solve, a 1000 × 20 × 32 product) and numpy cannot cap them; on this busy machine such calls "
        "waited for descheduled threads for 15–25 ms. Above those sizes the stream therefore runs the encoder and "
        "the mean step in torch, on the model's `num_threads`. The covariance is still computed once for all "
        "series while they share it; the time goes to the torch encoder and the batched mean step. With one "
        "covariance per series (missing frames that differ across series, MLP dynamics) the engine's batched "
        "(n, S, S) products, Cholesky factorisations and solves dominate: a few µs per series.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and series (about half a minute)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    return publish(run(settings), "stream_latency", args.quick, not args.no_write)


if __name__ == "__main__":
    main()
