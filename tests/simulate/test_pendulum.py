"""The pendulum-video generator (RKN's benchmark): shapes, seeding, physics, rendering, noise.

What is pinned down:

* shapes and dtypes of every field; targets are (sin θ, cos θ) of the returned angles;
* a seed gives bit-identical data, different seeds different data, and the noise options do not
  change the dynamics;
* physics: with friction and no noise the energy ½ω² + c(1 − cos θ) never increases and decays
  by about exp(−f t) for small swings; without friction it is conserved; small swings have the
  period 2π/√c; the process noise adds velocity variance σ² per frame;
* rendering: the bar points down at θ = 0 and right at θ = π/2 and is drawn with constant ink;
* image noise: levels in [0, 1], the first frames clean, strongly correlated in time (more so
  with a larger noise_correlation), frames = (1 − w) x + w U(0, 1);
* bad arguments raise ValueError naming them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ldmfilter.simulate import (
    PendulumVideo,
    correlated_noise_levels,
    make_pendulum_video,
    render_pendulum,
    simulate_pendulum,
)

C = 3 * 9.81  # gravity constant of a unit rod about its end


@pytest.fixture(scope="module")
def small() -> PendulumVideo:
    return make_pendulum_video(16, T=40, seed=3)


def test_shapes_and_dtypes(small):
    assert small.frames.shape == small.clean_frames.shape == (16, 40, 24, 24)
    assert small.frames.dtype == small.clean_frames.dtype == np.float32
    assert small.angles.shape == small.velocities.shape == small.noise_level.shape == (16, 40)
    assert small.targets.shape == (16, 40, 2)
    assert small.flat_frames().shape == (16, 40, 576)
    assert small.n_sequences == 16 and small.n_steps == 40
    assert 0.0 <= small.frames.min() and small.frames.max() <= 1.0
    np.testing.assert_allclose(small.targets, np.stack([np.sin(small.angles), np.cos(small.angles)], -1))
    assert np.all((-math.pi <= small.angles) & (small.angles < math.pi))


def test_other_sizes():
    data = make_pendulum_video(2, T=5, size=32, shape="ball")
    assert data.frames.shape == (2, 5, 32, 32)


def test_seeded_and_deterministic(small):
    again = make_pendulum_video(16, T=40, seed=3)
    for name in ("frames", "clean_frames", "angles", "velocities", "noise_level"):
        np.testing.assert_array_equal(getattr(small, name), getattr(again, name))
    other = make_pendulum_video(16, T=40, seed=4)
    assert not np.allclose(other.angles, small.angles)
    quiet = make_pendulum_video(16, T=40, seed=3, image_noise=0.3, noise_correlation=0.5)
    np.testing.assert_array_equal(quiet.angles, small.angles)  # noise options leave the dynamics alone


def test_energy_decays_with_friction_and_no_noise():
    angles, velocities = simulate_pendulum(32, 200, rng=1, friction=0.1, process_noise=0.0)
    energy = 0.5 * velocities**2 + C * (1 - np.cos(angles))
    assert np.all(np.diff(energy, axis=1) <= 1e-6 * energy[:, :1])  # never increases
    assert np.all(energy[:, -1] < 0.75 * energy[:, 0])  # 10 time units of damping
    # small swings: E ∝ exp(−f t) on average over a period
    a, w = simulate_pendulum(1, 201, friction=0.1, process_noise=0.0, initial_angle=0.1)
    e = 0.5 * w**2 + C * (1 - np.cos(a))
    assert e[0, -1] / e[0, 0] == pytest.approx(math.exp(-0.1 * 200 * 0.05), rel=0.05)


def test_energy_conserved_without_friction():
    angles, velocities = simulate_pendulum(8, 100, rng=2, friction=0.0, process_noise=0.0)
    energy = 0.5 * velocities**2 + C * (1 - np.cos(angles))
    np.testing.assert_allclose(energy, np.broadcast_to(energy[:, :1], energy.shape), rtol=1e-3)


def test_small_swing_period():
    angles, _ = simulate_pendulum(1, 400, friction=0.0, process_noise=0.0, initial_angle=0.05, substeps=100)
    crossings = np.flatnonzero(np.diff(np.sign(angles[0])) > 0)  # upward zero crossings, one a period
    period = np.diff(crossings).mean() * 0.05
    assert period == pytest.approx(2 * math.pi / math.sqrt(C), rel=0.03)


def test_process_noise_adds_velocity_variance():
    _, calm = simulate_pendulum(4000, 2, rng=5, friction=0.0, process_noise=0.0, initial_angle=0.0)
    _, kicked = simulate_pendulum(4000, 2, rng=5, friction=0.0, process_noise=0.1, initial_angle=0.0)
    np.testing.assert_allclose(calm, 0.0, atol=1e-12)  # resting at the bottom stays there
    assert kicked[:, 1].std() == pytest.approx(0.1, rel=0.05)


def test_rendering_direction_and_ink():
    frames = render_pendulum(np.array([0.0, math.pi / 2, -math.pi / 2, math.pi]), size=24)
    rows, cols = np.indices((24, 24)) + 0.5 - 12
    centroid = lambda f: ((f * rows).sum() / f.sum(), (f * cols).sum() / f.sum())  # noqa: E731
    down, right, left, up = (centroid(f) for f in frames)
    assert down[0] > 3 and abs(down[1]) < 0.5
    assert right[1] > 3 and abs(right[0]) < 0.5
    assert left[1] < -3 and up[0] < -3
    many = render_pendulum(np.linspace(-math.pi, math.pi, 50, endpoint=False))
    ink = many.sum((1, 2))
    assert ink.std() < 0.05 * ink.mean()  # antialiased: the same amount of ink at every angle
    ball = render_pendulum(np.array([0.0]), shape="ball")[0]
    assert ball.max() == 1.0 and centroid(ball)[0] > 8


def test_noise_levels_are_time_correlated():
    levels = correlated_noise_levels(2000, 75, rng=0)
    assert levels.min() >= 0 and levels.max() <= 1
    np.testing.assert_array_equal(levels[:, :5], 0.0)
    assert (levels > 0.95).mean() > 0.1 and (levels < 0.05).mean() > 0.1  # clean and pure-noise stretches

    def lag1(x):
        x = x[:, 5:] - x[:, 5:].mean()
        return (x[:, 1:] * x[:, :-1]).mean() / (x * x).mean()

    assert lag1(levels) > 0.9
    assert lag1(correlated_noise_levels(2000, 75, rng=0, noise_correlation=0.0)) < lag1(levels) - 0.1
    constant = correlated_noise_levels(50, 20, rng=0, noise_correlation=1.0, first_clean=0)
    np.testing.assert_array_equal(constant, np.broadcast_to(constant[:, :1], constant.shape))
    np.testing.assert_array_equal(correlated_noise_levels(5, 10, image_noise=0.0), 0.0)
    np.testing.assert_allclose(correlated_noise_levels(5, 10, rng=1, image_noise=0.5),
                               0.5 * correlated_noise_levels(5, 10, rng=1))


def test_frames_mix_clean_and_uniform_noise(small):
    w = small.noise_level[..., None, None]
    residual = small.frames - (1 - w) * small.clean_frames  # = w ε with ε ~ U(0, 1)
    noisy = small.noise_level > 0.5
    eps = residual[noisy] / w[noisy]
    assert eps.min() >= -1e-5 and eps.max() <= 1 + 1e-5
    assert eps.mean() == pytest.approx(0.5, abs=0.01) and eps.var() == pytest.approx(1 / 12, rel=0.05)
    np.testing.assert_array_equal(small.frames[:, :5], small.clean_frames[:, :5])
    clean = make_pendulum_video(3, T=10, image_noise=0.0)
    assert clean.frames is clean.clean_frames


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_sequences": 0}, "n_sequences"),
        ({"T": 1}, "T"),
        ({"size": 2}, "size"),
        ({"friction": -0.1}, "friction"),
        ({"process_noise": math.nan}, "process_noise"),
        ({"image_noise": 1.5}, "image_noise"),
        ({"noise_correlation": -0.1}, "noise_correlation"),
        ({"shape": "square"}, "shape"),
        ({"seed": -1}, "seed"),
        ({"dt": 0.0}, "dt"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"n_sequences": 2, "T": 5} | kwargs
    with pytest.raises(ValueError, match=match):
        make_pendulum_video(**args)
