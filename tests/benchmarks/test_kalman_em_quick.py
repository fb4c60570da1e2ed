"""The EM benchmark at --quick settings: same algorithm as pykalman, faster (slow)."""

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kalman_em.py"


@pytest.mark.slow
def test_quick_em_benchmark_agrees_with_pykalman_and_is_faster():
    pytest.importorskip("pykalman")
    spec = importlib.util.spec_from_file_location("kalman_em", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.main(["--quick", "--no-write"])
    difference = float(re.search(r"largest relative difference ([0-9.e+-]+)", text).group(1))
    assert difference < 1e-9
    assert "≥ pykalman" in text
    converged_gap = float(re.search(r"([0-9.]+)% below the truth: (MET|MISSED)", text).group(1))
    assert converged_gap < 3  # 8 short series: within 1% needs the full run's 64 series
    assert float(re.search(r"\*\*(\d+)×\*\*", text).group(1)) > 1
