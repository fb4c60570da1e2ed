"""``LDMFilter(observation="mlp" | "clamp")``: training moves the map, the user surface works on it, files
keep it, and bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmfilter import LDMFilter, load
from ldmfilter.simulate import make_dotmotion


@pytest.fixture(scope="module")
def clamped():
    """Wobbly frames: the blob is clamped to the image border on many frames."""
    data = make_dotmotion("wobbly", 12, seed=0)
    return data.frames[:, :30], data.target[:, :30]


@pytest.fixture(scope="module", params=[("linear", "mlp"), ("mlp", "mlp"), ("mlp", "clamp")], ids=lambda p: "-".join(p))
def fitted(request, clamped):
    frames, positions = clamped
    dynamics, observation = request.param
    model = LDMFilter(state_dim=4, latent_dim=2, objective="knn", dynamics=dynamics, observation=observation,
                      observation_hidden=(16,), max_epochs=3, verbose=False, dtype="float64")
    return model.fit(frames, targets=positions)


def moved_parameter(model) -> torch.nn.Parameter:
    """The map's parameter that starts at a known value: the MLP's output weights (zero) or the clamp's low bounds (−1)."""
    observation = model.model_.observation
    return observation.residual[-1].weight if model.observation == "mlp" else observation.low


def initial_value(model) -> float:
    return 0.0 if model.observation == "mlp" else -1.0


def test_training_moves_the_observation_map(fitted):
    assert not torch.all(moved_parameter(fitted) == initial_value(fitted))
    assert np.isfinite(fitted.loss_history_).all()


def test_filter_smooth_forecast_and_score(fitted, clamped):
    frames, _ = clamped
    filtered, smoothed = fitted.filter(frames[:3]), fitted.smooth(frames[:3])
    forecast = fitted.forecast(frames[:3], 6)
    assert filtered.mean.shape == smoothed.mean.shape == (3, 30, 4)
    assert forecast.mean.shape == (3, 6, 4)
    assert filtered.targets.mean.shape == (3, 30, 2)
    for values in (filtered.mean, filtered.cov, smoothed.mean, forecast.cov):
        assert np.isfinite(values).all()
    # the smoother ends where the filter ends and moves the earlier steps
    np.testing.assert_allclose(smoothed.mean[:, -1], filtered.mean[:, -1], rtol=1e-9, atol=1e-9)
    assert not np.allclose(smoothed.mean[:, 0], filtered.mean[:, 0])
    assert np.isfinite(fitted.score(frames[:3]))


def test_the_filter_uses_the_observation_map(fitted, clamped):
    """Resetting the fitted map's parameter to its start changes the beliefs: the filter does go through it."""
    frames, _ = clamped
    before = fitted.filter(frames[:2]).mean
    parameter = moved_parameter(fitted)
    saved = parameter.detach().clone()
    try:
        with torch.no_grad():
            parameter.fill_(initial_value(fitted))
        assert not np.allclose(fitted.filter(frames[:2]).mean, before)
    finally:
        with torch.no_grad():
            parameter.copy_(saved)


def test_save_and_load_keep_the_map(fitted, clamped, tmp_path):
    frames, _ = clamped
    path = fitted.save(tmp_path / "model.ldm")
    loaded = load(path)
    assert loaded.observation == fitted.observation and loaded.observation_hidden == (16,)
    torch.testing.assert_close(moved_parameter(loaded), moved_parameter(fitted), rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.filter(frames[:2]).mean, fitted.filter(frames[:2]).mean)


def test_stream_refuses_a_nonlinear_map(fitted):
    with pytest.raises(ValueError, match=f"observation='{fitted.observation}'"):
        fitted.stream()


@pytest.mark.parametrize("bad,match", [
    ({"observation": "conv"}, "observation must be one of"),
    ({"observation_hidden": ()}, "observation_hidden"),
    ({"observation_hidden": (0,)}, "observation_hidden"),
    ({"observation": "mlp", "predictor": "rnn"}, "needs the Kalman predictor"),
    ({"lr_multipliers": {"observations": 1.0}}, "unknown groups"),
])
def test_bad_settings_are_refused(bad, match, clamped):
    frames, _ = clamped
    with pytest.raises(ValueError, match=match):
        LDMFilter(verbose=False, **bad).fit(frames[:2, :5])


@pytest.mark.parametrize("observation", ["mlp", "clamp"])
def test_the_observation_group_takes_its_learning_rate(observation, clamped):
    """lr_multipliers={'observation': 0} freezes the map (Adam's weight decay scales with the rate too)."""
    frames, _ = clamped
    options = dict(state_dim=4, latent_dim=2, observation=observation, verbose=False)
    model = LDMFilter(objective="knn", max_epochs=1, lr_multipliers={"observation": 0.0}, **options).fit(frames[:8])
    fresh = LDMFilter(**options)._build_model(frames.shape[2:], torch.nn.Identity()).observation
    for (name, trained), start in zip(model.model_.observation.named_parameters(), fresh.parameters()):
        torch.testing.assert_close(trained, start.to(trained.dtype), rtol=0, atol=0, msg=name)
