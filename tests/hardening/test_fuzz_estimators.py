"""Fuzzing the estimators' public methods with malformed inputs.

Tiny models are fitted once per module (``LDMFilter`` on a DataFrame and on an array, with a
target read-out; ``KalmanFilter``; ``ExtendedKalmanFilter``; ``UnscentedKalmanFilter``), then
hypothesis feeds ``filter``, ``smooth``, ``forecast``, ``score``, ``transform``,
``fit_readout``, ``fit`` and the constructors malformed inputs (see :mod:`malformed`).  The
contract: a ``ValueError``/``TypeError`` with a message, or a result whose state moments are
finite with PSD covariances (NaN only at the padding rows of ragged input) and whose
log-likelihood has no NaN.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ldmfilter
from malformed import HORIZONS, assert_finite, call, check_result, fuzz, malformed_frames, malformed_series

COLUMNS = ("a", "b", "c")
TINY_LDM = dict(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False, trainer_kwargs={"max_steps": 2})


def _frame(steps=40, seed=0):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=steps, freq="h", name="time")
    return pd.DataFrame(rng.normal(size=(steps, 3)).cumsum(0), index=index, columns=list(COLUMNS))


@pytest.fixture(scope="module")
def models():
    """Fitted tiny models: name → (model, kind of input it takes)."""
    X = _frame()
    Y = pd.DataFrame({"y": X.sum(axis=1)}, index=X.index)
    arrays = np.random.default_rng(1).normal(size=(3, 30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = {
            "ldm-frame": ldmfilter.LDMFilter(**TINY_LDM).fit(X, targets=Y),
            "ldm-array": ldmfilter.LDMFilter(**TINY_LDM).fit(arrays),
            "kalman": ldmfilter.KalmanFilter(state_dim=2, n_iter=3).fit(X, targets=Y),
            "ekf": ldmfilter.ExtendedKalmanFilter(state_dim=2, hidden=(4,), n_iter=1, init_iter=1).fit(X),
            "ukf": ldmfilter.UnscentedKalmanFilter(state_dim=2, hidden=(4,), n_iter=1, init_iter=1).fit(arrays),
        }
    return fitted


METHODS = ["filter", "smooth", "forecast", "score", "transform"]


def _apply(model, method: str, X, horizon=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "forecast":
            return call(model.forecast, X, horizon)
        if method == "transform" and not hasattr(model, "transform"):
            return call(model.filter, X)
        return call(getattr(model, method), X)


def _check(method: str, result, ragged: bool, X=None) -> None:
    if method in ("filter", "smooth", "forecast"):
        check_result(result, ragged)
        complete = isinstance(X, np.ndarray) and X.dtype.kind in "iuf" and X.ndim == 2 and not np.isnan(X).any()
        if method == "filter" and complete:  # no row was missing, so none may have been treated as missing
            assert (np.asarray(result.log_likelihood) != 0).all(), "a complete row was filtered as if missing"
    elif method == "score":
        assert isinstance(result, float) and not np.isnan(result), f"score returned {result!r}"
    elif isinstance(result, np.ndarray):  # transform: NaN only at missing rows
        rows = ~np.isnan(result).all(-1)
        assert_finite(result[rows], "encodings")


def _ragged(X) -> bool:
    return isinstance(X, list) and len({len(x) for x in X if hasattr(x, "__len__")}) > 1


@fuzz(40)
@given(name=st.sampled_from(["ldm-frame", "ldm-array", "kalman", "ekf", "ukf"]), method=st.sampled_from(METHODS),
       data=malformed_series(3))
def test_array_inputs_keep_the_contract(models, name, method, data):
    X, label = data
    result, error = _apply(models[name], method, X)
    if error is None:
        _check(method, result, _ragged(X), X)


@fuzz(40)
@given(name=st.sampled_from(["ldm-frame", "kalman", "ekf"]), method=st.sampled_from(METHODS), data=malformed_frames(COLUMNS))
def test_dataframe_inputs_keep_the_contract(models, name, method, data):
    X, label = data
    result, error = _apply(models[name], method, X)
    if error is None:
        _check(method, result, ragged=label == "frame:long-table")


@fuzz(30)
@given(name=st.sampled_from(["ldm-frame", "kalman", "ekf", "ukf"]), horizon=st.sampled_from(HORIZONS))
def test_horizons_keep_the_contract(models, name, horizon):
    X = _frame(12, seed=3) if name != "ukf" else np.random.default_rng(3).normal(size=(12, 3))
    result, error = _apply(models[name], "forecast", X, horizon)
    if error is None:
        assert isinstance(horizon, (int, np.integer)) and not isinstance(horizon, bool) and horizon >= 1
        check_result(result)
        assert result.mean.shape[-2] == horizon


@fuzz(30)
@given(name=st.sampled_from(["ldm-frame", "kalman"]), data=malformed_series(1, steps=40),
       readout=st.sampled_from(["linear", "mlp", "quadratic", None]))
def test_fit_readout_keeps_the_contract(models, name, data, readout):
    model = copy.copy(models[name])
    model.readouts_ = dict(model.readouts_)
    X = _frame()
    Y, label = data
    if isinstance(Y, np.ndarray) and Y.ndim == 2 and Y.shape[0] == 40:
        Y = pd.DataFrame(Y, index=X.index).rename(columns=str)  # aligned rows: the read-out itself is fitted
    options = {"steps": 3} if readout == "mlp" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, error = call(model.fit_readout, X, Y, readout=readout, **options)
    if error is None:
        check_result(model.filter(X))
        check_result(model.forecast(X, 2))


@fuzz(12)
@given(estimator=st.sampled_from(["ldm", "kalman", "ekf"]), data=st.one_of(malformed_series(3, steps=12), malformed_frames(COLUMNS, steps=12)))
def test_fit_keeps_the_contract(estimator, data):
    X, label = data
    model = {
        "ldm": lambda: ldmfilter.LDMFilter(**TINY_LDM),
        "kalman": lambda: ldmfilter.KalmanFilter(state_dim=2, n_iter=2),
        "ekf": lambda: ldmfilter.ExtendedKalmanFilter(state_dim=2, hidden=(4,), n_iter=1, init_iter=1),
    }[estimator]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, error = call(model.fit, X)
        if error is None:
            result, error = call(fitted.filter, X)
            if error is None:  # the model fitted on X must filter X
                check_result(result, _ragged(X) or label == "frame:long-table")


BAD_VALUES = [None, True, 0, -1, 2.5, float("nan"), float("inf"), "x", "3", [1], (0,), {"a": 1}, 10**12, -1e-9, object()]
LDM_PARAMS = ["state_dim", "latent_dim", "encoder", "hidden", "noise", "objective", "predictor", "dynamics", "moments",
              "dynamics_hidden", "dynamics_activation", "max_epochs", "batch_size", "learning_rate", "weight_decay", "lr_multipliers", "schedule",
              "entropy_weight", "window", "normalize", "dtype", "random_state", "num_threads", "verbose", "trainer_kwargs"]
KALMAN_PARAMS = ["state_dim", "method", "n_iter", "tol", "fixed", "initial_params", "diagonal_Q", "observation_offset",
                 "optimizer", "learning_rate", "max_spectral_radius", "projection", "dtype", "random_state"]
NONLINEAR_PARAMS = ["state_dim", "transition", "observation", "initial_params", "fixed", "hidden", "n_iter", "learning_rate",
                    "optimizer", "tol", "init_iter", "projection", "rule_options", "dtype", "random_state"]


@fuzz(60)
@given(which=st.sampled_from(["ldm", "kalman", "ekf", "ukf"]), data=st.data())
def test_hyper_parameters_of_the_wrong_type_or_value_keep_the_contract(which, data):
    params = {"ldm": LDM_PARAMS, "kalman": KALMAN_PARAMS, "ekf": NONLINEAR_PARAMS, "ukf": NONLINEAR_PARAMS}[which]
    name = data.draw(st.sampled_from(params), "parameter")
    value = data.draw(st.sampled_from(BAD_VALUES), "value")
    cls, base = {
        "ldm": (ldmfilter.LDMFilter, TINY_LDM),
        "kalman": (ldmfilter.KalmanFilter, dict(state_dim=2, n_iter=2)),
        "ekf": (ldmfilter.ExtendedKalmanFilter, dict(state_dim=2, hidden=(4,), n_iter=1, init_iter=1)),
        "ukf": (ldmfilter.UnscentedKalmanFilter, dict(state_dim=2, hidden=(4,), n_iter=1, init_iter=1)),
    }[which]
    kwargs = {**base, name: value}
    if which == "ldm" and name in ("state_dim", "latent_dim", "max_epochs") and isinstance(value, int) and value > 100:
        kwargs[name] = 3  # a valid but huge size only makes the fit slow
    if name in ("n_iter", "init_iter") and isinstance(value, int) and value > 100:
        kwargs[name] = 2
    X = _frame(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, error = call(cls, **kwargs)
        if error is None:
            fitted, error = call(model.fit, X)
            if error is None:
                check_result(fitted.filter(X))


@fuzz(25)
@given(name=st.sampled_from(["ldm-frame", "kalman", "ekf"]),
       path=st.sampled_from(["directory", "missing-folder", "int", "none", "bytes-path", "empty-string", "nested-ok"]))
def test_save_paths_keep_the_contract(models, tmp_path_factory, name, path):
    folder = tmp_path_factory.mktemp("save")
    target = {"directory": folder, "missing-folder": folder / "no" / "m.ldm", "int": 3, "none": None,
              "bytes-path": bytes(folder / "b.ldm"), "empty-string": "", "nested-ok": folder / "m.ldm"}[path]
    written, error = call(models[name].save, target, allowed=(ValueError, TypeError, FileNotFoundError))
    if error is None:
        loaded = ldmfilter.load(written)
        np.testing.assert_array_equal(loaded.filter(_frame()).mean, models[name].filter(_frame()).mean)
    assert not [p for p in folder.rglob("*.tmp")], "a failed save left a temporary file"


CORRUPTIONS = ["truncate", "zero-bytes", "garbage", "flip-bytes", "text", "empty-dict", "directory", "int", "missing", "json"]


@fuzz(40)
@given(how=st.sampled_from(CORRUPTIONS), cut=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_load_of_damaged_files_keeps_the_contract(models, tmp_path_factory, how, cut, seed):
    folder = tmp_path_factory.mktemp("load")
    path = models["kalman"].save(folder / "model.ldm")
    data = path.read_bytes()
    rng = np.random.default_rng(seed)
    if how == "truncate":
        path.write_bytes(data[: int(cut * len(data))])
    elif how == "zero-bytes":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(rng.bytes(max(1, int(cut * 5000))))
    elif how == "flip-bytes":
        raw = bytearray(data)
        for i in rng.integers(0, len(raw), size=max(1, int(cut * 50))):
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif how == "text":
        path.write_text("format: ldmfilter-model\nversion: 2\n")
    elif how == "empty-dict":
        import torch

        torch.save({}, path)
    elif how == "json":
        path.write_text('{"format": "ldmfilter-model", "version": 2}')
    target = {"directory": folder, "int": 7, "missing": folder / "nope.ldm"}.get(how, path)
    loaded, error = call(ldmfilter.load, target, allowed=(ValueError, TypeError, FileNotFoundError))
    if error is None:  # flipped bytes the zip checksum did not catch must still give a working model
        check_result(loaded.filter(_frame()))


# ------------------------------------------------------------------------------------ regressions
def test_bool_horizon_is_refused(models):
    """Found by fuzzing: forecast(X, True) returned a one-step forecast."""
    for name in ("ldm-frame", "kalman"):
        with pytest.raises(ValueError, match="horizon must be a positive integer, got True"):
            models[name].forecast(_frame(12), True)


@pytest.mark.parametrize("value", [1e100, 3e38])
def test_float32_model_refuses_inputs_it_cannot_represent(models, value):
    """Found by fuzzing: a float32 LDMFilter read 1e300/1e100 (inf once cast) and 3e38 (an encoder
    overflow) as missing frames and returned the prior with log-likelihood 0."""
    X = np.full((4, 3), value)
    with pytest.raises(ValueError, match="beyond the range of the model's dtype|encoder's output is NaN or inf"):
        models["ldm-array"].filter(X)


def test_magnitudes_whose_squares_overflow_are_refused():
    """Found by fuzzing: fitting on ±1e300 raised torch's LinAlgError from EM / the read-out."""
    X = np.random.default_rng(0).choice([-1e300, 1e300], size=(12, 3))
    with pytest.raises(ValueError, match="values of magnitude 1e\\+300 .* overflow float64 once squared"):
        ldmfilter.KalmanFilter(state_dim=2).fit(X)


def test_ragged_nested_lists_get_a_message_naming_the_argument(models):
    """Found by fuzzing: numpy's "inhomogeneous shape" error did not say which argument or what to do."""
    with pytest.raises(ValueError, match="X is a ragged nested sequence .* pass a list of numpy arrays"):
        models["kalman"].filter([[1.0, 2.0, 3.0], [1.0, 2.0]])


@pytest.mark.parametrize("targets", [np.zeros(40), np.full(40, 7.0), np.full(40, 1e-300), np.full(40, -1e-300)])
def test_readout_of_exactly_fitted_targets(models, targets):
    """Found by fuzzing: a constant (or underflowing) target made the read-out noise 0 and torch's
    Cholesky raised LinAlgError; the noise is now floored at a rounding-sized variance."""
    model = copy.copy(models["kalman"])
    model.readouts_ = dict(model.readouts_)
    X = _frame()
    model.fit_readout(X, pd.DataFrame({"y": targets}, index=X.index))
    result = model.filter(X)
    check_result(result)
    assert (np.asarray(result.space("targets").cov) > 0).all()


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("num_threads", 0, "num_threads must be a positive integer"),
        ("num_threads", float("inf"), "num_threads must be a positive integer"),
        ("learning_rate", -1.0, "learning_rate must be a finite number >= 0"),
        ("learning_rate", "x", "learning_rate must be a finite number >= 0"),
        ("hidden", (0,), "hidden must be positive integer widths"),
        ("latent_dim", True, "latent_dim must be a positive integer"),
        ("random_state", float("inf"), "random_state must be an integer"),
        ("lr_multipliers", {"encodr": 1.0}, "unknown groups \\['encodr'\\]"),
        ("trainer_kwargs", 3, "trainer_kwargs must be a dict"),
        ("dynamics", ["mlp"], "dynamics must be one of"),
    ],
)
def test_ldm_hyper_parameters_are_checked_before_training(name, value, message):
    """Found by fuzzing: these raised RuntimeError/OverflowError/torch TypeErrors, trained with an
    unknown learning-rate group silently, or failed later with "transition_cov contains NaN"."""
    with pytest.raises((ValueError, TypeError), match=message):
        ldmfilter.LDMFilter(**{**TINY_LDM, name: value}).fit(_frame(16))


def test_classical_random_state_is_checked():
    """Found by fuzzing: random_state=inf reached torch.manual_seed (OverflowError)."""
    with pytest.raises(ValueError, match="random_state must be an integer"):
        ldmfilter.ExtendedKalmanFilter(state_dim=2, random_state=float("inf")).fit(_frame(16))


def test_save_path_errors(models, tmp_path):
    """Found by fuzzing: saving onto a folder raised IsADirectoryError and left no clear message."""
    model = models["kalman"]
    with pytest.raises(ValueError, match="is a folder"):
        model.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.save(tmp_path / "missing" / "m.ldm")
    with pytest.raises(TypeError, match="must be a str or os.PathLike, got int"):
        model.save(3)
    with pytest.raises(TypeError, match="must be a str or os.PathLike, got NoneType"):
        ldmfilter.load(None)
    assert list(tmp_path.iterdir()) == []


def test_flipped_bytes_are_caught_by_the_checksum(models, tmp_path):
    """Found by fuzzing: a byte flipped inside the weights loaded without complaint (torch does not
    check the zip's CRC) and the model then failed with "observation_cov is not symmetric"."""
    path = models["kalman"].save(tmp_path / "m.ldm")
    import torch

    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["params.R"][0, 1] += 1e-3  # what a flipped byte does, without the zip around it
    torch.save(payload, path)
    with pytest.raises(ValueError, match="damaged: its contents do not match the checksum"):
        ldmfilter.load(path)


def test_float32_statistics_that_overflow_are_refused():
    """Values of 1e25 fit in float32 but their variance does not: the standardiser's scale became inf
    and every frame standardised to 0."""
    X = np.random.default_rng(0).normal(size=(20, 3)) * 1e25
    with pytest.raises(ValueError, match="too large for torch.float32 statistics"):
        ldmfilter.LDMFilter(**TINY_LDM).fit(X)
