"""Rendering positions to frames: Gaussian blobs, swirl distortion, a random MLP, pixel noise.

All functions are vectorised numpy; frames are float32 arrays ``(..., H, W)``.

Pixel convention of the blob renderer (METHOD.md §5): a position ``p = (x, y)`` is drawn at
the pixel coordinates ``(row, col) = ((x + 3)·H/6, (y + 3)·W/6)``, so ``x`` moves the blob down
the rows and ``y`` along the columns, and the window ``[−3, 3]²`` maps onto the image.  Each
coordinate is clamped to ``[0, H−1]`` / ``[0, W−1]``.
"""

from __future__ import annotations

import math

import numpy as np

from .motions import as_generator

__all__ = ["pixel_coordinates", "render_blobs", "swirl", "swirl_source_coordinates", "RandomMLPRenderer", "add_pixel_noise"]

# images up to this many pixels are swirled by one matrix product with the (H·W, H·W) warp
# matrix (fast BLAS); larger ones by a chunked bilinear gather (chunk × H·W temporaries)
_SWIRL_DENSE_MAX = 4096
_SWIRL_CHUNK = 1 << 16


def _check_positions(positions) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim < 1 or positions.shape[-1] != 2:
        raise ValueError(f"positions must have shape (..., 2), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or inf")
    return positions


def _check_size(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"frames must have shape (..., H, W), got {frames.shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        frames = frames.astype(np.float32)
    return frames


def pixel_coordinates(positions, height: int = 10, width: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Blob centres in pixel coordinates, clamped to the image.

    Parameters
    ----------
    positions : array_like, shape (..., 2)
        Positions ``(x, y)``.
    height, width : int, default 10
        Image size ``H``, ``W``.

    Returns
    -------
    row : ndarray, float64, shape (...)
        ``clip((x + 3)·H/6, 0, H − 1)``.
    col : ndarray, float64, shape (...)
        ``clip((y + 3)·W/6, 0, W − 1)``.
    """
    positions = _check_positions(positions)
    height, width = _check_size(height, "height"), _check_size(width, "width")
    row = np.clip((positions[..., 0] + 3.0) * height / 6.0, 0.0, height - 1.0)
    col = np.clip((positions[..., 1] + 3.0) * width / 6.0, 0.0, width - 1.0)
    return row, col


def render_blobs(positions, height: int = 10, width: int = 10, sigma: float = 1.0) -> np.ndarray:
    """Render each position as one unnormalised Gaussian blob.

    ``frame[i, j] = exp(−((i − row)² + (j − col)²) / (2σ²))`` with ``(row, col)`` from
    :func:`pixel_coordinates`; the peak is 1 when the centre falls on a pixel.

    Parameters
    ----------
    positions : array_like, shape (..., 2)
        Positions ``(x, y)``.
    height, width : int, default 10
    sigma : float, default 1.0
        Blob width in pixels.

    Returns
    -------
    ndarray, float32, shape (..., height, width)
    """
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    row, col = pixel_coordinates(positions, height, width)
    # the blob is separable: exp(−Δi²/2σ²) · exp(−Δj²/2σ²)
    g_row = np.exp(-((np.arange(height) - row[..., None]) ** 2) / (2.0 * sigma**2)).astype(np.float32)
    g_col = np.exp(-((np.arange(width) - col[..., None]) ** 2) / (2.0 * sigma**2)).astype(np.float32)
    frames = np.empty(g_row.shape + (width,), dtype=np.float32)
    np.multiply(g_row[..., :, None], g_col[..., None, :], out=frames)
    return frames


# --------------------------------------------------------------------------- swirl


def _reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map integer indices into ``[0, size)`` by mirror reflection without repeating the edge.

    This is numpy's ``pad(mode="reflect")`` (scipy.ndimage ``mode="mirror"``), the boundary rule
    of skimage's ``swirl`` (``mode="reflect"``): ``−1 → 1``, ``size → size − 2``.
    """
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def swirl_source_coordinates(height: int, width: int, strength: float = 10.0, radius: float = 200.0, rotation: float = 0.0, center=None) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel of :func:`swirl` samples the input (the inverse mapping).

    For an output pixel at column ``c``, row ``r`` (skimage's ``(x, y) = (c, r)``) with
    ``ρ = |(c, r) − center|`` and ``φ`` its angle about ``center``::

        θ = rotation + strength · exp(−ρ / (radius · ln 2 / 5)) + φ
        source = center + ρ (cos θ, sin θ)

    Parameters
    ----------
    height, width : int
    strength, radius, rotation : float
    center : (column, row) pair or None
        Swirl centre; ``None`` is skimage's default ``(W/2, H/2)``.

    Returns
    -------
    row, col : ndarray, float64, shape (height, width)
        Source coordinates (may lie outside the image).
    """
    if center is None:
        center = (width / 2.0, height / 2.0)
    x0, y0 = (float(v) for v in center)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    rho = np.hypot(cols - x0, rows - y0)
    decay = radius / 5.0 * math.log(2.0)  # the swirl decays to ~1/1000 within `radius`
    theta = rotation + strength * np.exp(-rho / decay) + np.arctan2(rows - y0, cols - x0)
    return y0 + rho * np.sin(theta), x0 + rho * np.cos(theta)


def swirl(frames, strength: float = 10.0, radius: float = 200.0, rotation: float = 0.0, center=None) -> np.ndarray:
    """skimage-style swirl distortion of images, with bilinear interpolation.

    Re-implements ``skimage.transform.swirl(image, center, strength, radius, rotation)`` with
    its defaults ``order=1`` (bilinear), ``mode="reflect"`` (mirror at the border without
    repeating the edge pixel) and ``clip=True`` (a no-op for bilinear interpolation): each output
    pixel takes the bilinearly interpolated input value at :func:`swirl_source_coordinates`.
    The centre defaults to skimage's ``(col, row) = (W/2, H/2)`` — e.g. pixel (5, 5) of a 10×10
    image, half a pixel off the grid's geometric centre (4.5, 4.5), as in skimage.

    Parameters
    ----------
    frames : array_like, shape (..., H, W)
        Images; all leading axes are batch axes and share the same distortion.
    strength : float, default 10
        Amount of swirl: the rotation (radians) at the centre, on top of ``rotation``.
    radius : float, default 200
        Extent of the swirl in pixels.
    rotation : float, default 0
        Additional rotation (radians) of the whole image.
    center : (column, row) pair or None, default None
        Swirl centre, skimage's convention.

    Returns
    -------
    ndarray, shape (..., H, W)
        Swirled frames, in the input's floating dtype (float32 for integer input).
    """
    frames = _check_frames(frames)
    for name, value in (("strength", strength), ("radius", radius), ("rotation", rotation)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    if float(radius) <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    height, width = frames.shape[-2:]
    src_row, src_col = swirl_source_coordinates(height, width, float(strength), float(radius), float(rotation), center)
    r0 = np.floor(src_row)
    c0 = np.floor(src_col)
    dr, dc = src_row - r0, src_col - c0  # bilinear weights along rows / columns
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    rows = (_reflect_index(r0, height), _reflect_index(r0 + 1, height))
    cols = (_reflect_index(c0, width), _reflect_index(c0 + 1, width))
    index = [(rows[a] * width + cols[b]).ravel() for a in (0, 1) for b in (0, 1)]
    weight = [w.ravel().astype(frames.dtype) for w in ((1 - dr) * (1 - dc), (1 - dr) * dc, dr * (1 - dc), dr * dc)]

    flat = frames.reshape(-1, height * width)
    if height * width <= _SWIRL_DENSE_MAX:
        # the warp is linear in the image: out = in @ M with M (HW_in, HW_out), 4 entries a column
        matrix = np.zeros((height * width, height * width), dtype=frames.dtype)
        out_index = np.arange(height * width)
        for i, w in zip(index, weight):
            np.add.at(matrix, (i, out_index), w)  # add: reflected neighbours can coincide
        out = flat @ matrix
    else:
        out = np.empty_like(flat)
        for start in range(0, flat.shape[0], _SWIRL_CHUNK):
            block = flat[start : start + _SWIRL_CHUNK]
            acc = block[:, index[0]] * weight[0]
            for i, w in zip(index[1:], weight[1:]):
                acc += block[:, i] * w
            out[start : start + _SWIRL_CHUNK] = acc
    return out.reshape(frames.shape)


# --------------------------------------------------------------------------- random MLP


def _orthogonal(rows: int, cols: int, gen: np.random.Generator) -> np.ndarray:
    """A random ``(rows, cols)`` matrix with orthonormal rows or columns (torch's ``orthogonal_``).

    QR of a standard-normal matrix with the signs of ``R``'s diagonal folded into ``Q``, so the
    result is Haar-distributed.
    """
    flat = gen.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


class RandomMLPRenderer:
    """A frozen random MLP ``2 → 5 → 5 → 5 → 5 → obs_dim`` rendering positions as vectors.

    Layers are affine maps with orthogonal weight matrices (torch's ``orthogonal_``: orthonormal
    columns for a widening layer, rows for a narrowing one; gain 1) and torch.nn.Linear's default
    biases ``U(−1/√fan_in, 1/√fan_in)``, with a LeakyReLU (``negative_slope``) after every hidden
    layer and none after the output.  Every layer is injective on its input (full column rank,
    strictly monotone activation), so distinct positions get distinct renderings — but with the
    default slope 0.01 a region where a hidden unit is negative is compressed 100-fold per layer,
    so some seeds render parts of the plane almost identically; inspect a seed (or raise
    ``negative_slope``) before relying on it.  The parameters are drawn once from ``seed`` (numpy
    Generator), so the same seed gives the same renderer on every machine; use the same seed for
    the training and the test set.

    Parameters
    ----------
    seed : int
        Seed of the weights.
    obs_dim : int, default 100
        Output size (``H·W`` when reshaped to frames).
    hidden : tuple of int, default (5, 5, 5, 5)
        Widths of the hidden layers.
    negative_slope : float, default 0.01
        LeakyReLU slope for negative inputs (torch's default).

    Attributes
    ----------
    weights : list of ndarray, float64
        ``weights[i]`` has shape ``(fan_out, fan_in)``.
    biases : list of ndarray, float64
        ``biases[i]`` has shape ``(fan_out,)``.
    """

    def __init__(self, seed: int = 0, obs_dim: int = 100, hidden: tuple[int, ...] = (5, 5, 5, 5), negative_slope: float = 0.01):
        gen = as_generator(seed)
        self.seed = seed
        self.obs_dim = _check_size(obs_dim, "obs_dim")
        self.hidden = tuple(_check_size(h, "hidden width") for h in hidden)
        self.negative_slope = float(negative_slope)
        if not (0 < self.negative_slope <= 1):
            raise ValueError(f"negative_slope must be in (0, 1] to keep the map injective, got {negative_slope}")
        sizes = (2, *self.hidden, self.obs_dim)
        self.weights = [_orthogonal(fan_out, fan_in, gen) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        # torch.nn.Linear's default bias init, U(−1/√fan_in, 1/√fan_in), drawn after all weights
        self.biases = [gen.uniform(-1.0, 1.0, fan_out) / math.sqrt(fan_in) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]

    def __repr__(self) -> str:
        return f"RandomMLPRenderer(seed={self.seed}, obs_dim={self.obs_dim}, hidden={self.hidden}, negative_slope={self.negative_slope})"

    def __call__(self, positions) -> np.ndarray:
        """Render positions.

        Parameters
        ----------
        positions : array_like, shape (..., 2)

        Returns
        -------
        ndarray, float32, shape (..., obs_dim)
        """
        h = _check_positions(positions)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < last:
                h = np.where(h >= 0, h, self.negative_slope * h)
        return h.astype(np.float32)


# --------------------------------------------------------------------------- pixel noise


def add_pixel_noise(frames, noise_variance, rng) -> np.ndarray:
    """Add i.i.d. Gaussian pixel noise whose *variance* is the frame's noise level.

    ``noisy[..., i, j] = frames[..., i, j] + sqrt(noise_variance[...]) · ε``, ``ε ~ N(0, 1)``.

    Parameters
    ----------
    frames : array_like, shape (..., H, W)
        Clean frames, e.g. ``(n, T, H, W)``.
    noise_variance : float or array_like, broadcastable to ``frames.shape[:-2]``
        Per-frame noise variance (non-negative), e.g. a scalar or ``(n, T)``.
    rng : numpy.random.Generator or int

    Returns
    -------
    ndarray, float32, shape (..., H, W)
        A new array (``frames`` is not modified).
    """
    frames = _check_frames(frames)
    variance = np.asarray(noise_variance, dtype=np.float64)
    lead = frames.shape[:-2]
    try:
        variance = np.broadcast_to(variance, lead)
    except ValueError:
        raise ValueError(f"noise_variance of shape {variance.shape} does not broadcast to the frames' leading axes {lead}") from None
    if not np.all(np.isfinite(variance)) or np.any(variance < 0):
        raise ValueError("noise_variance must be finite and non-negative (it is a variance)")
    gen = as_generator(rng)
    noise = gen.standard_normal(frames.shape, dtype=np.float32)
    noise *= np.sqrt(variance).astype(np.float32)[..., None, None]
    noise += frames
    return noise
