"""The Lorenz-63 benchmark at its --quick settings (slow): every method runs and the oracle wins."""

import pytest


@pytest.mark.slow
def test_quick_lorenz_benchmark_runs(load_benchmark):
    results = load_benchmark("lorenz").main(["--quick", "--no-write"])
    assert len(results) == 2
    for level, rows in results.items():
        floor = rows["observations (no filter)"][0]
        assert abs(floor + level) < 1.5  # the raw observations' MSE is r² = −(1/r²) dB
        for name in ("EKF, true model (oracle)", "UKF, true model (oracle)"):
            assert rows[name][0] < floor - 3.0  # the true model filters well below the noise floor
        assert all(mse == mse for mse, _, _ in rows.values())  # no NaN anywhere
