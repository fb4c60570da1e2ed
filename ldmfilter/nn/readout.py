"""Read-outs from the filter's state to observations or targets, with closed-form uncertainty.

Both read-outs are fitted on detached filtered state beliefs ``N(m_t, P_t)`` and push a belief
through in closed form (never by sampling): the linear one exactly, the MLP one with the
Gaussian engine's deterministic moment rules.  Targets may hold NaN (missing), which are left
out of the fit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..gaussian import propagate
from ..gaussian.blocks import row_blocks
from ..gaussian.linalg import broadcast_compact, cholesky, quadratic_diagonal
from .affine import CHUNK_BYTES, AffineProblem, fit_affine, reduce_affine, residual_moments, solve_affine
from .encoders import make_mlp

__all__ = ["fit_affine", "LinearReadout", "MLPReadout", "readout_from_spec", "MIN_NOISE_FRACTION", "PENALTIES"]

MIN_NOISE_FRACTION = 0.05
NOISE_FLOOR = 1e-300  # the read-out noise variance of targets that are exactly zero
PENALTIES = (0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0)  # the linear read-out's candidate λ (see LinearReadout.fit)


def _rows(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.detach().reshape(-1, features.shape[-1]).to(torch.float64)
    y = targets.detach().reshape(-1, targets.shape[-1]).to(torch.float64)
    return x, y


def _lead_mean(cov: torch.Tensor, chunk_bytes: int | None = None) -> torch.Tensor:
    """Average of ``(*lead, S, S)`` covariances in float64, shape ``(S, S)``.

    Neither a broadcast view nor the whole stack is copied: a leading axis of stride 0 repeats one
    covariance, so it is left out of the average, and the rest is converted to float64 one block of
    the first axis at a time (``chunk_bytes``, ``CHUNK_BYTES`` by default).
    """
    cov = cov.detach()
    if cov.ndim == 2:
        return cov.to(torch.float64)
    core = cov[tuple(0 if cov.stride(axis) == 0 else slice(None) for axis in range(cov.ndim - 2))]
    if core.ndim == 2:
        return core.to(torch.float64)
    lead = tuple(range(core.ndim - 2))
    total = torch.zeros(core.shape[-2:], dtype=torch.float64)
    for rows in row_blocks(tuple(core.shape), 8, CHUNK_BYTES if chunk_bytes is None else chunk_bytes):
        total += core[rows].to(torch.float64).sum(dim=lead)
    return total / math.prod(core.shape[:-2])


def _target_power(problem) -> torch.Tensor:
    """Mean square ``Σ y² / n`` of every target column over its observed rows, shape (D,).

    From the reduced problem (``‖y‖² = ‖Qᵀ y‖² + ‖(I − Q Qᵀ) y‖²``), without another pass over the data.
    """
    power = torch.zeros(problem.n_targets, dtype=torch.float64)
    for block in problem.blocks:
        squares = (block.projected**2).sum(0) + block.residual_ss
        if block.columns is None:
            power += squares
        else:
            power[block.columns] = squares
    return power / problem.counts.clamp_min(1)


def _noise_from_residuals(
    sum_squares: torch.Tensor,
    cross: torch.Tensor | None,
    counts: torch.Tensor,
    pair_counts: torch.Tensor | None,
    propagated: torch.Tensor | None,
    diagonal: bool,
    dof: int,
    minimum: torch.Tensor | None = None,
) -> torch.Tensor:
    """Read-out noise: residual covariance minus the part the state uncertainty already explains.

    ``Cov(residual) ≈ W P̄ Wᵀ + Σ``; eigenvalues (diagonal: variances) of ``Σ`` are floored at
    ``MIN_NOISE_FRACTION`` of the smallest residual variance, and at ``minimum`` (D,) (a rounding-
    sized floor, so that targets the states fit exactly, e.g. a constant, still get a positive
    definite ``Σ``).  The residuals enter through their sums over observed rows: ``sum_squares``
    (D,) and, for a full ``Σ``, ``cross`` (D, D), with ``counts`` (D,) and ``pair_counts`` (D, D)
    rows observed per column and per pair of columns.
    """
    minimum = torch.zeros_like(sum_squares) if minimum is None else minimum
    if diagonal:
        return torch.diag(_diagonal_noise(sum_squares, counts, None if propagated is None else propagated.diagonal(), dof, minimum))
    noise = cross / (pair_counts - dof).clamp_min(1)
    floor = max(MIN_NOISE_FRACTION * float(noise.diagonal().min()), float(minimum.max()))
    if propagated is not None:
        noise = noise - propagated
    values, vectors = torch.linalg.eigh(0.5 * (noise + noise.mT))
    noise = (vectors * values.clamp_min(floor)) @ vectors.mT
    return 0.5 * (noise + noise.mT)


def _diagonal_noise(
    sum_squares: torch.Tensor, counts: torch.Tensor, propagated: torch.Tensor | None, dof: int, minimum: torch.Tensor
) -> torch.Tensor:
    """The variances (D,) of a diagonal read-out noise (see :func:`_noise_from_residuals`); ``propagated``
    holds ``diag(W P̄ Wᵀ)`` (D,)."""
    var = sum_squares / (counts - dof).clamp_min(1)
    floor = torch.maximum(MIN_NOISE_FRACTION * var, minimum)
    if propagated is not None:
        var = var - propagated
    return torch.maximum(var, floor)


def _marginal_score(sum_squares: torch.Tensor, counts: torch.Tensor, var: torch.Tensor) -> float:
    """Mean marginal Gaussian NLL (up to a constant) per observed value, under variances ``var`` (D,)."""
    return float((sum_squares / var + counts * var.log()).sum() / counts.sum())


def _marginal_nll(
    sum_squares: torch.Tensor, cross: torch.Tensor | None, counts: torch.Tensor, cov: torch.Tensor, missing: bool
) -> float:
    """Mean Gaussian NLL (up to a constant) of residuals under ``N(0, cov)``; marginal when NaN are present.

    The per-row mean of ``r_tᵀ cov⁻¹ r_t + log|cov|`` is ``tr(L⁻¹ C L⁻ᵀ) / n + log|cov|`` with
    ``C = Σ_t r_t r_tᵀ`` (``cross``); marginally, per observed value, from ``sum_squares``.
    """
    if missing or cov.shape[0] > 64:
        return _marginal_score(sum_squares, counts, cov.diagonal())
    factor = cholesky(cov, "read-out covariance W P̄ Wᵀ + Σ")
    half = torch.linalg.solve_triangular(factor, cross, upper=False)  # L⁻¹ C
    whitened = torch.linalg.solve_triangular(factor, half.mT, upper=False)  # L⁻¹ C L⁻ᵀ (C symmetric)
    return float(whitened.diagonal().sum() / counts[0] + 2 * factor.diagonal().log().sum())


def _explicit_moments(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """Residual sums over observed rows, from the residuals themselves (NaN patterns that differ by column)."""
    residual = y - (x @ weight.mT + bias)
    present = ~torch.isnan(residual)
    filled = torch.where(present, residual, torch.zeros((), dtype=residual.dtype))
    counts = present.to(residual.dtype)
    return (filled**2).sum(0), filled.mT @ filled, counts.mT @ counts


class LinearReadout(nn.Module):
    """``y = W h + b + ε``, ``ε ~ N(0, Σ)``, fitted on detached filtered state beliefs.

    Pushing a state belief ``N(m, P)`` through it gives ``N(W m + b, W P Wᵀ + Σ)`` exactly.
    ``W`` minimises a penalised squared error (see :func:`fit_affine`) whose penalty ``λ`` is
    picked from ``PENALTIES`` by the Gaussian likelihood of the training targets under these
    moments: least squares (``λ = 0``) when the beliefs are sharp, smaller weights on state
    directions the filter barely determines otherwise.  ``Σ`` is the covariance of the training residuals minus the average state uncertainty that
    the read-out already propagates (``W P̄ Wᵀ``), floored at a small fraction of the residual
    variance (``MIN_NOISE_FRACTION``), so that the state uncertainty is not counted twice.

    Parameters
    ----------
    weight : Tensor, shape (D, S)
    bias : Tensor, shape (D,)
    noise_cov : Tensor, shape (D, D)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_cov: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("noise_cov", noise_cov)

    def spec(self) -> dict:
        """Constructor arguments, to rebuild the read-out from a model file."""
        return {"kind": "linear", "state_dim": self.weight.shape[1], "target_dim": self.weight.shape[0]}

    @classmethod
    def fit(
        cls, state_mean: torch.Tensor, targets: torch.Tensor, state_cov: torch.Tensor | None = None, diagonal: bool = False
    ) -> "LinearReadout":
        """Fit on filtered states.

        Parameters
        ----------
        state_mean : Tensor, shape (*lead, S)
        targets : Tensor, shape (*lead, D)
            NaN where missing.
        state_cov : Tensor, shape (*lead, S, S), optional
            The states' covariances; their average propagated part is removed from the
            residual covariance.
        diagonal : bool
            Keep a diagonal noise covariance (for many targets, e.g. the pixels of a frame).

        Returns
        -------
        LinearReadout
        """
        if state_mean.shape[:-1] != targets.shape[:-1]:
            raise ValueError(
                f"state_mean {tuple(state_mean.shape)} and targets {tuple(targets.shape)} must share leading axes"
            )
        mean_cov = None if state_cov is None else _lead_mean(state_cov)
        D = targets.shape[-1]
        problem = reduce_affine(state_mean, targets, cross=not diagonal or D <= 64)  # one pass over the data
        return cls.from_problem(problem, mean_cov, diagonal, lambda: _rows(state_mean, targets))

    @classmethod
    def from_problem(
        cls, problem: AffineProblem, mean_cov: torch.Tensor | None = None, diagonal: bool = False, rows=None
    ) -> "LinearReadout":
        """Fit from the reduced least-squares problem (:func:`~ldmfilter.nn.affine.reduce_affine`).

        The data enter only through ``problem``, so it can be accumulated block by block
        (:func:`~ldmfilter.nn.affine.reduce_affine_streamed`) over data too large to hold.

        Parameters
        ----------
        problem : AffineProblem
            States ``m_t`` to targets, reduced with ``cross=True`` unless ``diagonal`` and ``D > 64``.
        mean_cov : Tensor, shape (S, S), optional
            Average state covariance ``P̄`` over the rows (as ``fit`` takes it from ``state_cov``).
        diagonal : bool
            As in :meth:`fit`.
        rows : callable, optional
            ``() → (states (N, S), targets (N, D))`` in float64, needed only for a full noise
            covariance under a NaN pattern that differs between target columns.

        Returns
        -------
        LinearReadout
        """
        D = problem.n_targets
        dof = problem.n_features + 1
        minimum = (torch.finfo(torch.float64).eps * _target_power(problem)).clamp_min(NOISE_FLOOR)
        best = None
        for penalty in PENALTIES if mean_cov is not None else (0.0,):
            coef = solve_affine(problem, mean_cov, penalty)
            weight, bias = coef[:-1].mT.contiguous(), coef[-1].clone()
            sum_squares, cross = residual_moments(problem, coef)
            if diagonal and (problem.missing or D > 64):  # marginal scores: vectors only, no D × D temporaries
                propagated = None if mean_cov is None else ((weight @ mean_cov) * weight).sum(-1)  # diag(W P̄ Wᵀ)
                noise = _diagonal_noise(sum_squares, problem.counts, propagated, dof, minimum)
                score = _marginal_score(sum_squares, problem.counts, noise if propagated is None else propagated + noise)
            else:
                pair_counts = None if cross is None else problem.counts[0].expand(D, D)  # one block: same rows
                if cross is None and not diagonal:  # full Σ under a NaN pattern that differs by column
                    if rows is None:
                        raise ValueError("a full read-out noise covariance with targets missing in different rows needs rows=")
                    sum_squares, cross, pair_counts = _explicit_moments(*rows(), weight, bias)
                propagated = None if mean_cov is None else weight @ mean_cov @ weight.mT
                noise = _noise_from_residuals(sum_squares, cross, problem.counts, pair_counts, propagated, diagonal, dof, minimum)
                total = noise if propagated is None else propagated + noise
                score = _marginal_nll(sum_squares, cross, problem.counts, total, problem.missing)
            if best is None or score < best[0]:
                best = (score, weight, bias, noise)
        _, weight, bias, noise = best
        return cls(weight, bias, torch.diag(noise) if noise.ndim == 1 else noise)

    def forward(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of the targets: mean (*lead, D) and covariance (*lead, D, D)."""
        W = self.weight.to(mean.dtype)
        out_mean = mean @ W.mT + self.bias.to(mean.dtype)
        out_cov = W @ cov @ W.mT + self.noise_cov.to(mean.dtype)
        return out_mean, 0.5 * (out_cov + out_cov.mT)

    def marginal(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (*lead, D) and marginal variances (*lead, D), without forming D×D covariances.

        The variances ``diag(W P Wᵀ) + diag Σ`` go through :func:`~ldmfilter.gaussian.linalg.quadratic_diagonal`:
        no ``(*lead, D, S)`` temporary, and a covariance shared across series (a broadcast view, or
        fewer leading axes than ``mean``) is evaluated once.
        """
        W = self.weight.to(mean.dtype)
        out_mean = (mean @ W.mT).add_(self.bias.to(mean.dtype))
        var = quadratic_diagonal(W, broadcast_compact(cov).to(mean.dtype))  # one row per distinct P
        var = var.add_(self.noise_cov.diagonal().to(mean.dtype))  # diag(W P Wᵀ) + diag Σ
        lead = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
        return out_mean, var.expand(lead + W.shape[:1]).contiguous()


class MLPReadout(nn.Module):
    """``y = g(h) + ε``, ``ε ~ N(0, diag(σ²))``, with ``g`` a small MLP.

    A state belief ``N(m, P)`` is pushed through ``g`` with a deterministic moment rule of the
    Gaussian engine (unscented by default); ``σ²`` is added.  ``g`` and ``σ²`` are fitted by
    maximising the marginal Gaussian likelihood of the training targets under exactly these
    moments, so the noise accounts only for what the propagated state uncertainty does not.

    Parameters
    ----------
    state_dim, target_dim : int
    hidden : tuple of int
    rule : {"unscented", "cubature", "linearize"}
    """

    def __init__(self, state_dim: int, target_dim: int, hidden=(64,), rule: str = "unscented"):
        super().__init__()
        self.net = make_mlp(state_dim, tuple(hidden), target_dim, activation="tanh")
        self.log_var = nn.Parameter(torch.zeros(target_dim))
        self.register_buffer("state_centre", torch.zeros(state_dim))
        self.register_buffer("state_scale", torch.ones(state_dim))
        self.hidden, self.rule = tuple(hidden), rule

    def spec(self) -> dict:
        """Constructor arguments, to rebuild the read-out from a model file."""
        return {"kind": "mlp", "state_dim": self.state_centre.numel(), "target_dim": self.log_var.numel(),
                "hidden": list(self.hidden), "rule": self.rule}

    def _mean_function(self, h: torch.Tensor) -> torch.Tensor:
        return self.net((h - self.state_centre) / self.state_scale)

    def _moments(self, mean: torch.Tensor, cov: torch.Tensor):
        dtype = self.log_var.dtype
        moments = propagate(self._mean_function, mean.to(dtype), cov.to(dtype), method=self.rule)
        return moments.mean, moments.cov

    def forward(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of the targets: mean (*lead, D) and covariance (*lead, D, D)."""
        out_mean, out_cov = self._moments(mean, cov)
        out_cov = out_cov + torch.diag(self.log_var.exp())
        return out_mean.to(mean.dtype), (0.5 * (out_cov + out_cov.mT)).to(mean.dtype)

    def marginal(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and marginal variances, both (*lead, D)."""
        out_mean, out_cov = self._moments(mean, cov)
        var = out_cov.diagonal(dim1=-2, dim2=-1) + self.log_var.exp()
        return out_mean.to(mean.dtype), var.to(mean.dtype)

    @classmethod
    def fit(
        cls,
        state_mean: torch.Tensor,
        targets: torch.Tensor,
        state_cov: torch.Tensor,
        hidden=(64,),
        rule: str = "unscented",
        steps: int = 500,
        batch_size: int = 4096,
        learning_rate: float = 0.01,
        seed: int = 0,
    ) -> "MLPReadout":
        """Fit ``g`` and ``σ²`` by Adam on the marginal Gaussian NLL of ``targets`` (NaN left out).

        Parameters
        ----------
        state_mean : Tensor, shape (*lead, S)
        targets : Tensor, shape (*lead, D)
        state_cov : Tensor, shape (*lead, S, S)
        steps, batch_size, learning_rate, seed
            Optimisation settings (random mini-batches of rows).
        """
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            readout = cls(state_mean.shape[-1], targets.shape[-1], hidden, rule).to(torch.float64)
        x, y = _rows(state_mean, targets)
        P = state_cov.detach().to(torch.float64).expand(state_mean.shape[:-1] + state_cov.shape[-2:]).reshape(-1, *state_cov.shape[-2:])
        keep = ~torch.isnan(y).all(1)
        x, y, P = x[keep], y[keep], P[keep]
        centre, scale = y.nanmean(0), (y - y.nanmean(0)).pow(2).nanmean(0).sqrt().clamp_min(1e-12)
        with torch.no_grad():  # standardised states in; start from the targets' mean and scale
            readout.state_centre.copy_(x.mean(0))
            readout.state_scale.copy_(x.std(0).clamp_min(1e-12))
            readout.net[-1].bias.copy_(centre)
            readout.log_var.fill_(0.0).add_(2 * scale.log() - math.log(4.0))
        optimiser = torch.optim.Adam(readout.parameters(), lr=learning_rate)
        for _ in range(steps):
            rows = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=generator)
            mean, var = readout.marginal(x[rows], P[rows])
            target = y[rows]
            present = ~torch.isnan(target)
            error = torch.where(present, target - mean, torch.zeros((), dtype=mean.dtype))
            nll = 0.5 * (error**2 / var + var.log()) * present
            loss = nll.sum() / present.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        readout.eval()
        readout.requires_grad_(False)
        return readout


def readout_from_spec(spec: dict) -> nn.Module:
    """An unfitted read-out of the kind and size in ``spec`` (see ``spec()``), ready for ``load_state_dict``."""
    state_dim, target_dim = int(spec["state_dim"]), int(spec["target_dim"])
    if spec.get("kind") == "linear":
        f64 = torch.float64
        return LinearReadout(torch.zeros(target_dim, state_dim, dtype=f64), torch.zeros(target_dim, dtype=f64), torch.eye(target_dim, dtype=f64))
    if spec.get("kind") == "mlp":
        return MLPReadout(state_dim, target_dim, tuple(spec["hidden"]), spec["rule"]).to(torch.float64).requires_grad_(False)
    raise ValueError(f"unknown read-out kind {spec.get('kind')!r}")
