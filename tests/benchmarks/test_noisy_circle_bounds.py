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
    for estimate in (bounds.single_frame_posterior_mean(frames, zero, grid, np.full(720, 1 / 720)),
                     bounds.causal_posterior_mean(frames, zero, grid)):
        np.testing.assert_allclose(estimate[:, 1:], positions[:, 1:], atol=step)


def test_causal_filter_beats_single_frames_on_noisy_data(load_benchmark):
    bounds = load_benchmark("noisy_circle_bounds")
    data = make_dotmotion("noisy_circle", 20, T=40, seed=3)
    frames = data.frames.reshape(20, 40, -1)
    grid = bounds.angle_grid(360)
    prior = bounds.pooled_angle_prior(grid, 200, np.random.default_rng(0))
    error = lambda estimate: float(((estimate - data.target) ** 2).mean())  # noqa: E731
    single = error(bounds.single_frame_posterior_mean(frames, data.noise_variance, grid, prior))
    causal = error(bounds.causal_posterior_mean(frames, data.noise_variance, grid))
    assert causal < 0.5 * single


def test_quick_report_lists_every_bound(load_benchmark):
    text = load_benchmark("noisy_circle_bounds").main(["--quick", "--seeds", "0", "--no-write"])
    row = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    values = [float(cell) for cell in row.strip("|").split("|")[1:-1]]
    raw, single, causal = values[:3]
    assert len(values) == 6 and raw < single < causal <= 1.0
