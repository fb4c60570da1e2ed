"""Gradient-free linear probes on detached states, for monitoring and evaluation."""

from __future__ import annotations

import torch

from ..nn.readout import fit_affine

__all__ = ["fit_linear_probe", "predict_linear_probe", "r2_score", "linear_probe_r2"]


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)


def fit_linear_probe(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares affine map from features (*lead, F) to targets (*lead, D): (F + 1, D), float64.

    The last row holds the intercept (see :func:`ldmfilter.nn.readout.fit_affine`).
    """
    return fit_affine(features, targets)


def predict_linear_probe(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Apply a probe from :func:`fit_linear_probe`: (*lead, F) → (*lead, D), float64."""
    x = features.detach().to(torch.float64)
    return x @ weights[:-1] + weights[-1]


def r2_score(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Coefficient of determination, averaged uniformly over target dimensions.

    Parameters
    ----------
    predictions, targets : Tensor, shape (*lead, D)
    """
    p, y = _as_rows(predictions), _as_rows(targets)
    residual = (y - p).square().sum(0)
    total = (y - y.mean(0)).square().sum(0)
    return float((1.0 - residual / total).mean())


def linear_probe_r2(train_features, train_targets, test_features, test_targets) -> float:
    """Fit a linear probe on training states and return its R² on held-out states."""
    weights = fit_linear_probe(train_features, train_targets)
    return r2_score(predict_linear_probe(weights, test_features), test_targets)
