"""Input standardisation, stored with the model."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Standardizer", "NORMALIZATIONS"]

NORMALIZATIONS = ("auto", "feature", "global", "none")


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
        if kind not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {kind!r}")
        obs_shape = x.shape[x.ndim - obs_ndim:]
        if kind == "none":
            return cls(torch.zeros(obs_shape, dtype=x.dtype), torch.ones(obs_shape, dtype=x.dtype))
        frames = x.reshape((-1,) + tuple(obs_shape))
        if mask is not None and not bool(mask.all()):
            frames = frames[mask.reshape(-1)]
        if kind == "auto":
            kind = "feature" if obs_ndim == 1 else "global"
        if bool(torch.isnan(frames).any()):  # missing values inside observed frames
            mean = frames.nanmean(0)
            variance = (frames - mean).square().nanmean(0)
            if bool(torch.isnan(mean).any()):
                raise ValueError("a feature is missing (NaN) in every observed frame; its scale is unknown")
        else:
            variance, mean = torch.var_mean(frames, dim=0, correction=0)  # one pass, no centred copy
        if kind == "feature":
            scale = variance.sqrt()
            scale = scale.clamp_min(1e-8 * float(scale.max().clamp_min(1e-30)))
        else:  # mean squared deviation from the per-feature means, over all features
            scale = variance.mean().sqrt().clamp_min(1e-30).expand(obs_shape).clone()
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())):
            raise ValueError(
                f"the observations are too large for {x.dtype} statistics (their mean or variance overflows, "
                f"largest magnitude {float(frames.abs().nan_to_num(0.0).max()):.3g}); rescale them or use float64"
            )
        return cls(mean, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale
