"""The package's edge for data: numpy, pandas and xarray in, validated arrays on time grids out."""

from .arrays import as_sequences, check_numeric
from .convert import to_sequences
from .layout import InputSchema, SeriesLayout, Sequences
from .timegrid import TimeGrid, time_grid
from .files import read_table, write_result

__all__ = [
    "as_sequences",
    "check_numeric",
    "to_sequences",
    "InputSchema",
    "SeriesLayout",
    "Sequences",
    "TimeGrid",
    "time_grid",
    "read_table",
    "write_result",
]
