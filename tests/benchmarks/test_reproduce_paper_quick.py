"""The paper's figure-8 and square numbers at the benchmark's --quick settings (slow)."""

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("name, floor", [("figure8", 0.99), ("square", 0.95)])
def test_quick_reproduction_reaches_the_paper(name, floor, load_benchmark):
    """Three epochs of the paper's recipe already beat the raw-frame regression and near the paper's R²."""
    script = load_benchmark("reproduce_paper")
    row = script.run_seed(script.EXPERIMENTS[name], seed=0, quick=True)
    assert row["r2"] >= floor
    assert row["r2"] > row["raw_r2"]
    assert row["steps_per_s"] > 0 and row["history"]
