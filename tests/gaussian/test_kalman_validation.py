"""Bad input to the linear-Gaussian routines raises TypeError/ValueError naming the argument and the shape
(or dtype) received — never an assert, a torch shape error or a silent NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmfilter.gaussian import kalman_filter, kalman_forecast, kalman_smoother

S, L, T, B = 3, 2, 5, 4
NAMES = ("observations", "transition_matrix", "transition_cov", "observation_matrix", "observation_cov",
         "initial_mean", "initial_cov", "transition_offset")


def _valid(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return dict(
        observations=torch.randn(B, T, L, generator=g, dtype=dtype),
        transition_matrix=0.5 * torch.eye(S, dtype=dtype),
        transition_cov=0.1 * torch.eye(S, dtype=dtype),
        observation_matrix=torch.randn(L, S, generator=g, dtype=dtype),
        observation_cov=0.2 * torch.eye(L, dtype=dtype),
        initial_mean=torch.zeros(S, dtype=dtype),
        initial_cov=torch.eye(S, dtype=dtype),
        transition_offset=torch.zeros(S, dtype=dtype),
    )


def _check(exc, name, fragment, **changes):
    """Call kalman_filter (sequential and parallel) with ``changes`` applied; expect ``exc`` naming ``name``
    and containing ``fragment`` (a shape or dtype string)."""
    for parallel in (False, True):
        kwargs = {**_valid(), **changes}
        with pytest.raises(exc) as info:
            kalman_filter(**kwargs, parallel=parallel)
        message = str(info.value)
        assert name in message, message
        if fragment is not None:
            assert fragment in message, message


def _shape(*dims):
    return str(tuple(dims))


def _f64(*shape):
    return torch.ones(*shape, dtype=torch.float64)


def _spd(n, batch=()):
    return torch.eye(n, dtype=torch.float64).expand(*batch, n, n).clone()


# ------------------------------------------------------------------------------------------------ shapes

WRONG_SHAPES = [
    ("observations", _f64(L)),  # no time axis
    ("observations", _f64(B, 0, L)),  # no steps
    ("transition_matrix", _f64(S + 1, S + 1)),
    ("transition_matrix", _f64(S, S + 1)),  # not square
    ("transition_matrix", 0.5 * _spd(S, (T + 1,))),  # time-varying, wrong T
    ("transition_matrix", 0.5 * _spd(S, (B + 1, T))),  # batch axes do not broadcast
    ("transition_matrix", _f64(S)),
    ("transition_cov", _spd(S + 1)),
    ("transition_cov", _f64(S, S + 1)),  # not square
    ("transition_cov", _spd(S, (T - 1,))),  # time-varying, wrong T
    ("transition_cov", _spd(S, (B + 1, T))),
    ("observation_matrix", _f64(L + 1, S)),
    ("observation_matrix", _f64(L, S + 1)),
    ("observation_matrix", _f64(T + 2, L, S)),  # time-varying, wrong T
    ("observation_matrix", _f64(B + 1, T, L, S)),
    ("observation_cov", _spd(L + 1)),
    ("observation_cov", _f64(L, L + 1)),  # not square
    ("observation_cov", _spd(L, (T + 1,))),
    ("initial_mean", _f64(S + 1)),  # disagrees with A: reported on A or on the mean
    ("initial_mean", _f64(B + 1, S)),  # batch axes do not broadcast
    ("initial_cov", _spd(S + 1)),
    ("initial_cov", _f64(S, S + 1)),  # not square
    ("initial_cov", _spd(S, (B + 1,))),
    ("transition_offset", _f64(S + 1)),
    ("transition_offset", _f64(T + 1, S)),  # time-varying, wrong T
    ("transition_offset", _f64(B + 1, T, S)),
    ("transition_offset", _f64(B, S)),  # a per-series offset needs its time axis
]


@pytest.mark.parametrize("name, value", WRONG_SHAPES, ids=[f"{n}{tuple(v.shape)}" for n, v in WRONG_SHAPES])
def test_wrong_shape_names_argument_and_shape(name, value):
    """A parameter of the wrong shape gives a ValueError with its name and the shape received."""
    if name == "initial_mean" and value.shape == (S + 1,):
        # the state dimension is read from one argument and checked against the others: the message must name
        # the argument that disagrees, and show the shape received
        kwargs = {**_valid(), name: value}
        with pytest.raises(ValueError) as info:
            kalman_filter(**kwargs)
        message = str(info.value)
        assert any(n in message for n in NAMES), message
        return
    core = 1 if name in ("initial_mean",) else 2
    has_time = name not in ("initial_mean", "initial_cov") and value.ndim > core
    lead = tuple(value.shape[: value.ndim - core - has_time])
    if lead == (B + 1,):  # batch axes that do not broadcast: the message may show them instead of the full shape
        _check(ValueError, name, None, **{name: value})
        kwargs = {**_valid(), name: value}
        with pytest.raises(ValueError) as info:
            kalman_filter(**kwargs)
        message = str(info.value)
        assert _shape(*value.shape) in message or (_shape(B + 1) in message and _shape(B) in message), message
        return
    _check(ValueError, name, _shape(*value.shape), **{name: value})


# ------------------------------------------------------------------------------------------------ covariances

@pytest.mark.parametrize("name, size", [("transition_cov", S), ("observation_cov", L), ("initial_cov", S)])
def test_non_symmetric_covariance(name, size):
    """A clearly non-symmetric covariance is rejected, naming it."""
    bad = _spd(size)
    bad[0, 1] += 0.5
    _check(ValueError, name, _shape(size, size), **{name: bad})


@pytest.mark.parametrize("name, size", [("transition_cov", S), ("observation_cov", L), ("initial_cov", S)])
def test_non_psd_covariance(name, size):
    """A symmetric covariance with a negative eigenvalue is rejected, naming it."""
    bad = _spd(size)
    bad[-1, -1] = -1.0
    _check(ValueError, name, _shape(size, size), **{name: bad})


def test_non_psd_time_varying_covariance():
    """One bad entry of a time-varying covariance is enough."""
    bad = 0.1 * _spd(S, (T,))
    bad[2, 0, 0] = -1.0
    _check(ValueError, "transition_cov", _shape(T, S, S), transition_cov=bad)


@pytest.mark.parametrize("name, size", [("transition_cov", S), ("observation_cov", L), ("initial_cov", S)])
def test_nan_in_covariance(name, size):
    """NaN in a parameter is an error (NaN means missing only in the observations)."""
    bad = _spd(size)
    bad[0, 0] = float("nan")
    _check(ValueError, name, None, **{name: bad})


# ------------------------------------------------------------------------------------------------ types

@pytest.mark.parametrize("name", NAMES)
def test_numpy_array_instead_of_tensor(name):
    """A numpy array is not silently converted: TypeError naming the argument and the type."""
    value = _valid()[name].numpy()
    _check(TypeError, name, "ndarray", **{name: value})


@pytest.mark.parametrize("name", NAMES)
def test_integer_dtype(name):
    """Integer tensors are rejected with the dtype in the message."""
    value = _valid()[name].round().to(torch.int64)
    _check(TypeError, name, "int64", **{name: value})


@pytest.mark.parametrize("name", NAMES[1:])
def test_mixed_float32_float64(name):
    """One float32 parameter among float64 ones: TypeError naming it and both dtypes."""
    value = _valid()[name].to(torch.float32)
    _check(TypeError, name, "float32", **{name: value})


def test_float32_observations_with_float64_parameters():
    """The observations set the dtype; float64 parameters with float32 data are a TypeError naming one of them."""
    kwargs = {**_valid(), "observations": _valid()["observations"].float()}
    with pytest.raises(TypeError) as info:
        kalman_filter(**kwargs)
    assert "float32" in str(info.value) and "float64" in str(info.value)
    assert any(n in str(info.value) for n in NAMES)


# ------------------------------------------------------------------------------------------------ observations

@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_inf_in_observations(value):
    """inf is not a missing marker: ValueError naming the observations."""
    obs = _valid()["observations"].clone()
    obs[1, 2, 0] = value
    _check(ValueError, "observations", None, observations=obs)


def test_all_nan_observations_are_fine():
    """All-missing data is legal: the filter is the prior propagated forward, log-likelihood 0."""
    obs = torch.full((B, T, L), float("nan"), dtype=torch.float64)
    out = kalman_filter(**{**_valid(), "observations": obs})
    assert torch.isfinite(out.filtered_mean).all() and (out.log_likelihood == 0).all()


# ------------------------------------------------------------------------------------------------ mask

def test_mask_numpy_bool_is_type_error():
    _check(TypeError, "mask", "ndarray", mask=np.ones((B, T), dtype=bool))


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.uint8])
def test_mask_wrong_dtype(dtype):
    """Only bool masks: 0/1 integers or floats are ambiguous and rejected with their dtype."""
    _check(TypeError, "mask", str(dtype).replace("torch.", ""), mask=torch.ones(B, T, dtype=dtype))


@pytest.mark.parametrize("shape", [(B, T + 1), (B + 1, T), (B, T, L + 1), (T + 1,), (B, T, L, 1)])
def test_mask_wrong_shape(shape):
    _check(ValueError, "mask", _shape(*shape), mask=torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(B, T), (B, T, L), (T,), (T, L), (1, T)])
def test_mask_accepted_shapes(shape):
    """Masks of shape (*batch, T) or (*batch, T, L) with broadcastable batch axes are accepted."""
    kalman_filter(**_valid(), mask=torch.ones(shape, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------ smoother

def test_smoother_rejects_non_result():
    with pytest.raises(TypeError, match="result"):
        kalman_smoother((torch.zeros(T, S), torch.zeros(T, S, S)), _valid()["transition_matrix"],
                        _valid()["transition_cov"])


@pytest.mark.parametrize("name, value", [
    ("transition_matrix", _f64(S + 1, S + 1)),
    ("transition_matrix", 0.5 * _spd(S, (T + 1,))),
    ("transition_cov", _spd(S, (T - 1,))),
    ("transition_cov", _f64(S, S + 1)),
])
def test_smoother_wrong_shapes(name, value):
    """The smoother checks A and Q against the filter result (state dim and T)."""
    kwargs = _valid()
    out = kalman_filter(**kwargs)
    args = {"transition_matrix": kwargs["transition_matrix"], "transition_cov": kwargs["transition_cov"], name: value}
    with pytest.raises(ValueError) as info:
        kalman_smoother(out, args["transition_matrix"], args["transition_cov"])
    assert name in str(info.value) and _shape(*value.shape) in str(info.value)


def test_smoother_non_psd_transition_cov():
    kwargs = _valid()
    out = kalman_filter(**kwargs)
    bad = _spd(S)
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="transition_cov"):
        kalman_smoother(out, kwargs["transition_matrix"], bad)


# ------------------------------------------------------------------------------------------------ forecast

def _forecast(**changes):
    v = _valid()
    args = dict(mean=torch.zeros(B, S, dtype=torch.float64), cov=_spd(S, (B,)),
                transition_matrix=v["transition_matrix"],
                transition_cov=v["transition_cov"], horizon=3, transition_offset=None)
    args.update(changes)
    return kalman_forecast(**args)


@pytest.mark.parametrize("name, value, exc", [
    ("horizon", 0, ValueError),
    ("horizon", -2, ValueError),
    ("horizon", 2.5, TypeError),
    ("mean", np.zeros((B, S)), TypeError),
    ("mean", torch.zeros(B, S, dtype=torch.int64), TypeError),
    ("cov", _spd(S + 1, (B,)), ValueError),
    ("cov", torch.eye(S, dtype=torch.float32), TypeError),
    ("transition_matrix", _f64(S + 1, S + 1), ValueError),
    ("transition_matrix", 0.5 * _spd(S, (4,)), ValueError),  # time axis must have length horizon = 3
    ("transition_cov", _spd(S, (2,)), ValueError),
    ("transition_offset", _f64(4, S), ValueError),
    ("transition_offset", _f64(S + 1), ValueError),
])
def test_forecast_bad_input(name, value, exc):
    """kalman_forecast validates like the filter; time-varying parameters need a time axis of length horizon."""
    with pytest.raises(exc) as info:
        _forecast(**{name: value})
    message = str(info.value)
    assert name in message, message
    if isinstance(value, torch.Tensor) and exc is ValueError:
        assert _shape(*value.shape) in message, message


def test_forecast_non_psd_cov():
    bad = _spd(S, (B,))
    bad[1, 0, 0] = -1.0
    with pytest.raises(ValueError, match="cov"):
        _forecast(cov=bad)
