"""The RNN Gaussian predictor of the paper's identifiability experiment (METHOD.md §4)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .encoders import make_mlp
from .latent_filter import EncodesObservations, PredictiveOutput

__all__ = ["RNNPredictor", "LatentRNNModel"]


class RNNPredictor(nn.Module):
    """``p(z_t | z_{<t}) = N(p_t, I)`` with ``p_t`` = MLP head of an LSTM run over ``z_{<t}``.

    Parameters
    ----------
    latent_dim : int
    hidden_size : int
        LSTM units (the paper: 10).
    head : tuple of int
        Hidden widths of the MLP head (the paper: (20, 20)).
    """

    def __init__(self, latent_dim: int, hidden_size: int = 10, head=(20, 20)):
        super().__init__()
        self.lstm = nn.LSTM(latent_dim, hidden_size, batch_first=True)
        self.head = make_mlp(hidden_size, tuple(head), latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Predicted means ``p_t`` (B, T, L) from ``z`` (B, T, L); ``p_0`` sees no latent."""
        shifted = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        hidden, _ = self.lstm(shifted)
        return self.head(hidden)


def _unit_gaussian_log_density(targets: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """``log N(targets; means, I)`` summed over the last axis."""
    return -0.5 * ((targets - means).square().sum(-1) + targets.shape[-1] * math.log(2 * math.pi))


class LatentRNNModel(EncodesObservations):
    """Encoder + RNN predictor; same output type as :class:`~.latent_filter.LatentKalmanFilter`.

    Missing frames (mask False) are encoded as zeros and not scored; ``normalizer`` (optional)
    standardises the observations before the encoder.
    """

    def __init__(self, encoder: nn.Module, predictor: RNNPredictor, normalizer=None):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.normalizer = nn.Identity() if normalizer is None else normalizer

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> PredictiveOutput:
        """Encode ``x`` (B, T, *obs_shape) and predict each latent from the earlier ones."""
        z = self.encode_observed(x, mask)
        means = self.predictor(z)
        weight = None if mask is None else mask.to(z.dtype)

        def score(targets: torch.Tensor) -> torch.Tensor:
            density = _unit_gaussian_log_density(targets, means)
            return density if weight is None else density * weight

        return PredictiveOutput(z, score(z), score, mask)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate group: encoder and predictor."""
        return {"encoder": list(self.encoder.parameters()), "predictor": list(self.predictor.parameters())}

    def after_optimizer_step(self, max_radius: float = 1.02) -> None:
        """Nothing to constrain in an LSTM predictor."""
