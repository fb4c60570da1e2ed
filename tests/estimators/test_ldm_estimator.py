"""``LDMFilter`` end to end on tiny DotMotion figure-8 videos: training signal, output shapes,
no-Trainer inference, reproducibility, missing frames, result objects and input checks."""

from __future__ import annotations

from statistics import NormalDist

import lightning
import numpy as np
import pytest
import torch

from ldmfilter.estimators import LDMFilter
from ldmfilter.results import FilterResult, ForecastResult, GaussianMoments
from ldmfilter.simulate import make_dotmotion, resample_noise
from ldmfilter.training import linear_probe_r2

N, T, S, L = 48, 30, 10, 5


@pytest.fixture(scope="module")
def data():
    train = make_dotmotion("figure8", N, T=T, seed=0)
    test = make_dotmotion("figure8", 8, T=T, seed=1)
    return train, test


def tiny(**kwargs) -> LDMFilter:
    options = dict(state_dim=4, latent_dim=2, hidden=(16,), max_epochs=1, verbose=False)
    options.update(kwargs)
    return LDMFilter(**options)


@pytest.fixture(scope="module")
def trained(data):
    """The paper's architecture (S=10, L=5, MLP 100→100→5), 4 short epochs, with a probe."""
    train, test = data
    X = train.flat_frames()
    probe = (X, train.positions, test.flat_frames(), test.positions)
    model = LDMFilter(max_epochs=4, learning_rate=0.001, verbose=False, random_state=0).fit(X, probe=probe)
    untrained = LDMFilter(max_epochs=1, learning_rate=0.0, weight_decay=0.0, verbose=False, random_state=0)
    untrained.fit(X, probe=probe)
    return model, untrained


# ------------------------------------------------------------------------------ training signal


def test_loss_decreases(trained):
    model, _ = trained
    losses = np.asarray(model.loss_history_)
    assert len(losses) == 4 * N // 8
    assert np.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean() - 50  # about 184 → 77


def test_probe_r2_rises(trained, data):
    model, untrained = trained
    history = model.probe_history_
    assert [h[0] for h in history] == [0, 1, 2, 3]
    assert [h[1] for h in history] == [6, 12, 18, 24]
    seconds = [h[2] for h in history]
    assert seconds == sorted(seconds)
    first, last = history[0][3], history[-1][3]
    (before,) = [h[3] for h in untrained.probe_history_]  # learning rate 0: the initial model
    assert np.isfinite([first, last, before]).all()
    # seed 0: about 0.50 → 0.58, untrained 0.39 (seeds 0–3 all rise by ≥ 0.06 and beat it by ≥ 0.2)
    assert last > first + 0.02
    assert last > before + 0.1
    # and the probe history is what an external probe on the filtered means gives
    train, test = data
    r2 = linear_probe_r2(
        torch.as_tensor(model.filter(train.flat_frames()).mean), torch.as_tensor(train.positions),
        torch.as_tensor(model.filter(test.flat_frames()).mean), torch.as_tensor(test.positions),
    )
    assert r2 == pytest.approx(last, abs=1e-4)


def test_untrained_model_is_unchanged_by_zero_learning_rate(trained, data):
    _, untrained = trained
    assert untrained.probe_history_[0][0] == 0
    again = LDMFilter(max_epochs=1, learning_rate=0.0, weight_decay=0.0, verbose=False, random_state=0)
    again.fit(data[0].flat_frames()[:8])
    for (name, p), q in zip(untrained.model_.named_parameters(), again.model_.parameters()):
        assert torch.equal(p, q), name


# ------------------------------------------------------------------------------ outputs


def test_output_shapes(trained, data):
    model, _ = trained
    X = data[1].flat_frames()
    n = X.shape[0]
    f = model.filter(X)
    assert isinstance(f, FilterResult) and isinstance(f.state, GaussianMoments)
    assert f.observations.mean.shape == f.observations.var.shape == (n, T, 100) and f.observations.cov is None
    assert np.all(f.observed_fraction == 1)
    assert f.mean.shape == (n, T, S) and f.cov.shape == (n, T, S, S) and f.log_likelihood.shape == (n, T)
    for a in (f.mean, f.cov, f.log_likelihood):
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(f.cov, np.swapaxes(f.cov, -1, -2), atol=1e-6)
    assert np.all(np.linalg.eigvalsh(f.cov.astype(np.float64)) > 0)
    s = model.smooth(X)
    assert isinstance(s, FilterResult) and s.log_likelihood is None
    assert s.mean.shape == (n, T, S) and s.cov.shape == (n, T, S, S)
    np.testing.assert_allclose(s.mean[:, -1], f.mean[:, -1], atol=1e-5)  # the last step agrees
    assert np.all(np.diagonal(s.cov, axis1=-2, axis2=-1) <= np.diagonal(f.cov, axis1=-2, axis2=-1) + 1e-5)
    fc = model.forecast(X, 7)
    assert isinstance(fc, ForecastResult)
    assert fc.mean.shape == (n, 7, S) and fc.cov.shape == (n, 7, S, S)
    # one forecast step is one predict from the last filtered belief
    dyn = model.model_.dynamics
    A, c, Q = (t.detach().numpy() for t in (dyn.transition_matrix(), dyn.transition_offset(), dyn.transition_cov()))
    np.testing.assert_allclose(fc.mean[:, 0], f.mean[:, -1] @ A.T + c, atol=1e-5)
    np.testing.assert_allclose(fc.cov[:, 0], A @ f.cov[:, -1] @ A.T + Q, atol=1e-5)
    z = model.transform(X)
    assert isinstance(z, np.ndarray) and z.shape == (n, T, L)
    assert np.isfinite(model.score(X))


def test_filter_needs_no_trainer_and_no_grad(trained, data, monkeypatch):
    model, _ = trained

    def no_trainer(*args, **kwargs):
        raise AssertionError("filter must not build a Trainer")

    monkeypatch.setattr(lightning, "Trainer", no_trainer)
    before = {k: v.clone() for k, v in model.model_.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.model_.parameters()]
    grad_modes = []
    hook = model.model_.encoder.register_forward_hook(lambda *a: grad_modes.append(torch.is_grad_enabled()))
    try:
        with torch.enable_grad():
            X = data[1].flat_frames()
            model.filter(X)
            model.smooth(X)
            model.forecast(X, 3)
            model.transform(X)
            model.score(X)
    finally:
        hook.remove()
    assert grad_modes and not any(grad_modes)
    after = model.model_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # no backward pass: gradients (left over from training, if any) are untouched
    for p, g in zip(model.model_.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert not model.model_.training


def test_filter_one_series_equals_batch(trained, data):
    model, _ = trained
    X = data[1].flat_frames()
    batch = model.filter(X)
    for i in (0, 5):
        one = model.filter(X[i : i + 1])
        np.testing.assert_allclose(one.mean[0], batch.mean[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one.cov[0], batch.cov[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one.log_likelihood[0], batch.log_likelihood[i], rtol=1e-5, atol=1e-4)


def test_missing_frames_in_filter(trained, data):
    model, _ = trained
    X = data[1].flat_frames().copy()
    missing = np.zeros(X.shape[:2], dtype=bool)
    missing[0, 3] = missing[0, 4] = missing[2, 0] = missing[5, -1] = True
    X[missing] = np.nan
    f = model.filter(X)
    assert np.all(f.log_likelihood[missing] == 0)
    assert np.all(f.log_likelihood[~missing] != 0)
    assert np.isfinite(f.mean).all() and np.isfinite(f.cov).all()
    z = model.transform(X)
    assert np.isnan(z[missing]).all() and np.isfinite(z[~missing]).all()
    s = model.smooth(X)
    assert np.isfinite(s.mean).all()
    assert np.isfinite(model.forecast(X, 2).mean).all()
    assert np.isfinite(model.score(X))
    # a missing frame's filtered variance is larger than when it was observed
    full = model.filter(data[1].flat_frames())
    assert np.trace(f.cov[0, 4]) > np.trace(full.cov[0, 4])


def test_result_interval_and_quantiles_closed_form(trained, data):
    model, _ = trained
    f = model.filter(data[1].flat_frames()[:2])
    std = np.sqrt(np.diagonal(f.cov, axis1=-2, axis2=-1))
    np.testing.assert_allclose(f.std, std, rtol=1e-6)
    z90 = NormalDist().inv_cdf(0.95)
    assert z90 == pytest.approx(1.6448536269514722)
    lower, upper = f.interval(0.9)
    assert lower.shape == upper.shape == f.mean.shape
    np.testing.assert_allclose(lower, f.mean - z90 * std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upper, f.mean + z90 * std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((lower + upper) / 2, f.mean, atol=1e-5)
    q = f.quantiles([0.05, 0.5, 0.95])
    assert q.shape == (3,) + f.mean.shape
    np.testing.assert_allclose(q[1], f.mean, atol=1e-6)
    np.testing.assert_allclose(q[0], lower, atol=1e-6)
    np.testing.assert_allclose(q[2], upper, atol=1e-6)
    single = f.quantiles(0.8)
    assert single.shape == f.mean.shape
    np.testing.assert_allclose(single, f.mean + NormalDist().inv_cdf(0.8) * std, rtol=1e-5, atol=1e-6)
    # a 1-D toy with known numbers
    g = GaussianMoments(np.array([[1.0]]), np.array([[[4.0]]]))
    lo, hi = g.interval(0.9)
    assert lo[0, 0] == pytest.approx(1 - 2 * z90) and hi[0, 0] == pytest.approx(1 + 2 * z90)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="coverage"):
            f.interval(bad)
    for bad in (0.0, 1.0, [0.5, 1.2], [[0.5]]):
        with pytest.raises(ValueError, match="q"):
            f.quantiles(bad)


# ------------------------------------------------------------------------------ reproducibility


def test_seeded_fit_is_reproducible(data):
    X = data[0].flat_frames()[:16]
    a = tiny(max_epochs=2, random_state=3).fit(X).filter(X)
    b = tiny(max_epochs=2, random_state=3).fit(X).filter(X)
    c = tiny(max_epochs=2, random_state=4).fit(X).filter(X)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.cov, b.cov)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)
    assert not np.allclose(a.mean, c.mean)


def test_seeded_knn_fit_is_reproducible(data):
    X = data[0].flat_frames()[:16]
    a = tiny(objective="knn", random_state=1).fit(X)
    b = tiny(objective="knn", random_state=1).fit(X)
    assert a.loss_history_ == b.loss_history_
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


# ------------------------------------------------------------------------------ variants


@pytest.mark.parametrize("objective", ["knn", "kde", "logdet", "stopgrad"])
def test_objectives_fit_one_epoch(data, objective):
    X = data[0].flat_frames()[:16]
    model = tiny(objective=objective).fit(X)
    assert len(model.loss_history_) == 2 and np.isfinite(model.loss_history_).all()
    assert np.isfinite(model.filter(X).mean).all()


@pytest.mark.parametrize("noise", ["input", "input_full"])
def test_input_dependent_noise_fits(data, noise):
    X = data[0].flat_frames()[:16]
    model = tiny(noise=noise).fit(X)
    assert np.isfinite(model.loss_history_).all()
    f = model.filter(X)
    assert f.mean.shape == (16, T, 4) and np.isfinite(f.cov).all()
    # per-series covariances now differ (R_t depends on the frame)
    assert not np.allclose(f.cov[0], f.cov[1])
    variance = model.noise_variance(X)  # the diagonal of R_t, positive
    assert variance.shape == (16, T, 2) and np.all(variance > 0)


def test_input_dependent_noise_tracks_the_frames_noise_level():
    """Noisy circle (METHOD.md §5): the learned R_t rises with each frame's pixel-noise variance.
    The head is tied to the shared scale exp(s); an absolute head ends with R_t near zero for
    every frame, uncorrelated or anti-correlated with the noise (benchmarks/results/paper.md)."""
    data = make_dotmotion("noisy_circle", 32, T=50, seed=0)
    model = LDMFilter(state_dim=2, latent_dim=2, noise="input", max_epochs=100, learning_rate=4 * 0.005 * 8 / 256,
                      verbose=False)
    model.fit(data.frames, epoch_data=lambda epoch: resample_noise(data, np.random.default_rng([0, epoch])))
    variance = model.noise_variance(data.frames).mean(-1)
    assert np.corrcoef(variance.ravel(), data.noise_variance.ravel())[0, 1] > 0.6
    clean, noisy = data.noise_variance == 0, data.noise_variance > 0.6
    assert np.median(variance[noisy]) > 2 * np.median(variance[clean])


def test_learned_noise_fits(data):
    X = data[0].flat_frames()[:16]
    model = tiny(noise="learned").fit(X)
    assert np.isfinite(model.filter(X).mean).all()


def test_conv_encoder_fits_on_frames(data):
    X = data[0].frames[:8]  # (8, T, 10, 10)
    model = tiny(encoder="conv").fit(X)
    assert np.isfinite(model.loss_history_).all()
    assert model.obs_shape_ == (10, 10)
    f = model.filter(X)
    assert f.mean.shape == (8, T, 4)
    assert model.transform(X).shape == (8, T, 2)
    with pytest.raises(ValueError, match="shape"):
        model.filter(X.reshape(8, T, 100))


def test_window_and_float64(data):
    X = data[0].flat_frames()[:8]
    model = tiny(window=10, dtype="float64").fit(X)
    assert len(model.loss_history_) == 3  # 8 series × 3 windows / batch 8
    f = model.filter(X)
    assert f.mean.dtype == np.float64 and f.mean.shape == (8, T, 4)


def test_rnn_predictor(data):
    X = data[0].flat_frames()[:16]
    model = tiny(predictor="rnn", objective="knn").fit(X)
    assert np.isfinite(model.loss_history_).all()
    z = model.transform(X)
    assert z.shape == (16, T, 2) and np.isfinite(z).all()
    for call in (lambda: model.filter(X), lambda: model.smooth(X), lambda: model.forecast(X, 2)):
        with pytest.raises(ValueError, match="kalman"):
            call()


def test_rnn_predictor_allows_latent_dim_above_state_dim(data):
    X = data[0].flat_frames()[:8]
    model = tiny(predictor="rnn", objective="logdet", state_dim=1, latent_dim=3).fit(X)
    assert model.transform(X).shape == (8, T, 3)


# ------------------------------------------------------------------------------ bad input


def test_filter_before_fit():
    model = LDMFilter()
    X = np.zeros((1, 5, 3), dtype=np.float32)
    for call in (model.filter, model.smooth, model.transform, model.score, lambda x: model.forecast(x, 2)):
        with pytest.raises(RuntimeError, match="fit"):
            call(X)


@pytest.fixture(scope="module")
def fitted(data):
    X = data[0].flat_frames()[:8]
    return tiny().fit(X)


def test_bad_input_errors(fitted):
    good = np.zeros((2, 5, 100), dtype=np.float32)
    assert fitted.filter(good).mean.shape == (2, 5, 4)
    assert fitted.filter(np.zeros((5, 100), dtype=np.float32)).mean.shape == (5, 4)  # one series (T, D)
    with pytest.raises(ValueError, match="shape"):
        fitted.filter(np.zeros(100, dtype=np.float32))  # one univariate series
    with pytest.raises(ValueError, match=r"\(100,\)"):
        fitted.filter(np.zeros((2, 5, 99), dtype=np.float32))  # frames of another shape
    with pytest.raises(ValueError, match=r"\(100,\)"):
        fitted.filter(np.zeros((2, 5, 10, 10), dtype=np.float32))
    partly = good.copy()
    partly[1, 2, :50] = np.nan  # missing pixels: imputed by their training mean, and reported
    result = fitted.filter(partly)
    assert result.observed_fraction[1, 2] == 0.5 and np.isfinite(result.mean).all()
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        fitted.filter(inf)
    with pytest.raises(ValueError, match="time steps"):
        fitted.filter(good[:, :0])
    for dtype in (bool, np.complex64, object):
        with pytest.raises(TypeError, match="real numbers"):
            fitted.filter(good.astype(dtype))
    with pytest.raises(ValueError, match="no observed value"):
        fitted.filter(np.full((1, 4, 100), np.nan, dtype=np.float32))
    # integers are fine
    assert np.isfinite(fitted.filter(np.zeros((1, 3, 100), dtype=np.int64)).mean).all()


@pytest.mark.parametrize(
    "X,error,match",
    [
        (np.float64(1.0), ValueError, "scalar"),
        (np.zeros((2, 1, 100)), ValueError, "time steps"),
        (np.zeros((2, 5, 100), dtype=bool), TypeError, "real numbers"),
        (np.zeros((2, 5, 100), dtype=complex), TypeError, "real numbers"),
        (np.full((2, 5, 100), "a", dtype=object), TypeError, "real numbers"),
    ],
)
def test_bad_input_errors_at_fit(X, error, match):
    with pytest.raises(error, match=match):
        tiny().fit(X)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(encoder="foo"), "encoder"),
        (dict(objective="foo"), "objective"),
        (dict(predictor="foo"), "predictor"),
        (dict(noise="foo"), "noise"),
        (dict(dtype="float16"), "dtype"),
        (dict(state_dim=2, latent_dim=3), "latent_dim"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(latent_dim=2.5), "latent_dim"),
        (dict(normalize="foo"), "normalize"),
        (dict(schedule="foo"), "schedule"),
        (dict(window=1), "window"),
    ],
)
def test_bad_constructor_params_raise_at_fit(params, match):
    X = np.random.default_rng(0).normal(size=(8, 6, 5)).astype(np.float32)
    model = tiny(**params)  # the constructor only stores them
    with pytest.raises(ValueError, match=match):
        model.fit(X)


def test_probe_with_other_frame_shape_raises(data):
    train, test = data
    X = train.flat_frames()[:8]
    with pytest.raises(ValueError, match="probe"):
        tiny().fit(X, probe=(train.frames[:8], train.positions[:8], test.flat_frames(), test.positions))


def test_fit_with_missing_frames(data):
    X = data[0].flat_frames()[:16].copy()
    X[0, 3] = X[5, 0] = X[9, -1] = np.nan
    model = tiny(max_epochs=2).fit(X)
    assert np.isfinite(model.loss_history_).all()
    f = model.filter(X)
    assert f.log_likelihood[0, 3] == f.log_likelihood[5, 0] == f.log_likelihood[9, -1] == 0
    assert np.isfinite(f.mean).all()


def test_probe_with_missing_frames_and_input_noise(data):
    train, test = data
    X = train.flat_frames()[:16].copy()
    X[0, 3] = np.nan
    model = tiny(noise="input").fit(X, probe=(X, train.positions[:16], test.flat_frames(), test.positions))
    assert np.isfinite(model.probe_history_[0][3])


def test_cpu_settings_are_restored_after_fit_and_filter(data):
    """fit/filter run on num_threads threads with denormals flushed, then restore torch's state."""
    train, _ = data
    previous = torch.get_num_threads()
    model = tiny(max_epochs=1, num_threads=1).fit(train.flat_frames()[:8])
    model.filter(train.flat_frames()[:2])
    assert torch.get_num_threads() == previous
    assert (torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() != 0.0  # denormals are back
