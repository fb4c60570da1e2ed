"""Differentiable estimators of the differential entropy of a batch of latents.

The F_MI ("CPC-style") form of the training objective (METHOD.md §4) adds an entropy bonus
``λ · T · Ĥ(z)`` on single-step latents.  Three plug-in estimators are provided, all pure torch
and differentiable with respect to the samples:

- :func:`knn_entropy` — Kozachenko–Leonenko k-nearest-neighbour estimate (the paper's default
  for the identifiability experiment), optionally with the paper's quantile clipping and
  random subsampling;
- :func:`kde_entropy` — Gaussian kernel-density resubstitution estimate (the paper's
  "contrastive" KDE form, up to a constant; SimCLR-like);
- :func:`logdet_entropy` — entropy of the Gaussian with the sample covariance (VICReg-like).

:func:`entropy` dispatches on a name from :data:`ENTROPY_ESTIMATORS`.  All estimates are in nats
and are returned as 0-d tensors of the input's dtype and device.

Samples are rows: ``z`` has shape ``(N, d)`` (flatten ``(batch, time, dim)`` latents to
``(batch * time, dim)`` first).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ldmfilter.gaussian.linalg import cholesky, logdet_from_cholesky

__all__ = [
    "knn_entropy",
    "kde_entropy",
    "logdet_entropy",
    "ENTROPY_ESTIMATORS",
    "entropy",
    "log_unit_ball_volume",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_samples(z, min_samples: int, why: str) -> None:
    """Validate ``z`` as a finite 2-D floating tensor with at least ``min_samples`` rows."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (N, d), got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got dtype {z.dtype}")
    if z.ndim != 2:
        raise ValueError(
            f"z must be a 2-D tensor of shape (N, d) (samples in rows), got shape {tuple(z.shape)}"
        )
    if z.shape[1] < 1:
        raise ValueError(f"z must have at least one column (d >= 1), got shape {tuple(z.shape)}")
    if z.shape[0] < min_samples:
        raise ValueError(
            f"z must have at least {min_samples} samples ({why}), got shape {tuple(z.shape)}"
        )
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"z of shape {tuple(z.shape)} contains NaN or inf entries")


def log_unit_ball_volume(d: int) -> float:
    """Log-volume of the unit Euclidean ball in ``d`` dimensions.

    ``log V_d = (d/2) log π − log Γ(d/2 + 1)``.

    Parameters
    ----------
    d : int
        Dimension, ``d >= 1``.

    Returns
    -------
    float
    """
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def _digamma_int(n: int) -> float:
    """Digamma at a positive integer: ``ψ(n) = −γ + Σ_{j<n} 1/j`` (computed in float64)."""
    return float(torch.special.digamma(torch.tensor(float(n), dtype=torch.float64)))


def _subsample(z: torch.Tensor, subsample: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """Rows of ``z`` drawn without replacement (all rows when ``subsample`` is None or ``>= N``)."""
    n = z.shape[0]
    if subsample is None or subsample >= n:
        return z
    device = generator.device if generator is not None else torch.device("cpu")
    index = torch.randperm(n, generator=generator, device=device)[:subsample]
    return z[index.to(z.device)]


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------


def knn_entropy(
    z: torch.Tensor,
    k: int = 3,
    clip_quantile: float | None = 0.9,
    subsample: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kozachenko–Leonenko k-nearest-neighbour entropy estimate.

    ``Ĥ = ψ(N) − ψ(k) + log V_d + d · mean_i log ε_{i,k}``, where ``ε_{i,k}`` is the Euclidean
    distance from ``z_i`` to its k-th nearest neighbour among the other samples, ``V_d`` the
    volume of the unit d-ball and ψ the digamma function.  Without clipping the estimator is
    consistent, and asymptotically unbiased, for any continuous density.

    Clipping (METHOD.md §4): the distances ``ε_{i,k}`` above their ``clip_quantile`` quantile
    over the batch (computed without gradient) are replaced by that quantile.  Clipped points
    get no gradient, so a few outliers cannot dominate the bonus.  Because clipping only ever
    shrinks distances, the clipped estimate is never larger than the unclipped one: it is
    biased *downwards*: by about 0.1 nats for Gaussians in d = 2–5 with k = 3 and the default
    0.9, less for bounded supports (short-tailed distances), more for heavy tails.
    The shift under scaling is unaffected: ``Ĥ(c z) = Ĥ(z) + d log c`` with or without clipping.

    Subsampling: when ``subsample`` is given, that many rows are drawn uniformly without
    replacement and the estimate is computed on the subset alone — the subset provides both the
    query points and the neighbour candidates, and ``N`` in the formula is the subset size.
    (This is the paper's "random subset of 5·B latents drawn from all B·T".)  The subset is a
    sample from the same distribution, so the estimate targets the same entropy, only with
    more variance; cost is ``O(M² d)`` for ``M = subsample``.  Gradients reach only the
    selected rows.  A ``subsample >= N`` uses all rows.

    Duplicate points (``ε = 0``) are guarded: distances are clamped below at the smallest
    positive normal number of the dtype before the logarithm, so the estimate and its
    gradient stay finite (the clamped distances get zero gradient).  A cluster of more than
    ``k`` identical points therefore drives the estimate very low (about ``d · log(1e-308)/N``
    per such point in float64) without a gradient on those points; the other points still
    receive theirs.

    Parameters
    ----------
    z : Tensor, shape (N, d)
        Samples in rows, floating point, finite.
    k : int, default 3
        Neighbour order, ``1 <= k < N`` (``k < subsample`` when subsampling).
    clip_quantile : float or None, default 0.9
        Quantile in ``(0, 1]`` of the k-NN distances above which distances are clipped;
        ``None`` disables clipping (the textbook estimator).
    subsample : int or None, default None
        Number of rows to draw at random; ``None`` uses all rows.
    generator : torch.Generator or None
        Random generator for the subset (for reproducibility); ignored without ``subsample``.
        The permutation is drawn on the generator's device (CPU when None).

    Returns
    -------
    Tensor, shape ()
        The entropy estimate in nats.

    Raises
    ------
    TypeError
        If ``z`` is not a floating tensor.
    ValueError
        If ``z`` is not 2-D, not finite, has ``N <= k`` rows, or an option is out of range.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if clip_quantile is not None and not (0.0 < float(clip_quantile) <= 1.0):
        raise ValueError(f"clip_quantile must lie in (0, 1] or be None, got {clip_quantile!r}")
    if subsample is not None and (
        isinstance(subsample, bool) or not isinstance(subsample, int) or subsample <= k
    ):
        raise ValueError(f"subsample must be an int greater than k={k} or None, got {subsample!r}")
    _check_samples(z, k + 1, f"more than k={k} for the k-th neighbour")

    z = _subsample(z, subsample, generator)
    n, d = z.shape

    distances = torch.cdist(z, z)  # (n, n), ‖z_i − z_j‖
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    distances = distances.masked_fill(self_mask, float("inf"))  # exclude the point itself
    eps = torch.topk(distances, k, dim=1, largest=False).values[:, k - 1]  # (n,) ε_{i,k}

    if clip_quantile is not None:
        threshold = torch.quantile(eps.detach(), float(clip_quantile))
        eps = torch.minimum(eps, threshold)  # clipped points carry no gradient
    eps = eps.clamp_min(torch.finfo(z.dtype).tiny)  # guard log(0) for duplicates

    constant = _digamma_int(n) - _digamma_int(k) + log_unit_ball_volume(d)
    return constant + d * eps.log().mean()  # Ĥ = ψ(N) − ψ(k) + log V_d + d·mean log ε


def kde_entropy(z: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Gaussian kernel-density (resubstitution) entropy estimate.

    ``Ĥ = − mean_i log mean_j N(z_i; z_j, h² I)``, where ``j`` runs over all samples including
    ``i`` itself (resubstitution).  Expanding the kernel,

    ``Ĥ = − mean_i log mean_j exp(−‖z_i − z_j‖² / (2h²)) + (d/2) log(2π h²)``,

    i.e. the paper's contrastive form (the first term) plus the kernel's normalising constant,
    which makes it an entropy estimate in nats.  The constant carries no gradient, so both
    forms train identically.

    Bias: for large N the estimate tends to the cross-entropy ``−E_p log (p ∗ N(0, h² I))
    = H(p) + KL(p ‖ p ∗ N(0, h² I)) ≥ H(p)`` (for Gaussian ``p`` it lies below the entropy of
    the smoothed density, ``½ log|2πe(Σ + h²I)|``), so a large bandwidth biases it upwards.
    A bandwidth that is small relative to the sample spacing biases it downwards instead,
    because the self term ``N(z_i; z_i, h² I) / N = (2πh²)^(−d/2) / N`` then dominates the
    density at ``z_i``.  ``Ĥ`` increases when ``z`` is spread out, and
    ``Ĥ(c z; c h) = Ĥ(z; h) + d log c``.

    Parameters
    ----------
    z : Tensor, shape (N, d)
        Samples in rows, floating point, finite; ``N >= 2``.
    bandwidth : float, default 1.0
        Kernel standard deviation ``h > 0``.

    Returns
    -------
    Tensor, shape ()
        The entropy estimate in nats.

    Raises
    ------
    TypeError
        If ``z`` is not a floating tensor.
    ValueError
        If ``z`` is not 2-D, not finite, has fewer than 2 rows, or ``bandwidth <= 0``.
    """
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not (
        math.isfinite(bandwidth) and bandwidth > 0
    ):
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    _check_samples(z, 2, "at least 2 for a kernel density estimate")
    n, d = z.shape
    h2 = float(bandwidth) ** 2

    squared = torch.cdist(z, z).square()  # (n, n), ‖z_i − z_j‖²
    log_mean = torch.logsumexp(-squared / (2.0 * h2), dim=1) - math.log(n)  # log mean_j exp(·)
    return -log_mean.mean() + 0.5 * d * math.log(2.0 * math.pi * h2)


def logdet_entropy(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Entropy of the Gaussian fitted to the samples (VICReg-like).

    ``Ĥ = ½ log|2πe (Σ̂ + εI)| = ½ (d log(2πe) + log|Σ̂ + εI|)``, with ``Σ̂`` the unbiased sample
    covariance (divisor ``N − 1``).  Exact in expectation (up to the ``O(d²/N)`` bias of the
    log-determinant and the ``ε`` ridge) for Gaussian samples; for any other distribution it
    is an upper bound in the large-N limit, since the Gaussian maximises entropy at fixed
    covariance.  ``Ĥ(c z) = Ĥ(z) + d log c`` exactly when ``eps = 0``.

    The log-determinant goes through :func:`ldmfilter.gaussian.linalg.cholesky` (its jitter
    policy applies when ``Σ̂ + εI`` is numerically singular, e.g. ``eps = 0`` with ``N <= d``).

    Parameters
    ----------
    z : Tensor, shape (N, d)
        Samples in rows, floating point, finite; ``N >= 2``.
    eps : float, default 1e-4
        Ridge ``ε >= 0`` added to the covariance diagonal.

    Returns
    -------
    Tensor, shape ()
        The entropy estimate in nats.

    Raises
    ------
    TypeError
        If ``z`` is not a floating tensor.
    ValueError
        If ``z`` is not 2-D, not finite, has fewer than 2 rows, or ``eps < 0``; a
        ``NotPositiveDefiniteError`` (a ``ValueError``) if the covariance cannot be factorised.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a non-negative finite number, got {eps!r}")
    _check_samples(z, 2, "at least 2 for a sample covariance")
    n, d = z.shape

    centred = z - z.mean(dim=0, keepdim=True)
    cov = centred.mT @ centred / (n - 1)  # Σ̂ = (z − z̄)ᵀ(z − z̄) / (N − 1)
    cov = cov + eps * torch.eye(d, dtype=z.dtype, device=z.device)
    logdet = logdet_from_cholesky(cholesky(cov, name="sample covariance + eps I"))
    return 0.5 * (d * math.log(2.0 * math.pi * math.e) + logdet)  # ½ log|2πe(Σ̂ + εI)|


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

ENTROPY_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "knn": knn_entropy,
    "kde": kde_entropy,
    "logdet": logdet_entropy,
}
"""Entropy estimators by name: ``"knn"``, ``"kde"``, ``"logdet"``."""


def entropy(z: torch.Tensor, method: str = "knn", **options) -> torch.Tensor:
    """Entropy estimate of the samples ``z`` by the named estimator.

    Parameters
    ----------
    z : Tensor, shape (N, d)
        Samples in rows.
    method : {"knn", "kde", "logdet"}, default "knn"
        Key of :data:`ENTROPY_ESTIMATORS`.
    **options
        Keyword options of the chosen estimator (e.g. ``k``, ``clip_quantile``, ``subsample``,
        ``generator`` for ``"knn"``; ``bandwidth`` for ``"kde"``; ``eps`` for ``"logdet"``).

    Returns
    -------
    Tensor, shape ()
        The entropy estimate in nats.

    Raises
    ------
    ValueError
        If ``method`` is not a known estimator name (or the estimator rejects its input).
    TypeError
        If an option is not accepted by the chosen estimator.
    """
    try:
        estimator = ENTROPY_ESTIMATORS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown entropy method {method!r}; expected one of {sorted(ENTROPY_ESTIMATORS)}"
        ) from None
    return estimator(z, **options)
