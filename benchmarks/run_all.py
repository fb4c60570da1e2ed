"""Run every benchmark and refresh ``benchmarks/results/``.

Usage::

    .venv/bin/python benchmarks/run_all.py            # full settings (about an hour on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # every script's --quick settings (minutes)
    .venv/bin/python benchmarks/run_all.py --only kalman_em lorenz

Each script runs in its own process (so one failure does not stop the rest) and writes its own
results file; this runner prints a summary of exit codes and wall times and exits non-zero if
any script failed.  ``reproduce_paper.py`` runs its default experiment (figure-8, three seeds);
the other paper experiments take hours and are run by hand (``--experiment all``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("kalman_speed", "kalman_em", "reproduce_paper", "pendulum_video", "lorenz", "real_series", "nonlinear",
              "stream_latency", "distributed", "out_of_core", "fit_memory")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args(argv)
    summary = []
    for name in args.only or BENCHMARKS:
        command = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        status = subprocess.run(command, cwd=HERE.parent).returncode
        summary.append((name, status, time.perf_counter() - started))
    print("\n| benchmark | exit code | wall time |\n| --- | --- | --- |")
    for name, status, seconds in summary:
        print(f"| {name} | {status} | {seconds:.0f} s |")
    return 0 if all(status == 0 for _, status, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
