"""Synthetic data generators: the DotMotion videos of the paper's experiments (METHOD.md §5).

Edge layer: numpy only (never imported by the maths or network layers).

* :mod:`.motions` — position paths ``(n_sequences, T, 2)``: :func:`figure8`, :func:`square`
  (+ :func:`square_phase_target`), :func:`noisy_circle`, :func:`wobbly`.
* :mod:`.render` — positions to frames: :func:`render_blobs`, :func:`swirl`,
  :class:`RandomMLPRenderer`, :func:`add_pixel_noise`.
* :mod:`.dotmotion` — :func:`make_dotmotion` builds a :class:`DotMotion` data set with the
  paper's defaults; :func:`resample_noise` draws fresh pixel noise (every training epoch).
* :mod:`.pendulum` — :func:`make_pendulum_video` builds a :class:`PendulumVideo` after the RKN
  pendulum benchmark (a damped, noise-kicked pendulum in 24×24 frames with time-correlated
  image noise; ``datasets/pendulum_video.md``).

Example
-------
>>> from ldmfilter.simulate import make_dotmotion, resample_noise
>>> train = make_dotmotion("figure8", n_sequences=800, seed=0)
>>> test = make_dotmotion("figure8", n_sequences=8, seed=1)
>>> train.frames.shape, train.positions.shape
((800, 100, 10, 10), (800, 100, 2))
"""

from .dotmotion import EXPERIMENTS, DotMotion, make_dotmotion, random_noise_variance, resample_noise
from .motions import as_generator, figure8, noisy_circle, rk4_step, square, square_phase_target, wobbly, wobbly_velocity
from .pendulum import (
    PENDULUM_SHAPES,
    PendulumVideo,
    correlated_noise_levels,
    make_pendulum_video,
    render_pendulum,
    simulate_pendulum,
)
from .render import RandomMLPRenderer, add_pixel_noise, pixel_coordinates, render_blobs, swirl, swirl_source_coordinates

__all__ = [
    "EXPERIMENTS",
    "DotMotion",
    "make_dotmotion",
    "resample_noise",
    "random_noise_variance",
    "as_generator",
    "figure8",
    "square",
    "square_phase_target",
    "noisy_circle",
    "wobbly",
    "wobbly_velocity",
    "rk4_step",
    "pixel_coordinates",
    "render_blobs",
    "swirl",
    "swirl_source_coordinates",
    "RandomMLPRenderer",
    "add_pixel_noise",
    "PendulumVideo",
    "make_pendulum_video",
    "simulate_pendulum",
    "render_pendulum",
    "correlated_noise_levels",
    "PENDULUM_SHAPES",
]
