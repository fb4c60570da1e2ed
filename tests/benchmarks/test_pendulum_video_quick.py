"""The pendulum-video benchmark at its --quick settings (slow): every method runs and scores sensibly."""

import math

import pytest


@pytest.mark.slow
def test_quick_pendulum_video_benchmark_runs(tmp_path, monkeypatch, load_benchmark):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "pendulum_video_quick.md"
    rows = load_benchmark("pendulum_video").main(["--quick", "--no-write", "--output", str(output)])
    assert not output.exists()  # --no-write leaves every file alone
    names = list(rows)
    assert any(n.startswith("LDMFilter") for n in names)
    assert any(n.startswith("KalmanFilter") for n in names)
    assert any(n.startswith("UKF") for n in names)
    assert "linear regression on raw frames (no filter)" in names
    baseline = rows["training mean (no data)"][0]
    for name, (row,) in rows.items():
        assert all(math.isfinite(v) for v in row.values()), name
        if "coverage" in row:
            assert 0.0 <= row["coverage"] <= 1.0
        if name != "training mean (no data)":
            assert row["rmse"] < baseline["rmse"] + 0.05, name  # frames carry information about the angle
