"""Pendulum videos with time-correlated image noise, after the RKN benchmark (Becker et al., 2019).

A damped pendulum, kicked by noise on its angular velocity, is filmed as small grey frames (a
bar from the pivot to the tip, as in RKN's "line" mode, or a ball at the tip).  Every frame is
mixed with uniform pixel noise by a per-frame weight that wanders slowly over time, so that some
stretches of a sequence are clean and others are pure noise: single frames are often useless and
a filter has to carry the angle through the noisy stretches.

Physics (angle ``θ`` from the downward vertical, ``ω = θ̇``; a uniform rod of length ``l`` and
mass ``m`` about its end, inertia ``m l²/3``)::

    ω̇ = −c sin θ − f ω,     c = g l m / (m l²/3) = 3 g / l

integrated by semi-implicit Euler with ``substeps`` sub-steps a frame (RKN: ``dt = 0.05``,
sub-step ``1e-4``), then ``ω ← ω + N(0, process_noise²)`` once a frame.  Starts: ``θ_0 ~ U[−π,
π)``, ``ω_0 = 0``.  The energy per unit inertia ``E = ½ ω² + c (1 − cos θ)`` obeys
``Ė = −f ω²`` between kicks (:meth:`PendulumVideo.energy`).

Image noise (RKN's ``add_img_noise``): a factor ``u_0 ~ U(0, 1)``, ``u_{t+1} = clip(u_t +
U(−r, r), 0, 1)`` with ``r = 1 − noise_correlation``; per sequence ``a ~ U(0, 0.25)``, ``b ~
U(0.75, 1)``; clean weight ``q_t = clip((u_t − a)/(b − a), 0, 1)`` (1 for the first
``first_clean`` frames).  The frame is ``(1 − w_t) x_t + w_t ε_t`` with ``w_t = image_noise ·
(1 − q_t)`` and ``ε_t ~ U(0, 1)`` i.i.d. per pixel.

Edge layer: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .motions import _check_count, _check_nonnegative, _check_positive, as_generator

__all__ = [
    "PendulumVideo",
    "make_pendulum_video",
    "simulate_pendulum",
    "render_pendulum",
    "correlated_noise_levels",
    "PENDULUM_SHAPES",
]

PENDULUM_SHAPES = ("bar", "ball")
# RKN draws on a 128×128 canvas: pivot at the centre, bar length 55, line width 8 (ball radius 8),
# then down-samples with antialiasing; here the same proportions are drawn at the final size.
_CANVAS, _ARM, _WIDTH = 128.0, 55.0, 8.0
_CHUNK = 8192  # frames rendered at a time (keeps the temporaries to a few tens of MB)


@dataclass(frozen=True)
class PendulumVideo:
    """A pendulum-video data set.

    Attributes
    ----------
    frames : ndarray, float32, shape (n, T, size, size)
        Noisy frames in [0, 1].
    clean_frames : ndarray, float32, shape (n, T, size, size)
        Renderings without image noise.
    angles : ndarray, float64, shape (n, T)
        ``θ`` from the downward vertical, wrapped to [−π, π); positive swings to the right of
        the image.
    velocities : ndarray, float64, shape (n, T)
        ``ω = θ̇`` in radians per unit time.
    targets : ndarray, float64, shape (n, T, 2)
        ``(sin θ, cos θ)``: the tip's (horizontal, downward) position for a unit arm, RKN's
        regression targets.
    noise_level : ndarray, float64, shape (n, T)
        Weight ``w_t ∈ [0, 1]`` of the pixel noise in each frame (0: clean, 1: pure noise).
    dt : float
        Time between frames.
    friction, gravity_constant : float
        ``f`` and ``c = 3 g / l`` of the dynamics.
    """

    frames: np.ndarray
    clean_frames: np.ndarray
    angles: np.ndarray
    velocities: np.ndarray
    targets: np.ndarray
    noise_level: np.ndarray
    dt: float
    friction: float
    gravity_constant: float

    @property
    def n_sequences(self) -> int:
        """Number of sequences ``n``."""
        return self.frames.shape[0]

    @property
    def n_steps(self) -> int:
        """Frames per sequence ``T``."""
        return self.frames.shape[1]

    def flat_frames(self, clean: bool = False) -> np.ndarray:
        """Frames flattened to vectors (a view): float32, shape (n, T, size²)."""
        frames = self.clean_frames if clean else self.frames
        return frames.reshape(*frames.shape[:2], -1)

    def energy(self) -> np.ndarray:
        """Mechanical energy per unit inertia ``½ ω² + c (1 − cos θ)``, shape (n, T)."""
        return 0.5 * self.velocities**2 + self.gravity_constant * (1.0 - np.cos(self.angles))


# --------------------------------------------------------------------------- physics


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to [−π, π)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def simulate_pendulum(
    n_sequences: int,
    T: int = 75,
    rng=0,
    friction: float = 0.1,
    process_noise: float = 0.1,
    *,
    dt: float = 0.05,
    substeps: int = 500,
    gravity: float = 9.81,
    length: float = 1.0,
    initial_angle=None,
    initial_velocity=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Angles and angular velocities of damped, noise-kicked pendulums.

    Parameters
    ----------
    n_sequences, T : int
        Number of pendulums and of frames (≥ 2).
    rng : numpy.random.Generator or int, default 0
        Draws the starting angles and the velocity kicks.
    friction : float, default 0.1
        ``f`` in ``ω̇ = −c sin θ − f ω`` (RKN's pendulum benchmark: 0.1).
    process_noise : float, default 0.1
        Standard deviation of the kick ``N(0, σ²)`` added to ``ω`` once a frame (RKN: 0.1).
    dt : float, default 0.05
        Time between frames.
    substeps : int, default 500
        Semi-implicit Euler sub-steps a frame (RKN: 500, i.e. ``dt/1e-4``).
    gravity, length : float
        ``g`` and ``l``; ``c = 3 g / l`` (a uniform rod about its end).
    initial_angle, initial_velocity : array_like broadcastable to (n,), optional
        Starting state; default ``θ_0 ~ U[−π, π)`` and ``ω_0 = 0``.

    Returns
    -------
    angles : ndarray, float64, shape (n, T)
        Wrapped to [−π, π).
    velocities : ndarray, float64, shape (n, T)
    """
    n = _check_count(n_sequences, "n_sequences", 1)
    T = _check_count(T, "T", 2)
    substeps = _check_count(substeps, "substeps", 1)
    friction = _check_nonnegative(friction, "friction")
    sigma = _check_nonnegative(process_noise, "process_noise")
    dt, gravity, length = (_check_positive(v, k) for v, k in ((dt, "dt"), (gravity, "gravity"), (length, "length")))
    gen = as_generator(rng)
    c = 3.0 * gravity / length
    h = dt / substeps
    theta = gen.uniform(-math.pi, math.pi, n) if initial_angle is None else _start(initial_angle, n, "initial_angle")
    omega = np.zeros(n) if initial_velocity is None else _start(initial_velocity, n, "initial_velocity")
    angles, velocities = np.empty((n, T)), np.empty((n, T))
    angles[:, 0], velocities[:, 0] = _wrap(theta), omega
    for t in range(1, T):
        for _ in range(substeps):
            omega = omega - h * (c * np.sin(theta) + friction * omega)  # ω ← ω + h (−c sin θ − f ω)
            theta = theta + h * omega  # θ ← θ + h ω (the new ω: semi-implicit Euler)
        if sigma > 0:
            omega = omega + sigma * gen.standard_normal(n)
        theta = _wrap(theta)
        angles[:, t], velocities[:, t] = theta, omega
    return angles, velocities


def _start(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    try:
        return np.broadcast_to(arr, (n,)).copy()
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to (n_sequences,) = ({n},)") from None


# --------------------------------------------------------------------------- rendering


def render_pendulum(angles, size: int = 24, shape: str = "bar") -> np.ndarray:
    """Grey frames of pendulums at ``angles``, in [0, 1], antialiased; vectorised numpy.

    The pivot sits at the image centre; the arm is ``55/128`` of the image long (RKN's
    proportions) and points down at ``θ = 0`` and to the right at ``θ = π/2``.  ``"bar"`` draws a
    line of width ``8/128`` of the image from the pivot to the tip, ``"ball"`` a disc of radius
    ``8/128`` of the image at the tip.  A pixel's value is ``clip(r + ½ − d, 0, 1)`` with ``d`` the
    distance from its centre to the shape's core (segment or tip) and ``r`` the half width (or
    radius): a linear ramp one pixel wide, close to the pixel's area coverage.

    Parameters
    ----------
    angles : array_like, shape (...)
    size : int, default 24
        Frames are ``size × size``.
    shape : {"bar", "ball"}

    Returns
    -------
    ndarray, float32, shape ``angles.shape + (size, size)``
    """
    size = _check_count(size, "size", 4)
    if shape not in PENDULUM_SHAPES:
        raise ValueError(f"shape must be one of {PENDULUM_SHAPES}, got {shape!r}")
    theta = np.asarray(angles, dtype=np.float64)
    if not np.isfinite(theta).all():
        raise ValueError("angles must be finite")
    scale = size / _CANVAS
    arm, radius = _ARM * scale, (_WIDTH / 2.0 if shape == "bar" else _WIDTH) * scale
    centre = size / 2.0
    coords = np.arange(size, dtype=np.float32) + 0.5 - centre  # pixel centres relative to the pivot
    rows, cols = coords[:, None], coords[None, :]
    flat = theta.reshape(-1)
    out = np.empty((flat.size, size, size), dtype=np.float32)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        down = np.cos(part).astype(np.float32)[:, None, None]  # unit arm direction (row, col)
        right = np.sin(part).astype(np.float32)[:, None, None]
        along = rows * down + cols * right  # projection of the pixel on the arm
        if shape == "bar":
            along_c = np.clip(along, 0.0, arm)
        else:
            along_c = np.full_like(along, arm)
        d_row, d_col = rows - along_c * down, cols - along_c * right
        dist = np.sqrt(d_row * d_row + d_col * d_col)
        np.clip(radius + 0.5 - dist, 0.0, 1.0, out=out[start : start + part.size])
    return out.reshape(theta.shape + (size, size))


# --------------------------------------------------------------------------- image noise


def correlated_noise_levels(
    n_sequences: int,
    T: int,
    rng=0,
    noise_correlation: float = 0.8,
    image_noise: float = 1.0,
    first_clean: int = 5,
    bounds: tuple[float, float, float, float] = (0.0, 0.25, 0.75, 1.0),
) -> np.ndarray:
    """Per-frame noise weights ``w_t ∈ [0, 1]`` that wander slowly over time (RKN's scheme).

    ``u_0 ~ U(0, 1)``, ``u_{t+1} = clip(u_t + U(−r, r), 0, 1)`` with ``r = 1 −
    noise_correlation``; per sequence ``a ~ U(bounds[0], bounds[1])``, ``b ~ U(bounds[2],
    bounds[3])``; ``q_t = clip((u_t − a)/(b − a), 0, 1)``, set to 1 for ``t < first_clean``;
    ``w_t = image_noise · (1 − q_t)``.  With the defaults a sequence spends long stretches near
    ``w = 0`` (clean) and near ``w = 1`` (pure noise).

    Parameters
    ----------
    n_sequences, T : int
    rng : numpy.random.Generator or int, default 0
    noise_correlation : float in [0, 1], default 0.8
        1 keeps the level constant within a sequence; the default's step bound ``r = 0.2`` is
        RKN's.
    image_noise : float in [0, 1], default 1.0
        Scale of the weights (0: no noise; 1: RKN's).
    first_clean : int, default 5
        Leading clean frames (RKN: 5, to let a filter settle).
    bounds : 4 floats, default (0, 0.25, 0.75, 1)
        ``(t_ll, t_lu, t_ul, t_uu)``, ordered, with ``t_lu < t_ul``.

    Returns
    -------
    ndarray, float64, shape (n, T)
    """
    n = _check_count(n_sequences, "n_sequences", 1)
    T = _check_count(T, "T", 1)
    first_clean = _check_count(first_clean, "first_clean", 0)
    rho, scale = float(noise_correlation), float(image_noise)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"noise_correlation must lie in [0, 1], got {noise_correlation}")
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"image_noise must lie in [0, 1], got {image_noise}")
    lo_a, hi_a, lo_b, hi_b = (float(b) for b in bounds)
    if not (0.0 <= lo_a <= hi_a < lo_b <= hi_b <= 1.0):
        raise ValueError(f"bounds must satisfy 0 ≤ t_ll ≤ t_lu < t_ul ≤ t_uu ≤ 1, got {tuple(bounds)}")
    gen = as_generator(rng)
    r = 1.0 - rho
    u = np.empty((n, T))
    u[:, 0] = gen.uniform(0.0, 1.0, n)
    steps = gen.uniform(-r, r, (n, T - 1)) if r > 0 else np.zeros((n, T - 1))
    for t in range(1, T):
        u[:, t] = np.clip(u[:, t - 1] + steps[:, t - 1], 0.0, 1.0)
    a = gen.uniform(lo_a, hi_a, (n, 1))
    b = gen.uniform(lo_b, hi_b, (n, 1))
    clean = np.clip((u - a) / (b - a), 0.0, 1.0)
    clean[:, :first_clean] = 1.0
    return scale * (1.0 - clean)


def make_pendulum_video(
    n_sequences: int,
    T: int = 75,
    size: int = 24,
    seed: int = 0,
    friction: float = 0.1,
    process_noise: float = 0.1,
    image_noise: float = 1.0,
    noise_correlation: float = 0.8,
    *,
    dt: float = 0.05,
    substeps: int = 500,
    first_clean: int = 5,
    shape: str = "bar",
) -> PendulumVideo:
    """Generate the pendulum-video benchmark (RKN's filtering task by default).

    Parameters
    ----------
    n_sequences : int
        Number of sequences (RKN: 2000 training, 1000 test).
    T : int, default 75
        Frames per sequence.
    size : int, default 24
        Frames are ``size × size`` pixels.
    seed : int, default 0
        Split (``SeedSequence.spawn``) into independent streams for the dynamics, the noise
        levels and the pixel noise; use different seeds for training and test sets.
    friction : float, default 0.1
        ``f`` in ``ω̇ = −c sin θ − f ω``.
    process_noise : float, default 0.1
        Standard deviation of the velocity kick once a frame.
    image_noise : float in [0, 1], default 1.0
        Scale of the per-frame noise weights (0: clean frames).
    noise_correlation : float in [0, 1], default 0.8
        How slowly the noise weight wanders: step bound ``r = 1 − noise_correlation`` of its
        random walk (RKN: r = 0.2).
    dt : float, default 0.05
    substeps : int, default 500
    first_clean : int, default 5
        Leading frames kept clean.
    shape : {"bar", "ball"}, default "bar"

    Returns
    -------
    PendulumVideo
    """
    n = _check_count(n_sequences, "n_sequences", 1)
    T = _check_count(T, "T", 2)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    dynamics_rng, level_rng, pixel_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))
    angles, velocities = simulate_pendulum(n, T, dynamics_rng, friction, process_noise, dt=dt, substeps=substeps)
    clean = render_pendulum(angles, size, shape)
    level = correlated_noise_levels(n, T, level_rng, noise_correlation, image_noise, first_clean)
    weight = level.astype(np.float32)[..., None, None]
    if level.any():
        frames = clean * (1.0 - weight)
        frames += weight * pixel_rng.random(clean.shape, dtype=np.float32)  # (1 − w) x + w ε, ε ~ U(0, 1)
    else:
        frames = clean
    targets = np.stack([np.sin(angles), np.cos(angles)], -1)
    return PendulumVideo(frames, clean, angles, velocities, targets, level, float(dt), float(friction), 3.0 * 9.81)
