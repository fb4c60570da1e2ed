"""Sampling-free moment rules: a Gaussian belief pushed through a nonlinear function.

Each rule maps ``x ~ N(m, P)`` through ``y = f(x)`` deterministically and returns the Gaussian
approximation ``N(E[y], Cov[y])`` together with the cross-covariance ``Cov[x, y]`` needed by a
Kalman update.  On an affine ``f`` every rule is exact.

``fn`` receives a batch of row vectors, shape ``(N, S)`` (and the matching inputs ``(N, U)``
when ``inputs`` is given), and must return ``(N, D)``, treating rows independently (no batch
normalisation).  Everything stays differentiable with respect to ``mean``, ``cov`` and the
parameters ``fn`` closes over.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .linalg import cholesky, symmetrize

__all__ = [
    "PropagatedMoments",
    "SigmaRule",
    "sigma_rule",
    "value_and_jacobian",
    "linearize",
    "unscented",
    "cubature",
    "propagate",
    "MOMENT_RULES",
]


class PropagatedMoments(NamedTuple):
    """Moments of ``y = f(x)`` for ``x ~ N(m, P)``.

    Attributes
    ----------
    mean : Tensor, shape (*batch, D)
    cov : Tensor, shape (*batch, D, D)
    cross_cov : Tensor, shape (*batch, S, D)
        ``Cov[x, y]``.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    cross_cov: torch.Tensor


def _call(fn: Callable, points: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
    """Apply ``fn`` to rows of ``points`` (*lead, S) with matching ``inputs`` (*lead, U)."""
    lead = points.shape[:-1]
    flat = points.reshape(-1, points.shape[-1])
    if inputs is None:
        out = fn(flat)
    else:
        out = fn(flat, inputs.expand(lead + inputs.shape[-1:]).reshape(-1, inputs.shape[-1]))
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != flat.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fn must map a batch of shape ({flat.shape[0]}, S) to ({flat.shape[0]}, D), got {got}")
    if out.dtype != points.dtype:
        raise TypeError(f"fn must return {points.dtype} like its input, got {out.dtype}")
    return out.reshape(lead + out.shape[-1:])


def value_and_jacobian(fn: Callable, mean: torch.Tensor, inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(m)`` and the Jacobian ``J = ∂f/∂x`` at ``m``.

    The Jacobian comes from ``fn.value_and_jacobian`` when ``fn`` has that method (same
    arguments, returning ``f`` (N, D) and ``J`` (N, D, S)), else from forward-mode autodiff
    (``torch.func``, vectorised over the batch and the state dimensions; ``fn`` must then be
    composed of ``vmap``-compatible torch operations).  Differentiable with respect to ``mean``
    and the parameters of ``fn`` with ordinary autograd.

    Parameters
    ----------
    fn : callable
        ``(N, S) -> (N, D)``, or ``(N, S), (N, U) -> (N, D)`` with ``inputs``.
    mean : Tensor, shape (*batch, S)
    inputs : Tensor, shape (*batch, U), optional

    Returns
    -------
    value : Tensor, shape (*batch, D)
    jacobian : Tensor, shape (*batch, D, S)
    """
    batch_shape = mean.shape[:-1]
    flat = mean.reshape(-1, mean.shape[-1])
    flat_inputs = None if inputs is None else inputs.expand(batch_shape + inputs.shape[-1:]).reshape(-1, inputs.shape[-1])
    given = getattr(fn, "value_and_jacobian", None)
    if given is not None:
        out, jac = given(flat) if flat_inputs is None else given(flat, flat_inputs)
    else:
        out = _call(fn, flat, flat_inputs)
        if flat_inputs is None:
            jac = torch.func.vmap(torch.func.jacfwd(lambda x: fn(x.unsqueeze(0)).squeeze(0)))(flat)
        else:
            single = lambda x, u: fn(x.unsqueeze(0), u.unsqueeze(0)).squeeze(0)  # noqa: E731
            jac = torch.func.vmap(torch.func.jacfwd(single))(flat, flat_inputs)
    return out.reshape(batch_shape + out.shape[-1:]), jac.reshape(batch_shape + jac.shape[-2:])


def linearize(fn: Callable, mean: torch.Tensor, cov: torch.Tensor, inputs: torch.Tensor | None = None) -> PropagatedMoments:
    """First-order (EKF) rule: ``E[y] ≈ f(m)``, ``Cov[y] ≈ J P Jᵀ``, ``Cov[x, y] ≈ P Jᵀ``.

    The Jacobian ``J = ∂f/∂x`` at ``m`` comes from :func:`value_and_jacobian`: ``fn``'s own
    ``value_and_jacobian`` method when it has one, else forward-mode autodiff.  The result is
    differentiable with respect to ``mean``, ``cov`` and the parameters of ``fn`` with ordinary
    autograd.

    Parameters
    ----------
    fn : callable
        ``(N, S) -> (N, D)``, or ``(N, S), (N, U) -> (N, D)`` with ``inputs``; optionally with a
        ``value_and_jacobian`` method.
    mean : Tensor, shape (*batch, S)
    cov : Tensor, shape (*batch, S, S)
    inputs : Tensor, shape (*batch, U), optional

    Returns
    -------
    PropagatedMoments
    """
    batch_shape = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
    out, jac = value_and_jacobian(fn, mean.expand(batch_shape + mean.shape[-1:]), inputs)
    cross = cov @ jac.mT  # P Jᵀ
    return PropagatedMoments(out, symmetrize(jac @ cross), cross)


class SigmaRule(NamedTuple):
    """A symmetric sigma-point rule: points ``m ± √spread · Lᵢ`` (``L`` the Cholesky factor of
    ``P``), each with weight ``1/(2 spread)``, and a centre point ``m`` when either centre weight is
    non-zero.

    Attributes
    ----------
    spread : float
    centre_mean, centre_cov : float
        The centre point's weights in the mean and in the covariance.
    """

    spread: float
    centre_mean: float
    centre_cov: float

    @property
    def with_centre(self) -> bool:
        return self.centre_mean != 0.0 or self.centre_cov != 0.0

    @property
    def weight(self) -> float:
        """Weight of each non-centre point (mean and covariance)."""
        return 1.0 / (2.0 * self.spread)

    def points(self, mean: torch.Tensor, cov: torch.Tensor):
        """The sigma points of ``N(mean, cov)``.

        Returns
        -------
        points : Tensor, shape (*batch, n, S)
            The centre first when there is one, then ``m + √spread Lᵢ`` and ``m − √spread Lᵢ``.
        factor : Tensor, shape (*batch, S, S)
            ``L`` (with the jitter policy of :func:`~.linalg.cholesky`).
        deviations : Tensor, shape (*batch, 2S, S)
            The non-centre points minus ``m``.
        """
        state_dim = mean.shape[-1]
        batch_shape = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
        factor = cholesky(cov, "belief covariance (sigma points)").expand(batch_shape + cov.shape[-2:])
        offsets = self.spread**0.5 * factor.mT  # rows are scaled columns of the factor
        centre = mean.expand(batch_shape + (state_dim,)).unsqueeze(-2)
        deviations = torch.cat([offsets, -offsets], -2)
        points = torch.cat([centre, centre + deviations], -2) if self.with_centre else centre + deviations
        return points, factor, deviations

    def moments(self, images: torch.Tensor, deviations: torch.Tensor) -> PropagatedMoments:
        """``E[y]``, ``Cov[y]`` and ``Cov[x, y]`` from the images ``y`` (*batch, n, D) of :meth:`points`."""
        weight = self.weight
        if self.with_centre:
            centre_image, images = images[..., 0, :], images[..., 1:, :]
            out_mean = self.centre_mean * centre_image + weight * images.sum(-2)
            centre_dev = (centre_image - out_mean).unsqueeze(-1)
            extra = self.centre_cov * centre_dev @ centre_dev.mT
        else:
            out_mean, extra = weight * images.sum(-2), 0.0
        dev = images - out_mean.unsqueeze(-2)
        out_cov = symmetrize(weight * dev.mT @ dev + extra)
        cross = weight * deviations.mT @ dev
        return PropagatedMoments(out_mean, out_cov, cross)


def sigma_rule(method: str, state_dim: int, alpha: float = 1.0, beta: float = 2.0, kappa: float = 0.0) -> SigmaRule:
    """The :class:`SigmaRule` of ``"unscented"`` (with its parameters) or ``"cubature"`` in ``S = state_dim`` dimensions.

    Unscented: ``λ = α² (S + κ) − S``; points ``m`` and ``m ± √(S + λ) Lᵢ``; mean weights
    ``λ/(S+λ)`` (centre) and ``1/(2(S+λ))``; the centre's covariance weight adds ``1 − α² + β``.
    Cubature: ``2S`` points ``m ± √S Lᵢ`` with equal weights ``1/(2S)``.

    Raises
    ------
    ValueError
        For another method, or unscented parameters with ``S + λ ≤ 0``.
    """
    if method == "cubature":
        return SigmaRule(float(state_dim), 0.0, 0.0)
    if method != "unscented":
        raise ValueError(f"sigma-point rules are 'unscented' and 'cubature', got {method!r}")
    lam = alpha**2 * (state_dim + kappa) - state_dim
    spread = state_dim + lam
    if spread <= 0:
        raise ValueError(f"unscented: alpha**2 * (S + kappa) must be positive, got {spread} (S={state_dim})")
    return SigmaRule(spread, lam / spread, lam / spread + 1.0 - alpha**2 + beta)


def _sigma_moments(rule: SigmaRule, fn, mean, cov, inputs) -> PropagatedMoments:
    points, _, deviations = rule.points(mean, cov)
    images = _call(fn, points, None if inputs is None else inputs.unsqueeze(-2))
    return rule.moments(images, deviations)


def unscented(
    fn: Callable,
    mean: torch.Tensor,
    cov: torch.Tensor,
    inputs: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 2.0,
    kappa: float = 0.0,
) -> PropagatedMoments:
    """Unscented transform with ``2S + 1`` sigma points.

    ``λ = α² (S + κ) − S``; points ``m`` and ``m ± √(S + λ) Lᵢ`` (``L`` the Cholesky factor of
    ``P``); mean weights ``λ/(S+λ)`` (centre) and ``1/(2(S+λ))``; the centre's covariance
    weight adds ``1 − α² + β``.  The defaults (α = 1, β = 2, κ = 0) place the points at ``±√S``
    standard deviations, like the cubature rule, with the β term correcting the covariance for
    the shift of the mean.

    Parameters
    ----------
    fn, mean, cov, inputs
        As in :func:`linearize`.
    alpha, beta, kappa : float
        The usual unscented parameters; ``S + λ`` must be positive.

    Returns
    -------
    PropagatedMoments
    """
    return _sigma_moments(sigma_rule("unscented", mean.shape[-1], alpha, beta, kappa), fn, mean, cov, inputs)


def cubature(fn: Callable, mean: torch.Tensor, cov: torch.Tensor, inputs: torch.Tensor | None = None) -> PropagatedMoments:
    """Spherical-radial cubature rule: ``2S`` points ``m ± √S Lᵢ`` with equal weights ``1/(2S)``.

    Parameters
    ----------
    fn, mean, cov, inputs
        As in :func:`linearize`.

    Returns
    -------
    PropagatedMoments
    """
    return _sigma_moments(sigma_rule("cubature", mean.shape[-1]), fn, mean, cov, inputs)


MOMENT_RULES = {"linearize": linearize, "unscented": unscented, "cubature": cubature}


def propagate(fn: Callable, mean, cov, method: str = "linearize", inputs=None, **options) -> PropagatedMoments:
    """Push ``N(mean, cov)`` through ``fn`` with the named rule.

    Parameters
    ----------
    fn : callable
    mean : Tensor, shape (*batch, S)
    cov : Tensor, shape (*batch, S, S)
    method : {"linearize", "unscented", "cubature"}
    inputs : Tensor, shape (*batch, U), optional
        Extra per-row arguments of ``fn`` (controls, time steps).
    **options
        Rule parameters (``alpha``, ``beta``, ``kappa`` for ``"unscented"``).

    Returns
    -------
    PropagatedMoments
    """
    if method not in MOMENT_RULES:
        raise ValueError(f"method must be one of {sorted(MOMENT_RULES)}, got {method!r}")
    return MOMENT_RULES[method](fn, mean, cov, inputs, **options)
