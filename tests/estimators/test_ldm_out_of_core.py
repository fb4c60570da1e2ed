"""``LDMFilter.fit`` on an xarray DataArray left on disk (Zarr, NetCDF) gives the model the loaded
array gives, reads training windows only, and refuses the options that need the data in memory."""

from __future__ import annotations

import dask.array as da
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ldmfilter import LDMFilter
from ldmfilter.io.disk_array import is_out_of_core
from ldmfilter.training.disk_windows import DiskWindows

pytest.importorskip("zarr")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:The data type")]

FAST = dict(max_epochs=2, verbose=False, window=12, batch_size=4, hidden=(16,), state_dim=4, latent_dim=2)


def video(n=5, T=30, H=5, W=6, seed=0) -> xr.DataArray:
    """A bright square moving along x with a random walk per series, plus noise; two missing frames."""
    rng = np.random.default_rng(seed)
    position = np.clip(np.cumsum(rng.normal(scale=0.7, size=(n, T)), 1) + W / 2, 0, W - 1)
    columns = np.arange(W)
    frames = np.exp(-0.5 * (columns - position[..., None]) ** 2)[:, :, None, :].repeat(H, 2)
    frames = (frames + 0.1 * rng.normal(size=frames.shape)).astype("float32")
    frames[1, 4] = np.nan
    frames[-1, 20] = np.nan
    return xr.DataArray(frames, dims=("series", "time", "y", "x"), name="frames")


def sensors(n=3, T=40, seed=1) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, T, 2)), 1) * 0.3
    values = walk @ rng.normal(size=(2, 4)) + 0.1 * rng.normal(size=(n, T, 4))
    index = pd.date_range("2024-01-01", periods=T, freq="h")
    return xr.DataArray(values, dims=("series", "time", "feature"),
                        coords={"time": index, "feature": list("abcd")}, name="sensors")


def to_zarr(X, path, chunks):
    X.to_dataset().to_zarr(path, mode="w", encoding={X.name: {"chunks": chunks}})
    return xr.open_zarr(path)[X.name]


def to_netcdf(X, path, chunks):
    X.to_dataset().to_netcdf(path, encoding={X.name: {"chunksizes": chunks}})
    return xr.open_dataset(path)[X.name]  # lazily indexed, no dask


def assert_same_model(a: LDMFilter, b: LDMFilter, X, Y, tolerance: float) -> None:
    np.testing.assert_allclose(a.loss_history_, b.loss_history_, rtol=tolerance, atol=tolerance)
    assert len(a.loss_history_) > 0
    for name, value in a.model_.state_dict().items():
        torch.testing.assert_close(b.model_.state_dict()[name], value, rtol=tolerance, atol=tolerance, msg=name)
    assert a.readouts_.keys() == b.readouts_.keys()
    for space, readout in a.readouts_.items():
        for name, value in readout.state_dict().items():
            torch.testing.assert_close(b.readouts_[space].state_dict()[name], value, rtol=tolerance, atol=tolerance, msg=name)
    fa, fb = a.filter(X), b.filter(Y)
    np.testing.assert_allclose(fb.state.mean, fa.state.mean, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(fb.observations.mean, fa.observations.mean, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(fb.observations.var, fa.observations.var, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "store, dtype, options",
    [
        ("zarr", "float32", {}),
        ("zarr", "float64", {}),
        ("netcdf", "float64", {"noise": "input"}),
        ("zarr", "float64", {"dynamics": "mlp", "window": None}),
        ("zarr", "float64", {"encoder": "conv", "max_epochs": 1}),
    ],
    ids=["zarr-float32", "zarr-float64", "netcdf-float64-input-noise", "zarr-float64-mlp-dynamics", "zarr-float64-conv"],
)
def test_fit_on_disk_equals_fit_on_loaded_array(tmp_path, store, dtype, options):
    X = video()
    disk = to_zarr(X, tmp_path / "v.zarr", (1, 8, 5, 6)) if store == "zarr" else to_netcdf(X, tmp_path / "v.nc", (2, 8, 5, 6))
    assert is_out_of_core(disk)
    settings = {**FAST, "dtype": dtype, **options}
    in_memory = LDMFilter(**settings).fit(X)
    on_disk = LDMFilter(**settings).fit(disk)
    assert is_out_of_core(disk)  # fit loaded nothing for good
    assert_same_model(in_memory, on_disk, X, disk, 1e-5 if dtype == "float32" else 1e-9)


def test_irregular_time_index_controls_and_targets(tmp_path):
    X = sensors().isel(time=[t for t in range(40) if t not in (5, 6, 17, 30)])  # hourly with gaps
    rng = np.random.default_rng(4)
    controls = xr.DataArray(rng.normal(size=(3, 36, 1)), dims=X.dims, coords={"time": X.time, "feature": ["u"]})
    targets = X.isel(feature=[0]).values + 1.0
    disk = to_zarr(X, tmp_path / "s.zarr", (1, 10, 4))
    settings = {**FAST, "dtype": "float64"}
    in_memory = LDMFilter(**settings).fit(X, targets=targets, controls=controls)
    on_disk = LDMFilter(**settings).fit(disk, targets=targets, controls=controls)
    assert in_memory.schema_ == on_disk.schema_ and on_disk.schema_.frequency == "h"
    assert on_disk.target_names_ == in_memory.target_names_
    np.testing.assert_allclose(on_disk.loss_history_, in_memory.loss_history_, rtol=1e-9)
    a, b = in_memory.filter(X, controls=controls), on_disk.filter(disk, controls=controls)
    np.testing.assert_allclose(b.targets.mean, a.targets.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.observations.cov, a.observations.cov, rtol=1e-9, atol=1e-9)


def test_resumed_fit_on_disk_equals_the_uninterrupted_one(tmp_path):
    disk = to_zarr(video(n=4), tmp_path / "v.zarr", (1, 8, 5, 6))
    settings = {**FAST, "dtype": "float64"}
    whole = LDMFilter(**settings).fit(disk)

    class Interrupted(Exception):
        """Stands for a crash after the checkpoint of epoch 0."""

    class Interrupt(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise Interrupted

    with pytest.raises(Interrupted):
        LDMFilter(**settings, trainer_kwargs={"callbacks": [Interrupt()]}).fit(disk, checkpoint_dir=tmp_path / "checkpoints")
    resumed = LDMFilter(**settings).fit(disk, resume_from=tmp_path / "checkpoints")
    np.testing.assert_allclose(resumed.loss_history_, whole.loss_history_, rtol=1e-12)
    for name, value in whole.model_.state_dict().items():
        torch.testing.assert_close(resumed.model_.state_dict()[name], value, rtol=1e-12, atol=1e-12)


def test_filter_smooth_forecast_on_disk_load_it(tmp_path):
    X = video(n=3)
    disk = to_zarr(X, tmp_path / "v.zarr", (1, 8, 5, 6))
    model = LDMFilter(**FAST).fit(X)
    np.testing.assert_array_equal(model.filter(disk).state.mean, model.filter(X).state.mean)
    np.testing.assert_array_equal(model.smooth(disk).state.mean, model.smooth(X).state.mean)
    np.testing.assert_array_equal(model.forecast(disk, 3).state.mean, model.forecast(X, 3).state.mean)


def test_rnn_predictor_trains_on_disk(tmp_path):
    X = video(n=4)
    disk = to_zarr(X, tmp_path / "v.zarr", (1, 8, 5, 6))
    settings = {**FAST, "predictor": "rnn", "dtype": "float64"}
    a, b = LDMFilter(**settings).fit(X), LDMFilter(**settings).fit(disk)
    np.testing.assert_allclose(b.loss_history_, a.loss_history_, rtol=1e-9)
    assert b.readouts_ == {}


class CountingFrames:
    """A numpy array behind dask that records every block read as (series, first row, rows)."""

    def __init__(self, values: np.ndarray):
        self.values, self.reads = values, []
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim

    def __getitem__(self, key):
        series, rows = key[0], key[1]
        if rows.stop > rows.start:  # dask also takes an empty slice, for its metadata
            self.reads.append((series.start, rows.start, rows.stop - rows.start))
        return self.values[key]


def test_training_reads_only_its_windows(tmp_path, monkeypatch):
    X = video(n=4, T=32)
    chunk = 8
    source = CountingFrames(X.values)
    disk = xr.DataArray(da.from_array(source, chunks=(1, chunk, 5, 6), asarray=False), dims=X.dims, name="frames")
    served = []
    original = DiskWindows.__getitem__

    def counted(self, index):
        before = len(source.reads)
        item = original(self, index)
        served.append((index, self.starts[index % len(self.starts)], source.reads[before:]))
        return item

    monkeypatch.setattr(DiskWindows, "__getitem__", counted)
    model = LDMFilter(**{**FAST, "max_epochs": 1, "window": 10}).fit(disk)
    starts = [0, 10, 20]  # window 10, stride 10
    assert sorted(i for i, _, _ in served) == list(range(4 * len(starts)))
    for index, start, reads in served:
        rows = sorted((first, first + count) for series, first, count in reads if series == index // len(starts))
        assert len(rows) == len(reads) and rows[0][0] == start and rows[-1][1] == start + 10  # that window only
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    chunks = 4 * 32 // chunk
    training = sum(len(reads) for _, _, reads in served)
    assert len(source.reads) - training == 4 * chunks  # the scan, the filter pass and two read-out passes
    assert model.readouts_["observations"].weight.shape == (30, 4)


def test_options_that_need_the_data_in_memory(tmp_path):
    X = video(n=3)
    disk = to_zarr(X, tmp_path / "v.zarr", (1, 8, 5, 6))
    with pytest.raises(ValueError, match="epoch_data needs the training data in memory"):
        LDMFilter(**FAST).fit(disk, epoch_data=lambda epoch: X.values)
    with pytest.raises(ValueError, match="readout='mlp' is fitted by stochastic gradients"):
        LDMFilter(**FAST).fit(disk, readout="mlp")
    with pytest.raises(ValueError, match=r"readout must be one of \('linear', 'mlp'\), got 'cubic'"):
        LDMFilter(**FAST).fit(disk, readout="cubic")
    partial = X.copy()
    partial[2, 9, 1, 1] = np.nan
    disk = to_zarr(partial, tmp_path / "p.zarr", (1, 8, 5, 6))
    with pytest.raises(ValueError, match=r"some but not all values missing \(first: series 2, time row 9\)"):
        LDMFilter(**FAST).fit(disk)
    LDMFilter(**{**FAST, "predictor": "rnn"}).fit(disk)  # no read-out: partially missing frames are fine


def test_values_beyond_float32_and_bad_input(tmp_path):
    X = sensors().astype("float64")
    X[0, 3, 1] = 1e39
    disk = to_zarr(X, tmp_path / "s.zarr", (1, 10, 4))
    with pytest.raises(ValueError) as on_disk:
        LDMFilter(**FAST).fit(disk)
    with pytest.raises(ValueError) as in_memory:
        LDMFilter(**FAST).fit(X)
    assert str(on_disk.value) == str(in_memory.value)
    X[0, 3, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains inf values \(first at \(0, 3, 1\)\)"):
        LDMFilter(**FAST).fit(to_zarr(X, tmp_path / "t.zarr", (1, 10, 4)))
    with pytest.raises(ValueError, match="needs a 'time' dim"):
        LDMFilter(**FAST).fit(X.rename(time="t").chunk())
