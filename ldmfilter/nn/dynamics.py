"""Linear latent dynamics of the paper's Kalman predictor (METHOD.md §2)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearDynamics", "spectral_radius"]


def spectral_radius(matrix: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue modulus of a square matrix (no gradient)."""
    with torch.no_grad():
        return torch.linalg.eigvals(matrix).abs().max()


class LinearDynamics(nn.Module):
    """``h_t = A (h_{t−1} − b) + b + w_t``, ``w_t ~ N(0, Q)``; ``z_t = D h_t + v_t``.

    ``Q = exp(s) · diag(exp(q))`` with a log-scale ``s`` that the noise model shares (``R =
    exp(s) I`` when R is not input-dependent).  ``D = [I_L 0]`` is fixed: the first ``L`` state
    dims are observed through the encoder, the remaining ``S − L`` are hidden.  The initial
    belief is ``N(0, I)``.

    Initialisation (the paper's): ``A = I + 0.1 · randn``, rescaled to spectral radius 1/1.1;
    ``b = 0``, ``q = 0``, ``s = 0``.

    Parameters
    ----------
    state_dim : int
        ``S``.
    latent_dim : int
        ``L ≤ S``.
    generator : torch.Generator, optional
        Source of randomness for ``A``.
    """

    def __init__(self, state_dim: int, latent_dim: int, generator: torch.Generator | None = None):
        super().__init__()
        if not 1 <= latent_dim <= state_dim:
            raise ValueError(f"need 1 <= latent_dim <= state_dim, got latent_dim={latent_dim}, state_dim={state_dim}")
        self.state_dim, self.latent_dim = int(state_dim), int(latent_dim)
        A = torch.eye(state_dim) + 0.1 * torch.randn(state_dim, state_dim, generator=generator)
        A = A / (spectral_radius(A) * 1.1)
        self.transition = nn.Parameter(A)
        self.offset = nn.Parameter(torch.zeros(state_dim))
        self.log_process_noise = nn.Parameter(torch.zeros(state_dim))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("observation_matrix", torch.eye(latent_dim, state_dim))

    def transition_matrix(self) -> torch.Tensor:
        """``A``, shape (S, S)."""
        return self.transition

    def transition_offset(self) -> torch.Tensor:
        """``c = (I − A) b``, shape (S,), so that ``A (h − b) + b = A h + c``."""
        return self.offset - self.transition @ self.offset

    def transition_cov(self) -> torch.Tensor:
        """``Q = exp(s) · diag(exp(q))``, shape (S, S)."""
        return torch.diag(torch.exp(self.log_scale + self.log_process_noise))

    def initial_belief(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(0, I)``: mean (S,) and covariance (S, S)."""
        ref = self.transition
        return ref.new_zeros(self.state_dim), torch.eye(self.state_dim, dtype=ref.dtype, device=ref.device)

    @torch.no_grad()
    def clip_spectral_radius_(self, max_radius: float = 1.02) -> bool:
        """Rescale ``A`` in place to spectral radius ``max_radius`` if it exceeds it.

        Returns
        -------
        bool
            Whether ``A`` was rescaled.
        """
        radius = spectral_radius(self.transition)
        if radius > max_radius:
            self.transition.mul_(max_radius / radius)
            return True
        return False
