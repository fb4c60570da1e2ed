"""The pendulum-video benchmark at its --quick settings (slow): every method runs and scores sensibly."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pendulum_video.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("pendulum_video_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_pendulum_video_benchmark_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "pendulum_video_quick.md"
    rows = _load_script().main(["--quick", "--no-write", "--output", str(output)])
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
