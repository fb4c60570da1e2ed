"""Fuzzing the Gaussian engine (``kalman_filter``, ``kalman_smoother``, ``kalman_forecast``,
``nonlinear_filter``, ``nonlinear_forecast``) with malformed arguments.

Each example starts from a valid model and breaks one or two arguments: wrong types, dtypes,
ranks, sizes or batch axes; empty axes; NaN/inf/huge/tiny entries; asymmetric, indefinite or
degenerate covariances; bad masks, horizons, functions and rule options.  The contract
(:mod:`malformed`): a ``ValueError``/``TypeError`` with a message, or finite results with PSD
covariances and a log-likelihood without NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ldmfilter.gaussian import kalman_filter, kalman_forecast, kalman_smoother, nonlinear_filter, nonlinear_forecast
from malformed import HORIZONS, assert_finite, assert_psd, call, fuzz

FUZZ = fuzz(60)
pytestmark = pytest.mark.filterwarnings("ignore:Casting complex values to real")
ARGS = ("observations", "transition_matrix", "transition_cov", "observation_matrix", "observation_cov", "initial_mean",
        "initial_cov", "transition_offset", "mask")
COVARIANCES = ("transition_cov", "observation_cov", "initial_cov")


def _spd(rng, n, dtype, scale=1.0):
    a = rng.normal(size=(n, n))
    return torch.as_tensor(scale * (a @ a.T / n + 0.5 * np.eye(n)), dtype=dtype)


def valid_model(rng, S, L, T, batch, dtype):
    """Arguments of a well-posed linear-Gaussian filter."""
    A = rng.normal(size=(S, S))
    A = 0.9 * A / max(1.0, np.abs(np.linalg.eigvals(A)).max())
    return {
        "observations": torch.as_tensor(rng.normal(size=batch + (T, L)), dtype=dtype),
        "transition_matrix": torch.as_tensor(A, dtype=dtype),
        "transition_cov": _spd(rng, S, dtype, 0.1),
        "observation_matrix": torch.as_tensor(rng.normal(size=(L, S)), dtype=dtype),
        "observation_cov": _spd(rng, L, dtype, 0.2),
        "initial_mean": torch.zeros(S, dtype=dtype),
        "initial_cov": _spd(rng, S, dtype),
        "transition_offset": None,
        "mask": None,
    }


def corrupt(rng, args: dict, name: str, how: str, ctx: dict) -> dict:
    """``args`` with argument ``name`` broken in the way ``how``; ``ctx``: the valid ``dtype``, ``steps``, ``state``.

    A breakage that does not apply to the argument as it already is leaves ``args`` unchanged.
    """
    try:
        return _corrupt(rng, args, name, how, ctx)
    except (RuntimeError, IndexError):  # e.g. expanding an argument an earlier breakage already batched or emptied
        return dict(args)


def _corrupt(rng, args: dict, name: str, how: str, ctx: dict) -> dict:
    value = args[name]
    out = dict(args)
    base = value if isinstance(value, torch.Tensor) else torch.zeros(ctx["state"], dtype=ctx["dtype"])
    real = base if base.is_floating_point() else (base.real if base.is_complex() else base).to(ctx["dtype"])
    if how == "numpy":
        out[name] = base.numpy()
    elif how == "list":
        out[name] = base.tolist()
    elif how == "python-scalar":
        out[name] = 1.0
    elif how == "none":
        out[name] = None
    elif how == "string":
        out[name] = "abc"
    elif how in ("int64", "complex64", "bool", "float16", "other-float"):
        dtype = {"int64": torch.int64, "complex64": torch.complex64, "bool": torch.bool, "float16": torch.float16}.get(how)
        if how == "other-float":
            dtype = torch.float32 if base.dtype == torch.float64 else torch.float64
        out[name] = base.to(dtype)
    elif how == "drop-dim":
        out[name] = base.reshape(-1)[:-1] if base.ndim <= 1 else base[..., 0]
    elif how == "add-dim":
        out[name] = base.unsqueeze(0).expand((3,) + base.shape) if base.ndim else base.reshape(1)
    elif how == "grow":
        out[name] = torch.cat([base, base[..., :1]], -1) if base.ndim else base
    elif how == "time-varying-wrong-T":
        out[name] = base.unsqueeze(0).expand((ctx["steps"] + 1,) + base.shape)
    elif how == "batch-mismatch":
        out[name] = base.unsqueeze(0).unsqueeze(0).expand((5, ctx["steps"]) + base.shape)
    elif how == "empty":
        shape = list(base.shape) or [0]
        shape[0] = 0
        out[name] = base.new_zeros(shape)
    elif how in ("nan", "inf", "-inf", "huge", "tiny", "zero", "asymmetric"):
        if base.numel() == 0:
            return out
        base = base if base.is_floating_point() else base.to(ctx["dtype"])
        info = torch.finfo(base.dtype)
        special = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "huge": info.max / 10,
                   "tiny": max(info.tiny, 1e-300), "zero": 0.0}.get(how)
        changed = base.clone()
        if how == "asymmetric":
            if changed.ndim >= 2 and changed.shape[-1] > 1:
                changed[..., 0, 1] += 1.0
        elif how in ("huge", "tiny") and name in COVARIANCES and base.ndim >= 2:
            changed = special * torch.eye(base.shape[-1], dtype=base.dtype).expand(base.shape).clone()
        elif how in ("huge", "tiny", "zero"):
            changed.fill_(special)
        else:
            changed.view(-1)[int(rng.integers(changed.numel()))] = special
        out[name] = changed
    elif how == "indefinite":
        out[name] = -real
    elif how == "rank-deficient":
        v = real[..., :1]
        out[name] = v @ v.mT if real.ndim >= 2 else real
    return out


MATRIX_HOWS = ["numpy", "list", "python-scalar", "none", "string", "int64", "complex64", "bool", "float16",
               "other-float", "drop-dim", "add-dim", "grow", "time-varying-wrong-T", "batch-mismatch", "empty", "nan",
               "inf", "-inf", "huge", "tiny", "zero", "asymmetric", "indefinite", "rank-deficient"]


@st.composite
def filter_problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    S, L, T = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 5]))
    batch = draw(st.sampled_from([(), (2,), (1, 2)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    args = valid_model(rng, S, L, T, batch, dtype)
    ctx = {"dtype": dtype, "steps": T, "state": S}
    labels = []
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(ARGS))
        if name == "mask":
            how = draw(st.sampled_from(["int", "wrong-shape", "all-false", "partial", "list"]))
            obs = torch.zeros(batch + (T, L), dtype=dtype)  # the valid shape, whatever the observations became
            if how == "int":
                args["mask"] = torch.ones(obs.shape[:-1], dtype=torch.int64)
            elif how == "wrong-shape":
                args["mask"] = torch.ones(obs.shape[:-1] + (2, 2), dtype=torch.bool)
            elif how == "all-false":
                args["mask"] = torch.zeros(obs.shape[:-1], dtype=torch.bool)
            elif how == "partial":
                args["mask"] = torch.as_tensor(rng.random(obs.shape) > 0.5)
            else:
                args["mask"] = [True] * obs.shape[-2]
        elif name == "observations":
            how = draw(st.sampled_from(MATRIX_HOWS + ["all-nan", "T0", "L0", "1d"]))
            obs = args["observations"]
            if not (isinstance(obs, torch.Tensor) and obs.is_floating_point() and obs.ndim >= 2):
                obs = torch.zeros(batch + (T, L), dtype=dtype)
            if how == "all-nan":
                args["observations"] = torch.full_like(obs, float("nan"))
            elif how == "T0":
                args["observations"] = obs[..., :0, :]
            elif how == "L0":
                args["observations"] = obs[..., :0]
            elif how == "1d":
                args["observations"] = obs.reshape(-1)
            else:
                args = corrupt(rng, args, name, how, ctx)
        elif name == "transition_offset":
            how = draw(st.sampled_from(["valid", "nan", "inf", "huge", "drop-dim", "time-varying-wrong-T", "int64"]))
            args["transition_offset"] = torch.zeros(S, dtype=dtype)
            if how != "valid":
                args = corrupt(rng, args, name, how, ctx)
        else:
            how = draw(st.sampled_from(MATRIX_HOWS))
            args = corrupt(rng, args, name, how, ctx)
        labels.append(f"{name}:{how}")
    parallel = draw(st.booleans())
    return args, parallel, labels, ctx


def check_filter_result(result) -> None:
    for name in ("filtered_mean", "predicted_mean"):
        assert_finite(getattr(result, name), name)
    scale = max(float(result.predicted_cov.abs().max()), float(result.filtered_cov.abs().max()), 1e-300)
    for name in ("filtered_cov", "predicted_cov"):  # rounding relative to the prior's scale: a filtered
        assert_psd(getattr(result, name), name, scale=scale)  # variance that is exactly 0 may come out −1e-19
    assert_finite(result.log_likelihood, "log_likelihood", allow_neg_inf=True)


@FUZZ
@given(problem=filter_problems())
def test_kalman_filter_and_smoother_keep_the_contract(problem):
    args, parallel, labels, _ = problem
    result, error = call(kalman_filter, **args, parallel=parallel)
    if error is not None:
        return
    check_filter_result(result)
    smoothed, error = call(kalman_smoother, result, args["transition_matrix"], args["transition_cov"])
    if error is None:
        assert_finite(smoothed.smoothed_mean, "smoothed_mean")
        assert_psd(smoothed.smoothed_cov, "smoothed_cov")


@FUZZ
@given(
    problem=filter_problems(),
    horizon=st.sampled_from(HORIZONS),
    broken=st.sampled_from(["none", "A", "Q", "offset", "mean", "cov", "cov-batch"]),
    how=st.sampled_from(["nan", "inf", "huge", "drop-dim", "int64", "numpy", "empty", "indefinite", "batch-mismatch"]),
    seed=st.integers(0, 2**16),
)
def test_kalman_forecast_keeps_the_contract(problem, horizon, broken, how, seed):
    args, _, _, ctx = problem
    result, error = call(kalman_filter, **args)
    if error is not None:
        return
    rng = np.random.default_rng(seed)
    start = {"mean": result.filtered_mean[..., -1, :], "cov": result.filtered_cov[..., -1, :, :],
             "transition_matrix": args["transition_matrix"], "transition_cov": args["transition_cov"],
             "initial_mean": args["initial_mean"], "observations": args["observations"]}
    name = {"A": "transition_matrix", "Q": "transition_cov", "offset": "transition_offset"}.get(broken, broken)
    offset = None
    if broken == "offset":
        start["transition_offset"] = torch.zeros_like(args["initial_mean"])
    if broken == "cov-batch":
        start["cov"] = start["cov"].expand((7,) + start["cov"].shape)
    elif broken != "none":
        start = corrupt(rng, start, name, how, ctx)
    offset = start.get("transition_offset")
    belief, error = call(kalman_forecast, start["mean"], start["cov"], start["transition_matrix"],
                         start["transition_cov"], horizon, offset)
    if error is None:
        assert_finite(belief.mean, "forecast mean")
        assert_psd(belief.cov, "forecast cov")


def _tanh(x):
    return torch.tanh(x)


def _width(width):
    return lambda x: torch.tanh(x[..., :1]).expand(x.shape[:-1] + (width,))


FUNCTIONS = {
    "tanh": _tanh,
    "linear": lambda x: 0.5 * x,
    "with-inputs": lambda x, u=None: x if u is None else x + u[..., :1],
    "nan": lambda x: x * float("nan"),
    "nan-sometimes": lambda x: torch.where(x > 0.5, torch.full_like(x, float("nan")), x),
    "inf": lambda x: x + float("inf"),
    "huge": lambda x: 1e300 * x + 1e300,
    "wrong-width": _width(5),
    "numpy": lambda x: x.detach().numpy(),
    "list": lambda x: [1.0, 2.0],
    "scalar": lambda x: x.sum(),
    "3d": lambda x: x.unsqueeze(-1),
    "int": lambda x: x.to(torch.int64),
}


@FUZZ
@given(
    problem=filter_problems(),
    method=st.sampled_from(["linearize", "unscented", "cubature", "sampling", None, 3]),
    transition=st.sampled_from(sorted(FUNCTIONS) + ["not-callable"]),
    observation=st.sampled_from(["matrix", "tanh", "wrong-width", "nan", "both", "neither"]),
    inputs=st.sampled_from([None, "valid", "nan", "wrong-T", "1d", "int"]),
    options=st.sampled_from([{}, {"alpha": 0.0}, {"alpha": "x"}, {"kappa": -10.0}, {"beta": float("nan")}, {"bogus": 1}]),
)
def test_nonlinear_filter_and_forecast_keep_the_contract(problem, method, transition, observation, inputs, options):
    args, _, _, _ = problem
    obs = args["observations"]
    fn = 3 if transition == "not-callable" else FUNCTIONS[transition]
    H, h = args["observation_matrix"], None
    if observation != "matrix":
        h = {"tanh": _tanh, "wrong-width": _width(7), "nan": FUNCTIONS["nan"], "both": _tanh, "neither": None}[observation]
        H = H if observation == "both" else None
        if observation == "tanh" and isinstance(obs, torch.Tensor) and isinstance(args["initial_mean"], torch.Tensor):
            h = _width(obs.shape[-1]) if obs.ndim and obs.shape[-1] != args["initial_mean"].shape[-1] else _tanh
    u = None
    if inputs is not None and isinstance(obs, torch.Tensor) and obs.ndim >= 2:
        shape = obs.shape[:-1] + (1,)
        dt = obs.dtype if obs.is_floating_point() else torch.float64
        u = {"valid": torch.zeros(shape, dtype=dt), "nan": torch.full(shape, float("nan"), dtype=dt),
             "wrong-T": torch.zeros(shape[:-2] + (shape[-2] + 2, 1), dtype=obs.dtype),
             "1d": torch.zeros(3, dtype=obs.dtype), "int": torch.zeros(shape, dtype=torch.int64)}[inputs]
    result, error = call(nonlinear_filter, obs, fn, args["transition_cov"], H, args["observation_cov"],
                         args["initial_mean"], args["initial_cov"], method=method, mask=args["mask"],
                         observation_fn=h, transition_inputs=u, **options)
    if error is not None:
        return
    check_filter_result(result)
    future = None if u is None else u[..., :2, :]
    belief, error = call(nonlinear_forecast, result.filtered_mean[..., -1, :], result.filtered_cov[..., -1, :, :], fn,
                         args["transition_cov"], 2, method, transition_inputs=future, **options)
    if error is None:
        assert_finite(belief.mean, "forecast mean")
        assert_psd(belief.cov, "forecast cov")


# ------------------------------------------------------------------------------------ regressions
def _model(dtype=torch.float64):
    return valid_model(np.random.default_rng(0), 2, 2, 5, (3,), dtype)


@pytest.mark.parametrize("name", ["transition_matrix", "observation_matrix", "initial_mean", "transition_offset"])
@pytest.mark.parametrize("special", [float("nan"), float("inf")])
@pytest.mark.parametrize("parallel", [False, True])
def test_non_finite_parameters_are_named(name, special, parallel):
    """Found by fuzzing: NaN in initial_mean/transition_offset gave silent NaN results, and NaN in A/H
    an error about the innovation covariance instead of the argument."""
    args = _model()
    value = torch.zeros(2, dtype=torch.float64) if name == "transition_offset" else args[name].clone()
    value.view(-1)[0] = special
    args[name] = value
    with pytest.raises(ValueError, match=f"{name} of shape .* contains NaN or inf"):
        kalman_filter(**args, parallel=parallel)


@pytest.mark.parametrize("parallel", [False, True])
def test_empty_batch_and_empty_state_are_refused(parallel):
    """Found by fuzzing: a (0, T, L) batch raised RuntimeError, a state of size 0 IndexError."""
    args = _model()
    with pytest.raises(ValueError, match="empty batch"):
        kalman_filter(**{**args, "observations": args["observations"][:0]}, parallel=parallel)
    empty = torch.zeros(0, 0, dtype=torch.float64)
    with pytest.raises(ValueError, match="S >= 1"):
        kalman_filter(**{**args, "initial_mean": torch.zeros(0, dtype=torch.float64), "initial_cov": empty,
                         "transition_matrix": empty, "transition_cov": empty,
                         "observation_matrix": torch.zeros(2, 0, dtype=torch.float64)}, parallel=parallel)


def test_forecast_refuses_non_finite_starts_and_reports_overflow():
    """Found by fuzzing: NaN starts and unstable transitions gave silent NaN/inf forecasts."""
    m, P, A, Q = torch.ones(3, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), 0.9 * torch.eye(2, dtype=torch.float64), 0.1 * torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="mean of shape"):
        kalman_forecast(m * float("nan"), P, A, Q, 3)
    with pytest.raises(ValueError, match="transition_matrix of shape"):
        kalman_forecast(m, P, A * float("nan"), Q, 3)
    with pytest.raises(ValueError, match="from step 3.. on: the transition is unstable"):
        kalman_forecast(m, P, 10.0 * torch.eye(2, dtype=torch.float64), Q, 400)
    with pytest.raises(ValueError, match="do not broadcast"):
        kalman_forecast(m, P.expand(4, 2, 2), A, Q, 3)
    with pytest.raises(ValueError, match="S >= 1"):
        kalman_forecast(torch.zeros(3, 0, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64), A, Q, 3)


def test_absurd_horizon_is_refused_before_allocating():
    """Found by fuzzing: horizon=10**12 ran until the process was killed for memory."""
    m, P = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="more than this machine's memory"):
        kalman_forecast(m, P, P, P, 10**15)
    with pytest.raises(ValueError, match="more than this machine's memory"):
        nonlinear_forecast(m, P, _tanh, P, 10**15)


@pytest.mark.parametrize("method", ["linearize", "unscented", "cubature"])
def test_nonlinear_functions_of_the_wrong_width_or_with_nan_are_named(method):
    """Found by fuzzing: a function of the wrong output width raised RuntimeError; NaN inputs gave NaN means."""
    args = _model()
    common = (args["transition_cov"], args["observation_matrix"], args["observation_cov"], args["initial_mean"], args["initial_cov"])
    with pytest.raises(ValueError, match="transition_fn must map rows of size S to rows of size 2"):
        nonlinear_filter(args["observations"], _width(5), *common, method=method)
    with pytest.raises(ValueError, match="observation_fn must map rows of size S to rows of size 2"):
        nonlinear_filter(args["observations"], _tanh, args["transition_cov"], None, *common[2:], method=method,
                         observation_fn=_width(1))
    u = torch.full(args["observations"].shape[:-1] + (1,), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="transition_inputs of shape .* contains NaN or inf"):
        nonlinear_filter(args["observations"], FUNCTIONS["with-inputs"], *common, method=method, transition_inputs=u)
    with pytest.raises(ValueError, match="transition_fn must map rows of size S to rows of size 2"):
        nonlinear_forecast(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), _width(5),
                           args["transition_cov"], 2, method)


def test_forecast_with_a_batched_covariance_and_an_unbatched_mean():
    """Found by fuzzing: a start covariance with more batch axes than the mean raised RuntimeError."""
    m, P, A = torch.ones(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64).expand(7, 2, 2), 0.9 * torch.eye(2, dtype=torch.float64)
    belief = kalman_forecast(m, P, A, 0.1 * torch.eye(2, dtype=torch.float64), 3)
    assert belief.mean.shape == (7, 3, 2) and belief.cov.shape == (7, 3, 2, 2)
    torch.testing.assert_close(belief.mean[0], kalman_forecast(m, P[0], A, 0.1 * torch.eye(2, dtype=torch.float64), 3).mean)


@pytest.mark.parametrize("parallel", [False, True])
def test_float32_rank_deficient_observation_noise_keeps_variances_non_negative(parallel):
    """Found by fuzzing: R = v vᵀ rounded to float32 has an eigenvalue of about −1e-9; the Joseph
    update's K R Kᵀ turned it into filtered variances of −3e-4 × P0.  R is now lifted to PSD and
    the update runs in float64."""
    worst = 0.0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(2, 2, generator=g)
        v = ((a @ a.T / 2 + 0.5 * torch.eye(2)) * 0.2)[:, :1]
        R = v @ v.mT
        P0 = torch.rand(1, 1, generator=g) + 0.1
        result = kalman_filter(torch.randn(1, 2, generator=g), torch.tensor([[0.1]]), torch.tensor([[0.05]]),
                               torch.randn(2, 1, generator=g), R, torch.zeros(1), P0, parallel=parallel)
        worst = min(worst, result.filtered_cov.item() / P0.item())
    assert worst >= -1e-6


def test_smoother_with_a_diffuse_prior_in_float32_stays_psd():
    """Found by fuzzing: a prior of 1e10 … 3e37 next to unit noise made float32 filtered covariances
    indefinite by rounding, and the smoother amplified that to eigenvalues of −14% of the largest
    entry (or inf).  It now runs in float64 and projects non-PSD inputs and outputs onto the PSD cone."""
    A = torch.tensor([[0.1132, -0.1189], [0.5764, 0.0944]])
    Q = torch.tensor([[0.1799, -0.1058], [-0.1058, 0.1548]])
    H, R, z = torch.tensor([[-0.6233, 0.0413]]), torch.tensor([[1.1812]]), torch.tensor([[-0.5357], [0.3616]])
    for prior in (1e6, 1e10, 1e16, 1e20, 1e30, 3.4e37):
        result = kalman_filter(z, A, Q, H, R, torch.zeros(2), prior * torch.eye(2))
        smoothed = kalman_smoother(result, A, Q)
        assert_finite(smoothed.smoothed_mean, "smoothed mean")
        assert_psd(smoothed.smoothed_cov, f"smoothed covariance (prior {prior:g})")


def test_overflowing_covariances_and_log_likelihoods_are_reported():
    """Found by fuzzing: Q ≈ 1e308 left inf in the last predicted covariance, and H m = inf gave a
    NaN log-likelihood with finite means (torch's Cholesky of [[inf]] does not fail)."""
    args = _model()
    huge = 1e308 * torch.eye(2, dtype=torch.float64)
    for parallel in (False, True):
        with pytest.raises(ValueError, match="NaN or inf"):
            kalman_filter(**{**args, "transition_cov": huge, "initial_cov": huge}, parallel=parallel)
    big = torch.tensor([1.7e307, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN or inf"):
        kalman_filter(**{**args, "initial_mean": big, "observation_matrix": 1.7e307 * torch.eye(2, dtype=torch.float64)})


def test_parallel_scan_on_a_degenerate_model_gives_a_value_error():
    """Found by fuzzing: a rank-one transition of magnitude 3e37 made the scan's torch.linalg.solve
    raise LinAlgError."""
    args = valid_model(np.random.default_rng(0), 2, 1, 2, (), torch.float32)
    args["transition_matrix"] = torch.full((2, 2), 3.4e37)
    with pytest.raises(ValueError):
        kalman_filter(**args, parallel=True)


@pytest.mark.parametrize("method", ["linearize", "unscented", "cubature"])
def test_functions_returning_another_dtype_give_a_type_error(method):
    """Found by fuzzing: a transition returning int64 raised RuntimeError in a matrix product."""
    args = _model()
    common = (args["transition_cov"], args["observation_matrix"], args["observation_cov"], args["initial_mean"], args["initial_cov"])
    with pytest.raises(TypeError, match="must return torch.float64 like its input, got torch.int64"):
        nonlinear_filter(args["observations"], FUNCTIONS["int"], *common, method=method)
    with pytest.raises(TypeError, match="must return torch.float64 like its input, got torch.int64"):
        nonlinear_forecast(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), FUNCTIONS["int"],
                           args["transition_cov"], 2, method)
