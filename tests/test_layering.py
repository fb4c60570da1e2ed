"""Imports flow one way (DESIGN.md): maths and networks stay free of the heavier layers."""

import subprocess
import sys

import pytest

HEAVY = ("lightning", "pandas", "xarray", "matplotlib", "dask", "zarr")


def _loaded_after_import(module: str) -> set[str]:
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["ldmfilter.gaussian", "ldmfilter.nn", "ldmfilter.simulate", "ldmfilter"])
def test_lower_layers_do_not_import_heavy_packages(module):
    loaded = _loaded_after_import(module)
    assert not loaded & set(HEAVY), f"importing {module} pulled in {sorted(loaded & set(HEAVY))}"


def test_training_layer_is_where_lightning_lives():
    assert "lightning" in _loaded_after_import("ldmfilter.training.module")


def test_dask_and_zarr_wait_for_data_left_on_disk():
    """Only an out-of-core DataArray (already dask- or file-backed) brings them in, never the estimators."""
    assert not _loaded_after_import("ldmfilter.estimators") & {"dask", "zarr"}
