"""Peak resident memory of the paper's figure-8 fit, built up stage by stage in fresh processes.

The target (issue 3) is no more memory than the authors' implementation: 376 MiB for the figure-8
run (``../shared/ANCHORS.md``).  Each stage below runs in its own fresh Python process and adds one
thing to the previous stage, so the table shows where the memory goes:

* ``python``: the interpreter and numpy;
* ``torch``: ``import torch``;
* ``lightning``: ``import lightning.pytorch`` (the trainer ``LDMFilter.fit`` drives);
* ``data``: the recipe's 800 training and 8 test sequences (``make_dotmotion('figure8')``);
* ``estimator``: ``from ldmfilter import LDMFilter`` (pandas and xarray are imported only when a table
  comes in or goes out);
* ``fit``: ``LDMFilter(random_state=0).fit`` with the paper's recipe (fresh pixel noise every epoch);
* ``filter``: a separate process that loads the saved model (``ldmfilter.load``) and filters the test sequences
  (no trainer: ``ldmfilter`` imports Lightning only to fit);
* ``large``: a separate process that fits one epoch on ``LARGE_FACTOR`` times the data, and reports the fit's
  peak over the memory resident just before ``fit`` (the peak is reset there, so the data generator's temporaries
  do not count): how the fit's own memory grows with the data, beside the fixed cost of the libraries that
  dominates the recipe's peak.

The peak is the stage process's high-water mark of resident memory (``VmHWM``).

    python benchmarks/fit_memory.py [--quick] [--no-write]

``--quick`` fits 80 sequences for one epoch (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers (bench_common), imported lazily

AUTHORS_PEAK_MIB = 376.0
STAGES = ("python", "torch", "lightning", "data", "estimator", "fit", "filter")
LARGE_FACTOR = 5  # the "large" stage fits this many times the recipe's sequences
STAGE_TITLES = {
    "python": "Python and numpy",
    "torch": "+ `import torch`",
    "lightning": "+ `import lightning.pytorch`",
    "data": "+ the data (800 training and 8 test sequences of 100 frames, float32)",
    "estimator": "+ `from ldmfilter import LDMFilter`",
    "fit": "+ `LDMFilter().fit` (figure-8 recipe)",
    "filter": "a new process: `ldmfilter.load` and `filter` on the 8 test sequences",
}


def peak_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux's ``VmHWM`` starts anew at ``exec``; ``ru_maxrss`` would keep the forking parent's size
    (a big one under pytest), so it is the fallback on systems without ``/proc``.
    """
    try:
        return _status_mib("VmHWM")
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def run_stage(stage: str, n_train: int, epochs: int, model_path: str) -> dict:
    """Do one stage's work in this process; {"peak_mib", and for "fit" its "seconds" and "steps"}."""
    import numpy as np  # every stage has numpy, as the user's process would

    if stage == "large":
        return run_large(n_train * LARGE_FACTOR)
    result = {}
    if stage in ("torch", "lightning", "data", "estimator", "fit"):
        import torch  # noqa: F401
    if stage in ("lightning", "data", "estimator", "fit"):
        import lightning.pytorch  # noqa: F401
    if stage in ("data", "estimator", "fit", "filter"):
        from ldmfilter.simulate import make_dotmotion

        train = make_dotmotion("figure8", n_train, seed=0) if stage != "filter" else None
        test = make_dotmotion("figure8", 8, seed=10_000)
    if stage in ("estimator", "fit"):
        from ldmfilter import LDMFilter
    if stage == "fit":
        from ldmfilter.simulate import resample_noise

        model = LDMFilter(random_state=0, verbose=False, max_epochs=epochs)
        started = time.perf_counter()
        model.fit(train.frames, epoch_data=lambda epoch: resample_noise(train, np.random.default_rng([0, epoch])))
        result.update(seconds=time.perf_counter() - started, steps=len(model.loss_history_))
        model.save(model_path)
    if stage == "filter":
        import ldmfilter

        ldmfilter.load(model_path).filter(test.frames)
        result["lightning_imported"] = "lightning" in sys.modules
    result["peak_mib"] = peak_mib()
    return result


def resident_mib() -> float:
    """Resident memory of this process now (Linux's ``VmRSS``), MiB."""
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    """A memory field of Linux's ``/proc/self/status`` (given in kB), MiB."""
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024


def reset_peak() -> bool:
    """Start the high-water mark anew (Linux ≥ 4.0: ``5`` to ``/proc/self/clear_refs``); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_large(n_train: int) -> dict:
    """One epoch on ``n_train`` sequences: resident memory before ``fit`` (libraries and data) and the fit's peak."""
    import lightning.pytorch  # noqa: F401

    from ldmfilter import LDMFilter
    from ldmfilter.simulate import make_dotmotion

    frames = make_dotmotion("figure8", n_train, seed=0).frames
    if not reset_peak():
        raise RuntimeError("the large stage needs Linux's /proc/self/clear_refs to reset the peak")
    before = resident_mib()
    LDMFilter(random_state=0, verbose=False, max_epochs=1).fit(frames)
    return {"n_train": n_train, "frames_mib": frames.nbytes / 2**20, "before_mib": before, "peak_mib": peak_mib()}


def measure(stage: str, n_train: int, epochs: int, model_path: str) -> dict:
    """Run one stage in a fresh Python process and return what it reported."""
    command = [sys.executable, __file__, "--stage", stage, "--n-train", str(n_train), "--epochs", str(epochs),
               "--model-path", model_path]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage!r} failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(results: dict, quick: bool, n_train: int, epochs: int) -> str:
    """The report: one row per stage with its peak and the increase over the stage before."""
    from bench_common import machine  # it imports torch: kept out of the stages' processes
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    fit = results["fit"]
    lines = [
        "# Peak memory of the figure-8 fit",
        "",
        f"`python benchmarks/fit_memory.py{' --quick' if quick else ''}`, run of {now}. Machine: {machine()}.",
        "",
        f"Each stage is a fresh process that adds one thing to the stage above it (the filter stage starts anew); "
        f"the peak is the process's high-water mark of resident memory (`VmHWM`). Fit: {n_train} sequences, {epochs} epoch(s), "
        f"{fit['steps']} steps in {fit['seconds']:.0f} s, float32, one intra-op thread, fresh pixel noise every epoch."
        + (" **Quick settings: a smoke test, not the recipe.**" if quick else ""),
        "",
        "| stage | peak MiB | added MiB |",
        "| --- | --- | --- |",
    ]
    previous = None
    for stage in STAGES:
        peak = results[stage]["peak_mib"]
        added = "" if previous is None or stage == "filter" else f"{peak - previous:+.0f}"
        lines.append(f"| {STAGE_TITLES[stage]} | {peak:.0f} | {added} |")
        previous = peak
    lines += [
        "",
        f"The authors' implementation: {AUTHORS_PEAK_MIB:.0f} MiB (`../shared/ANCHORS.md`). "
        f"The fit's peak is {fit['peak_mib'] / AUTHORS_PEAK_MIB:.2f}× that; torch and Lightning alone take "
        f"{results['lightning']['peak_mib']:.0f} MiB. The filter process imported Lightning: "
        f"{'yes' if results['filter']['lightning_imported'] else 'no'}.",
        "",
    ]
    large = results["large"]
    added = large["peak_mib"] - large["before_mib"]
    lines += [
        f"A new process fitting one epoch on {LARGE_FACTOR}× the data ({large['n_train']} sequences, "
        f"{large['frames_mib']:.0f} MiB of frames, no fresh noise):",
        "",
        "| resident before `fit` (libraries and data) MiB | peak of the fit MiB | added by the fit MiB | added / frames |",
        "| --- | --- | --- | --- |",
        f"| {large['before_mib']:.0f} | {large['peak_mib']:.0f} | {added:+.0f} | {added / large['frames_mib']:.2f} |",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="80 sequences, 1 epoch: a smoke test")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write results/fit_memory.md")
    parser.add_argument("--stage", choices=STAGES + ("large",), help=argparse.SUPPRESS)
    parser.add_argument("--n-train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # inside a stage's fresh process
        print(json.dumps(run_stage(args.stage, args.n_train, args.epochs, args.model_path)))
        return {}
    n_train, epochs = (80, 1) if args.quick else (800, 20)
    with tempfile.TemporaryDirectory() as folder:
        model_path = str(Path(folder) / "figure8.ldm")
        results = {}
        for stage in STAGES + ("large",):
            results[stage] = measure(stage, n_train, epochs, model_path)
            print(f"{stage:<10s} peak {results[stage]['peak_mib']:.0f} MiB", file=sys.stderr)
    from bench_common import publish

    publish(render(results, args.quick, n_train, epochs), "fit_memory", args.quick, not args.no_write)
    print(f"PEAK_MIB {results['fit']['peak_mib']:.0f}")
    return results


if __name__ == "__main__":
    main()
