"""The Bayes bounds of the wobbly benchmark: each estimator checked where the answer is known."""

import math

import numpy as np
import pytest
from scipy import stats

from ldmfilter.simulate.motions import rk4_step, wobbly, wobbly_velocity
from ldmfilter.simulate.render import pixel_coordinates


def test_sides_follow_the_renderers_clamp(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    x = np.linspace(-4.0, 4.0, 801)
    positions = np.stack([x, np.zeros_like(x)], -1)
    row, _ = pixel_coordinates(positions)
    clamped = (row <= 0.0) | (row >= 9.0)
    assert np.array_equal(bounds.axis_sides(positions)[:, 0] != bounds.SEEN, clamped)


def test_single_frame_mean_keeps_seen_axes_and_averages_clamped_ones(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    reference = np.array([[3.0, 0.0], [5.0, 0.01], [-4.0, 1.0], [0.5, 0.5], [4.0, 2.5], [6.0, 3.0]])
    positions = np.array([[0.2, -0.7], [7.0, 0.02], [2.9, 2.8], [-3.5, 1.01]])
    estimate = bounds.single_frame_posterior_mean(reference, positions)
    np.testing.assert_array_equal(estimate[0], positions[0])
    assert estimate[1, 0] == 4.0 and estimate[1, 1] == positions[1, 1]  # mean of 3 and 5 (same bin of y)
    np.testing.assert_array_equal(estimate[2], [5.0, 2.75])  # both axes clamped above
    assert estimate[3, 0] == -4.0


def test_single_frame_mean_needs_a_reference_in_every_cell(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    with pytest.raises(ValueError, match="no reference point"):
        bounds.single_frame_posterior_mean(np.array([[3.0, 0.0]]), np.array([[-5.0, 0.0]]))


def test_particle_filter_is_exact_on_seen_paths(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    paths = wobbly(200, T=6, rng=3)
    seen = (bounds.axis_sides(paths) == bounds.SEEN).all((1, 2))
    estimate = bounds.causal_posterior_mean(paths[seen], 50, np.random.default_rng(0))
    np.testing.assert_allclose(estimate, paths[seen], atol=1e-12)


def test_particle_filter_gives_the_truncated_normal_mean_after_one_clamped_step(load_benchmark):
    """From a seen start, one step clamped above on x: E[x_1] is the mean of N(μ, 0.1) beyond 2.4."""
    bounds = load_benchmark("wobbly_bounds")
    start = np.array([[[2.0, 0.3]]])
    mean = rk4_step(wobbly_velocity, start[:, 0], bounds.DT)[0]
    path = np.concatenate([start, [[[mean[0] + 1.0, mean[1] + 0.05]]]], 1)
    estimate = bounds.causal_posterior_mean(path, 200_000, np.random.default_rng(1))
    sd = math.sqrt(0.1)
    exact = stats.truncnorm((bounds.SEEN_HIGH - mean[0]) / sd, np.inf, loc=mean[0], scale=sd).mean()
    assert abs(estimate[0, 1, 0] - exact) < 3e-3
    assert math.isclose(estimate[0, 1, 1], path[0, 1, 1], rel_tol=1e-12)


def test_rotation_field_leaves_out_only_the_wobble(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    p = np.array([[1.5, -0.4], [0.2, 2.0]])
    np.testing.assert_allclose(bounds.rotation_velocity(p), np.stack([-p[:, 1], p[:, 0]], -1), atol=1e-12)
    step = rk4_step(bounds.rotation_velocity, np.eye(2), bounds.DT).T  # RK4 of a rotation: ≈ rotation by DT
    angle = bounds.DT
    np.testing.assert_allclose(step, [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], atol=1e-4)


def test_ideal_encoder_kalman_filter_follows_seen_axes_and_predicts_clamped_ones(load_benchmark):
    bounds = load_benchmark("wobbly_bounds")
    paths = wobbly(200, T=6, rng=3)
    seen = (bounds.axis_sides(paths) == bounds.SEEN).all((1, 2))
    exact = bounds.ideal_encoder_kalman_mean(paths[seen], 0.0, bounds.IGNORED)  # seen with no noise: the path itself
    np.testing.assert_allclose(exact, paths[seen], atol=1e-12)
    # one step clamped above on x, y seen exactly: the state noise is isotropic, so x keeps its prediction
    start = np.array([[0.5, 0.3]])
    predicted = rk4_step(bounds.rotation_velocity, start, bounds.DT)[0]
    path = np.stack([start, [[3.5, predicted[1] + 0.2]]], 1)
    estimate = bounds.ideal_encoder_kalman_mean(path, 0.0, bounds.IGNORED)
    np.testing.assert_allclose(estimate[0, 1], [predicted[0], predicted[1] + 0.2], atol=1e-6)
    # a fixed R pulls x towards the clamped value 2.4 instead, by the gain 0.1 / (0.1 + R)
    pulled = bounds.ideal_encoder_kalman_mean(path, 0.1, 0.1)
    np.testing.assert_allclose(pulled[0, 1, 0], predicted[0] + 0.5 * (bounds.SEEN_HIGH - predicted[0]), atol=1e-12)


def test_best_fixed_r_is_chosen_on_the_training_paths(load_benchmark, monkeypatch):
    bounds = load_benchmark("wobbly_bounds")
    train, test = wobbly(40, T=30, rng=4), wobbly(10, T=30, rng=5)
    chosen = []
    original = bounds.ideal_encoder_kalman_mean
    monkeypatch.setattr(bounds, "ideal_encoder_kalman_mean",
                        lambda positions, seen, clamped: chosen.append((positions is test, seen)) or original(positions, seen, clamped))
    f_train, f_test = bounds.best_fixed_r(train, test)
    assert [variance for is_test, variance in chosen if is_test] == [chosen[-1][1]]  # the test paths: only the final filter
    assert len(chosen) == len(bounds.FIXED_R_GRID) + 2
    fits = {v: original(train, v, v) for v in bounds.FIXED_R_GRID}
    scores = {v: bounds.metrics.linear_probe_r2(f, train, f, train) for v, f in fits.items()}
    assert chosen[-1][1] == max(scores, key=scores.get)
    np.testing.assert_array_equal(f_test, original(test, chosen[-1][1], chosen[-1][1]))


def test_bounds_order_on_simulated_paths(load_benchmark):
    """More information, smaller error: clamped ≥ single-frame mean ≥ causal filter (mean squared error)."""
    bounds = load_benchmark("wobbly_bounds")
    reference, paths = wobbly(2000, T=40, rng=1), wobbly(60, T=40, rng=2)
    error = lambda estimate: float(((estimate - paths) ** 2).mean())  # noqa: E731
    clamped = error(np.clip(paths, bounds.SEEN_LOW, bounds.SEEN_HIGH))
    single = error(bounds.single_frame_posterior_mean(reference, paths))
    causal = error(bounds.causal_posterior_mean(paths, 300, np.random.default_rng(0)))
    assert causal < 0.5 * single < 0.5 * clamped


def test_quick_report_lists_every_bound(load_benchmark):
    text = load_benchmark("wobbly_bounds").main(["--quick", "--seeds", "0", "--no-write"])
    rows = [line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| mean |")]
    assert len(rows) == 2
    values = [float(cell) for cell in rows[0].strip("|").split("|")[1:-1]]
    assert len(values) == 8 and all(0.0 < value <= 1.0 for value in values)
    outside, raw, clamped, single, causal, rotation, kalman_fixed, kalman_per_axis = values
    assert clamped < single < causal
    assert kalman_fixed < kalman_per_axis <= causal + 0.02
