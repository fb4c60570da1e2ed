"""Pseudo-observation noise ``R`` of the latent filter: fixed shape, learned, or input-dependent."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .encoders import make_mlp

__all__ = ["ScaledIdentityNoise", "LearnedDiagonalNoise", "InputDependentNoise", "NOISE_KINDS", "make_noise"]


class ScaledIdentityNoise(nn.Module):
    """``R = exp(s) · I_L`` with the dynamics' shared log-scale ``s`` (the paper's "fixed R")."""

    input_dependent = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = int(latent_dim)

    def forward(self, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """Return R, shape (L, L); ``x`` is ignored."""
        eye = torch.eye(self.latent_dim, dtype=log_scale.dtype, device=log_scale.device)
        return torch.exp(log_scale) * eye


class LearnedDiagonalNoise(nn.Module):
    """``R = exp(s) · diag(exp(r))`` with a learned constant ``r`` (one variance per latent)."""

    input_dependent = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """Return R, shape (L, L); ``x`` is ignored."""
        return torch.diag(torch.exp(log_scale + self.log_variance))


class InputDependentNoise(nn.Module):
    """Heteroscedastic ``R_t = exp(s) · diag(softplus(g_ψ(x_t)) + floor)``, a noise head on the input.

    With ``correlated=True`` the head also gives ``R_t`` its orientation: ``R_t = exp(s) · (F_t F_tᵀ
    + floor · (1 + v_t) · I)`` with ``F_t`` lower triangular, ``F_t = I + tril(g_ψ(x_t))`` (``L (L +
    1) / 2`` outputs) and ``v_t`` the mean diagonal entry of ``F_t F_tᵀ``.  Every entry of ``F_t``
    is free: ``F_t F_tᵀ`` is positive semi-definite whatever their signs, and ``R_t`` can trust one
    direction and ignore another without the parametrisation degenerating (a ``sqrt`` or ``exp``
    on the diagonal would send its gradient to infinity or its input to minus infinity there).
    The floor grows with ``v_t``, so ``R_t``'s condition number stays below about ``L / floor``
    (2·10⁴ for ``L = 2``), which float32 factorises safely however large the head makes it.  A
    diagonal ``R_t`` can only discount a frame along the latent axes; when a frame's noise is
    larger along a direction that the latents do not align with (noise correlated across
    latents), the correlated head can still say so.  Either head learns what the objective
    rewards, the spread of the latents around their prediction, not how much a frame shows: a
    latent that a frame pins to a constant (a blob clamped to the image edge) is easy to predict,
    and the head makes its ``R_t`` smaller, not larger (``benchmarks/results/nonlinear.md``,
    wobbly notes).

    The head gives each frame's noise *relative* to the dynamics' shared log-scale ``s``, which
    also scales ``Q`` (as the constant noise models do).  The paper's absolute head
    (``R_t = diag(softplus(g_ψ(x_t)) + floor)``, ``scale_tied=False``) lets training trade the
    observation noise against ``Q`` and the latents' scale: on the paper's noisy circle it ended
    with ``R_t`` near zero for every frame and the state noise absorbing the pixel noise (probe
    R² 0.84 at the head's learning rate ×1, against 0.94 tied; ``benchmarks/results/paper.md``).
    On the pendulum video, where frames are either clean or pure noise, the absolute head at ×10
    did better (read-out NLL 0.41 and 0.22 against 0.62–0.70 and 0.60–0.61 tied, seeds 0 and 1).

    Parameters
    ----------
    obs_shape : tuple of int
    latent_dim : int
    hidden : tuple of int
    floor : float
        Smallest relative variance, keeps ``R_t`` positive definite (with ``correlated``, relative
        to ``1 + v_t``).
    scale_tied : bool
        Multiply by ``exp(s)`` (default); False: the paper's absolute head.
    correlated : bool
        Full ``R_t`` (``L (L + 1) / 2`` outputs) instead of a diagonal one (``L`` outputs).
    """

    input_dependent = True

    def __init__(self, obs_shape, latent_dim: int, hidden=(100,), floor: float = 1e-4, scale_tied: bool = True,
                 correlated: bool = False):
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.floor = float(floor)
        self.scale_tied = bool(scale_tied)
        self.correlated = bool(correlated)
        self.latent_dim = int(latent_dim)
        outputs = self.latent_dim * (self.latent_dim + 1) // 2 if self.correlated else self.latent_dim
        self.net = make_mlp(math.prod(self.obs_shape), tuple(hidden), outputs)

    def forward(self, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """Return R_t of shape (*lead, L, L) for ``x`` of shape (*lead, *obs_shape)."""
        lead = x.shape[: x.ndim - len(self.obs_shape)]
        out = self.net(x.reshape(lead + (-1,)))
        if self.correlated:
            return self._correlated(out, log_scale)
        variance = F.softplus(out) + self.floor
        if self.scale_tied:
            variance = torch.exp(log_scale) * variance
        return torch.diag_embed(variance)

    def _correlated(self, out: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """Full ``R_t`` (*lead, L, L) from the head's ``L (L + 1) / 2`` outputs (*lead, ·)."""
        L = self.latent_dim
        rows, cols = torch.tril_indices(L, L, -1, device=out.device)
        factor = torch.diag_embed(1.0 + out[..., :L])
        factor[..., rows, cols] = out[..., L:]  # a fresh tensor: the assignment keeps the graph
        spread = factor @ factor.mT
        mean_variance = spread.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
        cov = spread + self.floor * (1.0 + mean_variance) * torch.eye(L, dtype=out.dtype, device=out.device)
        return torch.exp(log_scale) * cov if self.scale_tied else cov


NOISE_KINDS = ("fixed", "learned", "input", "input_absolute", "input_full")


def make_noise(kind: str, obs_shape, latent_dim: int, hidden=(100,)) -> nn.Module:
    """Build the noise model named by ``kind`` (one of ``NOISE_KINDS``).

    ``"input"``: :class:`InputDependentNoise` relative to the shared scale; ``"input_absolute"``:
    the same head giving ``R_t`` itself (the paper's); ``"input_full"``: the head relative to the
    shared scale with a full (correlated) ``R_t``.
    """
    if kind == "fixed":
        return ScaledIdentityNoise(latent_dim)
    if kind == "learned":
        return LearnedDiagonalNoise(latent_dim)
    if kind == "input":
        return InputDependentNoise(obs_shape, latent_dim, hidden)
    if kind == "input_absolute":
        return InputDependentNoise(obs_shape, latent_dim, hidden, scale_tied=False)
    if kind == "input_full":
        return InputDependentNoise(obs_shape, latent_dim, hidden, correlated=True)
    raise ValueError(f"noise must be one of {list(NOISE_KINDS)}, got {kind!r}")
