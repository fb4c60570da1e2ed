"""A nonlinear observation map for the latent filter: ``z = D h + g_φ(h)``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .encoders import init_residual_mlp_, make_mlp

__all__ = ["ClampObservation", "MLPObservation", "OBSERVATIONS"]

OBSERVATIONS = ("linear", "mlp", "clamp")
"""Observation maps of the latent Kalman filter: ``"linear"`` (``z = D h``, the paper's), ``"mlp"`` or ``"clamp"``."""


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


class ClampObservation(nn.Module):
    """``z_i = clamp(h_i)``: each latent is its state coordinate between two learned bounds, flat beyond.

    On each observed coordinate ``x = h_i`` (``i < L``; the hidden coordinates are not seen)::

        c(x)  = lo_i + (softplus(β (x − lo_i)) − softplus(β (x − hi_i))) / β
        z_i   = (1 − ε) c(x) + ε x

    ``c`` is the identity between ``lo_i`` and ``hi_i`` with corners rounded over about ``1/β``
    and constant beyond; an optional leak ``ε`` keeps a small slope there.  The map is for
    frames that pin a latent while what generates them moves on (a blob clamped to the image
    border): the state can follow the true position out of the band while the predicted latent
    stays at the bound.  Unlike :class:`MLPObservation` it cannot warp the seen range, so inside
    the band the state stays the affine image of the latents that the linear map gives.  The
    bounds start at ``∓1`` and are free: if they cross (``lo > hi``), the map between them is a
    reflection.

    Beyond the band the frames say nothing about the state, so only the transition holds it
    there.  On the wobbly video a tanh residual carried one seed's state in seven far beyond the
    band for good (probe R² 0.000; five seeds reached 0.97).  Neither a leak (``ε = 0.05``:
    0.93 on that seed, lower on others), localized residual units, the unscented rule nor
    slower bounds made every seed train well.  The seeds that stop near 0.85 still hold the
    position, warped by the encoder: a nearest-neighbour read-out of their state gives 0.96–0.98
    (``docs/nonlinear.md``).

    Parameters
    ----------
    state_dim, latent_dim : int
    sharpness : float
        ``β``, in the latents' units.
    leak : float
        ``ε``, the slope outside the band, in ``[0, 1)``.
    """

    def __init__(self, state_dim: int, latent_dim: int, sharpness: float = 10.0, leak: float = 0.0):
        super().__init__()
        if not sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {sharpness!r}")
        if not 0 <= leak < 1:
            raise ValueError(f"leak must be in [0, 1), got {leak!r}")
        self.state_dim, self.latent_dim = int(state_dim), int(latent_dim)
        self.sharpness, self.leak = float(sharpness), float(leak)
        self.register_buffer("selection", torch.eye(self.latent_dim, self.state_dim))
        self.low = nn.Parameter(-torch.ones(self.latent_dim))
        self.high = nn.Parameter(torch.ones(self.latent_dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """The clamped observed coordinates, shape (N, L), for states (N, S)."""
        x, beta = states[..., : self.latent_dim], self.sharpness
        clamped = self.low + (F.softplus(beta * (x - self.low)) - F.softplus(beta * (x - self.high))) / beta
        return (1.0 - self.leak) * clamped + self.leak * x

    def value_and_jacobian(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The map and its Jacobian ``diag((1 − ε)(σ(β(x − lo)) − σ(β(x − hi))) + ε) D`` at states
        (N, S): shapes (N, L) and (N, L, S)."""
        x, beta = states[..., : self.latent_dim], self.sharpness
        slope = torch.sigmoid(beta * (x - self.low)) - torch.sigmoid(beta * (x - self.high))
        return self(states), ((1.0 - self.leak) * slope + self.leak)[..., None] * self.selection
