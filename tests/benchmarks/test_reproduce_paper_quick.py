"""The paper's figure-8 and square numbers at the benchmark's --quick settings (slow)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce_paper.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name, floor", [("figure8", 0.99), ("square", 0.95)])
def test_quick_reproduction_reaches_the_paper(name, floor):
    """Three epochs of the paper's recipe already beat the raw-frame regression and near the paper's R²."""
    script = _load_script()
    row = script.run_seed(script.EXPERIMENTS[name], seed=0, quick=True)
    assert row["r2"] >= floor
    assert row["r2"] > row["raw_r2"]
    assert row["steps_per_s"] > 0 and row["history"]
