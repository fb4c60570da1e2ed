"""Penalised affine least squares from (uncertain) features to targets, reduced once, solved per penalty.

The read-outs fit ``y_t ≈ W m_t + b`` under several penalties ``λ`` (see :func:`fit_affine`).  The
data enter only through a thin QR factorisation of the design, ``[m_t 1] = Q R``, and the
projections ``Qᵀ y``:

    ‖[m 1] c − y‖² = ‖R c − Qᵀ y‖² + ‖(I − Q Qᵀ) y‖².

:func:`reduce_affine` makes that pass over the ``(N, D)`` targets once, in row blocks of bounded
size; each penalty is then a ``(2F − 1) × F`` problem (``F`` = features + 1) with the singular
values, hence the rank cut-off, of the full one (:func:`solve_affine`), and the residual sums of
squares follow without forming residuals (:func:`residual_moments`).  :func:`reduce_affine_streamed`
makes the same passes over targets read block by block (data larger than memory).

Targets may hold NaN (missing).  Rows whose targets are all NaN are left out; when the pattern
differs between columns, the columns that share the same observed rows are reduced together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..gaussian.blocks import any_in_blocks, row_blocks

__all__ = ["fit_affine", "AffineProblem", "reduce_affine", "reduce_affine_streamed", "solve_affine", "residual_moments", "CHUNK_BYTES"]

# bound on a row block of targets (in float64) touched at once; a pass holds about four blocks' worth
CHUNK_BYTES = 16 * 2**20


@dataclass
class _Block:
    """Reduced form of the columns ``columns`` (None: all) observed on the same ``n_rows`` rows."""

    columns: torch.Tensor | None
    n_rows: int
    factor: torch.Tensor  # R, (r, F)
    projected: torch.Tensor  # Qᵀ y, (r, D_block)
    residual_ss: torch.Tensor  # ‖(I − Q Qᵀ) y‖² per column, (D_block,)
    residual_cross: torch.Tensor | None  # ((I − Q Qᵀ) y)ᵀ ((I − Q Qᵀ) y), (D_block, D_block)


@dataclass
class AffineProblem:
    """``min_c ‖[x 1] c − y‖²`` in reduced form (see the module docstring).

    Attributes
    ----------
    blocks : list
        One per set of target columns sharing their observed rows.
    n_features : int
        ``F − 1``.
    counts : Tensor, shape (D,)
        Observed rows per target column.
    missing : bool
        Whether the targets hold any NaN.
    """

    blocks: list
    n_features: int
    counts: torch.Tensor
    missing: bool

    @property
    def n_targets(self) -> int:
        """``D``, the number of target columns."""
        return self.counts.shape[0]


def _design(features: torch.Tensor) -> torch.Tensor:
    """The design ``[x 1]`` in float64, shape (N, F), from features (*lead, F − 1) in one allocation."""
    n_features = features.shape[-1]
    design = torch.ones(features[..., 0].numel(), n_features + 1, dtype=torch.float64)
    design[:, :-1] = features.detach().reshape(-1, n_features)
    return design


def _factor(design: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of the design rows ``rows`` (None: all), with ``Q`` on all rows (zero on the left-out ones)."""
    q, factor = torch.linalg.qr(design if rows is None else design[rows])
    if rows is not None:
        q = torch.zeros(design.shape[0], q.shape[1], dtype=q.dtype).index_copy_(0, rows.nonzero().squeeze(1), q)
    return q, factor


def _reduce_block(design, y, rows, columns, cross: bool, fill: bool, chunk_bytes: int) -> _Block:
    """QR of the design rows ``rows`` (None: all) and two row-blocked passes over ``y[:, columns]``."""
    q, factor = _factor(design, rows)
    width = y.shape[1] if columns is None else columns.numel()

    def pieces():
        for block in row_blocks((y.shape[0], width), 8, chunk_bytes):
            values = y[block]
            values = (values if columns is None else values[:, columns]).to(torch.float64)
            if fill:  # NaN only where Q is zero: their rows drop out
                values = torch.where(torch.isnan(values), torch.zeros((), dtype=values.dtype), values)
            yield q[block], values

    n_rows = design.shape[0] if rows is None else int(rows.sum())
    return _Block(columns, n_rows, factor, *_project(q, pieces, width, cross))


def _project(q: torch.Tensor, pieces, width: int, cross: bool):
    """``Qᵀ y``, then the residual sums of ``(I − Q Qᵀ) y``: two passes over ``pieces() → (Q rows, y rows)``."""
    projected = torch.zeros(q.shape[1], width, dtype=torch.float64)
    for q_rows, values in pieces():
        projected += q_rows.mT @ values  # Qᵀ y
    residual_ss = torch.zeros(width, dtype=torch.float64)
    residual_cross = torch.zeros(width, width, dtype=torch.float64) if cross else None
    for q_rows, values in pieces():
        residual = torch.addmm(values, q_rows, projected, alpha=-1)  # (I − Q Qᵀ) y, a new block
        if cross:
            residual_cross += residual.mT @ residual
        residual_ss += residual.square_().sum(0)
    return projected, residual_ss, residual_cross


def reduce_affine(
    features: torch.Tensor, targets: torch.Tensor, cross: bool = False, chunk_bytes: int | None = None
) -> AffineProblem:
    """Reduce ``min_c ‖[x 1] c − y‖²`` once, for solves under any penalty (float64).

    Parameters
    ----------
    features : Tensor, shape (*lead, F − 1)
    targets : Tensor, shape (*lead, D)
        NaN where missing.  Any float dtype: each row block is converted to float64 when it is
        used, so the targets are never copied whole.
    cross : bool
        Also keep the residual cross-products (D × D), needed for a full noise covariance; only
        kept when every column is observed on the same rows.
    chunk_bytes : int, optional
        Size bound of the row blocks of targets in float64 (``CHUNK_BYTES`` by default).

    Returns
    -------
    AffineProblem
    """
    n_features = features.shape[-1]
    design = _design(features)
    y = targets.detach().reshape(-1, targets.shape[-1])
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    D = y.shape[1]
    missing = any_in_blocks(y, torch.isnan, chunk_bytes)
    if not missing:
        blocks = [_reduce_block(design, y, None, None, cross, False, chunk_bytes)]
        counts = torch.full((D,), float(y.shape[0]), dtype=torch.float64)
        return AffineProblem(blocks, n_features, counts, False)
    present = ~torch.isnan(y)
    counts = present.sum(0).to(torch.float64)
    if bool((present == present.any(1, keepdim=True)).all()):  # whole rows missing, or none
        blocks = [_reduce_block(design, y, present.all(1), None, cross, True, chunk_bytes)]
    else:  # columns observed on the same rows are reduced together
        patterns, which = torch.unique(present.mT, dim=0, return_inverse=True)
        blocks = [
            _reduce_block(design, y, pattern, (which == k).nonzero().squeeze(1), False, True, chunk_bytes)
            for k, pattern in enumerate(patterns)
        ]
    return AffineProblem(blocks, n_features, counts, True)


def reduce_affine_streamed(
    features: torch.Tensor, read_targets, n_targets: int, present: torch.Tensor | None = None, cross: bool = False
) -> AffineProblem:
    """:func:`reduce_affine` with the targets read in blocks, never all at once.

    The design ``[x 1]`` (``N × F``, small) is factorised in memory; the targets are read twice
    (for ``Qᵀ y``, then for the residual sums), one block of rows at a time.  Every row's
    targets are observed or missing as a whole (a missing frame).

    Parameters
    ----------
    features : Tensor, shape (*lead, F − 1)
        ``N`` rows in all.
    read_targets : callable
        ``read_targets()`` → iterable of ``(rows, values)``: row indices (LongTensor (k,)) into
        the flattened ``features`` and the targets of those rows, (k, D) float64 (NaN in missing
        rows); together they cover every observed row once.
    n_targets : int
        ``D``.
    present : Tensor of bool, shape (*lead,), optional
        Rows whose targets are observed (None: all).
    cross : bool
        Also keep the residual cross-products (D × D).

    Returns
    -------
    AffineProblem
        As :func:`reduce_affine` returns for the same targets held in memory, up to rounding.
    """
    n_features = features.shape[-1]
    design = _design(features)
    rows = None if present is None or bool(present.all()) else present.reshape(-1)
    q, factor = _factor(design, rows)
    n_all = design.shape[0]
    del design  # only Q (N × F) is kept

    def pieces():
        for index, values in read_targets():
            if rows is not None:  # NaN only where Q is zero: their rows drop out
                values = torch.where(torch.isnan(values), torch.zeros((), dtype=values.dtype), values)
            yield q[index], values

    n_rows = n_all if rows is None else int(rows.sum())
    block = _Block(None, n_rows, factor, *_project(q, pieces, int(n_targets), cross))
    counts = torch.full((int(n_targets),), float(n_rows), dtype=torch.float64)
    return AffineProblem([block], n_features, counts, rows is not None)


def solve_affine(problem: AffineProblem, feature_cov: torch.Tensor | None = None, penalty: float = 1.0) -> torch.Tensor:
    """Weights of the penalised fit (see :func:`fit_affine`) from the reduced problem.

    Each block's ``[R; (λ n P̄)^{1/2}ᵀ]`` has the singular values of the full stacked design, so
    ``gelsd`` is called with the full problem's ``rcond`` (``eps · max(rows, F)``) and cuts the
    same rank.

    Parameters
    ----------
    problem : AffineProblem
    feature_cov : Tensor, shape (F − 1, F − 1), optional
    penalty : float

    Returns
    -------
    Tensor, shape (F, D)
        Weights; the last row is the intercept.
    """
    F, f64 = problem.n_features + 1, torch.float64
    coef = torch.empty(F, problem.n_targets, dtype=f64)
    for block in problem.blocks:
        a, b, rows = block.factor, block.projected, block.n_rows
        if feature_cov is not None:  # Σ_t P_t as extra rows: root(n P̄)ᵀ rows with target 0
            scaled = penalty * block.n_rows * feature_cov.to(f64)
            root = torch.linalg.cholesky(scaled + 1e-12 * torch.eye(F - 1, dtype=f64))
            a = torch.cat([a, torch.cat([root.mT, torch.zeros_like(root[:, :1])], 1)])
            b = torch.cat([b, torch.zeros(root.shape[0], b.shape[1], dtype=f64)])
            rows = rows + root.shape[0]
        rcond = torch.finfo(f64).eps * max(rows, F)
        solution = torch.linalg.lstsq(a, b, rcond=rcond, driver="gelsd").solution
        if block.columns is None:
            coef = solution
        else:
            coef[:, block.columns] = solution
    return coef


def residual_moments(problem: AffineProblem, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Residual sums of squares of ``y − [x 1] c`` over the observed rows, without forming residuals.

    Parameters
    ----------
    problem : AffineProblem
    coef : Tensor, shape (F, D)

    Returns
    -------
    sum_squares : Tensor, shape (D,)
    cross : Tensor, shape (D, D), or None
        ``Σ_t r_t r_tᵀ``, when the problem was reduced with ``cross=True`` as one block.
    """
    sum_squares = torch.empty(problem.n_targets, dtype=torch.float64)
    cross = None
    for block in problem.blocks:
        columns = slice(None) if block.columns is None else block.columns
        error = block.projected - block.factor @ coef[:, columns]  # Qᵀ y − R c
        sum_squares[columns] = block.residual_ss + (error**2).sum(0)
        if block.residual_cross is not None:
            cross = block.residual_cross + error.mT @ error
    return sum_squares, cross


def fit_affine(
    features: torch.Tensor, targets: torch.Tensor, feature_cov: torch.Tensor | None = None, penalty: float = 1.0
) -> torch.Tensor:
    """Least-squares affine map from features to targets, in float64.

    With ``feature_cov`` the features are uncertain, ``h_t ~ N(m_t, P_t)``, and the map minimises
    ``Σ_t ‖y_t − W m_t − b‖² + λ tr(W P_t Wᵀ)`` (``λ = penalty``; at 1 this is the expected squared
    error under the beliefs): directions the features barely determine get small weights.  Rows whose targets are all NaN
    are left out; a target column with NaN in other rows is fitted on its own observed rows.

    Parameters
    ----------
    features : Tensor, shape (*lead, F)
    targets : Tensor, shape (*lead, D)
    feature_cov : Tensor, shape (F, F), optional
        The average covariance ``P̄`` of the features.
    penalty : float
        ``λ ≥ 0``.

    Returns
    -------
    Tensor, shape (F + 1, D)
        Weights; the last row is the intercept.
    """
    return solve_affine(reduce_affine(features, targets), feature_cov, penalty)
