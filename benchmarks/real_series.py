"""Probabilistic forecasts of real series shipped with statsmodels, against established references.

Data: the datasets that ``statsmodels.api.datasets`` ships as files inside the package (each load
is checked to open no network connection; a dataset that would download is skipped and
reported): Nile river flow (annual), sunspots (annual), Mauna Loa CO2 (weekly, with missing
weeks), El Niño sea-surface temperature (monthly) and three US macro series (quarterly).
Each becomes a pandas DataFrame with a ``DatetimeIndex`` at its frequency, and every model
gets it that way (so ``fit``/``forecast`` run through the toolkit's pandas path, missing weeks
as NaN).

Protocol: rolling origin.  ``n_origins`` forecast origins are spread evenly over the last 25 % of
each series (the last one leaving room for the longest horizon).  **Every model is fitted once,
on the data before the first origin**; at each origin it then filters the data up to the origin
with those parameters (no refit) and forecasts ``max(horizons)`` steps.  The forecast at
horizon ``h`` is scored against the observed value ``h`` steps after the origin with the
closed-form Gaussian CRPS (:func:`ldmfilter.metrics.crps_gaussian`), RMSE of the mean and the
empirical coverage of the central 90 % interval, pooled over origins (and columns).  Missing
targets are left out.

Methods:

* ``LDMFilter``: small settings for short low-dimensional series (state_dim 4–8, latent_dim
  1–3, a 32-unit encoder, training windows shorter than the training part);
* ``KalmanFilter`` (EM): a linear-Gaussian model with a small state (local-level / trend-like,
  plus two dims per seasonal harmonic where there is a season);
* ``UnobservedComponents`` (statsmodels, maximum likelihood): local level or local linear trend,
  plus a trigonometric seasonal or a stochastic cycle where the series has one — the textbook
  structural model;
* ``SARIMAX`` (statsmodels): a small seasonal ARIMA per series (with Fourier terms for the
  52.18-week CO2 season);
* ``random walk``: the last observation, with variance ``h σ²`` (``σ²`` of the training
  differences) — the floor any forecaster should beat.

Multivariate macro data: ``LDMFilter``/``KalmanFilter`` model the three series jointly,
statsmodels' models one series at a time.

    python benchmarks/real_series.py [--quick] [--no-write] [--seed 0] [--datasets nile co2]

Writes ``benchmarks/results/real_series.md`` (``real_series_quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import socket
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ldmfilter import LDMFilter
from ldmfilter.estimators import KalmanFilter
from ldmfilter.metrics import crps_gaussian, gaussian_interval_coverage, rmse

RESULTS = Path(__file__).parent / "results"
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
CO2_PERIOD = 365.25 / 7.0  # weeks per year


# --------------------------------------------------------------------------- data


@contextlib.contextmanager
def no_network():
    """Make any attempt to open a network connection raise (proves a load reads local files only)."""

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("network access is disabled while loading benchmark data")

    saved = socket.socket.connect, socket.create_connection
    socket.socket.connect, socket.create_connection = refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection = saved


def _datasets():
    import statsmodels.api as sm  # noqa: PLC0415 - an optional dependency (the bench extra)

    return sm.datasets


def load_nile() -> pd.DataFrame:
    data = _datasets().nile.load_pandas().data
    index = pd.date_range(f"{int(data['year'].iloc[0])}-01-01", periods=len(data), freq="YS", name="time")
    return pd.DataFrame({"volume": data["volume"].to_numpy(float)}, index=index)


def load_sunspots() -> pd.DataFrame:
    data = _datasets().sunspots.load_pandas().data
    index = pd.date_range(f"{int(data['YEAR'].iloc[0])}-01-01", periods=len(data), freq="YS", name="time")
    return pd.DataFrame({"sunactivity": data["SUNACTIVITY"].to_numpy(float)}, index=index)


def load_co2() -> pd.DataFrame:
    data = _datasets().co2.load_pandas().data.asfreq("W-SAT")  # weekly; missing weeks are NaN
    data.index.name = "time"
    return data.astype(float)


def load_elnino() -> pd.DataFrame:
    data = _datasets().elnino.load_pandas().data
    values = data[MONTHS].to_numpy(float).ravel()  # row = year, columns = months
    index = pd.date_range(f"{int(data['YEAR'].iloc[0])}-01-01", periods=len(values), freq="MS", name="time")
    return pd.DataFrame({"sst": values}, index=index)


def load_macrodata() -> pd.DataFrame:
    data = _datasets().macrodata.load_pandas().data
    index = pd.date_range(f"{int(data['year'].iloc[0])}-01-01", periods=len(data), freq="QS-JAN", name="time")
    return pd.DataFrame({f"100log_{c}": 100.0 * np.log(data[c].to_numpy(float)) for c in ("realgdp", "realcons", "realinv")},
                        index=index)


@dataclass(frozen=True)
class Dataset:
    """A series, how to load it, and each method's settings for it."""

    name: str
    load: Callable[[], pd.DataFrame]
    description: str
    uc: dict  # UnobservedComponents keyword arguments
    sarimax: dict  # SARIMAX keyword arguments (order, seasonal_order, trend)
    kalman_state_dim: int
    ldm: dict  # LDMFilter keyword arguments
    fourier: tuple | None = None  # (period, harmonics): deterministic exogenous terms for SARIMAX
    quick_rows: slice | None = None  # the part used by --quick


DATASETS = {
    "nile": Dataset(
        "nile", load_nile, "Nile river volume at Aswan, 10⁸ m³/yr, annual 1871–1970 (100 values)",
        uc={"level": "local level"}, sarimax={"order": (0, 1, 1)}, kalman_state_dim=2,
        ldm={"state_dim": 4, "latent_dim": 1, "window": 20},
    ),
    "sunspots": Dataset(
        "sunspots", load_sunspots, "yearly mean sunspot number, 1700–2008 (309 values); an ≈11-year cycle",
        uc={"level": "local level", "cycle": True, "stochastic_cycle": True, "damped_cycle": True,
            "cycle_period_bounds": (8, 14)},  # the cycle collapses to a random walk without the period bounds
        sarimax={"order": (3, 0, 0), "trend": "c"}, kalman_state_dim=4,
        ldm={"state_dim": 6, "latent_dim": 1, "window": 32},
    ),
    "co2": Dataset(
        "co2", load_co2, "Mauna Loa CO2, ppm, weekly 1958-03 to 2001-12 (2284 weeks, 59 missing); yearly season",
        uc={"level": "local linear trend", "freq_seasonal": [{"period": CO2_PERIOD, "harmonics": 2}]},
        sarimax={"order": (1, 1, 1), "trend": "t"}, fourier=(CO2_PERIOD, 2), kalman_state_dim=6,
        ldm={"state_dim": 8, "latent_dim": 1, "window": 64}, quick_rows=slice(0, 600),
    ),
    "elnino": Dataset(
        "elnino", load_elnino, "El Niño region sea-surface temperature, °C, monthly 1950–2010 (732 values)",
        uc={"level": "local level", "freq_seasonal": [{"period": 12, "harmonics": 3}]},
        sarimax={"order": (1, 0, 0), "seasonal_order": (0, 1, 1, 12)}, kalman_state_dim=6,
        ldm={"state_dim": 8, "latent_dim": 1, "window": 48},
    ),
    "macrodata": Dataset(
        "macrodata", load_macrodata, "US real GDP, consumption, investment, 100·log, quarterly 1959Q1–2009Q3 (203 × 3)",
        uc={"level": "local linear trend"}, sarimax={"order": (1, 1, 0), "trend": "t"}, kalman_state_dim=6,
        ldm={"state_dim": 6, "latent_dim": 3, "window": 32},
    ),
}


@dataclass(frozen=True)
class Settings:
    horizons: tuple = (1, 6, 12)
    n_origins: int = 20
    test_fraction: float = 0.25
    em_iter: int = 50
    ldm_common: dict = field(default_factory=lambda: {"hidden": (32,)})  # max_epochs None: ≥ 1000 optimiser steps
    datasets: tuple = tuple(DATASETS)


QUICK = Settings(n_origins=3, em_iter=10, ldm_common={"hidden": (32,), "max_epochs": 20}, datasets=("nile", "co2", "macrodata"))


def origins_for(n: int, settings: Settings) -> np.ndarray:
    """Forecast origins (number of rows before the origin), evenly over the last ``test_fraction``."""
    first = int(round(n * (1.0 - settings.test_fraction)))
    last = n - max(settings.horizons)
    return np.unique(np.linspace(first, last, settings.n_origins).round().astype(int))


# --------------------------------------------------------------------------- methods
# Each method: fit(train DataFrame) -> forecaster; forecaster(history DataFrame, H) -> (mean, std), each (H, D).


def ours(estimator) -> Callable:
    def fit(train: pd.DataFrame):
        model = estimator().fit(train)

        def forecast(history: pd.DataFrame, horizon: int):
            result = model.forecast(history, horizon=horizon)
            table = result.to_pandas(coverage=0.9)  # the pandas path: the index continues at the series' frequency
            expected = pd.date_range(history.index[-1], periods=horizon + 1, freq=history.index.freq)[1:]
            if not table.index.equals(expected):
                raise AssertionError(f"forecast index {table.index[:2]}… does not continue {history.index[-2:]}")
            return result.observations.mean, result.observations.std

        return forecast

    return fit


def _fourier(t: np.ndarray, period: float, harmonics: int) -> np.ndarray:
    angle = 2.0 * np.pi * np.outer(t, np.arange(1, harmonics + 1)) / period
    return np.concatenate([np.sin(angle), np.cos(angle)], 1)


def statsmodels_method(kind: str, spec: Dataset) -> Callable:
    """UnobservedComponents or SARIMAX, one model per column; parameters by ML on the training part."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # noqa: PLC0415
    from statsmodels.tsa.statespace.structural import UnobservedComponents  # noqa: PLC0415

    def exog(start: int, stop: int):
        if kind != "sarimax" or spec.fourier is None:
            return None
        return _fourier(np.arange(start, stop), *spec.fourier)

    def fit(train: pd.DataFrame):
        fitted = []
        for column in train.columns:
            series = train[column]
            if kind == "uc":
                model = UnobservedComponents(series, **spec.uc)
            else:
                model = SARIMAX(series, exog=exog(0, len(series)), **spec.sarimax)
            fitted.append(model.fit(disp=False, maxiter=200))

        def forecast(history: pd.DataFrame, horizon: int):
            means, stds = [], []
            n = len(history)
            for column, result in zip(history.columns, fitted):
                applied = result.apply(history[column], exog=exog(0, n), refit=False)
                fc = applied.get_forecast(horizon, exog=exog(n, n + horizon))
                means.append(np.asarray(fc.predicted_mean))
                stds.append(np.sqrt(np.asarray(fc.var_pred_mean)))
            return np.stack(means, -1), np.stack(stds, -1)

        return forecast

    return fit


def random_walk(train: pd.DataFrame):
    """Last observed value; variance h σ², σ² from the training part's differences between consecutive observed values."""
    values = train.to_numpy()
    sigma = np.array([np.nanstd(np.diff(col[~np.isnan(col)])) for col in values.T])

    def forecast(history: pd.DataFrame, horizon: int):
        last = np.array([col[~np.isnan(col)][-1] for col in history.to_numpy().T])
        steps = np.arange(1, horizon + 1)[:, None]
        return np.broadcast_to(last, (horizon, len(last))), np.sqrt(steps) * sigma

    return forecast


def methods_for(spec: Dataset, settings: Settings, seed: int) -> dict:
    ldm_kwargs = {**settings.ldm_common, **spec.ldm}
    return {
        "LDMFilter": ours(
            lambda: LDMFilter(**ldm_kwargs, random_state=seed, verbose=False)),
        "KalmanFilter (EM)": ours(
            lambda: KalmanFilter(spec.kalman_state_dim, n_iter=settings.em_iter, random_state=seed)),
        "UnobservedComponents": statsmodels_method("uc", spec),
        "SARIMAX": statsmodels_method("sarimax", spec),
        "random walk": random_walk,
    }


# --------------------------------------------------------------------------- evaluation


def evaluate(spec: Dataset, data: pd.DataFrame, settings: Settings, seed: int) -> dict:
    """{method: {"scores": {h: (crps, rmse, cov90)}, "mean_crps": float, "fit_s", "forecast_s", "warnings"}}."""
    H = max(settings.horizons)
    origins = origins_for(len(data), settings)
    train = data.iloc[: origins[0]]
    actual = np.stack([data.to_numpy()[o : o + H] for o in origins])  # (origins, H, D)
    out = {}
    for name, fit in methods_for(spec, settings, seed).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            forecaster = fit(train)
            fitted = time.perf_counter()
            moments = [forecaster(data.iloc[:o], H) for o in origins]
            done = time.perf_counter()
        mean = np.stack([np.asarray(m, float) for m, _ in moments])
        std = np.maximum(np.stack([np.asarray(s, float) for _, s in moments]), 1e-12)
        scores = {}
        for h in settings.horizons:
            y, m, s = actual[:, h - 1], mean[:, h - 1], std[:, h - 1]
            scores[h] = (crps_gaussian(y, m, s), rmse(y, m), gaussian_interval_coverage(y, m, s, 0.9))
        kinds = sorted({w.category.__name__ for w in caught if "onvergence" in w.category.__name__})
        out[name] = {"scores": scores, "mean_crps": crps_gaussian(actual, mean, std),
                     "fit_s": fitted - started, "forecast_s": done - fitted, "warnings": kinds}
        line = "  ".join(f"h={h}: CRPS {c:.3g} RMSE {r:.3g} cov {v:.2f}" for h, (c, r, v) in scores.items())
        print(f"  {spec.name:<9s} {name:<28s} {line}  fit {fitted - started:.1f} s", flush=True)
    return {"results": out, "origins": origins, "index": data.index, "train_rows": int(origins[0]),
            "missing": int(np.isnan(data.to_numpy()).sum()), "missing_scored": int(np.isnan(actual).sum())}


# --------------------------------------------------------------------------- report


def render(evaluated: dict, skipped: dict, settings: Settings, seed: int, wall: float, quick: bool) -> str:
    hs = settings.horizons
    lines = [
        f"## Run of {datetime.datetime.now():%Y-%m-%d %H:%M} ({'quick' if quick else 'full'} settings)",
        "",
        f"Rolling origin: {settings.n_origins} origins spread evenly over the last {settings.test_fraction:.0%} of each "
        f"series; every model fitted **once, on the data before the first origin**, then at each origin it filters "
        f"the data up to the origin with those parameters and forecasts {max(hs)} steps. Scores pooled over origins "
        f"(and columns): CRPS of the Gaussian forecast (closed form, in the data's units; lower is better), RMSE of "
        f"the mean, coverage of the central 90 % interval (target 0.90). \"CRPS 1–{max(hs)}\": CRPS averaged over all "
        f"horizons 1…{max(hs)}. Seed {seed} (LDMFilter's random_state; the other methods are deterministic). "
        f"LDMFilter: {settings.ldm_common} + the per-dataset settings below, other arguments default "
        f"(stop-gradient objective, fixed R, linear read-out); KalmanFilter: EM, {settings.em_iter} iterations. "
        f"statsmodels models by maximum likelihood (`fit(disp=False, maxiter=200)`), then `results.apply(history, "
        f"refit=False)` at each origin. Data are DataFrames with a DatetimeIndex at the series' frequency; every "
        f"forecast's `to_pandas()` index was checked to continue the history's dates.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, 2 CPU cores shared with other jobs, torch "
        f"{torch.__version__}, statsmodels {_statsmodels_version()}. Wall time of the whole run: {wall:.0f} s.",
        "",
    ]
    if evaluated:
        lines += [f"Loaded from the files inside the installed statsmodels with network connections refused "
                  f"(`socket.connect` patched to fail during each load): {', '.join(evaluated)}.", ""]
    if skipped:
        lines += ["Skipped datasets: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".", ""]
    # summary: mean CRPS relative to UnobservedComponents
    names = list(next(iter(evaluated.values()))["results"]) if evaluated else []
    lines += [
        f"### Summary: CRPS averaged over horizons 1–{max(hs)}, relative to UnobservedComponents (< 1 beats it)",
        "",
        "| dataset | " + " | ".join(n.split(" (")[0] for n in names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for ds, ev in evaluated.items():
        ref = ev["results"]["UnobservedComponents"]["mean_crps"]
        lines.append(f"| {ds} | " + " | ".join(f"{ev['results'][n]['mean_crps'] / ref:.2f}" for n in names) + " |")
    for ds, ev in evaluated.items():
        spec = DATASETS[ds]
        idx = ev["index"]
        lines += [
            "",
            f"### {ds}: {spec.description}",
            "",
            f"Rows used: {len(idx)} ({idx[0]:%Y-%m-%d} to {idx[-1]:%Y-%m-%d}, freq {idx.freqstr}), {ev['missing']} "
            f"missing values ({ev['missing_scored']} of them among the scored targets); trained on the first "
            f"{ev['train_rows']} rows; origins after rows {', '.join(str(o) for o in ev['origins'])}. "
            f"UnobservedComponents {spec.uc}; SARIMAX {spec.sarimax}"
            + (f" + Fourier terms (period {spec.fourier[0]:.2f}, {spec.fourier[1]} harmonics)" if spec.fourier else "")
            + f"; KalmanFilter state_dim={spec.kalman_state_dim}; LDMFilter {spec.ldm}.",
            "",
            "| method | " + " | ".join(f"CRPS h={h} | RMSE h={h} | cov90 h={h}" for h in hs)
            + f" | CRPS 1–{max(hs)} | fit s | forecast s |",
            "| --- | " + " | ".join("--- | --- | ---" for _ in hs) + " | --- | --- | --- |",
        ]
        for name, res in ev["results"].items():
            cells = " | ".join(f"{c:.3g} | {r:.3g} | {v:.2f}" for c, r, v in (res["scores"][h] for h in hs))
            note = f" ({', '.join(res['warnings'])})" if res["warnings"] else ""
            lines.append(f"| {name}{note} | {cells} | {res['mean_crps']:.3g} | {res['fit_s']:.1f} | {res['forecast_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _statsmodels_version() -> str:
    import statsmodels  # noqa: PLC0415

    return statsmodels.__version__


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three datasets (CO2 cut to 600 weeks), 3 origins, short training")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="a subset of the datasets")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.datasets:
        settings = replace(settings, datasets=tuple(args.datasets))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    evaluated, skipped = {}, {}
    try:
        for name in settings.datasets:
            spec = DATASETS[name]
            try:
                with no_network():
                    data = spec.load()
            except OSError as error:  # includes the refused connection of a dataset that would download
                skipped[name] = f"not loadable without network: {error}"
                print(f"  {name}: skipped ({skipped[name]})", flush=True)
                continue
            if args.quick and spec.quick_rows is not None:
                data = data.iloc[spec.quick_rows]
            evaluated[name] = evaluate(spec, data, settings, args.seed)
    finally:
        torch.set_num_threads(previous_threads)
    wall = time.perf_counter() - started
    text = render(evaluated, skipped, settings, args.seed, wall, args.quick)
    print(text)
    if not args.no_write:
        path = RESULTS / ("real_series_quick.md" if args.quick else "real_series.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Forecasting real series (statsmodels' datasets): LDMFilter and KalmanFilter against "
                        "statsmodels' structural models\n\n" + text)
    return {"evaluated": evaluated, "skipped": skipped, "wall": wall}


if __name__ == "__main__":
    main()
