"""Figures of results: beliefs over time with interval bands, and frames beside their reconstructions."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_result", "plot_frames"]


def _check_series(result, series: int) -> None:
    if not 0 <= series < result.layout.n_series:
        raise ValueError(f"series must lie in [0, {result.layout.n_series}), got {series}")


def _series_rows(result, array: np.ndarray, series: int) -> np.ndarray:
    """One series' rows of an array laid out like the result."""
    layout = result.layout
    _check_series(result, series)
    rows = len(result.time_index(series))
    return array[:rows] if layout.single else array[series, :rows]


def _data_columns(data, names, rows: int) -> np.ndarray | None:
    """The observed values of one series as (rows, len(names)) with NaN where a name is absent."""
    if data is None:
        return None
    if hasattr(data, "columns"):
        columns = [str(c) for c in data.columns]
        values = np.full((len(data), len(names)), np.nan)
        for k, name in enumerate(names):
            if name in columns:
                values[:, k] = data.iloc[:, columns.index(name)].to_numpy(dtype=float)
        return values
    values = np.asarray(data, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if values.shape != (rows, len(names)):
        raise ValueError(f"data must have shape ({rows}, {len(names)}) for this series, got {values.shape}")
    return values


def plot_result(
    result,
    space: str | None = None,
    *,
    series: int = 0,
    variables=None,
    coverage=(0.5, 0.9),
    data=None,
    history=None,
    max_variables: int = 6,
    frames=None,
    title: str | None = None,
):
    """Means with central-interval bands over time, one panel per variable.

    Parameters
    ----------
    result : FilterResult or ForecastResult
    space : {"state", "observations", "targets"}, optional
        Default: observations when present, else the state.  Frame-valued observations are
        drawn with :func:`plot_frames` (give ``frames``).
    series : int
        Which series to draw.
    variables : sequence of str or int, optional
        Variables to draw (default: the first ``max_variables``).
    coverage : float or sequence of float
        Bands drawn, widest palest (a fan for forecasts).
    data : DataFrame or array (T, D), optional
        Observed values of this series, drawn as dots (DataFrame columns matched by name).
    history : FilterResult, optional
        A filter result of the same series drawn before a forecast.
    frames : array, optional
        Input frames for frame-valued observations.
    title : str, optional
        Figure title (default: the result type and space).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import pyplot as plt

    from .results.tables import variable_names

    _check_series(result, series)
    space = space or ("observations" if result.observations is not None else "state")
    moments = result.space(space)
    lead = 1 if result.layout.single else 2
    if moments.mean.ndim - lead > 1:
        return plot_frames(result, frames, series=series, title=title)
    names = variable_names(result, space)
    chosen = list(range(min(len(names), max_variables))) if variables is None else [
        names.index(str(v)) if not isinstance(v, (int, np.integer)) else int(v) for v in variables
    ]
    levels = sorted(np.atleast_1d(np.asarray(coverage, dtype=float)), reverse=True)
    time = result.time_index(series)
    mean = _series_rows(result, moments.mean, series)
    observed = _data_columns(data, names, len(time))
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 1.8 * len(chosen) + 0.6), sharex=True, squeeze=False)
    for ax, k in zip(axes[:, 0], chosen):
        if history is not None:
            past = history.space(space)
            ax.plot(history.time_index(series), _series_rows(history, past.mean, series)[:, k], color="C0", lw=1)
        for j, level in enumerate(levels):
            lower, upper = (_series_rows(result, bound, series)[:, k] for bound in moments.interval(level))
            ax.fill_between(time, lower, upper, color="C3" if history is not None else "C0",
                            alpha=0.15 + 0.15 * j, lw=0, label=f"{level:.0%} interval")
        ax.plot(time, mean[:, k], color="C3" if history is not None else "C0", lw=1.2, label="mean")
        if observed is not None:
            ax.plot(time, observed[:, k], "k.", ms=2.5, label="data")
        ax.set_ylabel(names[k], fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=len(levels) + 2)
    default = f"{type(result).__name__}: {space}" + (f", series {result.layout.series[series]!r}" if not result.layout.single else "")
    fig.suptitle(title or default, fontsize=10)
    fig.tight_layout()
    return fig


def _image(frame: np.ndarray) -> np.ndarray:
    """A frame as an image: (H, W), or (H, W, 3) for three channels; the first channel otherwise."""
    if frame.ndim == 3:
        return np.clip(np.moveaxis(frame, 0, -1), 0, 1) if frame.shape[0] == 3 else frame[0]
    return frame


def plot_frames(result, frames, *, series: int = 0, steps=None, count: int = 8, title: str | None = None):
    """Input frames (top row) beside the observation read-out's mean reconstructions (bottom row).

    Parameters
    ----------
    result : FilterResult
        With frame-valued observation beliefs.
    frames : array, shape like the input (…, T, *obs_shape)
        The frames that were filtered.
    series : int
    steps : sequence of int, optional
        Rows to show (default: ``count`` evenly spaced).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import pyplot as plt

    if frames is None:
        raise ValueError("plot_frames needs the input frames (frames=...)")
    moments = result.space("observations")
    reconstruction = _series_rows(result, moments.mean, series)
    frames = np.asarray(frames, dtype=float)
    frames = frames if result.layout.single else frames[series]
    frames = frames.reshape((len(frames),) + reconstruction.shape[1:])
    steps = np.linspace(0, len(reconstruction) - 1, min(count, len(reconstruction))).astype(int) if steps is None else list(steps)
    fig, axes = plt.subplots(2, len(steps), figsize=(1.25 * len(steps), 2.8), squeeze=False)
    for j, t in enumerate(steps):
        for row, image in enumerate((frames[t], reconstruction[t])):
            axes[row, j].imshow(_image(image), cmap="gray")
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
        axes[0, j].set_title(f"t={t}", fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("read-out", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
