"""A nonlinear observation map for the latent filter: ``z = D h + g_φ(h)``."""

from __future__ import annotations

import torch
from torch import nn

from .encoders import init_residual_mlp_, make_mlp

__all__ = ["MLPObservation", "OBSERVATIONS"]

OBSERVATIONS = ("linear", "mlp")
"""Observation maps of the latent Kalman filter: ``"linear"`` (``z = D h``, the paper's) or ``"mlp"``."""


class MLPObservation(nn.Module):
    """``z = D h + g_φ(h)``: the fixed selection ``D = [I_L 0]`` plus a residual tanh MLP.

    The residual's output layer starts at zero, so training starts from the paper's linear
    observation (and with ``g ≡ 0`` the filter's beliefs are exactly the linear model's).  A
    nonlinear map lets the state stay an affine image of what generates the frames while the
    latents saturate: a blob clamped to the image border pins its latent, and ``g_φ`` can
    bend the map there instead of the transition having to make up for it
    (``docs/nonlinear.md``).  The filter's update then comes from the moment rule, not the
    exact Kalman update.

    Parameters
    ----------
    state_dim, latent_dim : int
    hidden : tuple of int
        Hidden widths of ``g_φ``.
    generator : torch.Generator, optional
        Seeds the hidden layers' initial weights (uniform in ``±1/√fan_in``, biases zero).
    """

    def __init__(self, state_dim: int, latent_dim: int, hidden=(64,), generator: torch.Generator | None = None):
        super().__init__()
        if not hidden or not all(int(w) >= 1 for w in hidden):
            raise ValueError(f"hidden must be one or more positive widths, got {hidden!r}")
        self.state_dim, self.latent_dim = int(state_dim), int(latent_dim)
        self.register_buffer("selection", torch.eye(self.latent_dim, self.state_dim))
        residual = make_mlp(self.state_dim, tuple(int(w) for w in hidden), self.latent_dim, nn.Tanh)
        self.residual = init_residual_mlp_(residual, generator)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``D h + g_φ(h)``, shape (N, L), for states (N, S)."""
        return states @ self.selection.mT + self.residual(states)

    def value_and_jacobian(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The map and its Jacobian ``D + ∂g/∂h`` at states (N, S): shapes (N, L) and (N, L, S).

        Differentiable with ordinary autograd (the first-order rule's filter records it).
        """
        layers = list(self.residual)
        activation, jacobian = states, None
        for linear in layers[:-1:2]:
            activation = torch.tanh(activation @ linear.weight.mT + linear.bias)
            step = (1.0 - activation.square())[..., None] * linear.weight  # (N, H, H_prev)
            jacobian = step if jacobian is None else step @ jacobian
        out = layers[-1]
        value = states @ self.selection.mT + activation @ out.weight.mT + out.bias
        return value, self.selection + out.weight @ jacobian
