"""Fuzzing ``ldmfilter.metrics`` and ``ldmfilter.io.read_table`` with malformed inputs.

Metrics: every function gets arrays of wrong shapes, ranks and dtypes, ragged lists, empty
arrays, NaN/inf and huge/tiny magnitudes, and parameters of the wrong type.  read_table gets
files of every supported extension holding garbage, truncated or odd tables, and wrong column
arguments.  The contract: ``ValueError``/``TypeError`` with a message (``FileNotFoundError`` for
a missing file, ``ImportError`` for a missing optional package, as documented), else a result
without NaN except where documented (a slice or step with no observed entry).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ldmfilter import metrics
from ldmfilter.io import read_table
from malformed import SPECIALS, assert_finite, call, corrupt_array, fuzz


@st.composite
def array_likes(draw, shape: tuple):
    """A value meant to be an array of ``shape`` (or a malformed version of it)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["good", "special", "shape", "rank", "dtype", "ragged", "empty", "python", "scalar"]))
    good = rng.normal(size=shape)
    if kind == "good":
        return good
    if kind == "special":
        which = draw(st.sampled_from(["nan", "inf", "-inf", "huge", "-huge", "tiny", "subnormal", "zero", "all-nan", "nan-row"]))
        return corrupt_array(rng, good, which) if good.ndim else np.float64(SPECIALS.get(which, np.nan))
    if kind == "shape":
        return rng.normal(size=tuple(s + draw(st.sampled_from([1, 2])) for s in shape) or (2,))
    if kind == "rank":
        return rng.normal(size=draw(st.sampled_from([(), (3,), shape + (2,), (1,) + shape])))
    if kind == "dtype":
        dtype = draw(st.sampled_from(["str", "object", "complex", "bool", "int", "datetime"]))
        return {"str": good.astype(str), "object": good.astype(object), "complex": good + 1j, "bool": good > 0,
                "int": (good * 3).astype(int), "datetime": np.zeros(shape, dtype="datetime64[s]")}[dtype]
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]]
    if kind == "empty":
        return np.zeros((0,) + shape[1:])
    if kind == "python":
        return draw(st.sampled_from([None, "abc", {"a": 1}, object(), [None, 1.0]]))
    return 1.0


def _check_value(result, allow_nan_array: bool = False, allow_inf: bool = False) -> None:
    """No NaN (in arrays: except where documented); no inf unless the exact value may exceed float64
    (a log-density or Mahalanobis norm under a covariance of 1e-300)."""
    if isinstance(result, tuple):  # chi2_band, Consistency, MatchedCorrelation
        for item in result:
            _check_value(item, allow_nan_array, allow_inf)
        return
    values = np.asarray(result, dtype=float)
    if allow_nan_array and values.ndim:
        values = values[~np.isnan(values)]
    if allow_inf:
        values = values[~np.isposinf(values)]
    assert_finite(values, "metric")


N, D = 6, 2


@fuzz(60)
@given(
    fn=st.sampled_from(["rmse", "nll-var", "nll-cov", "crps", "interval", "gaussian-interval", "nees", "nis"]),
    y=array_likes((N, D)), a=array_likes((N, D)), b=array_likes((N, D)), cov=array_likes((N, D, D)),
    option=st.sampled_from([None, 0, 1, -1, 5, 0.9, 0.0, 1.0, 1.5, float("nan"), "x", True, (0, 1)]),
    reduce=st.booleans(),
)
def test_score_functions_keep_the_contract(fn, y, a, b, cov, option, reduce):
    if isinstance(cov, np.ndarray) and cov.ndim >= 2 and cov.dtype.kind == "f" and cov.shape[-1] == cov.shape[-2]:
        with np.errstate(all="ignore"):
            cov = cov @ np.swapaxes(cov, -1, -2) + 0.1 * np.eye(cov.shape[-1])  # mostly valid covariances
    positive = np.abs(b) + 0.1 if isinstance(b, np.ndarray) and b.dtype.kind == "f" else b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fn == "rmse":
            result, _ = call(metrics.rmse, y, a, axis=option if not isinstance(option, float) else None)
        elif fn == "nll-var":
            result, _ = call(metrics.gaussian_nll, y, a, var=positive, reduce=reduce)
        elif fn == "nll-cov":
            result, _ = call(metrics.gaussian_nll, y, a, cov=cov, reduce=reduce)
        elif fn == "crps":
            result, _ = call(metrics.crps_gaussian, y, a, positive, reduce=reduce)
        elif fn == "interval":
            result, _ = call(metrics.interval_coverage, y, a, b)
        elif fn == "gaussian-interval":
            result, _ = call(metrics.gaussian_interval_coverage, y, a, positive, coverage=option)
        elif fn == "nees":
            result, _ = call(metrics.nees, y, a, cov)
        else:
            result, _ = call(metrics.nis, y, cov)
    if result is not None:  # per-step/per-slice arrays are NaN exactly where nothing was observed
        _check_value(result, allow_nan_array=True, allow_inf=fn in ("nll-var", "nll-cov", "nees", "nis"))


@fuzz(40)
@given(
    fn=st.sampled_from(["chi2", "consistency"]),
    dof=st.sampled_from([1, 3, 0, -2, 2.0, True, "3", None, np.int64(2), 10**9]),
    runs=st.sampled_from([1, 10, 0, -1, 1.5, False, None, 10**9]),
    confidence=st.sampled_from([0.95, 0.5, 0.0, 1.0, -0.1, 2.0, float("nan"), "0.9", None]),
    values=array_likes((N,)),
    axis=st.sampled_from([None, 0, 1, -1, "x"]),
)
def test_consistency_functions_keep_the_contract(fn, dof, runs, confidence, values, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fn == "chi2":
            result, _ = call(metrics.chi2_band, dof, runs, confidence)
        else:
            result, _ = call(metrics.consistency, values, dof, confidence, axis)
    if result is not None:
        _check_value(result)


@fuzz(40)
@given(
    fn=st.sampled_from(["probe", "probe-test", "mcc", "mcc-spearman", "mcc-matching"]),
    x=array_likes((8, 3)), y=array_likes((8, 2)), method=st.sampled_from(["pearson", "spearman", "kendall", None, 1]),
)
def test_representation_scores_keep_the_contract(fn, x, y, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fn == "probe":
            result, _ = call(metrics.linear_probe_r2, x, y)
        elif fn == "probe-test":
            result, _ = call(metrics.linear_probe_r2, x, y, x, None if method is None else y)
        elif fn == "mcc":
            result, _ = call(metrics.mean_correlation_coefficient, x, y, method=method)
        elif fn == "mcc-spearman":
            result, _ = call(metrics.mean_correlation_coefficient, x, y, method="spearman")
        else:
            result, _ = call(metrics.mean_correlation_coefficient, x, y, return_matching=True)
    if result is not None:
        _check_value(result)


# ------------------------------------------------------------------------------------ read_table
CSV = "time,a,b\n2024-01-01 00:00,1,2\n2024-01-01 01:00,3,4\n2024-01-01 02:00,5,6\n"
TABLES = {
    "good": CSV,
    "empty": "",
    "header-only": "time,a,b\n",
    "only-time": "time\n2024-01-01\n2024-01-02\n",
    "no-time": "a,b\n1,2\n3,4\n",
    "bad-dates": "time,a\nnot-a-date,1\nstill-not,2\n",
    "mixed-offsets": "time,a\n2024-01-01T00:00+01:00,1\n2024-01-01T01:00+02:00,2\n",
    "duplicate-columns": "time,a,a\n2024-01-01,1,2\n2024-01-02,3,4\n",
    "ragged-rows": "time,a,b\n2024-01-01,1\n2024-01-02,3,4,5,6\n",
    "huge-numbers": "time,a\n2024-01-01,1e400\n2024-01-02,-1e400\n",
    "text-values": "time,a\n2024-01-01,x\n2024-01-02,y\n",
    "out-of-bounds-dates": "time,a\n9999-99-99,1\n0001-01-01,2\n",
    "binary": "\x00\x01\x02\xff\xfe",
    "quotes": 'time,a\n"2024-01-01,1\n',
    "long-table": "series,time,a\ns1,2024-01-01,1\ns1,2024-01-02,2\ns2,2024-01-01,3\n",
    "numeric-time": "time,a\n0,1\n1,2\n2,3\n",
    "bool-time": "time,a\nTrue,1\nFalse,2\n",
}
EXTENSIONS = [".csv", ".tsv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".parquet", ".pq", ".nc", ".zarr", ".txt", ""]


def _write(path, content: bytes, extension: str) -> None:
    if extension == ".csv.gz":
        content = gzip.compress(content)
    elif extension == ".csv.bz2":
        content = bz2.compress(content)
    elif extension == ".csv.xz":
        content = lzma.compress(content)
    elif extension == ".csv.zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data.csv", content)
        return
    if extension == ".zarr":
        path.mkdir()
        (path / ".zgroup").write_bytes(content)
        return
    path.write_bytes(content)


@fuzz(60)
@given(
    extension=st.sampled_from(EXTENSIONS),
    table=st.sampled_from(sorted(TABLES)),
    damage=st.sampled_from(["none", "garbage", "truncate", "missing", "folder", "wrong-compression"]),
    time_col=st.sampled_from([None, "time", "a", "nope", 3, ""]),
    series_col=st.sampled_from([None, "series", "time", "nope", 0]),
    seed=st.integers(0, 2**16),
)
def test_read_table_keeps_the_contract(tmp_path_factory, extension, table, damage, time_col, series_col, seed):
    folder = tmp_path_factory.mktemp("read")
    path = folder / f"data{extension}"
    content = TABLES[table].encode("latin-1")
    rng = np.random.default_rng(seed)
    if damage == "garbage":
        content = rng.bytes(int(rng.integers(0, 400)))
    elif damage == "truncate":
        content = content[: int(rng.integers(0, max(1, len(content))))]
    if damage == "folder":
        path.mkdir()
    elif damage == "wrong-compression":
        path.write_bytes(content)  # plain text under a compressed suffix
    elif damage != "missing":
        _write(path, content, extension)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, error = call(read_table, path, time_col=time_col, series_col=series_col,
                             allowed=(ValueError, TypeError, FileNotFoundError, ImportError))
    if error is None:
        assert isinstance(result, pd.DataFrame) or type(result).__name__ == "DataArray"


# ------------------------------------------------------------------------------------ regressions
@pytest.mark.parametrize("extension, compress", [(".csv.gz", gzip.compress), (".csv.bz2", bz2.compress),
                                                 (".csv.xz", lzma.compress), (".csv.zip", None)])
def test_damaged_compressed_tables_give_value_errors(tmp_path, extension, compress):
    """Found by fuzzing: a .csv.gz/.bz2/.xz/.zip that is not compressed (or is corrupt) raised
    BadGzipFile/OSError/LZMAError/BadZipFile instead of a ValueError naming the file."""
    path = tmp_path / f"data{extension}"
    path.write_bytes(CSV.encode())
    with pytest.raises(ValueError, match="cannot read .* as (gzip|bz2|xz|zip)-compressed CSV"):
        read_table(path)
    good = tmp_path / f"good{extension}"
    _write(good, CSV.encode(), extension)
    assert read_table(good).shape == (3, 2)


def test_rmse_and_crps_of_huge_errors_and_tiny_spreads_are_finite():
    """Found by fuzzing: squaring errors of 1e300 made RMSE inf, and a spread of 1e-300 made CRPS
    inf (σ · z with z = 1e600); the exact values are 1e300."""
    assert metrics.rmse(np.full(5, 1e300), np.zeros(5)) == pytest.approx(1e300)
    np.testing.assert_allclose(metrics.rmse(np.full((2, 5), 1e300), np.zeros(5), axis=1), [1e300, 1e300])
    assert metrics.rmse(np.full(5, 3e-300), np.zeros(5)) == pytest.approx(3e-300)
    assert metrics.crps_gaussian(np.full(5, 1e300), np.zeros(5), np.full(5, 1e-300)) == pytest.approx(1e300)


def test_probe_and_mcc_on_extreme_magnitudes():
    """Found by fuzzing: least squares on targets of ±1e300 gave R² = NaN; MCC of latents of 1e300
    gave 0 (norms overflowed) and of 1e-300 raised scipy's "invalid numeric entries"."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x[:, :2] @ np.array([[1.0, 0.5], [0.2, 1.0]]) + 0.01 * rng.normal(size=(50, 2))
    base = metrics.linear_probe_r2(x, y)
    assert metrics.linear_probe_r2(x, 1e300 * y) == pytest.approx(base)
    assert metrics.linear_probe_r2(1e-300 * x, y) == pytest.approx(base)
    for scale in (1e300, 1e-300):
        assert metrics.mean_correlation_coefficient(scale * x, scale * x[:, ::-1]) == pytest.approx(1.0)
