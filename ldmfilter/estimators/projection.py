"""Linear front ends that let a classical filter run on high-dimensional observations (video frames).

A projection maps a flattened observation ``x ∈ R^D`` to ``y = Bᵀ (x − μ) ∈ R^K`` with an
orthonormal basis ``B (D, K)``; the filter then models ``y``.  Beliefs over ``y`` map back to
observations exactly through ``x = μ + B y + e``, where ``e`` (the part of ``x`` outside the
basis) is given a diagonal variance, the per-component mean squared residual of the training
data.  :class:`ProjectedReadout` is that map from the state, so ``filter(frames).observations``
are frames.

* :class:`PCAProjection`: ``B`` = the top ``K`` principal directions of the training
  observations (a missing value is replaced by its component's mean for the fit).
* :class:`RandomProjection`: ``B`` = an orthonormalised Gaussian random matrix (seeded), ``μ`` =
  the training mean — data-independent directions, cheap for very large ``D``.

An observation with some components missing is projected by least squares on its observed
components, ``y = (B_oᵀ B_o)⁻¹ B_oᵀ (x_o − μ_o)`` (a tiny ridge keeps it solvable); with none
observed it is missing.  This is exact for the pixels' span but ignores that such a ``y`` is
noisier than a complete one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import math

import numpy as np
import torch
from torch import nn

from ..gaussian.linalg import broadcast_compact, quadratic_diagonal

__all__ = ["PCAProjection", "RandomProjection", "ProjectedReadout", "projection_from_spec", "PROJECTIONS"]


def _check_components(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    return int(n_components)


class _Projection(ABC):
    """Shared fit / transform of the orthonormal projections."""

    kind = ""

    def __init__(self, n_components: int):
        self.n_components = n_components

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    @abstractmethod
    def _basis(self, centred: torch.Tensor) -> torch.Tensor:
        """Orthonormal basis (D, K) for centred training rows ``centred`` (N, D)."""

    def fit(self, rows) -> "_Projection":
        """Fit on observations ``rows`` (N, D), NaN where missing; returns self.

        Sets ``components_`` (D, K) with orthonormal columns, ``mean_`` (D,) and
        ``residual_var_`` (D,), the mean squared residual of each component outside the basis
        (floored at ``1e-6 ×`` its mean, so that it is positive).
        """
        K = _check_components(self.n_components)
        x = torch.as_tensor(np.asarray(rows, dtype=np.float64))
        if x.ndim != 2:
            raise ValueError(f"a projection is fitted on rows (N, D), got shape {tuple(x.shape)}")
        present = ~torch.isnan(x)
        x = x[present.any(1)]
        present = present[present.any(1)]
        N, D = x.shape
        if K > D:
            raise ValueError(f"n_components={K} exceeds the observation size D={D}")
        if N < 2:
            raise ValueError(f"a projection needs at least 2 observed frames to fit, got {N}")
        counts = present.sum(0)
        mean = torch.where(present, x, torch.zeros(())).sum(0) / counts.clamp_min(1)
        centred = torch.where(present, x - mean, torch.zeros(()))  # missing → the component's mean
        basis = self._basis(centred)
        residual = centred - (centred @ basis) @ basis.mT
        var = torch.where(present, residual, torch.zeros(())).square().sum(0) / counts.clamp_min(1)
        floor = max(1e-6 * float(var.mean()), 1e-12)
        self.components_, self.mean_, self.residual_var_ = basis.contiguous(), mean, var.clamp_min(floor)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet")

    # ------------------------------------------------------------------ use
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates ``y = Bᵀ (x − μ)`` of observations ``x`` (..., D) → (..., K).

        Rows with some components missing (NaN) are projected by least squares on the observed
        ones; rows with none observed give NaN.
        """
        self._check_fitted()
        B = self.components_.to(x.dtype)
        D, K = B.shape
        if x.shape[-1] != D:
            raise ValueError(f"the projection was fitted on observations of size {D}, got {x.shape[-1]}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, D)
        present = ~torch.isnan(flat)
        centred = torch.where(present, flat - self.mean_.to(x.dtype), torch.zeros((), dtype=x.dtype))
        y = centred @ B
        partial = present.any(1) & ~present.all(1)
        if bool(partial.any()):
            weight = present[partial].to(x.dtype)
            gram = B.mT @ (weight[:, :, None] * B)  # B_oᵀ B_o
            ridge = math.sqrt(torch.finfo(x.dtype).eps) * torch.eye(K, dtype=x.dtype)
            y[partial] = torch.linalg.solve(gram + ridge, y[partial].unsqueeze(-1)).squeeze(-1)
        y[~present.any(1)] = math.nan
        return y.reshape(lead + (K,))

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Observations ``μ + B y`` (..., D) of coordinates ``y`` (..., K)."""
        self._check_fitted()
        return y @ self.components_.to(y.dtype).mT + self.mean_.to(y.dtype)

    # ------------------------------------------------------------------ files
    def spec(self) -> dict:
        """Constructor arguments (JSON), to rebuild the projection from a model file."""
        return {"kind": self.kind, "n_components": self.n_components}

    def state_dict(self) -> dict:
        """The fitted basis, mean and residual variances as tensors."""
        self._check_fitted()
        return {"components": self.components_, "mean": self.mean_, "residual_var": self.residual_var_}

    def load_state_dict(self, state: dict) -> "_Projection":
        components, mean, var = state["components"], state["mean"], state["residual_var"]
        if components.ndim != 2 or mean.shape != components.shape[:1] or var.shape != mean.shape:
            raise ValueError(
                f"projection state of inconsistent shapes: components {tuple(components.shape)}, mean "
                f"{tuple(mean.shape)}, residual_var {tuple(var.shape)}"
            )
        self.components_, self.mean_, self.residual_var_ = components, mean, var
        return self


class PCAProjection(_Projection):
    """Principal-component front end: the top ``n_components`` directions of the training data.

    Parameters
    ----------
    n_components : int
        ``K``, the dimension the filter sees.
    """

    kind = "pca"

    def _basis(self, centred: torch.Tensor) -> torch.Tensor:
        if self.n_components > min(centred.shape):
            raise ValueError(
                f"n_components={self.n_components} exceeds min(frames, size) = {min(centred.shape)} of the "
                "training data"
            )
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        basis = vh[: self.n_components].mT
        signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))  # largest entry positive
        return basis * torch.where(signs == 0, torch.ones_like(signs), signs)


class RandomProjection(_Projection):
    """Random orthonormal front end (data-independent directions, the training mean as centre).

    Parameters
    ----------
    n_components : int
        ``K``, the dimension the filter sees.
    seed : int
        Seed of the Gaussian matrix that is orthonormalised (QR) into the basis.
    """

    kind = "random"

    def __init__(self, n_components: int, seed: int = 0):
        super().__init__(n_components)
        self.seed = seed

    def spec(self) -> dict:
        return {**super().spec(), "seed": self.seed}

    def _basis(self, centred: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(self.seed))
        gaussian = torch.randn(centred.shape[1], self.n_components, generator=generator, dtype=torch.float64)
        basis, r = torch.linalg.qr(gaussian)
        return basis * torch.sign(r.diagonal())


PROJECTIONS = {"pca": PCAProjection, "random": RandomProjection}


def projection_from_spec(spec: dict) -> _Projection:
    """An unfitted projection from ``spec()``."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in PROJECTIONS:
        raise ValueError(f"unknown projection kind {kind!r}; expected one of {sorted(PROJECTIONS)}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    return PROJECTIONS[kind](**options)


class ProjectedReadout(nn.Module):
    """Exact observation beliefs of a linear model on projected coordinates, in observation space.

    With ``y = H h + d + v`` (``v ~ N(0, R)``) and ``x = μ + B y + e`` (``e ~ N(0, diag(r))``), a
    state belief ``N(m, P)`` gives ``x ~ N(μ + B (H m + d), B (H P Hᵀ + R) Bᵀ + diag(r))``.

    Parameters
    ----------
    basis : Tensor, shape (D, K)
    centre : Tensor, shape (D,)
    residual_var : Tensor, shape (D,)
    weight : Tensor, shape (K, S)
        ``H``.
    bias : Tensor, shape (K,)
        ``d``.
    noise_cov : Tensor, shape (K, K)
        ``R``.
    """

    def __init__(self, basis, centre, residual_var, weight, bias, noise_cov):
        super().__init__()
        for name, value in (("basis", basis), ("centre", centre), ("residual_var", residual_var),
                            ("weight", weight), ("bias", bias), ("noise_cov", noise_cov)):
            self.register_buffer(name, value.detach().to(torch.float64))

    def _projected(self, mean: torch.Tensor, cov: torch.Tensor):
        H = self.weight.to(mean.dtype)
        return mean @ H.mT + self.bias.to(mean.dtype), self._projected_cov(cov.to(mean.dtype))

    def _projected_cov(self, cov: torch.Tensor) -> torch.Tensor:
        """``Σ_y = H P Hᵀ + R`` (symmetrised), shape (*lead, K, K)."""
        H = self.weight.to(cov.dtype)
        y_cov = H @ cov @ H.mT + self.noise_cov.to(cov.dtype)
        return 0.5 * (y_cov + y_cov.mT)

    def forward(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (*lead, D) and full covariances (*lead, D, D)."""
        y_mean, y_cov = self._projected(mean, cov)
        B = self.basis.to(mean.dtype)
        out_cov = B @ y_cov @ B.mT + torch.diag(self.residual_var.to(mean.dtype))
        return y_mean @ B.mT + self.centre.to(mean.dtype), 0.5 * (out_cov + out_cov.mT)

    def marginal(self, mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and marginal variances (*lead, D), without forming D×D covariances.

        ``diag(B Σ_y Bᵀ) + r`` with ``Σ_y = H P Hᵀ + R`` goes through
        :func:`~ldmfilter.gaussian.linalg.quadratic_diagonal` once per distinct ``P`` (a covariance
        shared across series is not expanded), without ``(*lead, D, K)`` temporaries: as
        ``diag(B Σ_y Bᵀ)`` when ``K < S``, else as ``diag(G P Gᵀ) + diag(B R Bᵀ)`` with ``G = B H``.
        """
        H, B = self.weight.to(mean.dtype), self.basis.to(mean.dtype)
        y_mean = mean @ H.mT + self.bias.to(mean.dtype)
        compact = broadcast_compact(cov).to(mean.dtype)  # (*lead', S, S), lead' = distinct covariances
        if H.shape[0] < H.shape[1]:  # Σ_y is smaller than P
            var = quadratic_diagonal(B, self._projected_cov(compact))
        else:
            fixed = ((B @ self.noise_cov.to(mean.dtype)) * B).sum(-1)  # diag(B R Bᵀ)
            var = quadratic_diagonal(B @ H, compact).add_(fixed)
        var = var.add_(self.residual_var.to(mean.dtype))  # + r
        lead = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
        return (y_mean @ B.mT).add_(self.centre.to(mean.dtype)), var.expand(lead + B.shape[:1]).contiguous()
