"""The predictive LDM training objectives (METHOD.md §4)."""

from __future__ import annotations

from typing import Callable

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
    output: PredictiveOutput,
    method: str,
    weight: float = 1.0,
    generator: torch.Generator | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **options,
) -> torch.Tensor:
    """F_MI form: ``−Σ_t mean_batch ℓ_t − λ · T · Ĥ(z)``, no stop-gradient.

    ``Ĥ`` is estimated on the single-step latents of the observed frames; for ``"knn"`` on a
    random subset of ``5 · B`` of them (the paper's choice), for the others on all of them.
    Under distributed training ``gather`` assembles the global batch first, so ``Ĥ`` (and
    ``B``) are those of the global batch on every process; the log-likelihood term stays this
    process's mean (DDP averages it over processes).

    Parameters
    ----------
    output : PredictiveOutput
    method : {"knn", "kde", "logdet"}
    weight : float
        ``λ``.
    generator : torch.Generator, optional
        Randomness of the kNN subsample (seeded alike on every process).
    gather : callable, optional
        ``(B, ...) ↦ (N·B, ...)``, e.g. :func:`~ldmfilter.training.distributed.gather_batch`.
    **options
        Passed to the entropy estimator.
    """
    latents, mask = output.latents, output.mask
    if gather is not None:  # every process gets the same mask layout, so gather one even when all frames are observed
        latents = gather(latents)
        mask = gather(torch.ones(output.latents.shape[:2], dtype=torch.bool, device=latents.device) if mask is None else mask)
    batch, steps, latent_dim = latents.shape
    latents = latents.reshape(-1, latent_dim)
    if mask is not None:
        latents = latents[mask.reshape(-1)]
    if method == "knn":
        options = {"subsample": min(5 * batch, latents.shape[0]), "generator": generator, **options}
    bonus = entropy(latents, method, **options)
    return -output.log_likelihood.mean(0).sum() - weight * steps * bonus


def ldm_loss(output: PredictiveOutput, objective: str = "stopgrad", entropy_weight: float = 1.0, generator=None, gather=None, **options):
    """The named objective: ``"stopgrad"`` or an entropy estimator name (F_MI form).

    ``gather`` (distributed training) is used by the entropy estimators only: the stop-gradient
    loss is a mean over the batch, which DDP's gradient averaging makes the global batch's.
    """
    if objective == "stopgrad":
        return stop_gradient_loss(output)
    if objective in ENTROPY_ESTIMATORS:
        return entropy_bonus_loss(output, objective, entropy_weight, generator, gather, **options)
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
