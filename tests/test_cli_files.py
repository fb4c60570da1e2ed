"""The command line on data files: fit → info → filter → smooth → forecast, file formats, bad input."""

import contextlib
import importlib.util
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ldmfilter
from ldmfilter.cli import main
from ldmfilter.io import read_table, write_result

TINY = ["--epochs", "1", "--state-dim", "4", "--latent-dim", "2", "--hidden", "8", "--quiet"]
ROWS = 24  # per series


def run(argv):
    """``main(argv)`` with its stdout and stderr captured: (status, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def sensor_table(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Two hourly series in long form: columns site, timestamp, u, v, w (a few NaN) and pos."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, site in enumerate(["north", "south"]):
        phase = np.arange(rows) / 3 + k
        part = pd.DataFrame(np.sin(phase)[:, None] + rng.normal(0, 0.1, (rows, 3)), columns=["u", "v", "w"])
        part.insert(0, "timestamp", pd.date_range("2024-03-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M"))
        part.insert(0, "site", site)
        part["pos"] = np.cos(phase)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.loc[[i for i in (2, 7, rows + 6) if i < len(table)], "v"] = np.nan
    return table


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A long CSV and a model fitted on it through the command line (inputs u, v, w; target pos)."""
    folder = tmp_path_factory.mktemp("cli")
    sensor_table().to_csv(folder / "sensors.csv", index=False)
    status, out, err = run(["fit", folder / "sensors.csv", "--series-col", "site", "--targets", "pos",
                            "--model", folder / "model.ldm", *TINY])
    assert status == 0, err
    return folder, out


def test_fit_prints_a_summary_and_info_describes_the_model(fitted):
    folder, out = fitted
    assert (folder / "model.ldm").is_file()
    for line in ("series:          2", f"time steps:      {ROWS} per series", "channels:        3 (u, v, w)",
                 "frequency:       h", "targets:         pos", "epochs:          1", "final loss:", "model file:"):
        assert line in out, out
    status, info, _ = run(["info", folder / "model.ldm"])
    assert status == 0
    assert "channels: u, v, w" in info and "targets: pos" in info and "frequency: h" in info


def test_filter_and_smooth_write_means_stds_and_intervals(fitted):
    folder, _ = fitted
    data = folder / "sensors.csv"
    status, out, err = run(["filter", data, "--series-col", "site", "-m", folder / "model.ldm", "-o", folder / "f.csv"])
    assert status == 0, err
    assert "filtered beliefs (observations, 90% intervals)" in out
    table = pd.read_csv(folder / "f.csv")
    expected = ["site", "timestamp"] + [f"{c}{s}" for s in ("", "_std", "_lower", "_upper") for c in "uvw"]
    assert list(table.columns) == expected + ["observed_fraction"]
    assert len(table) == 2 * ROWS and list(table.site.unique()) == ["north", "south"]
    assert (table.observed_fraction < 1).sum() == 3  # the three rows with a missing v
    assert (table.u_lower < table.u).all() and (table.u < table.u_upper).all()

    status, _, err = run(["smooth", data, "--series-col", "site", "-m", folder / "model.ldm",
                          "-o", folder / "s.parquet", "--space", "targets", "--coverage", "0.5"])
    assert status == 0, err
    smoothed = pd.read_parquet(folder / "s.parquet")
    assert list(smoothed.index.names) == ["site", "timestamp"] and len(smoothed) == 2 * ROWS
    assert list(smoothed.columns) == ["pos", "pos_std", "pos_lower", "pos_upper", "observed_fraction"]
    half = (smoothed.pos_upper - smoothed.pos_lower) / 2
    np.testing.assert_allclose(half, 0.6744897501960817 * smoothed.pos_std, rtol=1e-5)  # 50% interval


def test_forecast_continues_each_series_hourly(fitted):
    folder, _ = fitted
    status, out, err = run(["forecast", folder / "sensors.csv", "--series-col", "site", "-m", folder / "model.ldm",
                            "--horizon", "5", "-o", folder / "fc.csv", "--space", "state"])
    assert status == 0, err
    assert "5-step forecast (state" in out
    table = pd.read_csv(folder / "fc.csv", parse_dates=["timestamp"])
    assert len(table) == 10 and "state_3_upper" in table.columns and "observed_fraction" not in table.columns
    future = pd.date_range("2024-03-01", periods=ROWS + 5, freq="h")[ROWS:]
    for site in ("north", "south"):
        assert list(table.loc[table.site == site, "timestamp"]) == list(future)


def test_parquet_round_trip_through_read_table(fitted, tmp_path):
    folder, _ = fitted
    model = ldmfilter.load(folder / "model.ldm")
    data = read_table(folder / "sensors.csv", series_col="site")
    assert list(data.index.names) == ["site", "timestamp"] and isinstance(data.index.levels[1], pd.DatetimeIndex)
    result = model.filter(data[["u", "v", "w"]])
    write_result(result, tmp_path / "r.pq")
    back = read_table(tmp_path / "r.pq", series_col="site")
    pd.testing.assert_frame_equal(back, result.to_pandas(), check_freq=False)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_netcdf_dataset_end_to_end(tmp_path):
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    time = pd.date_range("2024-01-01", periods=20, freq="h")
    dataset = xr.Dataset(
        {name: ("time", np.sin(np.arange(20) / 3 + k) + rng.normal(0, 0.1, 20)) for k, name in enumerate(["temp", "wind"])},
        coords={"time": time},
    )
    dataset.to_netcdf(tmp_path / "weather.nc", engine="scipy")
    array = read_table(tmp_path / "weather.nc")
    assert array.dims == ("time", "feature") and list(array.feature.values) == ["temp", "wind"]

    assert run(["fit", tmp_path / "weather.nc", "-m", tmp_path / "w.ldm", *TINY])[0] == 0
    status, _, err = run(["filter", tmp_path / "weather.nc", "-m", tmp_path / "w.ldm", "-o", tmp_path / "f.nc"])
    assert status == 0, err
    with xr.open_dataset(tmp_path / "f.nc") as result:
        assert result["mean"].dims == ("time", "feature") and result.sizes["time"] == 20
        assert {"std", "lower", "upper", "cov"} <= set(result.data_vars)
        assert list(result.feature.values) == ["temp", "wind"]
    status, _, err = run(["forecast", tmp_path / "weather.nc", "-m", tmp_path / "w.ldm", "--horizon", "3",
                          "-o", tmp_path / "fc.csv"])
    assert status == 0, err
    forecast = pd.read_csv(tmp_path / "fc.csv", index_col="time", parse_dates=True)
    assert list(forecast.index) == list(pd.date_range(time[-1], periods=4, freq="h")[1:])
    assert list(forecast.columns[:2]) == ["temp", "wind"]


def test_read_table_finds_and_parses_the_time_column(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0], "Date": ["2024-01-01", "2024-01-02"]}).to_csv(tmp_path / "a.csv", index=False)
    assert isinstance(read_table(tmp_path / "a.csv").index, pd.DatetimeIndex)
    pd.DataFrame({"when": ["2024-01-01 00:00", "2024-01-01 00:10"], "x": [1.0, 2.0]}).to_csv(tmp_path / "b.csv", index=False)
    table = read_table(tmp_path / "b.csv")
    assert table.index.name == "when" and list(table.columns) == ["x"]
    pd.DataFrame({"step": [0, 5, 10], "x": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "c.csv", index=False)
    numeric = read_table(tmp_path / "c.csv", time_col="step")
    assert list(numeric.index) == [0, 5, 10]
    with pytest.raises(ValueError, match="no series column 'site'"):
        read_table(tmp_path / "c.csv", time_col="step", series_col="site")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no data file at"),
        ("extension", "cannot tell the file type"),
        ("no time", "--time-col"),
        ("unsorted", "not sorted"),
        ("targets", "--targets names channels that"),
        ("zarr", "'zarr' package"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, case, message, monkeypatch):
    if case == "zarr":  # as on a machine without the package
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    table = sensor_table(rows=6).query("site == 'north'").drop(columns="site")
    data = tmp_path / "data.csv"
    if case == "extension":
        data = tmp_path / "data.txt"
        data.write_text("time,x\n")
    elif case == "no time":
        table.drop(columns="timestamp").to_csv(data, index=False)
    elif case == "unsorted":
        table.iloc[[0, 2, 1, 3]].to_csv(data, index=False)
    elif case == "targets":
        table.to_csv(data, index=False)
    elif case == "zarr":
        data = tmp_path / "data.zarr"
        data.mkdir()
    argv = ["fit", data, "-m", tmp_path / "m.ldm", *TINY]
    status, out, err = run(argv + (["--targets", "depth"] if case == "targets" else []))
    assert status == 2 and out == ""
    assert err.startswith("ldmfilter fit: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "m.ldm").exists()


def test_bad_output_or_model_fails_before_any_work(fitted, tmp_path):
    folder, _ = fitted
    data, model = folder / "sensors.csv", folder / "model.ldm"
    status, _, err = run(["filter", data, "--series-col", "site", "-m", model, "-o", tmp_path / "out.xlsx"])
    assert status == 2 and "cannot tell the file type" in err
    status, _, err = run(["smooth", data, "--series-col", "site", "-m", tmp_path / "none.ldm", "-o", tmp_path / "o.csv"])
    assert status == 2 and "no model file" in err
    status, _, err = run(["filter", data, "-m", model, "-o", tmp_path / "o.csv"])  # long table without --series-col
    assert status == 2 and err.startswith("ldmfilter filter: error:")
    with pytest.raises(ValueError, match="cannot tell the file type"):
        write_result(None, tmp_path / "result.json")


def test_help_of_every_command(capsys):
    out = subprocess.run([sys.executable, "-m", "ldmfilter.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "fit", "filter", "smooth", "forecast", "calibrate", "info"):
        assert command in out
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    fit_help = capsys.readouterr().out
    for option in ("--time-col", "--series-col", "--targets", "--state-dim", "--latent-dim", "--epochs", "--window", "--quiet"):
        assert option in fit_help
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])
    assert "--horizon" in capsys.readouterr().out


def test_a_few_missing_values_do_not_blind_the_encoder(fitted):
    """A NaN in one channel once made the input normalisation NaN, so the encoder saw only zeros."""
    folder, _ = fitted
    model = ldmfilter.load(folder / "model.ldm")
    latents = model.transform(read_table(folder / "sensors.csv", series_col="site")[["u", "v", "w"]])
    assert not np.allclose(latents, latents[0, 0])


def test_zarr_store_end_to_end(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    rng = np.random.default_rng(2)
    time = pd.date_range("2024-02-01", periods=16, freq="D")
    frames = xr.DataArray(rng.random((16, 4, 3)), dims=("time", "y", "x"), coords={"time": time}, name="video")
    frames.to_dataset().to_zarr(tmp_path / "video.zarr")
    assert read_table(tmp_path / "video.zarr").dims == ("time", "y", "x")
    assert run(["fit", tmp_path / "video.zarr", "-m", tmp_path / "v.ldm", *TINY])[0] == 0
    status, _, err = run(["smooth", tmp_path / "video.zarr", "-m", tmp_path / "v.ldm", "-o", tmp_path / "s.zarr"])
    assert status == 0, err
    with xr.open_zarr(tmp_path / "s.zarr") as result:
        assert result["mean"].dims == ("time", "y", "x") and result.sizes["time"] == 16


def test_controls_and_mlp_dynamics_through_the_command_line(tmp_path):
    """fit --controls --dynamics mlp; filter finds the control columns; forecast reads --future-controls."""
    table = sensor_table()
    table["heat"] = np.random.default_rng(3).normal(size=len(table))
    table.to_csv(tmp_path / "sensors.csv", index=False)
    status, out, err = run(["fit", tmp_path / "sensors.csv", "--series-col", "site", "--controls", "heat",
                            "--targets", "pos", "--dynamics", "mlp", "--moments", "cubature", "--multistep", "3",
                            "--noise", "input_full", "--observation", "mlp", "--model", tmp_path / "m.ldm", *TINY])
    assert status == 0, err
    assert "channels:        3 (u, v, w)" in out and "controls:        heat" in out and "dynamics=mlp (cubature)" in out
    assert "observation=mlp" in out
    status, out, err = run(["info", tmp_path / "m.ldm"])
    assert "dynamics: mlp" in out and "moments: cubature" in out and "controls: heat" in out and "multistep: 3" in out
    assert "noise: input_full" in out and "observation: mlp" in out
    status, out, err = run(["filter", tmp_path / "sensors.csv", "--series-col", "site", "--model", tmp_path / "m.ldm",
                            "--out", tmp_path / "f.csv"])
    assert status == 0, err
    future = pd.DataFrame({
        "site": ["north"] * 3 + ["south"] * 3,
        "timestamp": list(pd.date_range("2024-03-02", periods=3, freq="h").strftime("%Y-%m-%d %H:%M")) * 2,
        "heat": np.arange(6.0),
    })
    future.to_csv(tmp_path / "future.csv", index=False)
    args = ["forecast", tmp_path / "sensors.csv", "--series-col", "site", "--model", tmp_path / "m.ldm",
            "--horizon", 3, "--out", tmp_path / "fc.csv"]
    status, out, err = run(args)
    assert status == 2 and "future_controls" in err
    status, out, err = run(args + ["--future-controls", tmp_path / "future.csv"])
    assert status == 0, err
    assert len(read_table(tmp_path / "fc.csv", series_col="site")) == 6
    status, out, err = run(["fit", tmp_path / "sensors.csv", "--series-col", "site", "--controls", "heat",
                            "--targets", "heat", "--model", tmp_path / "x.ldm", *TINY])
    assert status == 2 and "both --targets and --controls" in err


def test_restarts_and_gradient_clipping_through_the_command_line(tmp_path):
    """fit --n-init 3 --clip: the summary says which restart was kept; the model file keeps both options."""
    sensor_table().to_csv(tmp_path / "sensors.csv", index=False)
    argv = ["fit", tmp_path / "sensors.csv", "--series-col", "site", "--model", tmp_path / "m.ldm", "--seed", "5", *TINY]
    status, out, err = run(argv + ["--n-init", "3", "--clip", "0.5"])
    assert status == 0, err
    line = re.search(r"^restarts: +seeds 5, 105, 205; final losses (\S+), (\S+), (\S+); agreement (.+); kept (\d+)$", out, re.M)
    assert line is not None, out
    assert int(line[5]) in (5, 105, 205) and all(np.isfinite(float(line[k])) for k in (1, 2, 3))
    model = ldmfilter.load(tmp_path / "m.ldm")
    assert model.n_init == 3 and model.trainer_kwargs["gradient_clip_val"] == 0.5
    assert "n_init: 3" in run(["info", tmp_path / "m.ldm"])[1]
    status, out, err = run(argv + ["--n-init", "2"])
    assert status == 2 and "n_init must be 1 or at least 3" in err and "Traceback" not in err, err
    for bad in ("0", "-1", "nan", "inf", "x"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main([str(a) for a in argv + ["--clip", bad]])
        assert exit_.value.code == 2 and "argument --clip: expected a positive" in err.getvalue()


def test_calibrate_writes_the_factors_that_forecast_then_applies(fitted, tmp_path):
    folder, _ = fitted
    held_out, table = tmp_path / "held_out.csv", sensor_table(rows=60, seed=7)
    table.to_csv(held_out, index=False)
    before = ldmfilter.load(folder / "model.ldm")
    status, out, err = run(["calibrate", held_out, "--series-col", "site", "-m", folder / "model.ldm",
                            "--horizon", "4", "--targets", "pos", "-o", tmp_path / "calibrated.ldm"])
    assert status == 0, err
    assert "calibrated 4-step forecasts against targets pos" in out and "h=4: " in out
    model = ldmfilter.load(tmp_path / "calibrated.ldm")
    assert model.forecast_scale_.shape == (4,)
    indexed = table.assign(timestamp=pd.to_datetime(table.timestamp)).set_index(["site", "timestamp"])
    expected = before.calibrate_forecast(indexed[["u", "v", "w"]], 4, Y=indexed[["pos"]]).forecast_scale_
    np.testing.assert_allclose(model.forecast_scale_, expected, rtol=1e-6)  # the same as in Python
    status, info, _ = run(["info", tmp_path / "calibrated.ldm"])
    assert "forecast calibration: h=1: " in info
    status, _, err = run(["forecast", held_out, "--series-col", "site", "-m", tmp_path / "calibrated.ldm",
                          "--horizon", "6", "-o", tmp_path / "fc.csv", "--space", "targets"])
    assert status == 0, err
    status, _, err = run(["calibrate", held_out, "--series-col", "site", "-m", folder / "model.ldm", "--horizon", "70",
                          "-o", tmp_path / "never.ldm"])
    assert status == 2 and "no series is long enough" in err and not (tmp_path / "never.ldm").exists()


def test_calibrate_to_a_coverage_level(fitted, tmp_path):
    folder, _ = fitted
    held_out, table = tmp_path / "held_out.csv", sensor_table(rows=60, seed=7)
    table.to_csv(held_out, index=False)
    status, out, err = run(["calibrate", held_out, "--series-col", "site", "-m", folder / "model.ldm", "--horizon", "3",
                            "--targets", "pos", "--method", "coverage", "--level", "0.8", "-o", tmp_path / "c.ldm"])
    assert status == 0, err
    assert "(80% coverage)" in out
    indexed = table.assign(timestamp=pd.to_datetime(table.timestamp)).set_index(["site", "timestamp"])
    expected = ldmfilter.load(folder / "model.ldm").calibrate_forecast(
        indexed[["u", "v", "w"]], 3, Y=indexed[["pos"]], method="coverage", level=0.8).forecast_scale_
    np.testing.assert_allclose(ldmfilter.load(tmp_path / "c.ldm").forecast_scale_, expected, rtol=1e-6)
    with pytest.raises(SystemExit) as exit_:
        run(["calibrate", held_out, "--series-col", "site", "-m", folder / "model.ldm", "--horizon", "3",
             "--method", "coverage", "--level", "1.5", "-o", tmp_path / "never.ldm"])
    assert exit_.value.code == 2 and not (tmp_path / "never.ldm").exists()


@pytest.mark.parametrize("option,kinds", [("--noise", "NOISE_KINDS"), ("--observation", "OBSERVATIONS")])
def test_choices_are_the_packages_kinds(option, kinds):
    """The parser lists the kinds itself (it does not import torch); they must not drift apart."""
    import ldmfilter.nn
    from ldmfilter.cli import build_parser

    fit = next(action for action in build_parser()._subparsers._group_actions[0].choices["fit"]._actions
               if option in action.option_strings)
    assert tuple(fit.choices) == getattr(ldmfilter.nn, kinds)
