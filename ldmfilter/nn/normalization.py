"""Input standardisation, stored with the model."""

from __future__ import annotations

import torch
from torch import nn

from ..gaussian.blocks import any_in_blocks

__all__ = ["Standardizer", "NORMALIZATIONS"]

NORMALIZATIONS = ("auto", "feature", "global", "none")


def _check_kind(kind: str) -> None:
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {kind!r}")


def _scale(variance: torch.Tensor, kind: str, obs_ndim: int) -> torch.Tensor:
    """Per-feature scales from per-feature variances, for ``kind`` in ``"auto"``, ``"feature"``, ``"global"``."""
    if kind == "auto":
        kind = "feature" if obs_ndim == 1 else "global"
    if kind == "feature":
        scale = variance.sqrt()
        return scale.clamp_min(1e-8 * float(scale.max().clamp_min(1e-30)))
    # mean squared deviation from the per-feature means, over all features
    return variance.mean().sqrt().clamp_min(1e-30).expand(variance.shape).clone()


def _overflow(dtype: torch.dtype, largest: float) -> ValueError:
    return ValueError(
        f"the observations are too large for {dtype} statistics (their mean or variance overflows, "
        f"largest magnitude {largest:.3g}); rescale them or use float64"
    )


class Standardizer(nn.Module):
    """``(x − mean) / scale`` with statistics of the training data, kept as buffers.

    Parameters
    ----------
    mean : Tensor, shape obs_shape
    scale : Tensor, shape obs_shape
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    @classmethod
    def fit(cls, x: torch.Tensor, obs_ndim: int, kind: str = "auto", mask: torch.Tensor | None = None) -> "Standardizer":
        """Statistics of ``x`` (n, T, *obs_shape) over its observed frames.

        ``"feature"``: per-feature mean and standard deviation (sensor channels in different
        units); ``"global"``: per-feature mean and one shared scale (frames, where a per-pixel
        scale would blow up the noise of rarely lit pixels); ``"auto"``: ``"feature"`` for vector
        observations, ``"global"`` for frames; ``"none"``: identity.  Scales are floored at
        ``1e-8`` times the largest, so constant features stay finite.  NaN values (missing channels)
        are left out of the statistics.
        """
        _check_kind(kind)
        obs_shape = x.shape[x.ndim - obs_ndim:]
        if kind == "none":
            return cls(torch.zeros(obs_shape, dtype=x.dtype), torch.ones(obs_shape, dtype=x.dtype))
        frames = x.reshape((-1,) + tuple(obs_shape))
        if mask is not None and not bool(mask.all()):
            frames = frames[mask.reshape(-1)]
        if any_in_blocks(frames, torch.isnan):  # missing values inside observed frames
            mean = frames.nanmean(0)
            variance = (frames - mean).square().nanmean(0)
            if bool(torch.isnan(mean).any()):
                raise ValueError("a feature is missing (NaN) in every observed frame; its scale is unknown")
        else:
            variance, mean = torch.var_mean(frames, dim=0, correction=0)  # one pass, no centred copy
        scale = _scale(variance, kind, obs_ndim)
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())):
            raise _overflow(x.dtype, float(frames.abs().nan_to_num(0.0).max()))
        return cls(mean, scale)

    @classmethod
    def from_moments(
        cls, mean: torch.Tensor, variance: torch.Tensor, obs_ndim: int, kind: str = "auto", dtype: torch.dtype = torch.float32,
        largest: float = 0.0,
    ) -> "Standardizer":
        """The standardisation :meth:`fit` gives, from per-feature statistics accumulated elsewhere.

        For data too large to hold at once (e.g. streamed from disk): ``mean`` and ``variance``
        (population, ``correction=0``) of each feature over its observed values; they are cast
        to ``dtype`` and turned into scales as in :meth:`fit`.

        Parameters
        ----------
        mean, variance : Tensor, shape obs_shape
            NaN for a feature never observed.
        obs_ndim : int
            Number of observation dims (``len(obs_shape)``).
        kind : {"auto", "feature", "global", "none"}
        dtype : torch.dtype
            The model's dtype.
        largest : float
            Largest magnitude of the data, for the overflow message.

        Returns
        -------
        Standardizer
        """
        _check_kind(kind)
        mean, variance = torch.as_tensor(mean).to(dtype), torch.as_tensor(variance).to(dtype)
        if kind == "none":
            return cls(torch.zeros_like(mean), torch.ones_like(mean))
        if bool(torch.isnan(mean).any()):
            raise ValueError("a feature is missing (NaN) in every observed frame; its scale is unknown")
        scale = _scale(variance, kind, obs_ndim)
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())):
            raise _overflow(dtype, largest)
        return cls(mean, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale
