"""Imports flow one way (DESIGN.md): maths and networks stay free of the heavier layers."""

import subprocess
import sys

import pytest

HEAVY = ("lightning", "pandas", "xarray", "matplotlib", "dask", "zarr")


def _run_python(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter; AssertionError with its stderr if it fails."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


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


@pytest.mark.parametrize("module", ["ldmfilter.estimators", "ldmfilter.results", "ldmfilter.io"])
def test_estimators_results_and_inputs_import_no_heavy_package_until_used(module):
    """pandas and xarray are imported when a table comes in or goes out, Lightning by ``fit``."""
    loaded = _loaded_after_import(module)
    assert not loaded & set(HEAVY), f"importing {module} pulled in {sorted(loaded & set(HEAVY))}"


def test_the_xarray_accessor_is_registered_when_xarray_comes_after_ldmfilter():
    """``ldmfilter.estimators`` does not import xarray; ``DataArray.ldm`` appears once the user does,
    also after another library has probed for xarray without importing it."""
    code = (
        "import importlib.util, sys, ldmfilter\n"
        "ldmfilter.LDMFilter\n"
        "print('xarray' in sys.modules, 'pandas' in sys.modules)\n"
        "assert importlib.util.find_spec('xarray') is not None  # a probe, as libraries make, imports nothing\n"
        "import numpy as np, xarray as xr\n"
        "da = xr.DataArray(np.zeros((4, 2)), dims=('time', 'feature'))\n"
        "print(type(da.ldm).__name__)\n"
    )
    assert _run_python(code) == ["False False", "LDMAccessor"]


def test_the_xarray_accessor_is_registered_when_xarray_came_first():
    code = (
        "import numpy as np, xarray as xr, ldmfilter\n"
        "ldmfilter.LDMFilter\n"
        "print(type(xr.DataArray(np.zeros((4, 2)), dims=('time', 'feature')).ldm).__name__)\n"
    )
    assert _run_python(code) == ["LDMAccessor"]


def test_fitting_on_numpy_imports_neither_pandas_nor_xarray():
    code = (
        "import sys, numpy as np, ldmfilter\n"
        "x = np.random.default_rng(0).normal(size=(4, 12, 3)).astype(np.float32)\n"
        "ldmfilter.LDMFilter(state_dim=2, latent_dim=2, max_epochs=1, verbose=False).fit(x).forecast(x, 2)\n"
        "ldmfilter.KalmanFilter(state_dim=2).fit(x).smooth(x)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'pandas', 'xarray'}))\n"
    )
    assert _run_python(code)[-1] == "[]"
