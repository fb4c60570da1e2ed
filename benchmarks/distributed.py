"""Distributed training (Lightning DDP on CPU, gloo): throughput of 1 and 2 processes, and agreement.

Workloads, each for a fixed number of epochs, float32:

* ``figure8``: the paper's figure-8 recipe (``LDMFilter()`` defaults: 800 DotMotion sequences ×
  100 frames of 10 × 10 pixels, MLP encoder, batch 8), with the stop-gradient objective and
  with the kNN entropy objective (whose latents are all-gathered every step);
* ``conv``: a compute-bound one: the conv encoder on 32 × 32 DotMotion frames (blob width 3),
  320 sequences × 50 frames, batch 16, stop-gradient.

Each configuration runs in its own process group:

* 1 process, all cores as torch threads (the default single-process fit);
* 1 process, 1 thread;
* 2 processes (``trainer_kwargs={"strategy": "ddp", "devices": 2}``), 1 thread each.

Reported: optimiser steps per second over the training loop (``training_seconds_``, which
leaves out start-up), the wall time of the whole command (start-up, process launch and
rendezvous included), and the largest weight difference of each run from the single-process
run (float32: rounding differs with the reduction order; float64 runs agree to 1e-16, see
``tests/training/test_distributed.py``).

    python benchmarks/distributed.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the shared helpers
from bench_common import machine, publish  # noqa: E402

CONFIGS = (  # name, processes, threads per process (None: torch's default, all cores)
    ("1 process, default threads", 1, None),
    ("1 process, 1 thread", 1, 1),
    ("2 processes (DDP), 1 thread each", 2, 1),
)


WORKLOADS = {  # name → (DotMotion options, LDMFilter options); sizes come from Settings
    "figure8": ({}, {}),
    "conv": ({"height": 32, "width": 32, "sigma": 3.0}, {"encoder": "conv", "batch_size": 16}),
}


@dataclass(frozen=True)
class Settings:
    runs: tuple = (("figure8", "stopgrad", 800, 100, 2), ("figure8", "knn", 800, 100, 2), ("conv", "stopgrad", 320, 50, 2))
    """(workload, objective, sequences, frames, epochs) per run."""


FULL = Settings()
QUICK = Settings(runs=(("figure8", "stopgrad", 96, 40, 1), ("figure8", "knn", 96, 40, 1), ("conv", "stopgrad", 32, 20, 1)))


def worker(run: tuple, processes: int, threads: int | None, out: Path) -> None:
    """Fit once (every process of the group runs this); rank 0 writes timings and weights to ``out``."""
    import torch
    import torch.distributed as dist

    from ldmfilter import LDMFilter
    from ldmfilter.simulate import make_dotmotion

    workload, objective, sequences, frames, epochs = run
    data_options, model_options = WORKLOADS[workload]
    data = make_dotmotion("figure8", sequences, frames, seed=0, **data_options).frames
    trainer = {"strategy": "ddp", "devices": processes, "accelerator": "cpu"} if processes > 1 else {"accelerator": "cpu"}
    model = LDMFilter(max_epochs=epochs, objective=objective, num_threads=threads, verbose=False, trainer_kwargs=trainer,
                      **model_options)
    threads_used = threads or torch.get_num_threads()
    model.fit(data)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    steps = len(model.loss_history_)
    torch.save({k: v.clone() for k, v in model.model_.state_dict().items()}, out.with_suffix(".pt"))
    out.write_text(json.dumps({"steps": steps, "seconds": model.training_seconds_, "threads": threads_used,
                               "final_loss": model.loss_history_[-1]}))


def run_config(run: tuple, processes: int, threads: int | None, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(run), str(processes), str(threads or 0), str(out)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["wall"] = time.perf_counter() - started
    return result


def run(settings: Settings) -> str:
    import torch

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for number, run in enumerate(settings.runs):
            reference = None
            for name, processes, threads in CONFIGS:
                out = folder / f"{number}-{processes}-{threads}.json"
                result = run_config(run, processes, threads, out)
                weights = torch.load(out.with_suffix(".pt"), weights_only=True)
                if reference is None:
                    reference, result["delta"] = weights, 0.0
                else:
                    result["delta"] = max(float((weights[k] - reference[k]).abs().max()) for k in reference)
                rows.append((run, name, result))
                print(run, name, result, flush=True)
    return report(settings, rows, load_before, os.getloadavg())


def report(settings: Settings, rows, load_before, load_after) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Distributed training (DDP on CPU)",
        "",
        f"Run of {when} ({'quick' if settings == QUICK else 'full'} settings). Machine: {machine()}. "
        f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f}.",
        "",
        "Workloads (float32, DotMotion figure-8 frames): `figure8` is the paper's recipe (`LDMFilter()` defaults: MLP "
        "encoder on 10 × 10 frames, batch 8, the global batch); `conv` is the conv encoder on 32 × 32 frames, batch 16.",
        "",
        "| workload | objective | sequences × frames, epochs | configuration | threads / process | steps | steps / s | "
        "vs 1 process, default threads | vs 1 process, 1 thread | command wall s | max abs weight difference from 1 process |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rates = {}  # run → [steps / s] in CONFIGS order
    for run, _, result in rows:
        rates.setdefault(tuple(run), []).append(result["steps"] / result["seconds"])
    for run, name, result in rows:
        workload, objective, sequences, frames, epochs = run
        rate = result["steps"] / result["seconds"]
        default, one = rates[tuple(run)][:2]
        lines.append(f"| {workload} | {objective} | {sequences} × {frames}, {epochs} | {name} | {result['threads']} | "
                     f"{result['steps']} | {rate:.1f} | {rate / default:.2f}× | {rate / one:.2f}× | {result['wall']:.1f} | "
                     f"{result['delta']:.1e} |")
    lines += [
        "",
        "Steps per second count the training loop only (`training_seconds_`); the command's wall time adds "
        "Python and torch start-up, the second process's launch, the gloo rendezvous and the read-out fit after "
        "training. Weight differences are float32 rounding: the same steps on the same batches, with sums "
        "reduced in another order (in float64 the runs agree to 1e-16: `tests/training/test_distributed.py`).",
        "",
        "Reading: a DDP process repeats what does not depend on the batch and adds a gradient all-reduce (and, "
        "for the kNN objective, an all-gather of the latents and an all-reduce of its gradient) to every step. "
        "The figure-8 recipe's step is mostly such work: with a constant R its covariance recursion is shared by "
        "the whole batch, and its 10 × 10 frames make the encoder cheap, so halving the batch of 8 per process "
        "saves less than the communication costs. Where the per-window work dominates (the conv encoder on "
        "32 × 32 frames), each process runs at nearly the speed of one single-threaded process on the whole "
        "batch, and 2 processes beat one process that uses both cores as torch threads. On a 2-core machine DDP "
        "can at best use the same cores; its point is more cores and more machines than one process can use.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        spec, processes, threads, out = argv[1:]
        worker(tuple(json.loads(spec)), int(processes), int(threads) or None, Path(out))
        return ""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small workload (about a minute)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    return publish(run(settings), "distributed", args.quick, not args.no_write)


if __name__ == "__main__":
    main()
