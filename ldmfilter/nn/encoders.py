"""Encoders: observations (sensor vectors or frames) to latents ``z_t = f_φ(x_t)``."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MLPEncoder", "ConvEncoder", "make_mlp", "init_residual_mlp_", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


def make_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation="relu") -> nn.Sequential:
    """``Linear → act → … → Linear`` with the given hidden widths (no activation at the end).

    ``activation`` is a name in :data:`ACTIVATIONS` or an ``nn.Module`` class.
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        activation = ACTIVATIONS[activation]
    layers, width = [], in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@torch.no_grad()
def init_residual_mlp_(mlp: nn.Sequential, generator: torch.Generator | None = None) -> nn.Sequential:
    """Initialise a residual MLP in place so that it starts at zero.

    Hidden layers get weights uniform in ``±1/√fan_in`` (drawn from ``generator``) and zero biases;
    the output layer is all zeros, so the model it is added to starts from its linear part.
    """
    for layer in mlp:
        if isinstance(layer, nn.Linear) and layer is not mlp[-1]:
            bound = 1.0 / layer.in_features**0.5
            layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
            layer.bias.zero_()
    mlp[-1].weight.zero_()
    mlp[-1].bias.zero_()
    return mlp


class _FrameEncoder(nn.Module):
    """Shared plumbing: check the trailing observation shape, map ``body`` over leading axes."""

    def __init__(self, obs_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.obs_shape = tuple(int(n) for n in obs_shape)
        self.latent_dim = int(latent_dim)
        self.body: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x`` of shape ``(*lead, *obs_shape)`` to ``(*lead, latent_dim)``."""
        core = len(self.obs_shape)
        if tuple(x.shape[x.ndim - core:]) != self.obs_shape:
            raise ValueError(f"expected observations ending in shape {self.obs_shape}, got {tuple(x.shape)}")
        lead = x.shape[: x.ndim - core]
        out = self.body(x.reshape((-1,) + self.obs_shape))
        return out.reshape(lead + (self.latent_dim,))


class MLPEncoder(_FrameEncoder):
    """MLP on the flattened observation: ``prod(obs_shape) → hidden… → latent_dim``.

    The paper's encoder is ``MLPEncoder((100,), 5, hidden=(100,))`` on flattened 10×10 frames;
    frames of any shape are flattened.

    Parameters
    ----------
    obs_shape : tuple of int
        Shape of one observation, e.g. ``(obs_dim,)`` or ``(H, W)``.
    latent_dim : int
    hidden : tuple of int
    activation : str
    """

    def __init__(self, obs_shape, latent_dim: int, hidden=(100,), activation: str = "relu"):
        super().__init__(obs_shape, latent_dim)
        self.body = nn.Sequential(
            nn.Flatten(1), make_mlp(math.prod(self.obs_shape), tuple(hidden), self.latent_dim, activation)
        )


class ConvEncoder(_FrameEncoder):
    """Small conv net for frames ``(C, H, W)`` (or ``(H, W)``, one channel).

    ``[conv3×3 → act] × len(channels)`` (stride 1, padding 1, so positions are kept), then a
    linear read-out of the flattened feature map to ``latent_dim``.

    Parameters
    ----------
    obs_shape : tuple of int
        ``(C, H, W)`` or ``(H, W)``.
    latent_dim : int
    channels : tuple of int
    activation : str
    """

    def __init__(self, obs_shape, latent_dim: int, channels=(16, 16), activation: str = "relu"):
        super().__init__(obs_shape, latent_dim)
        if len(self.obs_shape) not in (2, 3):
            raise ValueError(f"ConvEncoder needs frames of shape (H, W) or (C, H, W), got {self.obs_shape}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        in_channels = 1 if len(self.obs_shape) == 2 else self.obs_shape[0]
        height, width = self.obs_shape[-2:]
        layers = [nn.Flatten(1), nn.Unflatten(1, (in_channels, height, width))]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), ACTIVATIONS[activation]()]
            in_channels = out_channels
        layers += [nn.Flatten(1), nn.Linear(in_channels * height * width, self.latent_dim)]
        self.body = nn.Sequential(*layers)
