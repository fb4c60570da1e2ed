"""Reverse-mode derivatives of the Kalman steps in :mod:`.steps` and of the moment rules in
:mod:`.moments`, written out by hand.

The nonlinear filter's hand-written reverse pass (:mod:`.adjoint_filter`) chains these instead of
letting autograd record a few dozen small operations per step.  Each function takes the
cotangents of a step's outputs and returns those of its inputs, with the conventions of
torch's own derivatives: a symmetric matrix that enters only through a Cholesky factor gets the
symmetric gradient, and a matrix a step symmetrises gets the symmetrised cotangent.  The tests
compare every one with autograd through the forward step.
"""

from __future__ import annotations

import torch

from .linalg import matmul, symmetrize

__all__ = [
    "cholesky_adjoint",
    "condition_adjoint",
    "linear_observation_adjoint",
    "observation_matrix_adjoint",
    "predict_cov_adjoint",
    "selection_observation_adjoint_",
    "sigma_moments_adjoint",
    "sigma_points_adjoint",
]


def cholesky_adjoint(chol: torch.Tensor, grad_chol: torch.Tensor) -> torch.Tensor:
    """Cotangent of ``Σ`` given that of its lower Cholesky factor ``C``: ``C⁻ᵀ Φ(Cᵀ C̄) C⁻¹``.

    ``Φ`` keeps the lower triangle and halves the diagonal, taken symmetric (as torch's own
    ``linalg.cholesky`` derivative does).

    Parameters
    ----------
    chol, grad_chol : Tensor, shape (*batch, L, L)

    Returns
    -------
    Tensor, shape (*batch, L, L)
        Symmetric.
    """
    inner = (chol.mT @ grad_chol).tril()
    inner = 0.5 * (inner + inner.tril(-1).mT)
    inner = torch.linalg.solve_triangular(chol.mT, inner, upper=True, left=True)
    return torch.linalg.solve_triangular(chol, inner, upper=False, left=False)


def condition_adjoint(chol, whitened, grad_mean, grad_cov):
    """Reverse of :func:`~.steps.condition` (``m = m⁻ + Xᵀ Σ⁻¹ e``, ``P = sym(P⁻ − Xᵀ Σ⁻¹ X)``).

    With ``[U | v] = Σ⁻¹ [X | e] = C⁻ᵀ [W | w]`` (one triangular solve), ``G = P̄`` and
    ``a = U m̄``::

        X̄ = v m̄ᵀ − 2 U G,   Σ̄ = U G Uᵀ − sym(a vᵀ),   ē = a,   P̄⁻ = G,   m̄⁻ = m̄

    Parameters
    ----------
    chol : Tensor, shape (*batch, L, L)
        Lower Cholesky factor of ``Σ`` from the forward step.
    whitened : Tensor, shape (*batch, L, S + 1)
        ``[W | w] = C⁻¹ [X | e]`` from :func:`~.steps.whitened_condition`, with ``X = Cov[x, z]ᵀ``.
    grad_mean : Tensor, shape (*batch, S)
    grad_cov : Tensor, shape (*batch, S, S)
        Symmetric (``P`` is symmetrised, so only the symmetric part of its cotangent counts; the
        caller symmetrises once where it can instead of at every step).

    Returns
    -------
    grad_cross_t : Tensor, shape (*batch, L, S)
    grad_innovation_cov : Tensor, shape (*batch, L, L)
        Symmetric; add :func:`cholesky_adjoint` for a cotangent of ``C`` itself.
    grad_innovation : Tensor, shape (*batch, L)
    """
    state_dim = whitened.shape[-1] - 1
    gain_t, weights = torch.linalg.solve_triangular(chol.mT, whitened, upper=True).split([state_dim, 1], -1)  # [U | v]
    spread = matmul(gain_t, grad_cov)  # U G
    pulled = (gain_t * grad_mean.unsqueeze(-2)).sum(-1)  # a = U m̄
    grad_cross_t = torch.addcmul(spread, weights, grad_mean.unsqueeze(-2), value=-0.5).mul_(-2.0)  # v m̄ᵀ − 2 U G
    outer = pulled.unsqueeze(-1) * weights.mT  # a vᵀ
    grad_innovation_cov = torch.add(matmul(spread, gain_t.mT), outer + outer.mT, alpha=-0.5)  # U G Uᵀ − sym(a vᵀ)
    return grad_cross_t, grad_innovation_cov, pulled


def linear_observation_adjoint(observation_matrix, grad_cross_t, grad_innovation_cov, grad_innovation):
    """Reverse of ``X = H P⁻``, ``Σ = X Hᵀ + R``, ``e = z − H m⁻`` for the state's belief.

    Parameters
    ----------
    observation_matrix : Tensor, shape (L, S) or (*batch, L, S)
    grad_cross_t : Tensor, shape (*batch, L, S)
    grad_innovation_cov : Tensor, shape (*batch, L, L)
        Symmetric.
    grad_innovation : Tensor, shape (*batch, L)

    Returns
    -------
    grad_pred_cov : Tensor, shape (*batch, S, S)
        ``(Σ̄ H + X̄)ᵀ H``, as autograd gives through ``Cov[x, z] = P⁻ Hᵀ`` (``R̄ = Σ̄`` and
        ``z̄ = ē`` need no work).
    grad_pred_mean : Tensor, shape (*batch, S)
        ``−Hᵀ ē``.
    """
    H = observation_matrix
    pulled = grad_cross_t + grad_innovation_cov @ H  # Σ̄ H + X̄
    return pulled.mT @ H, -(grad_innovation.unsqueeze(-2) @ H).squeeze(-2)


def selection_observation_adjoint_(grad_pred_cov, grad_pred_mean, grad_cross_t, grad_innovation_cov, grad_innovation):
    """:func:`linear_observation_adjoint` for ``H = [I_L 0]``, added in place to ``P̄⁻`` and ``m̄⁻``.

    Then ``X = P⁻[:L]``, ``Σ = P⁻[:L, :L] + R`` and ``e = z − m⁻[:L]``: ``X̄ᵀ`` adds to the first
    ``L`` columns of ``P̄⁻``, ``Σ̄`` to its leading block, and ``−ē`` to the first ``L`` entries of
    ``m̄⁻``.  Slices instead of products with ``H``.

    Parameters
    ----------
    grad_pred_cov : Tensor, shape (*batch, S, S)
        Modified in place.
    grad_pred_mean : Tensor, shape (*batch, S)
        Modified in place.
    grad_cross_t : Tensor, shape (*batch, L, S)
    grad_innovation_cov : Tensor, shape (*batch, L, L)
    grad_innovation : Tensor, shape (*batch, L)
    """
    obs_dim = grad_innovation.shape[-1]
    grad_pred_cov[..., :obs_dim] += grad_cross_t.mT
    grad_pred_cov[..., :obs_dim, :obs_dim] += grad_innovation_cov
    grad_pred_mean[..., :obs_dim] -= grad_innovation


def observation_matrix_adjoint(observation_matrix, pred_mean, pred_cov, grad_cross_t, grad_innovation_cov, grad_innovation):
    """``H̄ = (2 Σ̄ H + X̄) P⁻ − ē m⁻ᵀ`` for :func:`linear_observation_adjoint`'s step, shape (*batch, L, S)."""
    return (2.0 * grad_innovation_cov @ observation_matrix + grad_cross_t) @ pred_cov - grad_innovation.unsqueeze(-1) * pred_mean.unsqueeze(-2)


def predict_cov_adjoint(transition_matrix, cov, grad_pred_cov):
    """Reverse of :func:`~.steps.predict_cov` (``P⁻ = sym(Q + J P Jᵀ)``) for a symmetric ``P``.

    Parameters
    ----------
    transition_matrix : Tensor, shape (*batch, S, S)
        ``J``.
    cov : Tensor, shape (*batch, S, S)
        ``P``, symmetric.
    grad_pred_cov : Tensor, shape (*batch, S, S)

    Returns
    -------
    grad_transition_matrix : Tensor, shape (*batch, S, S)
        ``2 G J P`` with ``G = sym(P̄⁻)``.
    grad_cov : Tensor, shape (*batch, S, S)
        ``Jᵀ G J``.
    grad_transition_cov : Tensor, shape (*batch, S, S)
        ``G``.
    """
    J = transition_matrix
    G = symmetrize(grad_pred_cov)
    GJ = matmul(G, J)
    return 2.0 * matmul(GJ, cov), matmul(J.mT, GJ), G


def sigma_moments_adjoint(rule, images, pred_mean, grad_pred_mean, grad_pred_cov):
    """Reverse of ``m⁻ = Σ aᵢ Yᵢ`` and ``P⁻ = sym(Σ bᵢ dᵢ dᵢᵀ + Q)``, ``dᵢ = Yᵢ − m⁻`` (a :class:`~.moments.SigmaRule`).

    With ``G = sym(P̄⁻)``: ``Ȳᵢ = 2 bᵢ G dᵢ + aᵢ (m̄⁻ − 2 G Σⱼ bⱼ dⱼ)`` and ``Q̄ = G``.

    Parameters
    ----------
    rule : SigmaRule
    images : Tensor, shape (*batch, n, S)
        ``Yᵢ = f(Xᵢ)`` at the rule's points (the centre first when it has one).
    pred_mean : Tensor, shape (*batch, S)
        ``m⁻``, as the forward computed it.
    grad_pred_mean : Tensor, shape (*batch, S)
    grad_pred_cov : Tensor, shape (*batch, S, S)

    Returns
    -------
    grad_images : Tensor, shape (*batch, n, S)
    grad_transition_cov : Tensor, shape (*batch, S, S)
        ``G``.
    """
    G = symmetrize(grad_pred_cov)
    mean_weights = images.new_full(images.shape[-2:-1], rule.weight)
    cov_weights = mean_weights.clone()
    if rule.with_centre:
        mean_weights[0], cov_weights[0] = rule.centre_mean, rule.centre_cov
    pulled = 2.0 * cov_weights.unsqueeze(-1) * ((images - pred_mean.unsqueeze(-2)) @ G)  # d̄ᵢ = 2 bᵢ G dᵢ (rows)
    grad_images = torch.addcmul(pulled, mean_weights.unsqueeze(-1), (grad_pred_mean - pulled.sum(-2)).unsqueeze(-2))
    return grad_images, G


def sigma_points_adjoint(rule, factor, grad_points):
    """Reverse of the rule's points ``m`` (centre) and ``m ± √spread Lᵢ`` (:meth:`~.moments.SigmaRule.points`).

    Parameters
    ----------
    rule : SigmaRule
    factor : Tensor, shape (*batch, S, S)
        ``L``, the Cholesky factor of ``P`` the points came from.
    grad_points : Tensor, shape (*batch, n, S)

    Returns
    -------
    grad_mean : Tensor, shape (*batch, S)
        ``Σᵢ X̄ᵢ``.
    grad_cov : Tensor, shape (*batch, S, S)
        Symmetric, through :func:`cholesky_adjoint`.
    """
    state_dim = factor.shape[-1]
    deviations = grad_points[..., 1:, :] if rule.with_centre else grad_points
    grad_offsets = deviations[..., :state_dim, :] - deviations[..., state_dim:, :]  # rows √spread Lᵢ
    return grad_points.sum(-2), cholesky_adjoint(factor, rule.spread**0.5 * grad_offsets.mT)
