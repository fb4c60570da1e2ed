"""The fit-memory benchmark at --quick settings (slow): every stage runs in its own process and the
report holds a peak per stage; the numbers themselves are judged from the results file."""

import re

import pytest


@pytest.mark.slow
def test_quick_fit_memory_benchmark(load_benchmark, capsys):
    benchmark = load_benchmark("fit_memory")
    results = benchmark.main(["--quick", "--no-write"])
    assert set(results) == set(benchmark.STAGES) | {"large"}
    peaks = {stage: results[stage]["peak_mib"] for stage in benchmark.STAGES}
    # each stage adds to the one before it; the filter stage is a new process without Lightning
    assert peaks["python"] < peaks["torch"] < peaks["lightning"] <= peaks["data"] <= peaks["estimator"] <= peaks["fit"]
    assert results["filter"]["lightning_imported"] is False and peaks["filter"] < peaks["lightning"]
    assert results["fit"]["steps"] > 0
    large = results["large"]
    assert large["n_train"] == 80 * benchmark.LARGE_FACTOR and large["before_mib"] < large["peak_mib"]
    report = capsys.readouterr().out
    assert len(re.findall(r"^\| .+ \| \d+ \| [+-]?\d* \|$", report, flags=re.M)) == len(benchmark.STAGES)
    assert report.strip().endswith(f"PEAK_MIB {peaks['fit']:.0f}")
