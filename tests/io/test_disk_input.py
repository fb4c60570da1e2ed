"""Out-of-core xarray input (Zarr and NetCDF on disk): detection, validation without loading, the
streaming scan (missing frames, inf, standardisation statistics) and chunk-aligned reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ldmfilter.io import to_sequences
from ldmfilter.io.disk_array import DiskArray, is_out_of_core
from ldmfilter.io.disk_input import open_disk
from ldmfilter.nn.normalization import Standardizer

pytest.importorskip("dask")
pytest.importorskip("zarr")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:The data type")]


def video(n=3, T=20, H=4, W=5, seed=0, dtype="float32") -> xr.DataArray:
    values = np.random.default_rng(seed).normal(size=(n, T, H, W)) * [[[[1.0] * W] * H]] + 2.0
    return xr.DataArray(values.astype(dtype), dims=("series", "time", "y", "x"), name="frames")


def sensors(n=2, T=30, D=3, seed=1) -> xr.DataArray:
    values = np.random.default_rng(seed).normal(size=(n, T, D)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    index = pd.date_range("2024-01-01", periods=T, freq="h")
    return xr.DataArray(values, dims=("series", "time", "feature"),
                        coords={"time": index, "feature": ["a", "b", "c"], "series": ["u", "v"][:n]}, name="sensors")


def to_zarr(X: xr.DataArray, path, chunks) -> xr.DataArray:
    """``X`` written to a Zarr store in ``chunks``, opened again (dask-backed)."""
    X.to_dataset().to_zarr(path, mode="w", encoding={X.name: {"chunks": chunks}})
    return xr.open_zarr(path)[X.name]


def to_netcdf(X: xr.DataArray, path, chunks, dask: bool = True) -> xr.DataArray:
    """``X`` written to a NetCDF file in ``chunks``, opened again (dask-backed, or lazily indexed)."""
    X.to_dataset().to_netcdf(path, encoding={X.name: {"chunksizes": chunks}})
    return xr.open_dataset(path, chunks={} if dask else None)[X.name]


def same_layout(a, b) -> bool:
    fields = ("kind", "single", "series", "lengths", "feature_names", "obs_dims", "series_name", "time_name")
    return (all(getattr(a, f) == getattr(b, f) for f in fields) and all(g.same_as(h) for g, h in zip(a.grids, b.grids))
            and a.obs_coords.keys() == b.obs_coords.keys()
            and all(np.array_equal(a.obs_coords[k], b.obs_coords[k]) for k in a.obs_coords))


# ------------------------------------------------------------------------------ detection


def test_detection_of_arrays_left_on_disk(tmp_path):
    X = video()
    assert not is_out_of_core(X) and not is_out_of_core(X.values) and not is_out_of_core(X.to_dataset())
    zarr = to_zarr(X, tmp_path / "v.zarr", (1, 8, 4, 5))
    assert is_out_of_core(zarr) and is_out_of_core(X.chunk({"time": 5}))
    assert not is_out_of_core(zarr.load())
    nc_dask = to_netcdf(X, tmp_path / "v.nc", (1, 8, 4, 5))
    nc_lazy = to_netcdf(X, tmp_path / "w.nc", (1, 8, 4, 5), dask=False)
    assert nc_dask.chunks is not None and is_out_of_core(nc_dask)
    assert nc_lazy.chunks is None and is_out_of_core(nc_lazy)  # a lazily indexed file variable
    assert not is_out_of_core(nc_lazy.load())


# ------------------------------------------------------------------------------ the scan equals the loaded data


@pytest.mark.parametrize("store", ["zarr", "netcdf-dask", "netcdf-lazy"])
def test_scan_matches_loaded_data(tmp_path, store):
    X = video(seed=3)
    X[1, 4] = np.nan  # a missing frame
    X[2, 7:9] = np.nan
    path = tmp_path / "v"
    disk = {"zarr": lambda: to_zarr(X, path, (1, 8, 4, 5)), "netcdf-dask": lambda: to_netcdf(X, path, (2, 6, 4, 5)),
            "netcdf-lazy": lambda: to_netcdf(X, path, (2, 6, 4, 5), dask=False)}[store]()
    sequences, schema = open_disk(disk, "X", min_steps=2)
    loaded, expected_schema = to_sequences(X, "X", None, min_steps=2)
    assert schema == expected_schema and sequences.shape == loaded.values.shape
    np.testing.assert_array_equal(sequences.observed, loaded.observed)
    np.testing.assert_array_equal(sequences.observed_fraction, loaded.observed_fraction)
    assert same_layout(sequences.layout, loaded.layout) and sequences.partial_frame is None
    assert sequences.largest == pytest.approx(float(np.nanmax(np.abs(X.values))))
    np.testing.assert_array_equal(sequences.array.read_rows(slice(0, 3), slice(0, 20)), loaded.values)
    assert is_out_of_core(disk)  # the scan loaded nothing for good


@pytest.mark.parametrize("kind", ["auto", "feature", "global", "none"])
@pytest.mark.parametrize("make", [video, sensors], ids=["video", "sensors"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streamed_statistics_equal_standardizer_fit(tmp_path, kind, make, dtype):
    X = make()
    X[0, 3] = np.nan  # a missing frame
    X[1, 5, 1] = np.nan  # one value of a frame
    disk = to_zarr(X, tmp_path / "s.zarr", (1, 7) + X.shape[2:])
    sequences, schema = open_disk(disk, "X", min_steps=2, cast=np.dtype(str(dtype).split(".")[1]), slab_bytes=1)
    loaded, _ = to_sequences(X, "X", None, min_steps=2)
    x = torch.as_tensor(loaded.values, dtype=dtype)
    expected = Standardizer.fit(x, len(schema.obs_shape), kind, torch.as_tensor(loaded.observed))
    shape = schema.obs_shape
    got = Standardizer.from_moments(torch.as_tensor(sequences.moments.means.reshape(shape)),
                                    torch.as_tensor(sequences.moments.variance.reshape(shape)), len(shape), kind, dtype)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    for name in ("mean", "scale"):
        assert getattr(got, name).dtype == dtype
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=tolerance, atol=tolerance)
    assert sequences.partial_frame == (1, 5)


def test_irregular_time_index_is_put_on_its_grid(tmp_path):
    X = sensors(T=12)
    X = X.isel(time=[0, 1, 2, 5, 6, 7, 8, 11])  # hourly with two gaps
    disk = to_zarr(X, tmp_path / "i.zarr", (1, 3, 3))
    sequences, schema = open_disk(disk, "X")
    loaded, expected_schema = to_sequences(X, "X")
    assert schema == expected_schema == schema and schema.frequency == "h"
    assert sequences.shape == loaded.values.shape == (2, 12, 3)
    np.testing.assert_array_equal(sequences.observed, loaded.observed)
    for start, stop in ((0, 12), (2, 7), (3, 5)):
        np.testing.assert_array_equal(sequences.array.read_window(1, start, stop), loaded.values[1, start:stop])


def test_any_dim_order_is_read_in_the_model_layout(tmp_path):
    X = video(n=3, T=12).transpose("x", "time", "y", "series")
    disk = to_zarr(X, tmp_path / "t.zarr", (5, 4, 4, 1))
    sequences, schema = open_disk(disk, "X")
    loaded, expected_schema = to_sequences(X, "X")
    assert schema == expected_schema and schema.obs_shape == (4, 5)
    np.testing.assert_array_equal(sequences.array.read_rows(slice(1, 3), slice(2, 9)), loaded.values[1:3, 2:9])
    np.testing.assert_array_equal(sequences.array.read_window(2, 0, 12), loaded.values[2])


def test_univariate_and_single_series(tmp_path):
    X = sensors(n=1).isel(series=0, feature=0, drop=True).rename("level")
    disk = to_zarr(X, tmp_path / "u.zarr", (10,))
    sequences, schema = open_disk(disk, "X")
    loaded, expected_schema = to_sequences(X, "X")
    assert schema == expected_schema and schema.obs_shape == (1,) and sequences.layout.single
    np.testing.assert_array_equal(sequences.array.read_window(0, 3, 17), loaded.values[0, 3:17])


# ------------------------------------------------------------------------------ bad input: the in-memory errors


def _message(call) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("store", ["zarr", "netcdf-lazy"])
def test_inf_in_one_chunk_is_reported_with_its_position(tmp_path, store):
    X = video(n=3, T=20)
    X[2, 17, 1, 3] = -np.inf
    path = tmp_path / "bad"
    disk = to_zarr(X, path, (1, 8, 4, 5)) if store == "zarr" else to_netcdf(X, path, (1, 8, 4, 5), dask=False)
    message = _message(lambda: open_disk(disk, "X"))
    assert message == _message(lambda: to_sequences(X, "X")) == "ValueError: X contains inf values (first at (2, 17, 1, 3)); use NaN for missing values"
    huge = sensors().astype("float64")
    huge[1, 20, 2] = 1e200
    disk = to_zarr(huge, tmp_path / "huge.zarr", (1, 8, 3))
    assert _message(lambda: open_disk(disk, "X")) == _message(lambda: to_sequences(huge, "X"))


@pytest.mark.parametrize(
    "edit",
    [
        lambda X: X.rename(time="t"),
        lambda X: X.expand_dims(extra=2).transpose("series", "time", "y", "x", "extra"),
        lambda X: X.rename(y="row"),
        lambda X: (X > 0),
        lambda X: X.isel(time=[0]),
        lambda X: X.where(X.series != 1),
    ],
    ids=["no time dim", "extra dim", "video dims", "bool", "one step", "empty series"],
)
def test_bad_input_gets_the_in_memory_message(tmp_path, edit):
    X = edit(video())
    disk = X.chunk()  # dask-backed
    assert is_out_of_core(disk)
    assert _message(lambda: open_disk(disk, "X", min_steps=2)) == _message(lambda: to_sequences(X, "X", None, min_steps=2))


def test_dataset_and_duplicated_channels(tmp_path):
    X = sensors().chunk()
    assert _message(lambda: open_disk(X.to_dataset(), "X")) == _message(lambda: to_sequences(X.to_dataset(), "X"))
    twice = X.assign_coords(feature=["a", "a", "c"])
    assert _message(lambda: open_disk(twice, "X")) == _message(lambda: to_sequences(twice.compute(), "X"))


# ------------------------------------------------------------------------------ slabs follow the chunks


def test_slabs_cover_the_array_once_along_chunks(tmp_path):
    X = video(n=5, T=30)
    disk = to_zarr(X, tmp_path / "c.zarr", (2, 7, 4, 5))
    array = DiskArray(disk, ("y", "x"), False, np.arange(30))
    frame = array.frame_bytes
    for max_bytes, expect_whole_series in ((frame, False), (frame * 30 * 4, True)):
        covered = np.zeros((5, 30), dtype=int)
        for series, rows in array.slabs(max_bytes):
            covered[series, rows] += 1
            assert series.start % 2 == 0 and rows.start % 7 == 0  # along chunk boundaries
            assert (rows == slice(0, 30)) == expect_whole_series
        np.testing.assert_array_equal(covered, 1)
