"""The out-of-core benchmark at --quick settings (slow): the fit runs from a Zarr store under the RAM
limit, and the report holds every figure (sizes, budget, peak RSS, pass and training speeds)."""

import re

import pytest

pytest.importorskip("dask")
pytest.importorskip("zarr")


@pytest.mark.slow
def test_quick_out_of_core_benchmark(tmp_path, load_benchmark):
    output = tmp_path / "out_of_core_quick.md"
    text = load_benchmark("out_of_core").main(["--quick", "--workdir", str(tmp_path), "--output", str(output)])
    assert output.read_text().endswith(text)
    assert not list(tmp_path.glob("ldmfilter-out-of-core-*"))  # the store is deleted afterwards
    for label in ("data, uncompressed", "data on disk", "RAM budget", "peak RSS of the fit", "statistics pass",
                  "reference: one read", "training from disk", "training in memory", "block-wise read-out pass"):
        assert f"| {label}" in text, label
    assert "`RLIMIT_DATA` = 1,024 MiB" in text
    assert re.search(r"budget (MET|MISSED)", text)
    assert re.search(r"\| training from disk \| [0-9.]+ steps/s \(10 steps", text)
