"""The distributed-training benchmark at --quick settings (slow): every configuration runs, and the
2-process runs end with weights that agree with the single-process run to float32 rounding."""

import re

import pytest


@pytest.mark.slow
def test_quick_distributed_benchmark(load_benchmark):
    module = load_benchmark("distributed")
    text = module.main(["--quick", "--no-write"])
    rows = [line for line in text.splitlines() if line.startswith(("| figure8", "| conv"))]
    assert len(rows) == len(module.CONFIGS) * len(module.QUICK.runs)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[6]) > 0  # steps / s
        assert float(cells[-1]) < 1e-4  # weights: the single-process run's, up to float32 rounding
    assert re.search(r"\| 2 processes \(DDP\), 1 thread each \| 1 \|", text)
