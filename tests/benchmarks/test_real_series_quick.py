"""The real-series forecasting benchmark at its --quick settings (slow): data load offline, every method scores."""

import math

import pytest

pytest.importorskip("statsmodels")


@pytest.mark.slow
def test_quick_real_series_benchmark_runs(load_benchmark):
    out = load_benchmark("real_series").main(["--quick", "--no-write"])
    assert not out["skipped"]  # the quick datasets ship inside statsmodels: no download
    assert set(out["evaluated"]) == {"nile", "co2", "macrodata"}
    for name, evaluated in out["evaluated"].items():
        results = evaluated["results"]
        assert {"LDMFilter", "KalmanFilter (EM)", "UnobservedComponents", "SARIMAX", "random walk"} <= set(results)
        for method, res in results.items():
            for crps, rmse, coverage in res["scores"].values():
                assert math.isfinite(crps) and crps > 0 and math.isfinite(rmse) and 0.0 <= coverage <= 1.0
    assert out["evaluated"]["co2"]["missing"] > 0  # missing weeks went through the NaN path
