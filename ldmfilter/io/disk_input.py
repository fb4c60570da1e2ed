"""Out-of-core xarray input: validated without loading, then one streaming pass over its slabs.

:func:`open_disk` is the counterpart of :func:`~ldmfilter.io.to_sequences` for a DataArray left
on disk (see :mod:`.disk_array`): the same dims, coordinates, dtype and time-index rules and
error messages, then one pass over the data in slabs of bounded size that rejects inf (and
magnitudes whose squares overflow float64), records which grid steps hold a frame, and
accumulates the per-feature statistics of the input standardisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import MAX_MAGNITUDE
from .disk_array import SLAB_BYTES, DiskArray
from .from_xarray import xarray_dims, xarray_labels
from .layout import InputSchema, SeriesLayout

__all__ = ["FeatureMoments", "DiskSequences", "open_disk"]


@dataclass
class FeatureMoments:
    """Running per-feature count, mean and sum of squared deviations of the observed values (float64).

    Merged slab by slab with the pairwise update of Chan et al.; NaN values are left out.

    Attributes
    ----------
    count, mean, m2 : ndarray, shape (D,)
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, size: int) -> "FeatureMoments":
        return cls(np.zeros(size), np.zeros(size), np.zeros(size))

    def add(self, values: np.ndarray, present: np.ndarray | None = None) -> None:
        """Merge the rows of ``values`` (m, D), float64 (overwritten); ``present`` (m, D) marks the
        values that are not NaN (None: all are)."""
        if present is None:
            count = np.full(values.shape[1], float(values.shape[0]))
            mean = values.sum(0) / max(1, values.shape[0])
            values -= mean
            m2 = np.einsum("ij,ij->j", values, values)
        else:
            count = present.sum(0).astype(np.float64)
            np.copyto(values, 0.0, where=~present)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(count > 0, values.sum(0) / count, 0.0)
            values -= mean
            np.copyto(values, 0.0, where=~present)
            m2 = np.einsum("ij,ij->j", values, values)
        total = self.count + count
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(total > 0, count / total, 0.0)
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.count * weight
        self.mean += delta * weight
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """Population variances (NaN for features never observed)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.m2 / self.count, np.nan)

    @property
    def means(self) -> np.ndarray:
        """Means (NaN for features never observed)."""
        return np.where(self.count > 0, self.mean, np.nan)


@dataclass(frozen=True)
class DiskSequences:
    """Input left on disk, on its regular grid: what :class:`~ldmfilter.io.Sequences` holds but the values.

    Attributes
    ----------
    array : DiskArray
        Reads slabs and windows of the values on demand.
    observed : ndarray of bool, shape (n_series, T)
        Grid steps holding at least one value.
    observed_fraction : ndarray, shape (n_series, T)
        Fraction of each frame's values present.
    layout : SeriesLayout
    moments : FeatureMoments
        Per-feature statistics of the observed values, after casting to the dtype given to
        :func:`open_disk`.
    largest : float
        Largest magnitude of a value (0 when none is observed).
    partial_frame : tuple of int or None
        ``(series, time row)`` of the first frame with some but not all values missing.
    """

    array: DiskArray
    observed: np.ndarray
    observed_fraction: np.ndarray
    layout: SeriesLayout
    moments: FeatureMoments
    largest: float
    partial_frame: tuple | None

    @property
    def shape(self) -> tuple:
        """``(n_series, T, *obs_shape)`` on the grid."""
        return self.array.shape


def _check_dtype(X, name: str) -> None:
    dtype = X.dtype
    if dtype == bool or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def _check_values(values: np.ndarray, name: str, offset: tuple, single: bool) -> None:
    """As :func:`~ldmfilter.io.check_numeric` on one slab; positions are reported in the whole array."""
    if float(np.finfo(values.dtype).max) > MAX_MAGNITUDE:
        with np.errstate(invalid="ignore"):
            beyond = np.abs(values) > MAX_MAGNITUDE  # NaN compares False
    else:
        beyond = np.isinf(values)
    if not beyond.any():
        return
    local = tuple(int(i) for i in np.argwhere(beyond)[0])
    where = (local[0] + offset[0], local[1] + offset[1]) + local[2:]
    if single:
        where = where[1:]
    value = values[local]
    if np.isinf(value):
        raise ValueError(f"{name} contains inf values (first at {where}); use NaN for missing values")
    raise ValueError(
        f"{name} has values of magnitude {abs(float(value)):.3g} (first at {where}); values beyond "
        f"±{MAX_MAGNITUDE:g} overflow float64 once squared: rescale them"
    )


def open_disk(X, name: str = "X", min_steps: int = 1, cast=None, slab_bytes: int = SLAB_BYTES) -> tuple[DiskSequences, InputSchema]:
    """Validate an out-of-core DataArray and scan it once, slab by slab.

    Parameters
    ----------
    X : xarray.DataArray
        Dims ``time`` [, ``series``] and ``feature`` or ``y``, ``x`` [, ``channel``], values left
        on disk (see :func:`~ldmfilter.io.disk_array.is_out_of_core`).  NaN marks missing values.
    name : str
        The argument's name in error messages.
    min_steps : int
        Fewest grid steps a series may have.
    cast : numpy dtype, optional
        The statistics are those of the values cast to this dtype (the model's), as when the
        loaded data are converted for the model first.
    slab_bytes : int
        Bound on the raw bytes read at once (one chunk at least).

    Returns
    -------
    sequences : DiskSequences
    schema : InputSchema

    Raises
    ------
    TypeError
        A Dataset, or non-numeric data.
    ValueError
        As :func:`~ldmfilter.io.to_sequences`: dims, channel names, time index, too few steps,
        inf or huge values (with their position), series with no observed value.
    """
    obs_dims, single = xarray_dims(X, name, None)
    _check_dtype(X, name)
    labels = xarray_labels(X, name, obs_dims, single, None)
    grid = labels.grid
    array = DiskArray(X, obs_dims, single, grid.positions)
    n, steps = array.shape[:2]
    if steps < min_steps:
        raise ValueError(f"{name} series {list(range(n))[:5]} have fewer than {min_steps} time steps")
    if n < 1:
        raise ValueError(f"{name} holds no series (shape {array.shape})")
    if 0 in array.shape[2:]:
        raise ValueError(f"{name} has empty observations (shape {array.shape})")
    observed = np.zeros((n, steps), dtype=bool)
    fraction = np.zeros((n, steps))
    moments = FeatureMoments.empty(int(np.prod(array.shape[2:])))
    largest, partial = 0.0, None
    for series, rows, values in array.read_slabs(slab_bytes):
        frames = values.reshape(-1, moments.count.size)
        with np.errstate(invalid="ignore"):
            high, low = np.fmax.reduce(frames, axis=None), np.fmin.reduce(frames, axis=None)  # NaN left out
        magnitude = max(abs(float(high)), abs(float(low))) if not np.isnan(high) else 0.0
        if magnitude > min(MAX_MAGNITUDE, float(np.finfo(values.dtype).max)):
            _check_values(values, name, (series.start, rows.start), single)
        largest = max(largest, magnitude)
        missing = np.isnan(frames)
        share = 1.0 - np.count_nonzero(missing, axis=1) / frames.shape[1]
        place = (slice(series.start, series.stop), grid.positions[rows])
        observed[place], fraction[place] = (share > 0).reshape(values.shape[:2]), share.reshape(values.shape[:2])
        some = (share > 0) & (share < 1)
        if partial is None and some.any():
            i, t = np.unravel_index(int(np.flatnonzero(some)[0]), values.shape[:2])
            partial = (int(i) + series.start, int(t) + rows.start)
        keep = share > 0
        frames = frames if keep.all() else frames[keep]  # missing frames add nothing
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond ``cast``: the caller checks ``largest``
            cast_frames = frames if cast is None else frames.astype(cast, copy=False)
            moments.add(cast_frames.astype(np.float64), ~missing[keep] if some.any() else None)
    empty = ~observed.any(1)
    if empty.any():
        raise ValueError(f"{name} series {np.flatnonzero(empty).tolist()} have no observed value")
    layout = SeriesLayout(
        "xarray", single, tuple(labels.series), (grid,) * n, (len(grid.positions),) * n,
        labels.names, obs_dims, labels.coords, "series", "time",
    )
    frequency = None if grid.step is None else getattr(grid.step, "freqstr", str(grid.step))
    schema = InputSchema(tuple(array.shape[2:]), labels.names, obs_dims, frequency)
    return DiskSequences(array, observed, fraction, layout, moments, largest, partial), schema
