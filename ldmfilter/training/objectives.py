"""The predictive LDM training objectives (METHOD.md §4)."""

from __future__ import annotations

import torch

from ..nn.latent_filter import PredictiveOutput
from .entropy import ENTROPY_ESTIMATORS, entropy

__all__ = ["OBJECTIVES", "stop_gradient_loss", "entropy_bonus_loss", "ldm_loss"]

OBJECTIVES = ("stopgrad",) + tuple(ENTROPY_ESTIMATORS)


def stop_gradient_loss(output: PredictiveOutput) -> torch.Tensor:
    """``−Σ_t mean_batch ℓ_t`` with ``ℓ_t = log N(SG[z_t]; ẑ_t, Σ_e,t)``.

    The target is detached; gradients reach the encoder only through the predictions (``ẑ_t``
    depends on ``z_{<t}`` through the filter's updates) and through the noise model.
    """
    return -output.score(output.latents.detach()).mean(0).sum()


def entropy_bonus_loss(
    output: PredictiveOutput, method: str, weight: float = 1.0, generator: torch.Generator | None = None, **options
) -> torch.Tensor:
    """F_MI form: ``−Σ_t mean_batch ℓ_t − λ · T · Ĥ(z)``, no stop-gradient.

    ``Ĥ`` is estimated on the single-step latents of the observed frames; for ``"knn"`` on a
    random subset of ``5 · B`` of them (the paper's choice), for the others on all of them.

    Parameters
    ----------
    output : PredictiveOutput
    method : {"knn", "kde", "logdet"}
    weight : float
        ``λ``.
    generator : torch.Generator, optional
        Randomness of the kNN subsample.
    **options
        Passed to the entropy estimator.
    """
    batch, steps, latent_dim = output.latents.shape
    latents = output.latents.reshape(-1, latent_dim)
    if output.mask is not None:
        latents = latents[output.mask.reshape(-1)]
    if method == "knn":
        options = {"subsample": min(5 * batch, latents.shape[0]), "generator": generator, **options}
    bonus = entropy(latents, method, **options)
    return -output.log_likelihood.mean(0).sum() - weight * steps * bonus


def ldm_loss(output: PredictiveOutput, objective: str = "stopgrad", entropy_weight: float = 1.0, generator=None, **options):
    """The named objective: ``"stopgrad"`` or an entropy estimator name (F_MI form)."""
    if objective == "stopgrad":
        return stop_gradient_loss(output)
    if objective in ENTROPY_ESTIMATORS:
        return entropy_bonus_loss(output, objective, entropy_weight, generator, **options)
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
