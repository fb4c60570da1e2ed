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

Two more rules keep filtered covariances positive semi-definite in float32.  Covariance inputs
(``Q``, ``R``, ``Σ_0``, a forecast's start) that are PSD only to rounding are lifted by their
negative eigenvalue plus one rounding unit (:func:`~ldmfilter.gaussian.validation.check_psd`
with ``lift=True``).  The covariance update and the parallel scan run in float64 for float32
inputs (:data:`~ldmfilter.gaussian.steps.UPDATE_DTYPE`), returning the input dtype: in float32
they lose positive semi-definiteness once a covariance spans ~1e6 in its eigenvalues.
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
    "broadcast_compact",
    "quadratic_diagonal",
    "QUADRATIC_CHUNK_BYTES",
]

MAX_JITTER_TRIES = 6
QUADRATIC_CHUNK_BYTES = 64 * 2**20  # bound on each temporary of quadratic_diagonal


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


def broadcast_compact(tensor: torch.Tensor, core_dims: int = 2) -> torch.Tensor:
    """The distinct entries of a broadcast view: every leading axis of stride 0 cut to length 1.

    A covariance shared across series is often passed as ``cov.expand(n, T, S, S)``; work done on
    ``broadcast_compact(cov)`` (``(1, T, S, S)``) and expanded back is done once, not ``n`` times.

    Parameters
    ----------
    tensor : Tensor, shape (*lead, *core)
    core_dims : int
        How many trailing axes form one item (2 for matrices).

    Returns
    -------
    Tensor, shape (*lead', *core)
        A view, with ``lead'[i] = 1`` where ``tensor`` has stride 0 along ``lead[i]``.
    """
    n_lead = tensor.ndim - core_dims
    index = tuple(
        slice(0, 1) if size > 1 and stride == 0 else slice(None)
        for size, stride in zip(tensor.shape[:n_lead], tensor.stride()[:n_lead])
    )
    return tensor[index]


def quadratic_diagonal(weight: torch.Tensor, cov: torch.Tensor, chunk_bytes: int | None = None) -> torch.Tensor:
    """``diag(W P Wᵀ)`` for a stack of matrices ``P``, without forming ``W P`` for all of them at once.

    ``(W P Wᵀ)_dd = Σ_ij P_ij W_di W_dj``: one matrix product of the flattened ``P`` (rows of
    ``S²``) with the row-wise outer products of ``W`` (``D × S²``), done in blocks of rows and of
    ``d`` so that each temporary stays under ``chunk_bytes``; leading axes of stride 0 (a shared
    covariance broadcast over series) are evaluated once and expanded.  Equal to
    ``((W @ P) * W).sum(-1)`` up to float rounding.

    Parameters
    ----------
    weight : Tensor, shape (D, S)
    cov : Tensor, shape (*lead, S, S)
    chunk_bytes : int, optional
        Size bound of each temporary; ``QUADRATIC_CHUNK_BYTES`` (64 MiB) by default.

    Returns
    -------
    Tensor, shape (*lead, D)
        A broadcast view along the stride-0 axes of ``cov``; fresh memory otherwise.
    """
    if weight.ndim != 2 or cov.ndim < 2 or cov.shape[-2:] != (weight.shape[1], weight.shape[1]):
        raise ValueError(
            f"quadratic_diagonal needs weight (D, S) and cov (*lead, S, S), got {tuple(weight.shape)} and {tuple(cov.shape)}"
        )
    D, S = weight.shape
    lead = cov.shape[:-2]
    compact = broadcast_compact(cov)
    rows = compact.reshape(-1, S * S)  # a view unless the distinct covariances are not contiguous
    weight = weight.to(cov.dtype)
    budget = QUADRATIC_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    itemsize = cov.element_size()
    columns = max(1, min(D, budget // (S * S * itemsize)))
    out = torch.empty(rows.shape[0], D, dtype=cov.dtype, device=cov.device)
    for start in range(0, D, columns):
        w = weight[start : start + columns]
        outer = (w[:, :, None] * w[:, None, :]).reshape(w.shape[0], S * S)  # rows W_di W_dj
        step = max(1, budget // (w.shape[0] * itemsize))
        for first in range(0, rows.shape[0], step):
            out[first : first + step, start : start + columns] = rows[first : first + step] @ outer.mT
    return out.reshape(compact.shape[:-2] + (D,)).expand(lead + (D,))
