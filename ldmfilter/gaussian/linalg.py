"""Small linear-algebra helpers shared by every Gaussian routine.

All covariance arithmetic in :mod:`ldmfilter.gaussian` goes through this module so that there is
one place where positive-definiteness is enforced.

Jitter policy
-------------
A Cholesky factorisation is first attempted on the matrix as given.  Only when it fails (the matrix
is numerically not positive definite) is a diagonal jitter added, starting at
``sqrt(eps) * mean(diag)`` and growing tenfold up to ``MAX_JITTER_TRIES`` times, where ``eps`` is the
machine epsilon of the dtype.  Matrices that still fail raise
:class:`NotPositiveDefiniteError`, a ``ValueError`` that names the offending quantity.  The
jitter therefore never changes a well-posed problem, and a badly posed one is reported rather
than silently turned into NaNs.  No routine forms an explicit inverse: solves go through the
Cholesky factor.
"""

from __future__ import annotations

import torch

__all__ = [
    "MAX_JITTER_TRIES",
    "matmul",
    "matmul_add",
    "NotPositiveDefiniteError",
    "symmetrize",
    "cholesky",
    "cholesky_solve",
    "triangular_solve",
    "logdet_from_cholesky",
]

MAX_JITTER_TRIES = 6


class NotPositiveDefiniteError(ValueError):
    """A matrix that must be symmetric positive definite is not, even after jitter."""


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    """Return ``(M + Mᵀ) / 2``.

    Parameters
    ----------
    matrix : Tensor, shape (*batch, n, n)

    Returns
    -------
    Tensor, shape (*batch, n, n)
    """
    return (matrix + matrix.mT) * 0.5


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, through ``bmm`` when both are stacks of the same length (fewer copies).

    Parameters
    ----------
    a : Tensor, shape (*batch, n, k)
    b : Tensor, shape (*batch, k, p)

    Returns
    -------
    Tensor, shape (*batch, n, p)
    """
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0]:
        return torch.bmm(a, b)
    return a @ b


def matmul_add(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``c + alpha · a @ b`` as one fused ``addmm``/``baddbmm`` call when the shapes allow.

    Parameters
    ----------
    c : Tensor, broadcastable to shape (*batch, n, p)
    a : Tensor, shape (*batch, n, k)
    b : Tensor, shape (*batch, k, p)
    alpha : float

    Returns
    -------
    Tensor, shape (*batch, n, p)
    """
    if a.ndim == 2 and b.ndim == 2 and c.ndim <= 2:
        return torch.addmm(c, a, b, alpha=alpha)
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and c.ndim <= 3:
        return torch.baddbmm(c, a, b, alpha=alpha)
    return c + alpha * (a @ b)


def cholesky(matrix: torch.Tensor, name: str = "matrix") -> torch.Tensor:
    """Lower Cholesky factor ``C`` with ``C Cᵀ = M``, applying the module's jitter policy.

    Parameters
    ----------
    matrix : Tensor, shape (*batch, n, n)
        Symmetric positive definite matrices.
    name : str
        What the matrix is, used in the error message.

    Returns
    -------
    Tensor, shape (*batch, n, n)
        Lower-triangular factors.

    Raises
    ------
    NotPositiveDefiniteError
        If the matrix is not positive definite even after the largest jitter.
    """
    if matrix.ndim > 2:  # batched: the unchecked kernel plus one check is cheaper
        factor, info = torch.linalg.cholesky_ex(matrix)
        if not info.any():
            return factor
    else:
        try:
            return torch.linalg.cholesky(matrix)
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            pass
    if not torch.isfinite(matrix).all():
        raise NotPositiveDefiniteError(f"{name} contains NaN or inf entries; cannot factorise it")
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    scale = matrix.diagonal(dim1=-2, dim2=-1).abs().mean(-1, keepdim=True).clamp_min(1.0)
    jitter = torch.finfo(matrix.dtype).eps ** 0.5
    for _ in range(MAX_JITTER_TRIES):
        factor, info = torch.linalg.cholesky_ex(matrix + (jitter * scale)[..., None] * eye)
        if not info.any():
            return factor
        jitter *= 10.0
    raise NotPositiveDefiniteError(
        f"{name} of shape {tuple(matrix.shape)} is not positive definite, even after adding "
        f"{jitter / 10.0:.1e} x mean(diag) to its diagonal"
    )


def cholesky_solve(rhs: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Solve ``M X = B`` given the lower Cholesky factor of ``M``.

    Parameters
    ----------
    rhs : Tensor, shape (*batch, n, k)
    factor : Tensor, shape (*batch, n, n)
        Lower Cholesky factor of ``M``; batch axes broadcast.

    Returns
    -------
    Tensor, shape (*batch, n, k)
    """
    return torch.cholesky_solve(rhs, factor)


def triangular_solve(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``C X = B`` for lower-triangular ``C`` (batch axes broadcast).

    Parameters
    ----------
    factor : Tensor, shape (*batch, n, n)
    rhs : Tensor, shape (*batch, n, k)

    Returns
    -------
    Tensor, shape (*batch, n, k)
    """
    return torch.linalg.solve_triangular(factor, rhs, upper=False)


def logdet_from_cholesky(factor: torch.Tensor) -> torch.Tensor:
    """``log|M|`` from the lower Cholesky factor of ``M``.

    Parameters
    ----------
    factor : Tensor, shape (*batch, n, n)

    Returns
    -------
    Tensor, shape (*batch,)
    """
    return 2.0 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
