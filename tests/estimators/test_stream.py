"""Live streams: step-by-step updates equal ``filter`` on the whole sequence (missing frames, gaps
via ``dt``, controls, linear and MLP dynamics with every moment rule, many series), forecasts,
save and resume, the numpy kernels against the Gaussian engine, and clear errors for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ldmfilter import LDMFilter
from ldmfilter.estimators import FilterStream
from ldmfilter.gaussian import MOMENT_RULES, NotPositiveDefiniteError
from ldmfilter.gaussian.steps import innovation_log_likelihood, predict_cov, update_covariance, update_mean
from ldmfilter.estimators.stream_steps import StreamModel, correct_shared, predict_cov as np_predict_cov, update_cov_shared

N, T, D = 3, 30, 5
TIGHT = dict(rtol=1e-9, atol=1e-10)  # float64 models: the same maths, other summation orders


def walk(n=N, steps=T, seed=0):
    """Observations (n, T, D) of a 2-dim random walk, and the walk itself (targets)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, steps, 2)).cumsum(1) * 0.3
    return latent @ rng.normal(size=(2, D)) + 0.1 * rng.normal(size=(n, steps, D)), latent


def with_gaps(X):
    """Missing frames at different steps per series, a partly missing frame, and a step missing everywhere."""
    X = X.copy()
    X[0, 4] = np.nan
    X[1, 7:10] = np.nan
    X[2, 12, :2] = np.nan
    X[:, 20] = np.nan
    return X


def fit(X=None, targets=None, controls=None, **options):
    if X is None:
        X, targets = walk(n=4, steps=40, seed=1)
    settings = dict(state_dim=3, latent_dim=2, hidden=(8,), dynamics_hidden=(8,), max_epochs=2, verbose=False, dtype="float64")
    settings.update(options)
    model = LDMFilter(**settings).fit(X, targets=targets, controls=controls)
    if model.dynamics == "mlp":  # a clearly nonlinear residual (it starts at zero and trains little here)
        with torch.no_grad():
            last = model.model_.dynamics.residual[-1]
            generator = torch.Generator().manual_seed(0)
            last.weight.copy_(0.5 * torch.randn(last.weight.shape, generator=generator, dtype=last.weight.dtype))
    return model


MODELS = {
    "linear": {},
    "learned-noise": {"noise": "learned"},
    "input-noise": {"noise": "input"},
    "input-full-noise": {"noise": "input_full"},
    **{f"mlp-{rule}": {"dynamics": "mlp", "moments": rule} for rule in sorted(MOMENT_RULES)},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return fit(**MODELS[request.param])


def feed(stream, X, controls=None):
    """Update with every step of X (n, T, ...); the beliefs."""
    return [stream.update(X[:, t], controls=None if controls is None else controls[:, t]) for t in range(X.shape[1])]


def assert_beliefs_match(beliefs, result, steps=None, tolerance=TIGHT):
    steps = range(len(beliefs)) if steps is None else steps
    mean = np.stack([b.mean for b in beliefs], 1)
    cov = np.stack([b.cov for b in beliefs], 1)
    ll = np.stack([b.log_likelihood for b in beliefs], 1)
    np.testing.assert_allclose(mean, result.mean[:, steps], **tolerance)
    np.testing.assert_allclose(cov, result.state.cov[:, steps], **tolerance)
    np.testing.assert_allclose(ll, result.log_likelihood[:, steps], **tolerance)


# ---------------------------------------------------------------------------------- exactness
def test_step_by_step_equals_filter(model):
    X = with_gaps(walk()[0])
    beliefs = feed(model.stream(N), X)
    result = model.filter(X)
    assert_beliefs_match(beliefs, result)
    assert [b.step for b in beliefs] == list(range(T))
    np.testing.assert_array_equal(beliefs[4].observed, [False, True, True])
    assert beliefs[20].log_likelihood.tolist() == [0.0, 0.0, 0.0]
    for t in (3, 12, T - 1):  # read-outs: the same moments as filter's
        for space in ("observations", "targets"):
            mine, theirs = getattr(beliefs[t], space), getattr(result, space)
            np.testing.assert_allclose(mine.mean, theirs.mean[:, t], **TIGHT)
            np.testing.assert_allclose(mine.cov, theirs.cov[:, t], **TIGHT)
        np.testing.assert_allclose(beliefs[t].state.var, result.state.var[:, t], **TIGHT)


def test_single_series(model):
    X = with_gaps(walk()[0])[1]
    stream = model.stream()
    beliefs = [stream.update(x) for x in X]  # obs_shape rows
    assert beliefs[0].mean.shape == (1, 3) and beliefs[0].cov.shape == (1, 3, 3)
    assert_beliefs_match(beliefs, model.filter(X[None]))


def test_gaps_via_dt_equal_missing_frames(model):
    X = walk()[0]
    keep = np.array([0, 1, 2, 5, 6, 10, 11, 12, 13, 20, 29])
    gappy = np.full_like(X, np.nan)
    gappy[:, keep] = X[:, keep]
    stream = model.stream(N)
    beliefs = [stream.update(X[:, keep[0]])]
    beliefs += [stream.update(X[:, t], dt=int(t - s)) for s, t in zip(keep[:-1], keep[1:])]
    assert_beliefs_match(beliefs, model.filter(gappy), keep)
    assert stream.n_steps == keep[-1] + 1


def test_series_with_the_same_missing_frames_share_one_covariance():
    model = fit()
    X = walk()[0]
    X[:, [3, 9, 10]] = np.nan  # missing everywhere at once: one covariance for all series
    beliefs = feed(model.stream(N), X)
    assert all(b.cov.strides[0] == 0 for b in beliefs)
    assert_beliefs_match(beliefs, model.filter(X))
    X[1, 15] = np.nan  # one series differs: a covariance per series from then on
    beliefs = feed(model.stream(N), X)
    assert beliefs[14].cov.strides[0] == 0 and beliefs[15].cov.strides[0] != 0
    assert_beliefs_match(beliefs, model.filter(X))


def test_cached_covariance_step_is_exact():
    """Once the covariance recursion reaches its fixed point (or cycle) bit for bit, cached steps are
    reused: exactly what recomputing gives."""
    model = fit()
    X = walk(n=2, steps=400, seed=3)[0]
    cached, recomputed = model.stream(2), model.stream(2)
    computed = []
    update_cov = cached._update_cov
    cached._update_cov = lambda *args: computed.append(1) or update_cov(*args)
    for t in range(X.shape[1]):
        a = cached.update(X[:, t])
        recomputed._cache.clear()
        b = recomputed.update(X[:, t])
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.cov, b.cov)
        np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)
    assert len(computed) < 200  # the cache was used for most of the 400 steps
    np.testing.assert_allclose(a.mean, model.filter(X).mean[:, -1], **TIGHT)


def test_float32_model_matches_to_float32_rounding():
    X, targets = walk(n=4, steps=40, seed=1)
    model = fit(X, targets, dtype="float32")
    beliefs = feed(model.stream(N), with_gaps(walk()[0]))
    assert beliefs[0].mean.dtype == np.float64
    assert_beliefs_match(beliefs, model.filter(with_gaps(walk()[0])), tolerance=dict(rtol=2e-4, atol=2e-5))
    with pytest.raises(ValueError, match=r"x_t holds inf \(or a value beyond the model's float32 range\) at \(3,\)"):
        model.stream().update(np.array([0.0, 1.0, 2.0, 1e300, 0.0]))


def test_conv_encoder_runs_in_torch():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(3, 20, 4, 4))
    frames[1, 5] = np.nan
    frames[2, 8, 1] = np.nan
    model = LDMFilter(state_dim=2, latent_dim=1, encoder="conv", max_epochs=1, verbose=False, dtype="float64").fit(frames)
    stream = model.stream(3)
    assert not stream._model.numpy_encoder()
    assert_beliefs_match(feed(stream, frames), model.filter(frames))


def test_numpy_encoder_equals_the_network(model):
    m = StreamModel.of(model.model_, model.obs_shape_)
    assert m.numpy_encoder(N) and not m.numpy_encoder(10**6)  # big batches go through torch (BLAS threads)
    X = with_gaps(walk()[0])[:, 4]
    z, R = m.encode(X)
    with torch.no_grad():
        x = torch.as_tensor(X)
        expected = model.model_.encode_observed(x)
        expected_R = model.model_.noise(model.model_.prepare_input(x), model.model_.dynamics.log_scale)
    np.testing.assert_allclose(z, expected.numpy(), **TIGHT)
    if model.noise.startswith("input"):
        np.testing.assert_allclose(R, expected_R.numpy(), **TIGHT)
    else:
        assert R is None
        np.testing.assert_allclose(m.observation_cov, expected_R.numpy(), **TIGHT)


# ---------------------------------------------------------------------------------- controls
@pytest.fixture(scope="module", params=["linear", "mlp"])
def controlled(request):
    rng = np.random.default_rng(2)
    u = rng.normal(size=(4, 40, 1))
    x = np.cumsum(0.5 * u[..., 0], 1)[..., None] * np.array([1.0, -0.5, 2.0]) + 0.05 * rng.normal(size=(4, 40, 3))
    return fit(x, None, u, dynamics=request.param, state_dim=2, latent_dim=1, max_epochs=3), u


def test_controls_step_by_step_and_held_over_gaps(controlled):
    model, u = controlled
    rng = np.random.default_rng(5)
    X = np.cumsum(rng.normal(size=(N, T, 3)), 1) * 0.3
    U = rng.normal(size=(N, T, 1))
    beliefs = feed(model.stream(N), X, U)
    assert_beliefs_match(beliefs, model.filter(X, controls=U))
    keep = np.array([0, 1, 4, 5, 9, 12, 29])  # over a gap the previous update's control holds
    held = U[:, keep[np.searchsorted(keep, np.arange(T), side="right") - 1]]
    held[:, keep] = U[:, keep]
    gappy = np.full_like(X, np.nan)
    gappy[:, keep] = X[:, keep]
    stream = model.stream(N)
    beliefs = [stream.update(X[:, 0], controls=U[:, 0])]
    beliefs += [stream.update(X[:, t], dt=int(t - s), controls=U[:, t]) for s, t in zip(keep[:-1], keep[1:])]
    assert_beliefs_match(beliefs, model.filter(gappy, controls=held), keep)


def test_controls_forecast(controlled):
    model, _ = controlled
    rng = np.random.default_rng(6)
    X, U, future = np.cumsum(rng.normal(size=(N, 12, 3)), 1), rng.normal(size=(N, 12, 1)), rng.normal(size=(N, 5, 1))
    stream = model.stream(N)
    feed(stream, X, U)
    ahead = stream.forecast(5, controls=future)
    expected = model.forecast(X, 5, controls=U, future_controls=future)
    np.testing.assert_allclose(ahead.mean, expected.mean, **TIGHT)
    np.testing.assert_allclose(ahead.cov, expected.state.cov, **TIGHT)
    np.testing.assert_allclose(ahead.observations.mean, expected.observations.mean, **TIGHT)
    shared = stream.forecast(5, controls=future[0])  # (horizon, U): the same controls for every series
    np.testing.assert_allclose(shared.mean[0], ahead.mean[0], **TIGHT)


def test_irregular_dataframe_index_as_dt():
    """``dt`` from the timestamps gives what ``filter`` gives on the irregular DataFrame."""
    rng = np.random.default_rng(7)
    index = pd.date_range("2025-01-01", periods=60, freq="h", name="time")
    heat = rng.normal(size=60)
    level = np.cumsum(0.5 * heat) + 0.05 * rng.normal(size=60)
    frame = pd.DataFrame({"a": level, "b": -level + 0.1 * rng.normal(size=60), "heat": heat}, index=index)
    model = fit(frame, None, controls=["heat"], state_dim=2, latent_dim=1, max_epochs=3)
    gappy = frame.drop(frame.index[[5, 6, 7, 20, 41, 42]])
    result = model.filter(gappy)
    stream = model.stream()
    steps = (gappy.index[1:] - gappy.index[:-1]) / pd.Timedelta("1h")
    beliefs = [stream.update(gappy[["a", "b"]].iloc[0].to_numpy(), controls=gappy[["heat"]].iloc[0].to_numpy())]
    for k, (_, row) in zip(steps, gappy.iloc[1:].iterrows()):
        beliefs.append(stream.update(row[["a", "b"]].to_numpy(), dt=int(k), controls=row[["heat"]].to_numpy()))
    np.testing.assert_allclose(np.concatenate([b.mean for b in beliefs]), result.mean, **TIGHT)


# ---------------------------------------------------------------------------------- forecast, state
def test_forecast_equals_model_forecast_and_leaves_the_state(model):
    X = walk()[0]
    stream, twin = model.stream(N), model.stream(N)
    feed(stream, X[:, :15])
    feed(twin, X[:, :15])
    ahead = stream.forecast(6)
    expected = model.forecast(X[:, :15], 6)
    assert ahead.mean.shape == (N, 6, 3) and ahead.step == 15
    np.testing.assert_allclose(ahead.mean, expected.mean, **TIGHT)
    np.testing.assert_allclose(ahead.cov, expected.state.cov, **TIGHT)
    np.testing.assert_allclose(ahead.targets.mean, expected.targets.mean, **TIGHT)
    after, untouched = stream.update(X[:, 15]), twin.update(X[:, 15])
    np.testing.assert_array_equal(after.mean, untouched.mean)
    np.testing.assert_array_equal(after.cov, untouched.cov)


def test_save_and_resume_continue_identically(model, tmp_path):
    X = with_gaps(walk()[0])
    whole = model.stream(N)
    straight = feed(whole, X)
    first = model.stream(N)
    feed(first, X[:, :13])
    path = first.save(tmp_path / "live.stream")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.stream"]  # atomic: no temporary left
    assert isinstance(torch.load(path, weights_only=True), dict)
    resumed = FilterStream.load(path, model)
    assert resumed.n_steps == 13 and resumed.n_series == N
    for t in range(13, T):
        belief = resumed.update(X[:, t])
        np.testing.assert_array_equal(belief.mean, straight[t].mean)
        np.testing.assert_array_equal(belief.cov, straight[t].cov)
        np.testing.assert_array_equal(belief.log_likelihood, straight[t].log_likelihood)
    again = model.stream(N)
    again.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(again.update(X[:, 13]).mean, straight[13].mean)


def test_reset_and_memory_do_not_grow():
    model = fit()
    X = walk(n=2, steps=200)[0]
    stream = model.stream(2)
    first = stream.update(X[:, 0])
    sizes = {k: v.numel() for k, v in stream.state_dict().items() if isinstance(v, torch.Tensor)}
    feed(stream, X[:, 1:])
    assert {k: v.numel() for k, v in stream.state_dict().items() if isinstance(v, torch.Tensor)} == sizes
    assert stream.n_steps == 200
    stream.reset()
    assert stream.n_steps == 0
    np.testing.assert_array_equal(stream.update(X[:, 0]).mean, first.mean)


def test_belief_arrays_are_read_only():
    stream = fit().stream()
    belief = stream.update(walk()[0][0, 0])
    with pytest.raises(ValueError, match="read-only"):
        belief.mean[0, 0] = 1.0
    np.testing.assert_array_equal(stream.belief.mean, belief.mean)


def test_controls_round_trip_through_save(controlled, tmp_path):
    model, _ = controlled
    rng = np.random.default_rng(8)
    X, U = rng.normal(size=(N, 10, 3)), rng.normal(size=(N, 10, 1))
    stream = model.stream(N)
    feed(stream, X[:, :6], U[:, :6])
    resumed = FilterStream.load(stream.save(tmp_path / "s"), model)
    a = stream.update(X[:, 8], dt=2, controls=U[:, 8])  # the gap holds the saved last controls
    b = resumed.update(X[:, 8], dt=2, controls=U[:, 8])
    np.testing.assert_array_equal(a.mean, b.mean)


def test_foreign_and_mismatched_states_are_refused(tmp_path):
    model = fit()
    stream = model.stream(2)
    stream.update(walk(n=2)[0][:, 0])
    other = fit(state_dim=4)
    with pytest.raises(ValueError, match="another shape: state_dim saved 3, this model 4"):
        FilterStream.load(stream.save(tmp_path / "s"), other)
    with pytest.raises(ValueError, match="2 series, this stream 1"):
        model.stream(1).load_state_dict(stream.state_dict())
    retrained = fit(random_state=5)
    with pytest.warns(UserWarning, match="other weights"):
        FilterStream.load(tmp_path / "s", retrained)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FilterStream.load(tmp_path / "s", model)
    state = stream.state_dict()
    state["cov"] = torch.full((3, 3), float("nan"))
    with pytest.raises(ValueError, match="'cov' must be a finite tensor of shape"):
        model.stream(2).load_state_dict(state)
    with pytest.raises(ValueError, match="not an ldmfilter stream state"):
        model.stream(2).load_state_dict({"weight": torch.zeros(3)})
    model.save(tmp_path / "model.ldm")
    with pytest.raises(ValueError, match="not an ldmfilter stream file"):
        FilterStream.load(tmp_path / "model.ldm", model)
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ValueError, match="not a readable ldmfilter stream file"):
        FilterStream.load(tmp_path / "text", model)
    with pytest.raises(FileNotFoundError):
        FilterStream.load(tmp_path / "absent", model)


# ---------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def plain():
    return fit()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x_t": np.zeros(4)}, ValueError, r"x_t must have shape \(5,\) or \(1, 5\).*got \(4,\)"),
        ({"x_t": np.zeros((2, 5))}, ValueError, "x_t must have shape"),
        ({"x_t": np.array(["a"] * 5)}, TypeError, "x_t must hold real numbers"),
        ({"x_t": np.array([1, 2, np.inf, 0, 0])}, ValueError, r"x_t holds inf .* at \(2,\)"),
        ({"x_t": np.array([[1, 2, 0, 0, -np.inf]])}, ValueError, r"x_t holds inf .* at \(0, 4\); use NaN for missing"),
        ({"dt": 0}, ValueError, "dt must be at least 1"),
        ({"dt": -2}, ValueError, "dt must be at least 1"),
        ({"dt": 1.5}, ValueError, "whole number"),
        ({"dt": "2"}, TypeError, "dt must be a positive integer"),
        ({"dt": True}, TypeError, "dt must be a positive integer"),
        ({"controls": np.zeros(1)}, ValueError, "fitted without controls"),
    ],
)
def test_bad_updates_are_refused_and_leave_the_state(plain, kwargs, error, match):
    stream = plain.stream()
    stream.update(np.zeros(5))
    before = stream.state_dict()
    arguments = {"x_t": np.ones(5), **kwargs}
    with pytest.raises(error, match=match):
        stream.update(**arguments)
    after = stream.state_dict()
    assert after["n_steps"] == before["n_steps"] == 1
    torch.testing.assert_close(after["mean"], before["mean"])


def test_first_update_and_forecast_errors(plain):
    stream = plain.stream()
    with pytest.raises(ValueError, match="first update"):
        stream.update(np.ones(5), dt=3)
    with pytest.raises(ValueError, match="call update at least once"):
        stream.forecast(3)
    stream.update(np.ones(5), dt=2.0 / 2.0)  # a whole float is a whole number of steps
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="horizon must be a positive integer"):
            stream.forecast(bad)
    with pytest.raises(ValueError, match="n_series must be a positive integer"):
        plain.stream(0)


def test_controls_errors(controlled):
    model, _ = controlled
    stream = model.stream(2)
    with pytest.raises(ValueError, match=r"fitted with controls \['control_0'\]: pass controls of shape \(2, 1\)"):
        stream.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"controls must have shape \(2, 1\) or \(1,\)"):
        stream.update(np.zeros((2, 3)), controls=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="controls must be finite"):
        stream.update(np.zeros((2, 3)), controls=np.array([[np.nan], [0.0]]))
    with pytest.raises(TypeError, match="controls must hold real numbers"):
        stream.update(np.zeros((2, 3)), controls=np.array([["x"], ["y"]]))
    stream.update(np.zeros((2, 3)), controls=np.zeros(1))
    with pytest.raises(ValueError, match="pass controls of shape"):
        stream.forecast(4)


def test_unfitted_and_rnn_models_have_no_stream():
    with pytest.raises(RuntimeError, match="not fitted"):
        LDMFilter().stream()
    X = walk(n=2, steps=10)[0]
    rnn = LDMFilter(predictor="rnn", state_dim=2, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False).fit(X)
    with pytest.raises(ValueError, match="stream needs predictor='kalman'"):
        rnn.stream()
    with pytest.raises(TypeError, match="needs a fitted LDMFilter"):
        FilterStream(object())


# ---------------------------------------------------------------------------------- numpy kernels
@pytest.mark.parametrize("seed", range(5))
def test_numpy_kernels_equal_the_engine(seed):
    rng = np.random.default_rng(seed)
    S, L, n = 6, 3, 4
    M = rng.normal(size=(S, S))
    P = M @ M.T + 0.1 * np.eye(S)
    A, Q = rng.normal(size=(S, S)) * 0.4, np.diag(rng.uniform(0.1, 1.0, S))
    H = rng.normal(size=(L, S)) if seed % 2 else np.eye(L, S)
    R = np.diag(rng.uniform(0.1, 1.0, L))
    e = rng.normal(size=(n, L))
    t = torch.from_numpy
    np.testing.assert_allclose(np_predict_cov(P, A, Q), predict_cov(t(P), t(A), t(Q)).numpy(), rtol=1e-12, atol=1e-12)
    cov, gain, chol, logdet = update_cov_shared(P, H, R)
    expected_cov, expected_gain, expected_chol = update_covariance(t(P), t(H), t(R))
    np.testing.assert_allclose(cov, expected_cov.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gain, expected_gain.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chol, expected_chol.numpy(), rtol=1e-12, atol=1e-12)
    m = rng.normal(size=(n, S))
    z = e + m @ H.T
    correction, mahalanobis = correct_shared(e, gain, chol)
    expected_mean, innovation = update_mean(t(m), expected_gain, t(z), t(H))
    np.testing.assert_allclose(m + correction, expected_mean.numpy(), rtol=1e-12, atol=1e-12)
    ll = -0.5 * (mahalanobis + logdet + L * np.log(2 * np.pi))
    np.testing.assert_allclose(ll, innovation_log_likelihood(innovation, expected_chol, L).numpy(), rtol=1e-12)


def test_indefinite_innovation_covariance_gets_the_engines_error():
    with pytest.raises(NotPositiveDefiniteError, match="innovation covariance"):
        update_cov_shared(-np.eye(3), np.eye(2, 3), np.zeros((2, 2)))
