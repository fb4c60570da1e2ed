"""DotMotion videos: the synthetic data of the paper's experiments (METHOD.md §5).

A DotMotion sequence is a video of one blob (or a random-MLP rendering) moving along a 2-D
path, plus i.i.d. Gaussian pixel noise.  :func:`make_dotmotion` builds a data set for one of the
four experiments with the paper's defaults:

* ``figure8``: :func:`~.motions.figure8` (dt 0.1, T_p 1); pixel-noise variance 0.01 (0.3 for
  the harder variant); probe target: the positions.
* ``square``: :func:`~.motions.square` (dt 0.2, T_p 4, 20 frames a loop); variance 0.1; probe
  target: the loop-frequency sinusoid :func:`~.motions.square_phase_target`.
* ``noisy_circle``: :func:`~.motions.noisy_circle` (dt 0.1, T_p 2, step variance 0.05);
  variance ``max(0, Exp(mean 0.3) − 0.09)`` drawn per frame; target: the positions.
* ``wobbly``: :func:`~.motions.wobbly` (dt 0.3, RK4 + step variance 0.1); swirl-distorted
  frames, no pixel noise; target: the positions.

Randomness: one integer ``seed`` is split (``numpy.random.SeedSequence.spawn``) into independent
streams for the path, the per-frame noise levels and the pixel noise, so overriding e.g. the
noise level does not change the paths.  The random-MLP renderer has its own ``renderer_seed``
(default 0) so that training and test sets made with different ``seed`` share one renderer.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

from .motions import as_generator, figure8, noisy_circle, square, square_phase_target, wobbly
from .render import RandomMLPRenderer, add_pixel_noise, render_blobs
from .render import swirl as swirl_frames

__all__ = ["EXPERIMENTS", "DotMotion", "make_dotmotion", "resample_noise", "random_noise_variance"]

# The paper's settings per experiment: the path function, its time step, the constant pixel-noise
# variance (None: random per frame, see `random_noise_variance`) and whether frames are swirled.
EXPERIMENTS: dict[str, dict] = {
    "figure8": dict(motion=figure8, dt=0.1, noise_variance=0.01, swirl=False),
    "square": dict(motion=square, dt=0.2, noise_variance=0.1, swirl=False),
    "noisy_circle": dict(motion=noisy_circle, dt=0.1, noise_variance=None, swirl=False),
    "wobbly": dict(motion=wobbly, dt=0.3, noise_variance=0.0, swirl=True),
}

_RENDERERS = ("blob", "mlp")


@dataclass(frozen=True)
class DotMotion:
    """A DotMotion data set.

    Attributes
    ----------
    frames : ndarray, float32, shape (n, T, H, W)
        Noisy frames (``clean_frames`` plus pixel noise).  When every noise variance is zero this
        is the very same array as ``clean_frames`` (not a copy).  Flatten with
        :meth:`flat_frames` for an MLP encoder.
    clean_frames : ndarray, float32, shape (n, T, H, W)
        Noise-free renderings (swirled when the swirl option is on).
    positions : ndarray, float64, shape (n, T, 2)
        True positions ``(x, y)``.
    noise_variance : ndarray, float64, shape (n, T)
        Pixel-noise variance of every frame.
    target : ndarray, float64, shape (n, T, 2)
        What a linear probe should predict: the positions, or for ``"square"`` the loop-frequency
        sinusoid ``(cos 2πt·dt/T_p, sin 2πt·dt/T_p)``.
    experiment : str
        One of :data:`EXPERIMENTS`.
    dt : float
        Time step between frames.
    """

    frames: np.ndarray
    clean_frames: np.ndarray
    positions: np.ndarray
    noise_variance: np.ndarray
    target: np.ndarray
    experiment: str
    dt: float

    @property
    def n_sequences(self) -> int:
        """Number of sequences ``n``."""
        return self.frames.shape[0]

    @property
    def n_steps(self) -> int:
        """Frames per sequence ``T``."""
        return self.frames.shape[1]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.frames.shape[2:])

    def flat_frames(self, clean: bool = False) -> np.ndarray:
        """Frames flattened to vectors (a view).

        Parameters
        ----------
        clean : bool, default False
            Flatten ``clean_frames`` instead of ``frames``.

        Returns
        -------
        ndarray, float32, shape (n, T, H·W)
        """
        frames = self.clean_frames if clean else self.frames
        return frames.reshape(*frames.shape[:2], -1)


def random_noise_variance(shape, mean: float = 0.3, offset: float = 0.09, rng=0) -> np.ndarray:
    """Per-frame noise levels of the noisy-circle experiment: ``max(0, Exp(mean) − offset)``.

    The level is zero with probability ``1 − exp(−offset/mean)`` (26% for the defaults) and its
    expectation is ``mean·exp(−offset/mean)`` (≈ 0.222).

    Parameters
    ----------
    shape : int or tuple of int
        E.g. ``(n_sequences, T)``.
    mean : float, default 0.3
        Mean of the exponential distribution.
    offset : float, default 0.09
        Subtracted before clipping at zero.
    rng : numpy.random.Generator or int, default 0

    Returns
    -------
    ndarray, float64, shape ``shape``
    """
    if not (math.isfinite(mean) and mean > 0):
        raise ValueError(f"mean must be positive, got {mean}")
    if not (math.isfinite(offset) and offset >= 0):
        raise ValueError(f"offset must be non-negative, got {offset}")
    draw = as_generator(rng).exponential(mean, size=shape)
    return np.maximum(0.0, draw - offset)


def _check_experiment(experiment) -> dict:
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[experiment]


def _check_motion_kwargs(experiment: str, motion, motion_kwargs: dict) -> None:
    allowed = set(inspect.signature(motion).parameters) - {"n_sequences", "T", "rng"}
    unknown = sorted(set(motion_kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown path option(s) {unknown} for experiment {experiment!r}; expected some of {sorted(allowed)}")


def _noise_levels(noise_variance, default, shape: tuple[int, int], gen: np.random.Generator) -> np.ndarray:
    if noise_variance is None:
        if default is None:
            return random_noise_variance(shape, rng=gen)
        noise_variance = default
    level = np.asarray(noise_variance, dtype=np.float64)
    if not np.all(np.isfinite(level)) or np.any(level < 0):
        raise ValueError(f"noise_variance must be finite and non-negative (a variance), got {noise_variance!r}")
    try:
        return np.broadcast_to(level, shape).copy()
    except ValueError:
        raise ValueError(f"noise_variance of shape {level.shape} does not broadcast to (n_sequences, T) = {shape}") from None


def make_dotmotion(
    experiment: str,
    n_sequences: int,
    T: int = 100,
    seed: int = 0,
    noise_variance=None,
    swirl: bool | None = None,
    renderer: str = "blob",
    *,
    renderer_seed: int = 0,
    height: int = 10,
    width: int = 10,
    sigma: float = 1.0,
    **motion_kwargs,
) -> DotMotion:
    """Generate a DotMotion data set for one of the paper's experiments.

    Parameters
    ----------
    experiment : {"figure8", "square", "noisy_circle", "wobbly"}
    n_sequences : int
        Number of sequences ``n`` (≥ 1).  The paper uses 800 training and 8 test sequences
        (10,000 training sequences for ``"wobbly"``).
    T : int, default 100
        Frames per sequence (≥ 2).
    seed : int, default 0
        Seed of the paths, noise levels and pixel noise (use different seeds for train and test).
    noise_variance : float or array_like broadcastable to (n, T), optional
        Pixel-noise variance; overrides the experiment's default (0.01 figure8, 0.1 square,
        random per frame for noisy_circle, 0 for wobbly), e.g. 0.3 for the harder figure-8.
    swirl : bool, optional
        Swirl-distort the blob frames (strength 10, radius 200, rotation 0).  ``None`` uses the
        experiment's default (on for ``"wobbly"`` with the blob renderer, off otherwise).
    renderer : {"blob", "mlp"}, default "blob"
        Gaussian blob image, or a frozen :class:`RandomMLPRenderer` whose ``H·W`` outputs are
        reshaped to ``(H, W)``.
    renderer_seed : int, default 0
        Seed of the random MLP (keep it equal across training and test sets).
    height, width : int, default 10
        Frame size.
    sigma : float, default 1.0
        Blob width in pixels.
    **motion_kwargs
        Options of the path function, e.g. ``dt``, ``period``, ``step_noise`` (see
        :mod:`ldmfilter.simulate.motions`).

    Returns
    -------
    DotMotion
        ``frames``/``clean_frames`` float32 ``(n, T, H, W)``, ``positions`` and ``target``
        float64 ``(n, T, 2)``, ``noise_variance`` float64 ``(n, T)``.

    Examples
    --------
    >>> train = make_dotmotion("figure8", 800, seed=0)
    >>> test = make_dotmotion("figure8", 8, seed=1)
    >>> x = train.flat_frames()          # (800, 100, 100) encoder input
    """
    config = _check_experiment(experiment)
    motion = config["motion"]
    _check_motion_kwargs(experiment, motion, motion_kwargs)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if renderer not in _RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; expected one of {list(_RENDERERS)}")
    if swirl is None:
        swirl = config["swirl"] and renderer == "blob"
    elif not isinstance(swirl, (bool, np.bool_)):
        raise TypeError(f"swirl must be a bool or None, got {type(swirl).__name__}")
    elif swirl and renderer != "blob":
        raise ValueError("swirl=True distorts blob images; it cannot be combined with renderer='mlp'")

    path_seq, level_seq, pixel_seq = np.random.SeedSequence(int(seed)).spawn(3)
    if "rng" in inspect.signature(motion).parameters:
        motion_kwargs["rng"] = np.random.default_rng(path_seq)
    positions = motion(n_sequences, T, **motion_kwargs)  # validates n_sequences, T, dt, ...
    n, T = positions.shape[:2]
    dt = float(motion_kwargs.get("dt", config["dt"]))
    if experiment == "square":
        target = square_phase_target(n, T, dt, motion_kwargs.get("period", 4.0))
    else:
        target = positions.copy()

    levels = _noise_levels(noise_variance, config["noise_variance"], (n, T), np.random.default_rng(level_seq))

    if renderer == "blob":
        clean = render_blobs(positions, height, width, sigma)
        if swirl:
            clean = swirl_frames(clean, strength=10.0, radius=200.0, rotation=0.0)
    else:
        mlp = RandomMLPRenderer(renderer_seed, obs_dim=height * width)
        clean = mlp(positions).reshape(n, T, height, width)

    if np.any(levels > 0):
        frames = add_pixel_noise(clean, levels, np.random.default_rng(pixel_seq))
    else:
        frames = clean
    return DotMotion(frames=frames, clean_frames=clean, positions=positions, noise_variance=levels, target=target, experiment=experiment, dt=dt)


def resample_noise(data: DotMotion, rng) -> np.ndarray:
    """Fresh noisy frames: ``data.clean_frames`` plus new pixel noise at ``data.noise_variance``.

    Training frames get fresh pixel noise every epoch; the per-frame noise levels (and the
    paths) stay those of ``data``.

    Parameters
    ----------
    data : DotMotion
    rng : numpy.random.Generator or int
        Use a new one every epoch, e.g. ``numpy.random.default_rng([seed, epoch])``.

    Returns
    -------
    ndarray, float32, shape (n, T, H, W)
        A new array (a copy of the clean frames when every noise variance is zero).
    """
    if not isinstance(data, DotMotion):
        raise TypeError(f"data must be a DotMotion, got {type(data).__name__}")
    if not np.any(data.noise_variance > 0):
        return data.clean_frames.copy()
    return add_pixel_noise(data.clean_frames, data.noise_variance, rng)
