"""DotMotion generators (METHOD.md §5): paths, rendering, swirl, pixel noise, the data set.

What is pinned down:

* every path follows its formula (figure-8, square with 20 frames a loop and its phase target,
  noisy circle on the unit circle, one RK4 step of the wobbly field plus noise of variance 0.1);
* the blob peaks at ((x+3)·H/6, (y+3)·W/6), clamped to the image;
* the swirl equals an independent bilinear/mirror warp (scipy.ndimage) and has the expected
  properties (identity at strength 0, the centre stays put, constants stay constant);
* pixel noise has the requested variance; noisy-circle levels follow max(0, Exp(0.3) − 0.09);
* seeding is deterministic, independent per component, and arguments are checked.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from ldmfilter.simulate import (
    EXPERIMENTS,
    DotMotion,
    RandomMLPRenderer,
    add_pixel_noise,
    figure8,
    make_dotmotion,
    noisy_circle,
    pixel_coordinates,
    random_noise_variance,
    render_blobs,
    resample_noise,
    square,
    square_phase_target,
    swirl,
    swirl_source_coordinates,
    wobbly,
)

ALL = sorted(EXPERIMENTS)


# --------------------------------------------------------------------------- data set


@pytest.mark.parametrize("experiment", ALL)
@pytest.mark.parametrize("renderer", ["blob", "mlp"])
def test_shapes_and_dtypes(experiment, renderer):
    data = make_dotmotion(experiment, 3, T=12, seed=5, renderer=renderer)
    assert isinstance(data, DotMotion)
    assert data.frames.shape == data.clean_frames.shape == (3, 12, 10, 10)
    assert data.frames.dtype == data.clean_frames.dtype == np.float32
    assert data.positions.shape == data.target.shape == (3, 12, 2)
    assert data.positions.dtype == data.target.dtype == np.float64
    assert data.noise_variance.shape == (3, 12) and data.noise_variance.dtype == np.float64
    assert (data.n_sequences, data.n_steps, data.frame_shape) == (3, 12, (10, 10))
    assert data.flat_frames().shape == (3, 12, 100)
    np.testing.assert_array_equal(data.flat_frames(clean=True)[1, 4], data.clean_frames[1, 4].ravel())
    assert data.experiment == experiment and data.dt == EXPERIMENTS[experiment]["dt"]
    assert np.all(np.isfinite(data.frames))


def test_experiment_defaults():
    fig = make_dotmotion("figure8", 2, T=5)
    sq = make_dotmotion("square", 2, T=5)
    wob = make_dotmotion("wobbly", 2, T=5)
    assert np.all(fig.noise_variance == 0.01) and np.all(sq.noise_variance == 0.1)
    assert np.all(wob.noise_variance == 0.0)
    assert wob.frames is wob.clean_frames  # no pixel noise: no copy
    # wobbly is swirled by default: the clean frames are the swirled blobs
    np.testing.assert_allclose(wob.clean_frames, swirl(render_blobs(wob.positions)), atol=1e-6)
    no_swirl = make_dotmotion("wobbly", 2, T=5, swirl=False)
    np.testing.assert_allclose(no_swirl.clean_frames, render_blobs(wob.positions), atol=1e-7)
    np.testing.assert_array_equal(fig.target, fig.positions)
    np.testing.assert_array_equal(sq.target, square_phase_target(2, 5))
    hard = make_dotmotion("figure8", 2, T=5, noise_variance=0.3)
    assert np.all(hard.noise_variance == 0.3)
    np.testing.assert_array_equal(hard.positions, fig.positions)
    # a swirled figure-8 and motion options reach the path function
    assert not np.allclose(make_dotmotion("figure8", 1, T=5, swirl=True).clean_frames, fig.clean_frames[:1])
    np.testing.assert_array_equal(make_dotmotion("figure8", 1, T=5, dt=0.05).positions, figure8(1, 5, dt=0.05))
    assert make_dotmotion("figure8", 1, T=5, dt=0.05).dt == 0.05


@pytest.mark.parametrize("experiment", ALL)
def test_determinism_by_seed(experiment):
    a = make_dotmotion(experiment, 4, T=10, seed=3)
    b = make_dotmotion(experiment, 4, T=10, seed=3)
    c = make_dotmotion(experiment, 4, T=10, seed=4)
    for field in ("frames", "clean_frames", "positions", "noise_variance", "target"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    if experiment in ("noisy_circle", "wobbly"):  # random paths
        assert not np.allclose(a.positions, c.positions)
    else:  # the same path for every sequence and seed; only the pixel noise differs
        np.testing.assert_array_equal(a.positions, c.positions)
        np.testing.assert_array_equal(a.positions[0], a.positions[3])
    if experiment != "wobbly":
        assert not np.allclose(a.frames, c.frames)


def test_seed_streams_are_independent():
    # overriding the noise level changes neither the paths nor the pixel-noise draws
    a = make_dotmotion("noisy_circle", 3, T=10, seed=1)
    b = make_dotmotion("noisy_circle", 3, T=10, seed=1, noise_variance=0.04)
    np.testing.assert_array_equal(a.positions, b.positions)
    z_b = (b.frames - b.clean_frames) / 0.2
    keep = a.noise_variance > 0.01
    z_a = (a.frames - a.clean_frames)[keep] / np.sqrt(a.noise_variance[keep])[:, None, None].astype(np.float32)
    np.testing.assert_allclose(z_a, z_b[keep], atol=1e-4)


def test_mlp_renderer_is_shared_across_data_seeds():
    a = make_dotmotion("figure8", 2, T=8, seed=0, renderer="mlp")
    b = make_dotmotion("figure8", 2, T=8, seed=9, renderer="mlp")
    np.testing.assert_array_equal(a.clean_frames, b.clean_frames)
    c = make_dotmotion("figure8", 2, T=8, seed=0, renderer="mlp", renderer_seed=1)
    assert not np.allclose(a.clean_frames, c.clean_frames)
    np.testing.assert_array_equal(a.flat_frames(clean=True), RandomMLPRenderer(0)(a.positions))


def test_resample_noise():
    data = make_dotmotion("figure8", 20, T=50, seed=0, noise_variance=0.3)
    fresh = resample_noise(data, np.random.default_rng(1))
    again = resample_noise(data, np.random.default_rng(1))
    assert fresh.shape == data.frames.shape and fresh.dtype == np.float32
    np.testing.assert_array_equal(fresh, again)
    assert not np.allclose(fresh, data.frames)
    residual = fresh - data.clean_frames
    assert abs(residual.var() - 0.3) < 0.01
    wob = make_dotmotion("wobbly", 2, T=5)
    clean = resample_noise(wob, 0)
    np.testing.assert_array_equal(clean, wob.clean_frames)
    assert clean is not wob.clean_frames
    with pytest.raises(TypeError, match="DotMotion"):
        resample_noise(wob.frames, 0)


# --------------------------------------------------------------------------- paths


def test_figure8_formula():
    pos = figure8(2, T=41, dt=0.1, period=1.0)
    theta = math.pi * np.arange(41) * 0.1
    np.testing.assert_allclose(pos[1, :, 0], np.cos(theta), atol=1e-12)
    np.testing.assert_allclose(pos[1, :, 1], np.sin(theta) * np.cos(theta), atol=1e-12)
    np.testing.assert_array_equal(pos[0], pos[1])
    np.testing.assert_allclose(pos[:, 20], pos[:, 0], atol=1e-12)  # a full figure-8 is 20 frames
    assert pos.dtype == np.float64


def test_square_path():
    pos = square(3, T=100)
    assert pos.shape == (3, 100, 2) and pos.dtype == np.float64
    np.testing.assert_allclose(pos[0, 0], (1.0, 0.0))
    np.testing.assert_allclose(pos[:, 20:], pos[:, :-20], atol=1e-9)  # 20 frames a loop
    assert len({tuple(np.round(p, 6)) for p in pos[0, :20]}) == 20  # ... and not fewer
    np.testing.assert_allclose(np.abs(pos).max(axis=-1), 1.0, atol=1e-12)  # on the square
    # constant speed: 0.4 of the perimeter a frame (straight-line steps are shorter only at corners)
    steps = np.abs(np.diff(pos[0], axis=0)).sum(axis=-1)  # L1 length = perimeter length here
    np.testing.assert_allclose(steps, 0.4, atol=1e-9)
    # counter-clockwise, in phase with the probe target: midpoints of the sides every 5 frames
    target = square_phase_target(3, T=100)
    for t in range(0, 100, 5):
        np.testing.assert_allclose(pos[:, t], target[:, t], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(target, axis=-1), 1.0)
    angle = np.unwrap(np.arctan2(target[0, :, 1], target[0, :, 0]))
    np.testing.assert_allclose(np.diff(angle), 2 * math.pi / 20)


def test_square_hits_the_corners():
    # 40 frames a loop puts frames on the corners, visited counter-clockwise from (1, 0)
    pos = square(1, T=41, dt=0.1, period=4.0)[0]
    corners = [(1, 1), (-1, 1), (-1, -1), (1, -1), (1, 0)]
    for t, corner in zip((5, 15, 25, 35, 40), corners):
        np.testing.assert_allclose(pos[t], corner, atol=1e-9)
    # with the default 20 frames a loop the path still turns every corner
    default = square(1, T=20)[0]
    for qx, qy in [(1, 1), (-1, 1), (-1, -1), (1, -1)]:
        assert np.any((np.sign(default[:, 0]) == qx) & (np.sign(default[:, 1]) == qy))


def test_noisy_circle_path():
    pos = noisy_circle(50, T=30, rng=0)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pos[:, 0], np.broadcast_to([1.0, 0.0], (50, 2)))
    assert not np.allclose(pos[0], pos[1])  # random per sequence
    # without noise: a rotation by 2π·dt/T_p a step (20 frames a revolution)
    clean = noisy_circle(2, T=21, step_noise=0.0, rng=0)
    angle = 2 * math.pi * 0.1 / 2.0 * np.arange(21)
    np.testing.assert_allclose(clean[0], np.stack([np.cos(angle), np.sin(angle)], -1), atol=1e-12)
    # the angular increments scatter around 2π·dt/T_p = 0.314 (noise variance 0.05: std ≈ 0.22)
    increments = np.angle(np.exp(1j * np.diff(np.arctan2(pos[..., 1], pos[..., 0]), axis=1)))
    assert abs(np.median(increments) - 0.1 * math.pi) < 0.03
    assert 0.17 < increments.std() < 0.3


def test_noise_variance_distribution():
    levels = random_noise_variance(400_000, rng=0)
    assert levels.min() == 0.0
    expected_mean = 0.3 * math.exp(-0.3)  # E[max(0, X − 0.09)] for X ~ Exp(mean 0.3): 0.2222
    assert abs(levels.mean() - expected_mean) < 0.003
    assert abs((levels == 0).mean() - (1 - math.exp(-0.3))) < 0.005
    for c in (0.1, 0.3, 0.6):  # exponential tail: P(level > c) = exp(−(c + 0.09)/0.3)
        assert abs((levels > c).mean() - math.exp(-(c + 0.09) / 0.3)) < 0.005
    data = make_dotmotion("noisy_circle", 100, T=100, seed=0)
    assert abs(data.noise_variance.mean() - expected_mean) < 0.01
    assert len(np.unique(data.noise_variance)) > 5000  # drawn per frame


def _wobbly_field(p, k=4.0, a=0.5, theta0=-3 * math.pi / 8):
    x, y = p
    theta, r = math.atan2(y, x), math.hypot(x, y)
    return np.array([
        a * k * math.cos(theta) * math.cos(k * (theta - theta0)) - r * math.sin(theta),
        a * k * math.sin(theta) * math.cos(k * (theta - theta0)) + r * math.cos(theta),
    ])


def _hand_rk4(p, dt=0.3):
    k1 = _wobbly_field(p)
    k2 = _wobbly_field(p + dt / 2 * k1)
    k3 = _wobbly_field(p + dt / 2 * k2)
    k4 = _wobbly_field(p + dt * k3)
    return p + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_wobbly_rk4_step():
    pos = wobbly(3, T=6, step_noise=0.0, rng=2)
    np.testing.assert_allclose(np.linalg.norm(pos[:, 0], axis=-1), 1.0)  # start on the unit circle
    for n in range(3):
        for t in range(5):
            np.testing.assert_allclose(pos[n, t + 1], _hand_rk4(pos[n, t]), rtol=1e-12, atol=1e-12)
    # noisy: the residual of each step around the RK4 prediction has variance 0.1 per axis
    noisy = wobbly(400, T=30, rng=0)
    starts = np.arctan2(noisy[:, 0, 1], noisy[:, 0, 0])
    assert np.ptp(starts) > 5.5  # uniform on the circle
    predicted = np.array([[_hand_rk4(p) for p in seq[:-1]] for seq in noisy[:40]])
    residual = noisy[:40, 1:] - predicted
    assert abs(residual.mean()) < 0.03
    assert abs(residual.var() - 0.1) < 0.01


# --------------------------------------------------------------------------- rendering


def test_blob_peak_matches_formula():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 10, size=50), rng.integers(0, 10, size=50)
    pos = np.stack([rows * 6 / 10 - 3, cols * 6 / 10 - 3], axis=-1)  # on pixel centres
    frames = render_blobs(pos)
    assert frames.shape == (50, 10, 10) and frames.dtype == np.float32
    flat = frames.reshape(50, -1)
    np.testing.assert_array_equal(np.unravel_index(flat.argmax(-1), (10, 10)), (rows, cols))
    np.testing.assert_allclose(flat.max(-1), 1.0)
    # the value at any pixel is exp(−d²/2σ²); a random off-grid position peaks at the nearest pixel
    p = np.array([0.37, -1.21])
    r, c = (p[0] + 3) * 10 / 6, (p[1] + 3) * 10 / 6
    frame = render_blobs(p)
    assert frame.shape == (10, 10)
    i, j = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    np.testing.assert_allclose(frame, np.exp(-((i - r) ** 2 + (j - c) ** 2) / 2), rtol=1e-6)
    assert np.unravel_index(frame.argmax(), frame.shape) == (round(r), round(c))
    # other sizes and widths
    wide = render_blobs(np.zeros(2), height=12, width=6, sigma=2.0)
    assert wide.shape == (12, 6) and np.unravel_index(wide.argmax(), wide.shape) == (6, 3)
    np.testing.assert_allclose(wide[6, 4], math.exp(-1 / 8), rtol=1e-6)


def test_blob_clamping():
    pos = np.array([[10.0, -10.0], [-4.0, 1.9], [3.0, 3.0], [-3.0, -3.0], [2.5, 2.6]])
    row, col = pixel_coordinates(pos)
    np.testing.assert_allclose(row, [9, 0, 9, 0, 9])  # (2.5 + 3)·10/6 = 9.17 → 9
    np.testing.assert_allclose(col, [0, (1.9 + 3) * 10 / 6, 9, 0, 9])
    frames = render_blobs(pos)
    np.testing.assert_allclose(frames[0, 9, 0], 1.0)
    np.testing.assert_allclose(frames[2, 9, 9], 1.0)
    np.testing.assert_allclose(frames[3, 0, 0], 1.0)
    assert frames.max() <= 1.0


def test_pixel_noise_variance():
    clean = render_blobs(figure8(40, T=50))
    level = np.where(np.arange(50) % 2 == 0, 0.5, 0.02)  # per-frame levels, broadcast over n
    noisy = add_pixel_noise(clean, level, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    residual = noisy - clean
    assert abs(residual[:, ::2].var() - 0.5) < 0.01
    assert abs(residual[:, 1::2].var() - 0.02) < 0.0005
    assert abs(residual.mean()) < 0.005
    np.testing.assert_array_equal(add_pixel_noise(clean, 0.0, 0), clean)
    np.testing.assert_array_equal(add_pixel_noise(clean, 0.1, 7), add_pixel_noise(clean, 0.1, 7))
    data = make_dotmotion("noisy_circle", 60, T=100, seed=1)
    ratio = ((data.frames - data.clean_frames) ** 2).mean(axis=(-2, -1)) / np.maximum(data.noise_variance, 1e-12)
    positive = data.noise_variance > 0
    assert abs(ratio[positive].mean() - 1.0) < 0.02  # the per-frame variance is the level
    np.testing.assert_array_equal(data.frames[~positive], data.clean_frames[~positive])


# --------------------------------------------------------------------------- swirl


def test_swirl_identity_and_shape():
    frames = np.random.default_rng(0).random((2, 3, 10, 10)).astype(np.float32)
    out = swirl(frames, strength=0.0)
    assert out.shape == frames.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, frames, atol=1e-6)
    assert swirl(frames[0, 0]).shape == (10, 10)
    np.testing.assert_allclose(swirl(np.full((4, 10, 10), 0.7, np.float32)), 0.7, atol=1e-6)
    # a rotation by π about skimage's centre (5, 5): pixel (r, c) samples (10 − r, 10 − c), mirrored
    rotated = swirl(frames[0, 0], strength=0.0, rotation=math.pi)
    idx = np.array([8, 9, 8, 7, 6, 5, 4, 3, 2, 1])  # 10 − r, with 10 reflected to 8
    np.testing.assert_allclose(rotated, frames[0, 0][np.ix_(idx, idx)], atol=1e-5)


def test_swirl_keeps_a_central_blob():
    blob = render_blobs(np.zeros(2))  # the position (0, 0) is pixel (5, 5), the swirl centre
    out = swirl(blob)
    assert np.unravel_index(out.argmax(), out.shape) == (5, 5)
    np.testing.assert_allclose(out[5, 5], 1.0, atol=1e-6)
    # a radially symmetric blob is (up to bilinear error) invariant under any rotation about it
    assert np.abs(out - blob).max() < 0.1
    # an off-centre blob is moved along a circle about the centre (its distance is kept)
    off = render_blobs(np.array([1.8, 0.0]))  # pixel (8, 5): 3 px below the centre
    moved = swirl(off)
    r, c = np.unravel_index(moved.argmax(), moved.shape)
    assert (r, c) != (8, 5) and abs(math.hypot(r - 5, c - 5) - 3) <= 1


def test_swirl_matches_scipy_warp():
    ndimage = pytest.importorskip("scipy.ndimage")
    images = np.random.default_rng(1).random((3, 10, 12))
    for strength, radius, rotation in [(10, 200, 0), (3, 5, 0.4), (-2, 20, 2.0)]:
        rows, cols = swirl_source_coordinates(10, 12, strength, radius, rotation)
        out = swirl(images, strength=strength, radius=radius, rotation=rotation)
        assert out.dtype == np.float64
        for image, got in zip(images, out):
            expected = ndimage.map_coordinates(image, [rows, cols], order=1, mode="mirror")
            np.testing.assert_allclose(got, expected, atol=1e-10)


def test_swirl_large_images_use_the_same_warp(monkeypatch):
    import ldmfilter.simulate.render as render

    images = np.random.default_rng(2).random((5, 10, 10)).astype(np.float32)
    dense = swirl(images)
    monkeypatch.setattr(render, "_SWIRL_DENSE_MAX", 0)
    monkeypatch.setattr(render, "_SWIRL_CHUNK", 2)
    np.testing.assert_allclose(swirl(images), dense, atol=1e-6)


# --------------------------------------------------------------------------- random MLP


def test_random_mlp_renderer():
    pos = figure8(2, T=15)
    mlp = RandomMLPRenderer(seed=3)
    out = mlp(pos)
    assert out.shape == (2, 15, 100) and out.dtype == np.float32
    np.testing.assert_array_equal(out, RandomMLPRenderer(seed=3)(pos))
    assert not np.allclose(out, RandomMLPRenderer(seed=4)(pos))
    assert [w.shape for w in mlp.weights] == [(5, 2), (5, 5), (5, 5), (5, 5), (100, 5)]
    for w in mlp.weights:  # orthonormal columns (every layer here widens or keeps the width)
        np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-12)
    assert RandomMLPRenderer(0, obs_dim=7)(np.zeros(2)).shape == (7,)
    assert np.abs(mlp.biases[0]).max() <= 1 / math.sqrt(2) and np.abs(mlp.biases[1]).max() <= 1 / math.sqrt(5)
    # distinct positions render distinctly (the map is injective; seed 0 is well spread)
    distinct = RandomMLPRenderer(seed=0)(pos[0, :10])
    gaps = np.linalg.norm(distinct[:, None] - distinct[None], axis=-1) + np.eye(10)
    assert gaps.min() > 1e-3


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(experiment="spiral", n_sequences=2), "unknown experiment 'spiral'"),
        (dict(experiment="figure8", n_sequences=0), "n_sequences must be at least 1"),
        (dict(experiment="figure8", n_sequences=2, T=1), "T must be at least 2"),
        (dict(experiment="figure8", n_sequences=2, noise_variance=-0.1), "non-negative"),
        (dict(experiment="figure8", n_sequences=2, noise_variance=float("nan")), "non-negative"),
        (dict(experiment="figure8", n_sequences=2, T=5, noise_variance=np.ones(3)), "does not broadcast"),
        (dict(experiment="figure8", n_sequences=2, renderer="voxel"), "unknown renderer"),
        (dict(experiment="figure8", n_sequences=2, renderer="mlp", swirl=True), "renderer='mlp'"),
        (dict(experiment="figure8", n_sequences=2, step_noise=0.1), r"unknown path option\(s\) \['step_noise'\]"),
        (dict(experiment="noisy_circle", n_sequences=2, step_noise=-1.0), "step_noise"),
        (dict(experiment="square", n_sequences=2, dt=0.0), "dt must be a positive"),
        (dict(experiment="figure8", n_sequences=2, seed=-1), "seed must be a non-negative int"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dotmotion(**kwargs)


def test_errors_of_the_parts():
    with pytest.raises(TypeError, match="n_sequences must be an int"):
        figure8(2.5)
    with pytest.raises(TypeError, match="rng"):
        noisy_circle(2, rng="seed")
    with pytest.raises(ValueError, match=r"positions must have shape \(\.\.\., 2\)"):
        render_blobs(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="sigma"):
        render_blobs(np.zeros(2), sigma=0)
    with pytest.raises(ValueError, match="does not broadcast"):
        add_pixel_noise(np.zeros((2, 3, 4, 4)), np.ones(5), 0)
    with pytest.raises(ValueError, match="non-negative"):
        add_pixel_noise(np.zeros((2, 4, 4)), -1.0, 0)
    with pytest.raises(ValueError, match="frames must have shape"):
        swirl(np.zeros(5))
    with pytest.raises(ValueError, match="radius"):
        swirl(np.zeros((4, 4)), radius=0)
    with pytest.raises(ValueError, match="negative_slope"):
        RandomMLPRenderer(0, negative_slope=0.0)


def test_simulate_imports_no_heavy_layers():
    code = (
        "import sys, ldmfilter.simulate\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'pandas', 'xarray', 'matplotlib') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
