"""Shared pieces of the hardening tests: the error contract, result checks and malformed inputs.

The contract every public entry point keeps on malformed input: it either returns a result
without NaN (except where the input row was missing or padding, as documented) or raises a
``ValueError``/``TypeError`` (or a subclass, e.g. ``NotPositiveDefiniteError``) with a message.
Any other exception type fails the test with its traceback; a crash or a hang fails the run.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ALLOWED = (ValueError, TypeError)
SCALE = int(os.environ.get("LDMFILTER_FUZZ_SCALE", "1"))  # e.g. 20 for a deeper search than the suite's


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``max_examples`` × ``LDMFILTER_FUZZ_SCALE``, no deadline.

    The suite's own runs (scale 1) are derandomized, so that they test the same examples every
    time; a scaled run searches afresh.
    """
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )

# special values a malformed array may hold, by kind
SPECIALS = {
    "nan": np.nan,
    "inf": np.inf,
    "-inf": -np.inf,
    "huge": 1e300,
    "-huge": -1e300,
    "float32-max": 3e38,
    "beyond-float32": 1e60,
    "tiny": 1e-300,
    "subnormal": 5e-324,
    "zero": 0.0,
}


def call(fn, *args, allowed=ALLOWED, **kwargs):
    """``(result, None)``, or ``(None, error)`` for an allowed error with a message.

    Any other exception propagates (and fails the calling test with its traceback).
    """
    try:
        return fn(*args, **kwargs), None
    except allowed as error:
        assert str(error).strip(), f"{type(error).__name__} raised without a message"
        return None, error


def assert_finite(values, what: str, allow_neg_inf: bool = False) -> None:
    """No NaN (and no inf; ``-inf`` only where ``allow_neg_inf``: an overflowed log-density)."""
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
    assert not np.isnan(values).any(), f"{what} holds NaN"
    bad = np.isposinf(values) | (np.isneginf(values) if not allow_neg_inf else False)
    assert not np.any(bad), f"{what} holds inf"


def assert_psd(cov, what: str, slack: float = 1e3, scale: float | None = None) -> float:
    """Symmetric and positive semi-definite to rounding; returns the smallest eigenvalue seen.

    Rounding is measured against ``scale`` (default: the largest entry of all the matrices, so
    that a covariance that is ~0 next to the others may be ±rounding of the others).
    """
    cov = cov.detach().to(torch.float64) if isinstance(cov, torch.Tensor) else torch.as_tensor(np.asarray(cov, dtype=float))
    assert_finite(cov, what)
    if cov.numel() == 0:
        return 0.0
    scale = float(cov.abs().max().clamp_min(1e-300)) if scale is None else scale
    eps = slack * 1.2e-7  # float32 epsilon: a bound for both dtypes
    asym = (cov - cov.mT).abs().amax(dim=(-2, -1))
    assert bool((asym <= eps * scale).all()), f"{what} is not symmetric"
    smallest = torch.linalg.eigvalsh(cov)[..., 0]
    assert bool((smallest >= -eps * scale).all()), f"{what} has eigenvalue {smallest.min().item():.3g} < 0 (scale {scale:.3g})"
    return float(smallest.min())


# ---------------------------------------------------------------------------------------------- arrays
def corrupt_array(rng: np.random.Generator, values: np.ndarray, kind: str) -> np.ndarray:
    """``values`` with special values of ``kind`` (a key of ``SPECIALS``, or "all-nan", "nan-row")."""
    out = np.array(values, dtype=float, copy=True)
    if out.size == 0:
        return out
    if kind == "all-nan":
        out[...] = np.nan
    elif kind == "nan-row":
        out[rng.integers(out.shape[0])] = np.nan
    elif kind in ("huge", "-huge", "tiny", "subnormal", "float32-max", "beyond-float32"):
        out = out * 0 + SPECIALS[kind] * np.sign(rng.normal(size=out.shape) + 1e-9) ** (kind != "subnormal")
    else:
        flat = out.reshape(-1)
        flat[rng.integers(flat.size, size=max(1, flat.size // 4))] = SPECIALS[kind]
    return out


VALUE_KINDS = ["nan", "inf", "-inf", "huge", "-huge", "float32-max", "beyond-float32", "tiny", "subnormal", "zero", "all-nan", "nan-row"]


@st.composite
def malformed_series(draw, obs_dim: int, steps: int = 6):
    """A malformed (or borderline) numpy-style input for a model of ``obs_dim`` channels.

    Returns ``(X, label)``; ``label`` names the input class (for failure reports).
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T = draw(st.sampled_from([0, 1, 2, steps]))
    good = rng.normal(size=(T, obs_dim))
    kind = draw(
        st.sampled_from(
            ["values", "rank", "width", "dtype", "ragged", "list-of-arrays", "python", "batch", "empty"]
        )
    )
    if kind == "values":
        which = draw(st.sampled_from(VALUE_KINDS))
        return corrupt_array(rng, good, which), f"values:{which}:T={T}"
    if kind == "rank":
        shape = draw(st.sampled_from([(), (T,), (2, 2, T, obs_dim), (1, 1, 1, T, obs_dim)]))
        return rng.normal(size=shape), f"rank:{shape}"
    if kind == "width":
        width = draw(st.sampled_from([w for w in (1, obs_dim + 1, obs_dim + 5) if w != obs_dim] or [obs_dim + 1]))
        return rng.normal(size=(T, width)), f"width:{width}"
    if kind == "dtype":
        dtype = draw(st.sampled_from(["object", "str", "complex", "bool", "int", "float16", "datetime", "timedelta", "mixed-object"]))
        if dtype == "object":
            return good.astype(object), "dtype:object"
        if dtype == "mixed-object":
            values = good.astype(object)
            if values.size:
                values.flat[0] = "x"
            return values, "dtype:mixed-object"
        if dtype == "str":
            return good.astype(str), "dtype:str"
        if dtype == "complex":
            return good + 1j, "dtype:complex"
        if dtype == "bool":
            return good > 0, "dtype:bool"
        if dtype == "int":
            return (good * 10).astype(np.int64), "dtype:int"
        if dtype == "float16":
            return good.astype(np.float16), "dtype:float16"
        if dtype == "datetime":
            return np.zeros((T, obs_dim), dtype="datetime64[ns]"), "dtype:datetime64"
        return np.zeros((T, obs_dim), dtype="timedelta64[ns]"), "dtype:timedelta64"
    if kind == "ragged":
        rows = [list(r) for r in good] + [[1.0] * (obs_dim + 1)]
        return rows, "ragged-nested-list"
    if kind == "list-of-arrays":
        variant = draw(st.sampled_from(["widths", "one-empty", "nested", "frames-and-arrays", "scalars"]))
        if variant == "widths":
            return [good, rng.normal(size=(3, obs_dim + 1))], "list:different-widths"
        if variant == "one-empty":
            return [rng.normal(size=(3, obs_dim)), np.zeros((0, obs_dim))], "list:one-empty-series"
        if variant == "nested":
            return [rng.normal(size=(2, 3, obs_dim))], "list:stack-in-list"
        if variant == "frames-and-arrays":
            return [pd.DataFrame(rng.normal(size=(3, obs_dim))), rng.normal(size=(3, obs_dim))], "list:mixed-kinds"
        return [np.float64(1.0), np.float64(2.0)], "list:scalars"
    if kind == "python":
        value = draw(st.sampled_from([None, "abc", {"a": 1}, {1, 2}, object(), 3.5, b"bytes", []]))
        return value, f"python:{type(value).__name__}"
    if kind == "batch":
        n = draw(st.sampled_from([0, 1, 3]))
        values = rng.normal(size=(n, T, obs_dim))
        if n and draw(st.booleans()):
            values[rng.integers(n)] = np.nan  # one series with no observed value
        return values, f"batch:n={n}"
    return np.zeros((T, 0)), "empty-width"


@st.composite
def malformed_frames(draw, columns: tuple, steps: int = 8):
    """A malformed (or borderline) DataFrame input for a model fitted on ``columns`` (hourly index)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    index = pd.date_range("2024-01-01", periods=steps, freq="h", name="time")
    frame = pd.DataFrame(rng.normal(size=(steps, len(columns))), index=index, columns=list(columns))
    kind = draw(
        st.sampled_from(
            [
                "duplicated-index", "unsorted-index", "nat-index", "string-index", "bool-index", "missing-column",
                "extra-column", "renamed-columns", "duplicated-columns", "reordered-columns", "object-column",
                "category-column", "bool-column", "datetime-column", "empty-rows", "no-columns", "one-row",
                "irregular-far", "off-grid", "values", "tz-aware", "long-table", "long-table-swapped",
                "multiindex-3", "series", "list-mixed-tz", "nullable-int", "all-nan-column",
            ]
        )
    )
    if kind == "duplicated-index":
        frame.index = index[[0, 0] + list(range(2, steps))]
    elif kind == "unsorted-index":
        frame = frame.iloc[rng.permutation(steps)]
        if frame.index.is_monotonic_increasing:
            frame = frame.iloc[::-1]
    elif kind == "nat-index":
        frame.index = pd.DatetimeIndex([pd.NaT] + list(index[1:]), name="time")
    elif kind == "string-index":
        frame.index = [f"t{i}" for i in range(steps)]
    elif kind == "bool-index":
        frame.index = np.arange(steps) % 2 == 0
    elif kind == "missing-column":
        frame = frame.iloc[:, :-1] if len(columns) > 1 else frame.rename(columns={columns[0]: "other"})
    elif kind == "extra-column":
        frame["extra"] = 1.0
    elif kind == "renamed-columns":
        frame.columns = [f"{c}_x" for c in columns]
    elif kind == "duplicated-columns":
        frame = pd.concat([frame, frame.iloc[:, :1]], axis=1)
    elif kind == "reordered-columns":
        frame = frame[list(reversed(columns))]
    elif kind == "object-column":
        frame[columns[0]] = frame[columns[0]].astype(object)
        frame.iloc[0, 0] = "oops"
    elif kind == "category-column":
        frame[columns[0]] = pd.Categorical(["a"] * steps)
    elif kind == "bool-column":
        frame[columns[0]] = frame[columns[0]] > 0
    elif kind == "datetime-column":
        frame[columns[0]] = index
    elif kind == "empty-rows":
        frame = frame.iloc[:0]
    elif kind == "no-columns":
        frame = frame[[]]
    elif kind == "one-row":
        frame = frame.iloc[:1]
    elif kind == "irregular-far":
        frame.index = pd.DatetimeIndex([index[0] + pd.Timedelta(days=400 * i) + pd.Timedelta(minutes=i) for i in range(steps)], name="time")
    elif kind == "off-grid":
        frame.index = index + pd.to_timedelta(rng.integers(1, 59, size=steps), unit="min")
    elif kind == "values":
        which = draw(st.sampled_from(VALUE_KINDS))
        frame = pd.DataFrame(corrupt_array(rng, frame.to_numpy(), which), index=index, columns=list(columns))
        kind = f"values:{which}"
    elif kind == "tz-aware":
        frame = frame.tz_localize("Europe/Berlin")
    elif kind == "long-table":
        frame = pd.concat({"a": frame, "b": frame.iloc[: max(1, steps // 2)]}, names=["series"])
    elif kind == "long-table-swapped":
        frame = pd.concat({"a": frame, "b": frame}, names=["series"]).swaplevel()
    elif kind == "multiindex-3":
        frame = pd.concat({"x": pd.concat({"a": frame}, names=["series"])}, names=["top"])
    elif kind == "series":
        frame = frame[columns[0]]
    elif kind == "list-mixed-tz":
        frame = [frame, frame.tz_localize("UTC")]
    elif kind == "nullable-int":
        frame = (frame * 10).round().astype("Int64")
        frame.iloc[0, 0] = pd.NA
    elif kind == "all-nan-column":
        frame[columns[0]] = np.nan
    return frame, f"frame:{kind}"


HORIZONS = [0, -1, -(10**9), 1, 3, True, False, 2.5, float("nan"), "3", None, np.int64(2), np.float64(2.0), [2], 10**15]


def check_result(result, ragged: bool = False) -> float:
    """Check a FilterResult/ForecastResult: finite state moments (NaN only at padding rows of ragged
    input), PSD covariances, log-likelihood without NaN.  Returns the smallest eigenvalue."""
    state = result.space("state")
    mean, cov = np.asarray(state.mean), np.asarray(state.cov)
    if ragged:  # padding rows after a shorter series' end are NaN by contract: check the rest
        rows = ~np.isnan(mean).all(-1)
        mean, cov = mean[rows], cov[rows]
    assert_finite(mean, "state mean")
    smallest = assert_psd(cov, "state covariance")
    for space in ("observations", "targets"):
        moments = getattr(result, space)
        if moments is not None:
            values = np.asarray(moments.mean)
            assert_finite(values[~np.isnan(values).all(-1)] if ragged else values, f"{space} mean")
    log_likelihood = getattr(result, "log_likelihood", None)
    if log_likelihood is not None:
        ll = np.asarray(log_likelihood, dtype=float)
        ll = ll[~np.isnan(ll)] if ragged else ll
        assert_finite(ll, "log-likelihood", allow_neg_inf=True)
    return smallest
