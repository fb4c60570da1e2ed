"""Unconstrained parametrisations for maximum-likelihood fits of state-space models.

* :class:`CovarianceParameter`: ``Σ = L Lᵀ`` with ``L`` lower triangular and a log-parametrised
  diagonal (or ``Σ = diag(exp(s))``), positive definite for any parameter values.
* :class:`StableMatrix`: ``A = ρ · T⁻ᵀ C Tᵀ`` with ``T`` lower triangular (log diagonal) and
  ``C = M · tanh(‖M‖₂) / ‖M‖₂``, so ``‖C‖₂ < 1`` and the spectral radius of ``A`` is below ``ρ``
  for any parameter values.  Conversely every ``A`` with spectral radius below ``ρ`` has this
  form (Lyapunov: with ``X = Bᵀ X B + I`` for ``B = A/ρ`` and ``X = T Tᵀ``, ``‖Tᵀ B T⁻ᵀ‖₂ < 1``),
  which is how a starting value is encoded.
* :func:`optimise`: Adam or L-BFGS (strong Wolfe line search) on a scalar loss, with a
  relative-change stopping rule.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import nn

__all__ = ["CovarianceParameter", "StableMatrix", "optimise", "OPTIMIZERS"]

OPTIMIZERS = {"adam": 0.01, "lbfgs": 1.0}  # name → default learning rate


def _lower(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(strictly lower part, log diagonal) of a lower-triangular factor with positive diagonal."""
    return torch.tril(values, -1), values.diagonal().log()


def _factor(lower: torch.Tensor, log_diag: torch.Tensor) -> torch.Tensor:
    return torch.tril(lower, -1) + torch.diag_embed(log_diag.exp())


class CovarianceParameter(nn.Module):
    """A learnable positive definite matrix.

    Parameters
    ----------
    value : Tensor, shape (n, n)
        Starting value, symmetric positive semi-definite (a small jitter makes it definite).
    diagonal : bool
        Keep it diagonal (the start's off-diagonal entries are dropped).
    """

    def __init__(self, value: torch.Tensor, diagonal: bool = False):
        super().__init__()
        value = 0.5 * (value.detach() + value.detach().mT)
        n = value.shape[-1]
        jitter = max(float(value.diagonal().mean()) * 1e-9, torch.finfo(value.dtype).tiny ** 0.5)
        eye = torch.eye(n, dtype=value.dtype)
        self.diagonal = diagonal
        if diagonal:
            self.log_var = nn.Parameter(value.diagonal().clamp_min(jitter).log())
        else:
            factor = torch.linalg.cholesky_ex(value + jitter * eye)[0]
            if not bool(torch.isfinite(factor).all()) or bool((factor.diagonal() <= 0).any()):
                values, vectors = torch.linalg.eigh(value)
                factor = torch.linalg.cholesky((vectors * values.clamp_min(jitter * 10)) @ vectors.mT)
            lower, log_diag = _lower(factor)
            self.lower, self.log_diag = nn.Parameter(lower), nn.Parameter(log_diag)

    def forward(self) -> torch.Tensor:
        if self.diagonal:
            return torch.diag_embed(self.log_var.exp())
        factor = _factor(self.lower, self.log_diag)
        return factor @ factor.mT


def _spectral_norm(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(M, ord=2)


class StableMatrix(nn.Module):
    """A learnable square matrix with spectral radius below ``max_radius``.

    Parameters
    ----------
    value : Tensor, shape (S, S)
        Starting value; scaled down to spectral radius ``0.99 · max_radius`` when it is not below
        ``max_radius`` already.
    max_radius : float
        ``ρ > 0``; at most 1 gives stable dynamics.
    """

    def __init__(self, value: torch.Tensor, max_radius: float = 0.999):
        super().__init__()
        self.max_radius = float(max_radius)
        A = value.detach().to(torch.float64)
        radius = float(torch.linalg.eigvals(A).abs().max())
        if radius >= 0.99 * self.max_radius:
            A = A * (0.99 * self.max_radius / radius)
        B = (A / self.max_radius).numpy()
        X = scipy.linalg.solve_discrete_lyapunov(B.T, np.eye(B.shape[0]))  # X = Bᵀ X B + I
        T = torch.linalg.cholesky(torch.as_tensor(0.5 * (X + X.T)))
        C = torch.linalg.solve_triangular(T, (T.mT @ torch.as_tensor(B)).mT, upper=False).mT  # Tᵀ B T⁻ᵀ
        norm = float(_spectral_norm(C))
        M = C * (math.atanh(min(norm, 1 - 1e-12)) / norm) if norm > 1e-12 else C
        lower, log_diag = _lower(T)
        dtype = value.dtype
        self.raw = nn.Parameter(M.to(dtype))
        self.lower, self.log_diag = nn.Parameter(lower.to(dtype)), nn.Parameter(log_diag.to(dtype))

    def forward(self) -> torch.Tensor:
        norm = _spectral_norm(self.raw)
        safe = norm.clamp_min(1e-6)
        scale = torch.where(norm < 1e-6, 1.0 - norm**2 / 3.0, torch.tanh(safe) / safe)  # tanh(n)/n, → 1 at 0
        C = self.raw * scale
        T = _factor(self.lower, self.log_diag)
        # A = ρ T⁻ᵀ C Tᵀ
        return self.max_radius * torch.linalg.solve_triangular(T.mT, C @ T.mT, upper=True)


def optimise(
    parameters,
    loss_fn: Callable[[], torch.Tensor],
    n_iter: int,
    tol: float,
    optimizer: str = "lbfgs",
    learning_rate: float | None = None,
    keep_best: Callable[[], None] | None = None,
) -> list[float]:
    """Minimise ``loss_fn()`` over ``parameters``.

    Stops after ``n_iter`` iterations or once ``|ℓ_k − ℓ_{k−1}| < tol · |ℓ_{k−1}|``.  L-BFGS makes
    one quasi-Newton step (with a strong-Wolfe line search) per iteration.

    Parameters
    ----------
    parameters : iterable of Tensor
    loss_fn : callable
        Returns the scalar loss at the current parameters.
    n_iter : int
    tol : float
    optimizer : {"lbfgs", "adam"}
    learning_rate : float, optional
        Default ``OPTIMIZERS[optimizer]``.
    keep_best : callable, optional
        Called (with the parameters in place) whenever an evaluated loss is a new minimum, so the
        caller can snapshot and finally restore the best parameters seen.

    Returns
    -------
    list of float
        The loss before each iteration, and at the end.
    """
    parameters = [p for p in parameters if p.requires_grad]
    lr = OPTIMIZERS[optimizer] if learning_rate is None else float(learning_rate)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(parameters, lr=lr, max_iter=1, max_eval=30, history_size=20, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam(parameters, lr=lr)
    best = [math.inf]

    def evaluate(with_grad: bool) -> torch.Tensor:
        loss = loss_fn()
        value = float(loss.detach())
        if keep_best is not None and math.isfinite(value) and value < best[0]:
            best[0] = value
            keep_best()
        return loss

    def closure():
        opt.zero_grad()
        loss = evaluate(True)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    history: list[float] = []
    for _ in range(n_iter if parameters else 0):
        loss = float(opt.step(closure).detach())  # the loss at the parameters before this step
        if not math.isfinite(loss):
            raise FloatingPointError(f"the likelihood became {loss} during optimisation; try a smaller learning_rate")
        history.append(loss)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol * abs(history[-2]):
            break
    with torch.no_grad():
        history.append(float(evaluate(False)))
    return history
