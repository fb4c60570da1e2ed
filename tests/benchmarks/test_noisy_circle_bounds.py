"""The Bayes bounds of the noisy-circle benchmark: the grid filter's pieces checked against simulation."""

import math

import numpy as np

from ldmfilter.simulate import make_dotmotion
from ldmfilter.simulate.render import render_blobs


def test_step_kernel_matches_simulated_steps(load_benchmark):
    bounds = load_benchmark("noisy_circle_bounds")
    size = 72
    kernel = bounds.step_kernel(size)
    rng = np.random.default_rng(0)
    p = np.array([1.0, 0.0]) @ np.array([[math.cos(bounds.OMEGA), math.sin(bounds.OMEGA)],
                                        [-math.sin(bounds.OMEGA), math.cos(bounds.OMEGA)]])
    steps = p + math.sqrt(bounds.STEP_VAR) * rng.standard_normal((400_000, 2))
    angles = np.mod(np.arctan2(steps[:, 1], steps[:, 0]), 2 * math.pi)
    index = np.rint(angles / (2 * math.pi) * size).astype(int) % size
    empirical = np.bincount(index, minlength=size) / len(index)
    assert math.isclose(kernel.sum(), 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(kernel, empirical, atol=2e-3)
    assert np.argmax(kernel) == round(bounds.OMEGA / (2 * math.pi) * size)


def test_clean_frames_pin_the_angle_to_the_grid(load_benchmark):
    bounds = load_benchmark("noisy_circle_bounds")
    grid = bounds.angle_grid(720)
    angles = np.array([[0.0, 0.3, 0.61], [2.0, 2.33, 2.64]])
    positions = np.stack([np.cos(angles), np.sin(angles)], -1)
    frames = render_blobs(positions).reshape(2, 3, -1)
    zero = np.zeros((2, 3))
    step = 2 * math.pi / 720
    for estimate in (bounds.single_frame_posterior(frames, zero, grid, np.full(720, 1 / 720))[0],
                     bounds.causal_posterior_mean(frames, zero, grid)):
        np.testing.assert_allclose(estimate[:, 1:], positions[:, 1:], atol=step)


def test_causal_filter_beats_single_frames_on_noisy_data(load_benchmark):
    bounds = load_benchmark("noisy_circle_bounds")
    data = make_dotmotion("noisy_circle", 20, T=40, seed=3)
    frames = data.frames.reshape(20, 40, -1)
    grid = bounds.angle_grid(360)
    prior = bounds.pooled_angle_prior(grid, 200, np.random.default_rng(0))
    error = lambda estimate: float(((estimate - data.target) ** 2).mean())  # noqa: E731
    single = error(bounds.single_frame_posterior(frames, data.noise_variance, grid, prior)[0])
    causal = error(bounds.causal_posterior_mean(frames, data.noise_variance, grid))
    assert causal < 0.5 * single


def test_quick_report_lists_every_bound(load_benchmark):
    text = load_benchmark("noisy_circle_bounds").main(["--quick", "--seeds", "0", "--no-write"])
    row = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    values = [float(cell) for cell in row.strip("|").split("|")[1:-1]]
    raw, single, kalman, causal = values[:4]
    assert len(values) == 8 and raw < single < causal <= 1.0 and single < kalman


def test_single_frame_variance_is_the_posterior_spread(load_benchmark):
    """Clean frames: variance near 0; pure-noise-level frames: a spread posterior, so a large variance."""
    bounds = load_benchmark("noisy_circle_bounds")
    grid = bounds.angle_grid(720)
    data = make_dotmotion("noisy_circle", 4, T=30, seed=5)
    frames = data.frames.reshape(4, 30, -1)
    mean, variance = bounds.single_frame_posterior(frames, data.noise_variance, grid, np.full(720, 1 / 720))
    clean = data.noise_variance == 0
    assert variance[clean].max() < 1e-4 and variance[~clean].mean() > 10 * variance[clean].mean()
    spread = (((data.target - mean) ** 2).sum(-1) / 2).mean()
    assert 0.3 < spread / variance.mean() < 3.0  # the variance is on the scale of the squared error


def test_kalman_on_exact_single_frames_tracks_the_path(load_benchmark):
    bounds = load_benchmark("noisy_circle_bounds")
    data = make_dotmotion("noisy_circle", 3, T=50, seed=2)
    estimate = bounds.kalman_on_single_frames(data.target, np.zeros(data.target.shape[:2]))
    assert np.abs(estimate - data.target).max() < 0.05
