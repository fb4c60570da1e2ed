"""The predictive LDM training objectives (METHOD.md §4)."""

from __future__ import annotations

from typing import Callable

import torch

from ..nn.latent_filter import PredictiveOutput
from .entropy import ENTROPY_ESTIMATORS, entropy

__all__ = ["OBJECTIVES", "stop_gradient_loss", "entropy_bonus_loss", "multistep_loss", "ldm_loss"]

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


def multistep_loss(output: PredictiveOutput, horizon: int, detach_targets: bool) -> torch.Tensor:
    """``(1 / (K − 1)) Σ_{k=2..K} −mean_batch Σ_t log N(z_t; k-step prediction of step t)``, ``K = horizon``.

    The k-step predictions run the transition (and its moment rule) from the filtered beliefs
    without updates, as a forecast does; each horizon is scored like the one-step term, and the
    horizons are averaged so that together they weigh as much as the one-step term.  Targets are
    detached for the stop-gradient objective.

    Parameters
    ----------
    output : PredictiveOutput
        Of a model with a state belief (``output.score_ahead`` set).
    horizon : int
        ``K ≥ 2``.
    detach_targets : bool
    """
    if output.score_ahead is None:
        raise ValueError("the multi-step objective needs a predictor with a state belief (the Kalman predictor)")
    targets = output.latents.detach() if detach_targets else output.latents
    return -output.score_ahead(targets, horizon).mean(-1).mean()


def ldm_loss(
    output: PredictiveOutput,
    objective: str = "stopgrad",
    entropy_weight: float = 1.0,
    generator=None,
    gather=None,
    multistep: int = 1,
    **options,
):
    """The named objective: ``"stopgrad"`` or an entropy estimator name (F_MI form), plus
    :func:`multistep_loss` up to ``multistep`` steps ahead when ``multistep > 1``.

    ``gather`` (distributed training) is used by the entropy estimators only: the stop-gradient
    and multi-step losses are means over the batch, which DDP's gradient averaging makes the
    global batch's.
    """
    if objective == "stopgrad":
        loss = stop_gradient_loss(output)
    elif objective in ENTROPY_ESTIMATORS:
        loss = entropy_bonus_loss(output, objective, entropy_weight, generator, gather, **options)
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if multistep > 1:
        loss = loss + multistep_loss(output, multistep, detach_targets=objective == "stopgrad")
    return loss
