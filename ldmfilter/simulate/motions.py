"""Position paths of the DotMotion experiments (METHOD.md §5).

Every function returns positions ``p_t = (x_t, y_t)`` as a float64 numpy array of shape
``(n_sequences, T, 2)``; frame ``t = 0, …, T-1`` is at time ``t·dt``.  The figure-8 and square
paths are deterministic and the same for every sequence; the noisy-circle and wobbly paths are
random and drawn from a :class:`numpy.random.Generator` (``rng``: a Generator, or an int seed),
so the same seed always gives the same paths.

Conventions
-----------
* "Noise N(0, v·I)" means a Gaussian step noise whose *variance* (not standard deviation) is
  ``v`` on each axis: ``step_noise`` is a variance.
* Every closed path runs **counter-clockwise** (angle increasing), starting at angle 0.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = [
    "as_generator",
    "figure8",
    "square",
    "square_phase_target",
    "noisy_circle",
    "wobbly",
    "wobbly_velocity",
    "rk4_step",
]


# --------------------------------------------------------------------------- argument checks


def as_generator(rng) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` for ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        A generator (used as is, so it advances) or a non-negative integer seed.

    Returns
    -------
    numpy.random.Generator
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be a numpy.random.Generator or a non-negative int seed, got {type(rng).__name__}")
    if rng < 0:
        raise ValueError(f"rng seed must be non-negative, got {rng}")
    return np.random.default_rng(int(rng))


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_positive(value, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_nonnegative(value, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number (a variance), got {value}")
    return value


def _check_sizes(n_sequences, T) -> tuple[int, int]:
    return _check_count(n_sequences, "n_sequences", 1), _check_count(T, "T", 2)


# --------------------------------------------------------------------------- deterministic paths


def figure8(n_sequences: int, T: int = 100, dt: float = 0.1, period: float = 1.0) -> np.ndarray:
    """Figure-8 (lemniscate of Gerono) path, the same for every sequence.

    ``x_t = cos θ_t``, ``y_t = sin θ_t cos θ_t`` with ``θ_t = π·t·dt / period``, so one full
    figure-8 takes ``2·period/dt`` frames (20 for the defaults).

    Parameters
    ----------
    n_sequences : int
        Number of (identical) sequences, at least 1.
    T : int, default 100
        Frames per sequence, at least 2.
    dt : float, default 0.1
        Time step.
    period : float, default 1.0
        ``T_p``: the time in which θ advances by π.

    Returns
    -------
    ndarray, float64, shape (n_sequences, T, 2)
        Positions ``(x, y)``.
    """
    n, T = _check_sizes(n_sequences, T)
    dt, period = _check_positive(dt, "dt"), _check_positive(period, "period")
    theta = math.pi * np.arange(T) * dt / period
    path = np.stack([np.cos(theta), np.sin(theta) * np.cos(theta)], axis=-1)
    return np.broadcast_to(path, (n, T, 2)).copy()


def _square_point(phase: np.ndarray) -> np.ndarray:
    """Point at ``phase`` ∈ [0, 1) of the counter-clockwise loop around the square (±1, ±1).

    The loop starts at (1, 0) and visits (1, 1), (−1, 1), (−1, −1), (1, −1) at phases
    1/8, 3/8, 5/8, 7/8 (perimeter 8 walked at constant speed).
    """
    s = 8.0 * phase  # distance walked along the perimeter, in [0, 8)
    x = np.empty_like(s)
    y = np.empty_like(s)
    right1 = s < 1  # (1, 0) → (1, 1)
    top = (s >= 1) & (s < 3)  # (1, 1) → (−1, 1)
    left = (s >= 3) & (s < 5)  # (−1, 1) → (−1, −1)
    bottom = (s >= 5) & (s < 7)  # (−1, −1) → (1, −1)
    right2 = s >= 7  # (1, −1) → (1, 0)
    x[right1], y[right1] = 1.0, s[right1]
    x[top], y[top] = 1.0 - (s[top] - 1.0), 1.0
    x[left], y[left] = -1.0, 1.0 - (s[left] - 3.0)
    x[bottom], y[bottom] = -1.0 + (s[bottom] - 5.0), -1.0
    x[right2], y[right2] = 1.0, -1.0 + (s[right2] - 7.0)
    return np.stack([x, y], axis=-1)


def _square_phase(T: int, dt: float, period: float) -> np.ndarray:
    # fraction of the current loop at frame t; the path is continuous in the phase (phase 1 is
    # phase 0), so a rounding error at a whole number of loops is harmless
    return np.mod(np.arange(T) * dt / period, 1.0)


def square(n_sequences: int, T: int = 100, dt: float = 0.2, period: float = 4.0) -> np.ndarray:
    """Constant-speed counter-clockwise loop around the square with corners (±1, ±1).

    The path starts at (1, 0) and completes one loop (perimeter 8) every ``period`` time units,
    i.e. every ``period/dt`` frames (20 for the defaults, so a frame advances 0.4 along the
    perimeter and the corners at perimeter distance 1, 3, 5, 7 fall between frames).  The
    direction is counter-clockwise — (1, 0) → (1, 1) → (−1, 1) → (−1, −1) → (1, −1) → (1, 0) —
    so that the phase of the loop agrees with :func:`square_phase_target`.

    Parameters
    ----------
    n_sequences : int
        Number of (identical) sequences, at least 1.
    T : int, default 100
        Frames per sequence, at least 2.
    dt : float, default 0.2
    period : float, default 4.0
        ``T_p``: duration of one loop.

    Returns
    -------
    ndarray, float64, shape (n_sequences, T, 2)
    """
    n, T = _check_sizes(n_sequences, T)
    dt, period = _check_positive(dt, "dt"), _check_positive(period, "period")
    path = _square_point(_square_phase(T, dt, period))
    return np.broadcast_to(path, (n, T, 2)).copy()


def square_phase_target(n_sequences: int, T: int = 100, dt: float = 0.2, period: float = 4.0) -> np.ndarray:
    """Linear-probe target of the square experiment: the loop-frequency sinusoid.

    ``(cos 2π t·dt/period, sin 2π t·dt/period)``: the point on the unit circle with the same
    phase (and direction, counter-clockwise from (1, 0)) as :func:`square`.

    Parameters
    ----------
    n_sequences, T, dt, period
        As in :func:`square`.

    Returns
    -------
    ndarray, float64, shape (n_sequences, T, 2)
    """
    n, T = _check_sizes(n_sequences, T)
    dt, period = _check_positive(dt, "dt"), _check_positive(period, "period")
    angle = 2.0 * math.pi * np.arange(T) * dt / period
    target = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return np.broadcast_to(target, (n, T, 2)).copy()


# --------------------------------------------------------------------------- random paths


def noisy_circle(
    n_sequences: int,
    T: int = 100,
    dt: float = 0.1,
    period: float = 2.0,
    step_noise: float = 0.05,
    rng=0,
) -> np.ndarray:
    """Noisy rotation on the unit circle, random per sequence.

    ``p_0 = (1, 0)``; then ``p_{t+1} = normalise(R(2π·dt/period) p_t + ε_t)`` with ``R(ω)`` the
    counter-clockwise rotation by ``ω`` and ``ε_t ~ N(0, step_noise·I)`` (``step_noise`` is the
    variance).  Every position has unit norm.

    Parameters
    ----------
    n_sequences : int
    T : int, default 100
    dt : float, default 0.1
    period : float, default 2.0
        Duration of one noise-free revolution.
    step_noise : float, default 0.05
        Variance of the per-step Gaussian noise on each axis.
    rng : numpy.random.Generator or int, default 0
        Source of randomness (a Generator advances; an int is a seed).

    Returns
    -------
    ndarray, float64, shape (n_sequences, T, 2)
    """
    n, T = _check_sizes(n_sequences, T)
    dt, period = _check_positive(dt, "dt"), _check_positive(period, "period")
    std = math.sqrt(_check_nonnegative(step_noise, "step_noise"))
    gen = as_generator(rng)
    omega = 2.0 * math.pi * dt / period
    rotation = np.array([[math.cos(omega), -math.sin(omega)], [math.sin(omega), math.cos(omega)]])
    noise = std * gen.standard_normal((n, T - 1, 2))
    positions = np.empty((n, T, 2))
    positions[:, 0] = (1.0, 0.0)
    for t in range(1, T):
        p = positions[:, t - 1] @ rotation.T + noise[:, t - 1]  # R p + ε (row vectors)
        norm = np.linalg.norm(p, axis=-1, keepdims=True)
        positions[:, t] = p / np.maximum(norm, np.finfo(float).tiny)
    return positions


def wobbly_velocity(positions: np.ndarray, k: float = 4, a: float = 0.5, theta0: float = -3 * math.pi / 8) -> np.ndarray:
    """Vector field of the wobbly system.

    With ``θ``, ``r`` the polar angle and radius of ``p = (x, y)``::

        ẋ = a k cos θ cos(k(θ − θ₀)) − r sin θ
        ẏ = a k sin θ cos(k(θ − θ₀)) + r cos θ

    i.e. a unit-rate counter-clockwise rotation plus a radial velocity ``a k cos(k(θ − θ₀))``
    that makes the radius wobble ``k`` times a revolution.

    Parameters
    ----------
    positions : ndarray, shape (..., 2)
    k, a, theta0 : float
        Wobble frequency, amplitude and phase.

    Returns
    -------
    ndarray, shape (..., 2)
        ``(ẋ, ẏ)``.
    """
    x, y = positions[..., 0], positions[..., 1]
    theta = np.arctan2(y, x)
    r = np.hypot(x, y)
    radial = a * k * np.cos(k * (theta - theta0))
    return np.stack([radial * np.cos(theta) - r * np.sin(theta), radial * np.sin(theta) + r * np.cos(theta)], axis=-1)


def rk4_step(velocity: Callable[[np.ndarray], np.ndarray], positions: np.ndarray, dt: float) -> np.ndarray:
    """One classical fourth-order Runge–Kutta step of the autonomous ODE ``ṗ = velocity(p)``.

    Parameters
    ----------
    velocity : callable
        Maps positions ``(..., 2)`` to velocities ``(..., 2)``.
    positions : ndarray, shape (..., 2)
    dt : float

    Returns
    -------
    ndarray, shape (..., 2)
        ``p + dt/6 (k1 + 2 k2 + 2 k3 + k4)``.
    """
    k1 = velocity(positions)
    k2 = velocity(positions + 0.5 * dt * k1)
    k3 = velocity(positions + 0.5 * dt * k2)
    k4 = velocity(positions + dt * k3)
    return positions + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def wobbly(
    n_sequences: int,
    T: int = 100,
    dt: float = 0.3,
    k: float = 4,
    a: float = 0.5,
    theta0: float = -3 * math.pi / 8,
    step_noise: float = 0.1,
    rng=0,
) -> np.ndarray:
    """The "wobbly" system of the identifiability experiment, random per sequence.

    ``p_0`` is uniform on the unit circle; then ``p_{t+1} = RK4(p_t, dt) + ε_t`` with one
    :func:`rk4_step` of :func:`wobbly_velocity` and ``ε_t ~ N(0, step_noise·I)``
    (``step_noise`` is the variance).  The radius is not renormalised, so paths may leave the
    rendered window ``[−3, 3]²`` (the renderer clamps the blob to the image border).

    Parameters
    ----------
    n_sequences : int
    T : int, default 100
    dt : float, default 0.3
    k : float, default 4
    a : float, default 0.5
    theta0 : float, default −3π/8
    step_noise : float, default 0.1
        Variance of the per-step Gaussian noise on each axis.
    rng : numpy.random.Generator or int, default 0

    Returns
    -------
    ndarray, float64, shape (n_sequences, T, 2)
    """
    n, T = _check_sizes(n_sequences, T)
    dt = _check_positive(dt, "dt")
    std = math.sqrt(_check_nonnegative(step_noise, "step_noise"))
    gen = as_generator(rng)
    start = gen.uniform(0.0, 2.0 * math.pi, size=n)
    noise = std * gen.standard_normal((n, T - 1, 2))
    positions = np.empty((n, T, 2))
    positions[:, 0, 0], positions[:, 0, 1] = np.cos(start), np.sin(start)

    def velocity(p):
        return wobbly_velocity(p, k=k, a=a, theta0=theta0)

    for t in range(1, T):
        positions[:, t] = rk4_step(velocity, positions[:, t - 1], dt) + noise[:, t - 1]
    return positions
