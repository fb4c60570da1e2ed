"""An xarray DataArray left on disk, read in slabs and windows without loading the whole array.

A DataArray is *out of core* when its values are not in memory: dask-backed
(``xr.open_zarr(path)["frames"]``, ``xr.open_dataarray(path, chunks={})``) or a lazily indexed
file variable (``xr.open_dataarray(path)`` without ``chunks``, not yet loaded).  Every read goes
through ``X.isel(...)`` on the slice it needs, so only the chunks overlapping that slice are
read and decompressed.  Reads follow the store's chunks along ``series`` and ``time`` (dask's
chunks, else the file's own chunking from ``X.encoding``): chunks of a few MB, e.g.
``(1, 64, H, W)`` for video, make both the streaming passes and the training windows cheap.
"""

from __future__ import annotations

import numpy as np

from .from_xarray import is_xarray

__all__ = ["is_out_of_core", "DiskArray", "SLAB_BYTES"]

SLAB_BYTES = 8 * 2**20  # bound on the raw bytes of one slab read by the streaming passes (one chunk at least)


def is_out_of_core(X) -> bool:
    """True for an xarray DataArray whose values are not in memory (dask-backed or lazily indexed)."""
    if not is_xarray(X) or type(X).__name__ != "DataArray":
        return False
    if X.chunks is not None:
        return True
    return not getattr(X.variable, "_in_memory", True)


def _chunk_edges(X, dim: str) -> np.ndarray:
    """Chunk boundaries along ``dim``: ``[0, c₁, c₁ + c₂, …, size]`` (every element when unknown)."""
    size = X.sizes[dim]
    if X.chunks is not None:
        sizes = X.chunksizes[dim]
    else:
        preferred = X.encoding.get("preferred_chunks", {}).get(dim)
        chunks = X.encoding.get("chunksizes") or X.encoding.get("chunks")
        if preferred is None and chunks is not None and len(chunks) == X.ndim:
            preferred = chunks[X.dims.index(dim)]
        step = int(preferred) if preferred else 1
        sizes = [step] * (size // step) + ([size % step] if size % step else [])
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def _groups(edges: np.ndarray, limit: int) -> list[slice]:
    """Consecutive chunks merged while a group spans at most ``limit`` elements (at least one chunk each)."""
    groups, start = [], 0
    for k in range(1, len(edges)):
        if edges[k] - edges[start] > limit and k - 1 > start:
            groups.append(slice(int(edges[start]), int(edges[k - 1])))
            start = k - 1
    if len(edges) > 1:
        groups.append(slice(int(edges[start]), int(edges[-1])))
    return groups


class DiskArray:
    """Reads of an out-of-core DataArray in the model's layout ``(series, time, *obs_dims)``.

    Parameters
    ----------
    X : xarray.DataArray
        Dims ``time`` [, ``series``] and ``obs_dims``, validated by the caller.
    obs_dims : tuple of str
        Observation dims in the model's order (none for a univariate series).
    single : bool
        ``X`` has no ``series`` dim.
    positions : ndarray of int, shape (n_rows,)
        Grid step of each time row (:class:`~ldmfilter.io.TimeGrid` ``.positions``).

    Attributes
    ----------
    shape : tuple
        ``(n_series, T, *obs_shape)`` on the grid (``T`` grid steps).
    """

    def __init__(self, X, obs_dims: tuple, single: bool, positions: np.ndarray):
        self.data, self.single, self.positions = X, single, np.asarray(positions, dtype=np.int64)
        order = (() if single else ("series",)) + ("time",) + tuple(obs_dims)
        self._axes = tuple(X.dims.index(d) for d in order)
        self._scalar = not obs_dims
        obs_shape = tuple(X.sizes[d] for d in obs_dims) or (1,)
        n_series = 1 if single else X.sizes["series"]
        self.shape = (n_series, int(self.positions[-1]) + 1 if len(self.positions) else 0) + obs_shape
        self.regular = len(self.positions) == self.shape[1]
        self._float = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame as read."""
        return int(np.prod(self.shape[2:])) * self._float.itemsize

    def read_rows(self, series: slice, rows: slice) -> np.ndarray:
        """Time rows ``rows`` of the series ``series``: (n_series, n_rows, *obs_shape), float (ints as float64).

        Read in the calling thread (dask's synchronous scheduler): less overhead for the few
        chunks of a window, and no worker threads holding buffers of their own.
        """
        index = {"time": rows} if self.single else {"series": series, "time": rows}
        part = self.data.isel(index).compute(scheduler="synchronous")
        values = np.asarray(part.values).transpose(self._axes)
        if self._scalar:
            values = values[..., None]
        if self.single:
            values = values[None]
        return values.astype(self._float, copy=False)

    def read_window(self, series: int, start: int, stop: int) -> np.ndarray:
        """Grid steps ``start:stop`` of series ``series``: (stop − start, *obs_shape), NaN at steps without a row."""
        if self.regular:
            return self.read_rows(slice(series, series + 1), slice(start, stop))[0]
        first, last = np.searchsorted(self.positions, [start, stop])
        out = np.full((stop - start,) + self.shape[2:], np.nan)
        out[self.positions[first:last] - start] = self.read_rows(slice(series, series + 1), slice(int(first), int(last)))[0]
        return out

    def slabs(self, max_bytes: int = SLAB_BYTES, frame_bytes: int | None = None):
        """``(series, rows)`` slices covering the array once, series-major, along the store's chunks.

        A slab spans whole series (as many as fit in ``max_bytes`` at ``frame_bytes`` per frame,
        the bytes of one frame as read by default) or, for long series, one chunk of series and
        as many chunks of time rows as fit; it is never smaller than one chunk.
        """
        frame_bytes = self.frame_bytes if frame_bytes is None else int(frame_bytes)
        rows = len(self.positions)
        frames = max(1, max_bytes // max(1, frame_bytes))
        series_edges = np.array([0, 1]) if self.single else _chunk_edges(self.data, "series")
        row_edges = _chunk_edges(self.data, "time")
        for series in _groups(series_edges, max(1, frames // max(1, rows))):
            count = series.stop - series.start
            for time_rows in _groups(row_edges, max(1, frames // count)):
                yield series, time_rows

    def read_slabs(self, max_bytes: int = SLAB_BYTES, frame_bytes: int | None = None):
        """``(series, rows, values)`` for every slab of :meth:`slabs`, in order, read one at a time."""
        for series, rows in self.slabs(max_bytes, frame_bytes):
            yield series, rows, self.read_rows(series, rows)
