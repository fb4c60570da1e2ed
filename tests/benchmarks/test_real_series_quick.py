"""The real-series forecasting benchmark at its --quick settings (slow): data load offline, every method scores."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("statsmodels")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_series.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("real_series_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_real_series_benchmark_runs():
    out = _load_script().main(["--quick", "--no-write"])
    assert not out["skipped"]  # the quick datasets ship inside statsmodels: no download
    assert set(out["evaluated"]) == {"nile", "co2", "macrodata"}
    for name, evaluated in out["evaluated"].items():
        results = evaluated["results"]
        assert {"LDMFilter", "KalmanFilter (EM)", "UnobservedComponents", "SARIMAX", "random walk"} <= set(results)
        for method, res in results.items():
            for crps, rmse, coverage in res["scores"].values():
                assert math.isfinite(crps) and crps > 0 and math.isfinite(rmse) and 0.0 <= coverage <= 1.0
    assert out["evaluated"]["co2"]["missing"] > 0  # missing weeks went through the NaN path
