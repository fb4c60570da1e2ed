"""How the user's data was laid out, so that results come back in the same shape.

Inputs of every kind (numpy, pandas, xarray) become one padded array of sequences on regular
time grids plus a :class:`SeriesLayout` that remembers the series, their time indexes and
the names of the observation axes.  An :class:`InputSchema` records what a model was fitted on
and checks later inputs against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arrays import as_sequences
from .timegrid import TimeGrid

__all__ = ["InputSchema", "SeriesLayout", "Sequences", "place_on_grid"]


@dataclass(frozen=True)
class InputSchema:
    """What a model was fitted on.

    Attributes
    ----------
    obs_shape : tuple of int
        Shape of one observation, as the model sees it (video: ``(C, H, W)`` or ``(H, W)``).
    feature_names : tuple of str, optional
        Channel names of vector observations (DataFrame columns, an xarray ``feature`` coordinate).
    obs_dims : tuple of str, optional
        xarray names of the observation axes in the model's order (e.g. ``("y", "x")``).
    frequency : str, optional
        The training series' time step (e.g. ``"h"``), for reference.
    control_names : tuple of str, optional
        Names of the control inputs (None: the model takes none).
    """

    obs_shape: tuple
    feature_names: tuple | None = None
    obs_dims: tuple | None = None
    frequency: str | None = None
    control_names: tuple | None = None

    def to_dict(self) -> dict:
        return {
            "obs_shape": list(self.obs_shape),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "obs_dims": None if self.obs_dims is None else list(self.obs_dims),
            "frequency": self.frequency,
            "control_names": None if self.control_names is None else list(self.control_names),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "InputSchema":
        names, dims, controls = data.get("feature_names"), data.get("obs_dims"), data.get("control_names")
        return cls(
            tuple(int(n) for n in data["obs_shape"]),
            None if names is None else tuple(str(n) for n in names),
            None if dims is None else tuple(str(d) for d in dims),
            data.get("frequency"),
            None if controls is None else tuple(str(c) for c in controls),
        )


@dataclass(frozen=True)
class SeriesLayout:
    """The layout of one input, used to give results the same shape and labels.

    Attributes
    ----------
    kind : {"array", "frame", "frames", "long", "xarray"}
        numpy array(s); one pandas DataFrame/Series; a list of them; a long DataFrame indexed by
        (series, time); an xarray DataArray.
    single : bool
        The input had no series axis (results drop it too).
    series : tuple
        A label per series (list positions, the long table's ids, or the ``series`` coordinate).
    grids : tuple of TimeGrid or None
        Per series, its time index on its regular grid; None for numpy input (steps 0…T−1).
    lengths : tuple of int
        Rows (time steps given) per series.
    feature_names : tuple of str, optional
        Names of the observation channels.
    obs_dims : tuple of str, optional
        xarray names of the observation axes in the model's order.
    obs_coords : dict, optional
        xarray coordinates of those axes.
    series_name, time_name : str
        Names of the series and time axes (index level names or xarray dims).
    """

    kind: str
    single: bool
    series: tuple
    grids: tuple
    lengths: tuple
    feature_names: tuple | None = None
    obs_dims: tuple | None = None
    obs_coords: dict = field(default_factory=dict)
    series_name: str = "series"
    time_name: str = "time"

    @property
    def n_series(self) -> int:
        return len(self.series)

    @property
    def ragged(self) -> bool:
        """True when the series have different numbers of rows."""
        return len(set(self.lengths)) > 1

    def positions(self, i: int) -> np.ndarray:
        """Grid steps (int array of length ``lengths[i]``) holding the rows of series ``i``."""
        grid = self.grids[i]
        return np.arange(self.lengths[i]) if grid is None else grid.positions

    def grid_lengths(self) -> np.ndarray:
        """Number of grid steps spanned by each series, shape (n_series,)."""
        return np.array([self.lengths[i] if g is None else g.length for i, g in enumerate(self.grids)])


@dataclass(frozen=True)
class Sequences:
    """Validated input on regular grids.

    Attributes
    ----------
    values : ndarray, shape (n_series, T, *obs_shape)
        NaN where missing (missing values, skipped grid steps, padding after a short series).
    observed : ndarray of bool, shape (n_series, T)
        Grid steps holding at least one value.
    observed_fraction : ndarray, shape (n_series, T)
        Fraction of each frame's values present.
    layout : SeriesLayout
    """

    values: np.ndarray
    observed: np.ndarray
    observed_fraction: np.ndarray
    layout: SeriesLayout

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Per-step results ``(n, T, …)`` on the grid → at the user's rows.

        Returns ``(n, T_rows, …)`` with rows past a shorter series' end set to NaN (ragged
        input), or without the series axis for single-series input.
        """
        layout = self.layout
        rows = max(layout.lengths)
        out = np.full((layout.n_series, rows) + array.shape[2:], np.nan, dtype=np.result_type(array.dtype, np.float32))
        for i in range(layout.n_series):
            out[i, : layout.lengths[i]] = array[i, layout.positions(i)]
        return out[0] if layout.single else out


def place_on_grid(series: list[np.ndarray] | np.ndarray, grids: list[TimeGrid | None], name: str, obs_shape, min_steps: int):
    """Stack per-series arrays ``(T_i, *obs_shape)`` on their grids, padded with NaN.

    ``series`` may be one array ``(n_series, T, *obs_shape)``; on regular grids it is used as it
    is, not copied.  Returns ``(values, observed, observed_fraction)`` as :func:`as_sequences` does.
    """
    lengths = [len(s) if g is None else g.length for s, g in zip(series, grids)]
    if min(lengths) < min_steps:
        short = [i for i, n in enumerate(lengths) if n < min_steps]
        raise ValueError(f"{name} series {short[:5]} have fewer than {min_steps} time steps")
    shape = (len(series), max(lengths)) + tuple(series[0].shape[1:])
    if all(g is None or g.regular for g in grids) and len(set(lengths)) == 1:
        values = series if isinstance(series, np.ndarray) else np.stack(series)
    else:
        values = np.full(shape, np.nan)
        for i, (s, g) in enumerate(zip(series, grids)):
            values[i, np.arange(len(s)) if g is None else g.positions] = s
    return as_sequences(values, name, obs_shape, min_steps)
