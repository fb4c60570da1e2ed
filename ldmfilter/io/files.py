"""Data files in and result files out: CSV, Parquet, NetCDF and Zarr.

Tables (CSV, Parquet) become DataFrames indexed by time, or long tables indexed by
(series, time); NetCDF and Zarr stores become xarray DataArrays with a ``time`` dim (a
Dataset's data variables become the channels of a ``feature`` dim).  Both are inputs that
``LDMFilter.fit``/``filter``/``smooth``/``forecast`` take as they are.  Results are written
through their ``to_pandas`` (CSV, Parquet) or ``to_xarray`` (NetCDF, Zarr) exports.
"""

from __future__ import annotations

import importlib.util
import lzma
import warnings
import zipfile
from pathlib import Path

from ..atomic import atomic_write
from .lazy import pandas as pd

__all__ = ["read_table", "write_result", "file_format", "FORMATS", "TIME_NAMES"]

# suffix → format; compressed CSV/TSV (".csv.gz" …) are recognised as well
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".nc": "netcdf",
    ".zarr": "zarr",
}
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}
TIME_NAMES = ("time", "date", "datetime", "timestamp")  # matched case-insensitively


def file_format(path) -> tuple[str, str | None]:
    """The format of ``path`` from its extension: (format, compression or None).

    Raises
    ------
    ValueError
        An extension that is none of ``.csv``, ``.tsv`` (optionally compressed: ``.gz``,
        ``.bz2``, ``.xz``, ``.zip``, ``.zst``), ``.parquet``/``.pq``, ``.nc`` or ``.zarr``.
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = None
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION and suffixes[-2] in (".csv", ".tsv"):
        compression = COMPRESSION[suffixes.pop()]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in FORMATS:
        known = ", ".join(sorted(set(FORMATS) - {".pq"})) + " (and .pq, compressed .csv.gz …)"
        got = repr(suffix) if suffix else "no extension"
        raise ValueError(f"cannot tell the file type of {str(path)!r} ({got}); use one of {known}")
    return FORMATS[suffix], compression


def _require(package: str, purpose: str, *alternatives: str) -> None:
    """Raise ImportError naming ``package`` when neither it nor an alternative is importable."""
    if any(importlib.util.find_spec(name) is not None for name in (package, *alternatives)):
        return
    raise ImportError(
        f"{purpose} need the '{package}' package, which is not installed; install it with "
        f"`pip install {package}`"
    )


# ---------------------------------------------------------------------------------- reading
def read_table(path, time_col: str | None = None, series_col: str | None = None):
    """Read a data file into an input the estimators accept.

    Parameters
    ----------
    path : str or Path
        ``.csv``/``.tsv`` (optionally compressed), ``.parquet``/``.pq``, ``.nc`` (NetCDF) or
        ``.zarr`` (needs the ``zarr`` package).
    time_col : str, optional
        The time column (tables) or time dim/coordinate (NetCDF, Zarr).  By default the column
        named time, date, datetime or timestamp (any case), else the first column holding dates.
    series_col : str, optional
        A column (dim) naming the series of a long table: the result is indexed by
        (series, time).  Without it the file holds one series.

    Returns
    -------
    pandas.DataFrame or xarray.DataArray
        Tables: the remaining columns as channels, indexed by time (datetimes, or numbers kept as
        they are) or by (series, time); rows keep the file's order.  NetCDF/Zarr: a DataArray
        with dims ``time`` [, ``series``] and the observation dims; several data variables
        become the channels of a ``feature`` dim.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unknown extension, a file that cannot be parsed (or decompressed), a named column
        that does not exist, or no detectable time column (name it with ``time_col``).
    ImportError
        The package a format needs (``pyarrow``, ``zarr``, a NetCDF engine) is missing.
    """
    path = Path(path)
    kind, compression = file_format(path)
    if not path.exists():
        raise FileNotFoundError(f"no data file at {str(path)!r}")
    if kind != "zarr" and not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    if kind in ("netcdf", "zarr"):
        return _read_store(path, kind, time_col, series_col)
    return _index_table(_read_frame(path, kind, compression), str(path), time_col, series_col)


def _read_frame(path: Path, kind: str, compression: str | None) -> pd.DataFrame:
    if kind == "parquet":
        _require("pyarrow", "Parquet files", "fastparquet")
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {str(path)!r} as Parquet: {error}") from None
        # a frame written with its index (e.g. a result table) gets it back as columns
        if not (isinstance(frame.index, pd.RangeIndex) and frame.index.names == [None]):
            frame = frame.reset_index()
        return frame
    try:
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", compression=compression)
    # parse errors are ValueErrors; a damaged or mislabelled archive raises the codec's own error
    except (ValueError, OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        what = kind.upper() if compression is None else f"{compression}-compressed {kind.upper()}"
        raise ValueError(f"cannot read {str(path)!r} as {what}: {type(error).__name__}: {error}") from None


def _find_column(columns: list[str], wanted: str, what: str, path: str, option: str) -> str:
    if wanted in columns:
        return wanted
    raise ValueError(f"{path} has no {what} {wanted!r} (given as {option}); its columns are {columns[:20]}")


def _parses_as_dates(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return True
    if not (pd.api.types.is_string_dtype(column.dtype) or pd.api.types.is_object_dtype(column.dtype)):
        return False
    sample = column.dropna().head(20)
    if sample.empty:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pd.to_datetime(sample, utc=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _detect_time(frame: pd.DataFrame, path: str, exclude: str | None) -> str:
    candidates = [str(c) for c in frame.columns if str(c) != exclude]
    for name in candidates:
        if name.lower() in TIME_NAMES:
            return name
    for name in candidates:
        if _parses_as_dates(frame[name]):
            return name
    raise ValueError(
        f"{path} has no time column: none is named {'/'.join(TIME_NAMES)} and none holds dates "
        f"(columns: {candidates[:20]}); name it with --time-col (time_col=...)"
    )


def _parse_time(column: pd.Series, name: str, path: str) -> pd.Series:
    """Datetimes stay, numbers stay, text is parsed as dates (mixed UTC offsets: converted to UTC)."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return column
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        return column
    for utc in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pd.to_datetime(column, utc=utc)
        except (ValueError, TypeError, OverflowError) as error:
            problem = error
    raise ValueError(
        f"{path}: the time column {name!r} holds values that are neither dates nor numbers "
        f"(first values {column.head(3).tolist()}): {problem}"
    )


def _index_table(frame: pd.DataFrame, path: str, time_col: str | None, series_col: str | None) -> pd.DataFrame:
    """Parse the time column and index the table by time, or by (series, time)."""
    frame = frame.rename(columns=lambda c: str(c))
    columns = list(frame.columns)
    if series_col is not None:
        series_col = _find_column(columns, series_col, "series column", path, "--series-col")
    if time_col is not None:
        time_col = _find_column(columns, time_col, "time column", path, "--time-col")
        if time_col == series_col:
            raise ValueError(f"the time and series columns must differ, both are {time_col!r}")
    else:
        time_col = _detect_time(frame, path, series_col)
    if len(columns) < (3 if series_col else 2):
        raise ValueError(f"{path} has no data columns besides its time (and series) column")
    frame[time_col] = _parse_time(frame[time_col], time_col, path)
    return frame.set_index([series_col, time_col] if series_col else time_col)


def _read_store(path: Path, kind: str, time_col: str | None, series_col: str | None):
    import xarray as xr

    if kind == "zarr":
        _require("zarr", "Zarr stores")
        opener = xr.open_zarr
    else:
        _require("h5netcdf", "NetCDF files", "netCDF4", "scipy")
        opener = xr.open_dataset
    try:
        with opener(path) as dataset:
            dataset = dataset.load()
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot read {str(path)!r} as {kind.capitalize()}: {error}") from None
    dataset = _named_dim(dataset, time_col, "time", str(path), "--time-col")
    dataset = _named_dim(dataset, series_col, "series", str(path), "--series-col")
    variables = [name for name, var in dataset.data_vars.items() if "time" in var.dims]
    if not variables:
        raise ValueError(f"{path} has no data variable along its time dim (variables: {list(dataset.data_vars)})")
    if len(variables) == 1:
        array = dataset[variables[0]]
        if array.name == "__xarray_dataarray_variable__":
            array = array.rename(None)
        return array
    dims = {name: set(dataset[name].dims) for name in variables}
    if len({frozenset(d) for d in dims.values()}) > 1:
        raise ValueError(
            f"{path}: the data variables have different dims {({k: sorted(v) for k, v in dims.items()})}; "
            "channels stacked into a 'feature' dim must share their dims"
        )
    return dataset[variables].to_array("feature").transpose(..., "feature")


def _named_dim(dataset, given: str | None, target: str, path: str, option: str):
    """Give the dim ``given`` (or a detected time dim) the name ``target``."""
    if given is None:
        if target in dataset.dims or target == "series":
            return dataset
        found = [d for d in dataset.dims if str(d).lower() in TIME_NAMES]
        found += [c for c in dataset.coords if str(c).lower() in TIME_NAMES and dataset[c].ndim == 1]
        if not found:
            raise ValueError(
                f"{path} has no time dim: none of its dims {[str(d) for d in dataset.dims]} is named "
                f"{'/'.join(TIME_NAMES)}; name it with {option} (time_col=...)"
            )
        given = found[0]
    if given == target and target in dataset.dims:
        return dataset
    if given in dataset.dims:
        if target in dataset.variables:
            dataset = dataset.drop_vars(target)
        return dataset.rename({given: target})
    if given in dataset.coords and dataset[given].ndim == 1:  # a coordinate along another dim
        dim = dataset[given].dims[0]
        swapped = dataset.swap_dims({dim: given})
        return swapped if given == target else swapped.rename({given: target})
    raise ValueError(
        f"{path} has no dim or 1-D coordinate {given!r} (given as {option}); its dims are "
        f"{[str(d) for d in dataset.dims]}"
    )


# ---------------------------------------------------------------------------------- writing
def _netcdf_engine() -> str | None:
    """netCDF4, else h5netcdf (which needs h5py), else xarray's default (scipy: NetCDF 3)."""
    def found(*packages: str) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in packages)

    if found("netCDF4"):
        return "netcdf4"
    if found("h5netcdf", "h5py"):
        return "h5netcdf"
    return "scipy" if found("scipy") else None


def write_result(result, path, space: str | None = None, coverage: float = 0.9) -> Path:
    """Write a ``filter``/``smooth``/``forecast`` result to a file.

    Parameters
    ----------
    result : FilterResult or ForecastResult
    path : str or Path
        The format comes from the extension: CSV/TSV (optionally compressed) and Parquet hold
        ``result.to_pandas(space, coverage)`` (columns ``v``, ``v_std``, ``v_lower``,
        ``v_upper`` per variable; the index as columns); NetCDF (``.nc``) and Zarr (``.zarr``,
        needs ``zarr``) hold ``result.to_xarray(space, coverage)``.
    space : {"state", "observations", "targets"}, optional
        Default: observations when the model reads them out, else the state.
    coverage : float
        Probability of the central interval, in (0, 1).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        Unknown extension, or a space/coverage the result cannot give.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    path = Path(path)
    kind, compression = file_format(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} of the output file does not exist")
    if kind in ("csv", "tsv"):
        table = result.to_pandas(space, coverage)
        atomic_write(path, lambda tmp: table.to_csv(tmp, sep="\t" if kind == "tsv" else ",", compression=compression))
    elif kind == "parquet":
        _require("pyarrow", "Parquet files", "fastparquet")
        table = result.to_pandas(space, coverage)
        atomic_write(path, lambda tmp: table.to_parquet(tmp))
    elif kind == "netcdf":
        dataset = result.to_xarray(space, coverage)
        atomic_write(path, lambda tmp: dataset.to_netcdf(tmp, engine=_netcdf_engine()))
    else:
        _require("zarr", "Zarr stores")
        result.to_xarray(space, coverage).to_zarr(path, mode="w")
    return path
