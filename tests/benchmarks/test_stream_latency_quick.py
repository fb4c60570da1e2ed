"""The stream latency benchmark at --quick settings (slow): it runs, checks itself against filter and reports
the target's verdict (timings are judged from the benchmark's results file, not by this test)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stream_latency.py"


@pytest.mark.slow
def test_quick_stream_latency_benchmark():
    spec = importlib.util.spec_from_file_location("stream_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    text = module.main(["--quick", "--no-write"])
    deltas = [float(d) for d in re.findall(r": ([0-9.]+e[+-]\d+)", text.split("Exactness check")[1].split("\n")[0])]
    assert len(deltas) == 3 and max(deltas) < 1e-5  # float32 models against the float64 stream
    assert re.search(r"\(target ≤ 100 µs: (MET|MISSED)\)", text)
    assert "### Profile of one update: linear, 200 series" in text
