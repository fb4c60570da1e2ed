"""The latent Kalman filter: encoder + (linear or MLP) dynamics + pseudo-observation noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..gaussian import (
    MOMENT_RULES,
    FilterResult,
    belief_log_likelihood,
    function_belief_log_likelihood,
    kalman_filter,
    kalman_forecast,
    nonlinear_filter,
    nonlinear_forecast,
    predictive_log_likelihood,
)
from ..gaussian.blocks import row_blocks
from .dynamics import LinearDynamics

__all__ = ["PredictiveOutput", "EncodesObservations", "LatentKalmanFilter", "fill_missing_frames", "check_latents",
           "ahead_windows", "ENCODE_BLOCK_BYTES"]

# without gradients, frames are standardised and encoded this many bytes of input at a time (whole series)
ENCODE_BLOCK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class PredictiveOutput:
    """What a predictive latent model returns for a batch of sequences.

    Attributes
    ----------
    latents : Tensor, shape (B, T, L)
        Encodings ``z_t``.
    log_likelihood : Tensor, shape (B, T)
        ``log p(z_t | z_{<t})`` with the latents themselves as targets (gradients through both).
    score : callable
        ``score(targets)`` → (B, T): log-density of ``targets`` (B, T, L) under the same one-step
        predictions; ``score(latents.detach())`` is the stop-gradient objective.
    mask : Tensor of bool, shape (B, T), or None
        True = the frame was observed (None: all were).
    filtered : FilterResult or None
        The Kalman filter's beliefs over the state (None for predictors without one).
    observation_cov : Tensor or None
        ``R`` used, shape (L, L) or (B, T, L, L).
    score_ahead : callable or None
        ``score_ahead(targets, horizon)`` → (horizon − 1, B): for ``k = 2, …, horizon``, the sum over
        steps of ``log N(targets_t; k-step prediction of step t)`` (None for predictors without a
        state belief; see :meth:`LatentKalmanFilter.ahead_log_likelihood`).
    """

    latents: torch.Tensor
    log_likelihood: torch.Tensor
    score: Callable[[torch.Tensor], torch.Tensor]
    mask: torch.Tensor | None = None
    filtered: FilterResult | None = None
    observation_cov: torch.Tensor | None = None
    score_ahead: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    @property
    def features(self) -> torch.Tensor:
        """Per-step features for probes: filtered state means (B, T, S), else the latents."""
        return self.latents if self.filtered is None else self.filtered.filtered_mean


def fill_missing_frames(x: torch.Tensor, mask: torch.Tensor | None, obs_ndim: int) -> torch.Tensor:
    """Replace missing frames (``mask`` False) and missing values (NaN) by zeros.

    Applied after standardisation, so a missing channel of an otherwise observed frame takes
    its training mean; the encoder always sees finite input.
    """
    keep = ~torch.isnan(x)
    if mask is not None:
        keep = keep & mask.reshape(mask.shape + (1,) * obs_ndim)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def check_latents(z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None, first_series: int = 0) -> torch.Tensor:
    """``z`` (B, T, L); ValueError when an observed frame's latent is NaN or inf.

    The filter reads NaN as "missing", so an encoder overflowing on an input far outside the
    training range (or diverged weights) would otherwise silently turn observed frames into
    missing ones.  ``x`` are the standardised inputs, for the message; ``first_series`` is the
    index of ``z``'s first series in the whole batch (also for the message).
    """
    with torch.no_grad():
        bad = ~torch.isfinite(z).all(-1)
        if mask is not None:
            bad &= mask
        if not bool(bad.any()):
            return z
        series, step = (int(i) for i in bad.nonzero()[0])
        series += first_series
        largest = float(x.detach().abs().nan_to_num(0.0).amax())
    raise ValueError(
        f"the encoder's output is NaN or inf for observed frames (first: series {series}, step {step}): the inputs "
        f"are far outside the range the model was trained on (largest standardised value {largest:.3g}) or its "
        "weights have diverged; rescale the inputs or use dtype='float64'"
    )


def ahead_windows(values: torch.Tensor, horizon: int) -> torch.Tensor:
    """``out[:, t, j] = values[:, t + 1 + j]``: the next ``horizon`` steps' entries from every step.

    Parameters
    ----------
    values : Tensor, shape (B, T, D)
    horizon : int

    Returns
    -------
    Tensor, shape (B, T, horizon, D)
        Zeros past the last step (predictions that are never scored).
    """
    padded = torch.cat([values[:, 1:], values.new_zeros(values.shape[:1] + (horizon,) + values.shape[2:])], 1)
    return padded.unfold(1, horizon, 1).movedim(-1, 2)


class EncodesObservations(nn.Module):
    """Encoding shared by the predictive latent models (needs ``encoder`` and ``normalizer``)."""

    @property
    def obs_ndim(self) -> int:
        return len(self.encoder.obs_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``z`` (B, T, L) of complete observations ``x`` (B, T, *obs_shape)."""
        return self.encoder(self.normalizer(x))

    def prepare_input(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised observations with missing frames and values set to zero (the training mean)."""
        return fill_missing_frames(self.normalizer(x), mask, self.obs_ndim)

    def encode_observed(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``z`` (B, T, L) of observations with missing frames (``mask``) or NaN values.

        Raises ValueError when an observed frame's latent is NaN or inf (see :func:`check_latents`).
        """
        return self.encode_with(x, mask)[0]

    def encode_with(self, x: torch.Tensor, mask: torch.Tensor | None = None, head: Callable | None = None):
        """Latents ``z`` (B, T, L) and ``head`` of the standardised frames, if given.

        While gradients are recorded, in one pass.  Otherwise (filtering, read-out fits) in blocks
        of whole series of at most ``ENCODE_BLOCK_BYTES`` of input, so that the standardised
        frames and the encoder's activations are never held for all the data at once.

        Parameters
        ----------
        x : Tensor, shape (B, T, *obs_shape)
        mask : Tensor of bool, shape (B, T), optional
        head : callable, optional
            ``head(standardised frames (b, T, *obs_shape))`` → a tensor with a series axis first,
            or one shared by all series (it has no time axis then, e.g. a constant ``R``).

        Returns
        -------
        z : Tensor, shape (B, T, L)
        head_value : Tensor or None
        """
        if torch.is_grad_enabled():
            blocks = [slice(0, x.shape[0])]
        else:
            blocks = row_blocks(tuple(x.shape), x.element_size(), ENCODE_BLOCK_BYTES)
        latents, values = [], []
        for block in blocks:
            block_mask = None if mask is None else mask[block]
            inputs = self.prepare_input(x[block], block_mask)
            latents.append(check_latents(self.encoder(inputs), inputs, block_mask, first_series=block.start))
            values.append(None if head is None else head(inputs))
        if len(latents) == 1:
            return latents[0], values[0]
        shared = values[0] is None or values[0].ndim < latents[0].ndim  # no series axis: the same for every block
        return torch.cat(latents), values[0] if shared else torch.cat(values)


class LatentKalmanFilter(EncodesObservations):
    """``z_t = f_φ(x_t)`` filtered by a Gaussian state-space model (METHOD.md §2–3).

    With :class:`~ldmfilter.nn.LinearDynamics` this is the paper's exact Kalman filter; with
    :class:`~ldmfilter.nn.MLPDynamics` the predicted belief comes from the deterministic moment
    rule ``moments`` and the update stays the exact Kalman update
    (:func:`~ldmfilter.gaussian.nonlinear_filter`).  With a nonlinear ``observation`` map
    (:class:`~ldmfilter.nn.MLPObservation`) the update conditions on the moments that the same rule
    gives for the observation.  Either way the Kalman maths is the Gaussian engine's, not a copy.

    Parameters
    ----------
    encoder : nn.Module
        ``(*lead, *obs_shape) → (*lead, L)``; must expose ``obs_shape``.
    dynamics : LinearDynamics or MLPDynamics
    noise : nn.Module
        ``noise(x, log_scale)`` → R of shape (L, L), or (*lead, L, L) when ``input_dependent``.
    normalizer : nn.Module, optional
        Applied to the observations before the encoder and the noise model (input
        standardisation stored with the model).
    parallel : bool or "auto"
        Use the associative-scan filter.  ``"auto"``: when ``R_t`` is input-dependent, where the
        covariance recursion cannot be shared across series and the scan needs ~log₂ T rounds of
        batched operations instead of T rounds (several times faster to train on a CPU).  Linear
        dynamics only.
    moments : {"linearize", "unscented", "cubature"}
        Moment rule of nonlinear dynamics and of a nonlinear observation map (unused when both are linear).
    observation : nn.Module, optional
        ``z = c(h)`` on rows (N, S) → (N, L), e.g. :class:`~ldmfilter.nn.MLPObservation`; None:
        the linear ``D h`` of the dynamics (the paper's).
    """

    def __init__(
        self,
        encoder: nn.Module,
        dynamics: LinearDynamics,
        noise: nn.Module,
        normalizer=None,
        parallel="auto",
        moments: str = "linearize",
        observation: nn.Module | None = None,
    ):
        super().__init__()
        self.encoder, self.dynamics, self.noise, self.observation = encoder, dynamics, noise, observation
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        if parallel not in (True, False, "auto"):
            raise ValueError(f"parallel must be True, False or 'auto', got {parallel!r}")
        if moments not in MOMENT_RULES:
            raise ValueError(f"moments must be one of {sorted(MOMENT_RULES)}, got {moments!r}")
        self.parallel = getattr(noise, "input_dependent", False) if parallel == "auto" else parallel
        self.moments = moments

    def filter_latents(self, z, R, mask=None, controls=None) -> FilterResult:
        """The state filter over latents ``z`` (B, T, L) with pseudo-observation noise ``R``.

        Parameters
        ----------
        z : Tensor, shape (B, T, L)
        R : Tensor, shape (L, L) or (B, T, L, L)
        mask : Tensor of bool, shape (B, T), optional
        controls : Tensor, shape (B, T, U), optional
            ``u_t`` acts on the transition into step ``t`` (entry 0 unused).

        Returns
        -------
        FilterResult
        """
        dyn = self.dynamics
        dyn.check_controls(controls)
        Q, D = dyn.transition_cov(), dyn.observation_matrix
        m0, P0 = dyn.initial_belief()
        if self.observation is not None:
            return nonlinear_filter(
                z, dyn, Q, None, R, m0, P0, method=self.moments, mask=mask, observation_fn=self.observation,
                transition_inputs=controls,
            )
        if dyn.nonlinear:
            return nonlinear_filter(
                z, dyn, Q, D, R, m0, P0, method=self.moments, mask=mask, transition_inputs=controls
            )
        c = dyn.transition_offset(controls)
        return kalman_filter(z, dyn.transition_matrix(), Q, D, R, m0, P0, transition_offset=c, mask=mask, parallel=self.parallel)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, controls: torch.Tensor | None = None) -> PredictiveOutput:
        """Encode and filter a batch of sequences.

        Parameters
        ----------
        x : Tensor, shape (B, T, *obs_shape)
            Missing frames may hold anything, missing values are NaN: both become zeros after
            standardisation (the training mean).
        mask : Tensor of bool, shape (B, T), optional
            True = the frame is observed.
        controls : Tensor, shape (B, T, U), optional
            Control inputs (required when the dynamics take them).

        Returns
        -------
        PredictiveOutput
        """
        # R: (L, L), or (B, T, L, L) when input-dependent
        z, R = self.encode_with(x, mask, lambda inputs: self.noise(inputs, self.dynamics.log_scale))
        result = self.filter_latents(z, R, mask, controls)
        D = self.dynamics.observation_matrix

        def score(targets: torch.Tensor) -> torch.Tensor:
            if self.observation is not None:
                return function_belief_log_likelihood(
                    targets, result.predicted_mean, result.predicted_cov, self.observation, R, self.moments, mask
                )
            return predictive_log_likelihood(targets, result, D, R, mask=mask)

        def score_ahead(targets: torch.Tensor, horizon: int) -> torch.Tensor:
            return self.ahead_log_likelihood(targets, result, R, horizon, mask, controls)

        return PredictiveOutput(z, result.log_likelihood, score, mask, result, R, score_ahead)

    def ahead_log_likelihood(self, targets, result: FilterResult, R, horizon: int, mask=None, controls=None) -> torch.Tensor:
        """Log-densities of ``targets`` under the k-step predictions, ``k = 2, …, horizon``.

        From the filtered belief at every step ``t`` the transition (its moment rule, for
        nonlinear dynamics) predicts steps ``t + 1, …, t + horizon`` without updates, as
        :meth:`~ldmfilter.estimators.LDMFilter.forecast` does; the k-step prediction of step
        ``t + k`` scores ``targets[:, t + k]`` like the filter's one-step prediction does
        (``N(D m, D P Dᵀ + R_{t+k})``, missing frames not scored).  The first of those steps is
        the filter's own prediction of step ``t + 1``, so the forecasts start from
        ``result``'s predicted beliefs.  Differentiable.

        Parameters
        ----------
        targets : Tensor, shape (B, T, L)
        result : FilterResult
            The filter run over these series.
        R : Tensor, shape (L, L) or (B, T, L, L)
        horizon : int
            At least 2.
        mask : Tensor of bool, shape (B, T), optional
        controls : Tensor, shape (B, T, U), optional
            ``u_t`` acts on the transition into step ``t``.

        Returns
        -------
        Tensor, shape (horizon − 1, B)
            Row ``k − 2``: the sum over the steps ``k, …, T − 1`` of each series.
        """
        steps = targets.shape[1]
        if horizon < 2 or horizon >= steps:
            raise ValueError(f"horizon must be at least 2 and below the series length {steps}, got {horizon}")
        dyn, D = self.dynamics, self.dynamics.observation_matrix
        # the filter's one-step predictions of steps 1 … T−1 are the forecasts' first step
        mean, cov = result.predicted_mean[:, 1:], result.predicted_cov
        cov = cov[0, 1:] if result.shared_covariance else cov[:, 1:]  # shared: one (T−1, S, S) recursion
        further = horizon - 1  # steps forecast beyond those predictions
        u = None if controls is None else ahead_windows(controls, further)[:, 1:]  # (B, T−1, horizon−1, U)
        if dyn.nonlinear:
            ahead = nonlinear_forecast(mean, cov, dyn, dyn.transition_cov(), further, self.moments, transition_inputs=u)
        else:
            c = dyn.transition_offset() if controls is None else ahead_windows(dyn.transition_offset(controls), further)[:, 1:]
            ahead = kalman_forecast(mean, cov, dyn.transition_matrix(), dyn.transition_cov(), further, c)
        sums = []
        for k in range(2, horizon + 1):
            kept = steps - k  # from steps 0 … T−k−1 (forecast entry k−2 of predictions 1 … T−k) to steps k … T−1
            k_cov = ahead.cov[..., :kept, k - 2, :, :]
            shared = k_cov.ndim == 3
            k_cov = k_cov.expand(mean.shape[:1] + k_cov.shape[-3:]) if shared else k_cov
            k_R = R if R.ndim == 2 else R[:, k:]
            k_mask = None if mask is None else mask[:, k:]
            k_mean = ahead.mean[:, :kept, k - 2]
            if self.observation is not None:
                scores = function_belief_log_likelihood(targets[:, k:], k_mean, k_cov, self.observation, k_R, self.moments, k_mask)
            else:
                scores = belief_log_likelihood(targets[:, k:], k_mean, k_cov, D, k_R, k_mask, shared)
            sums.append(scores.sum(-1))
        return torch.stack(sums)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate group: encoder, predictor (dynamics, constant R), the residual
        MLP of nonlinear dynamics, noise head, nonlinear observation map."""
        noise = list(self.noise.parameters())
        head = getattr(self.noise, "input_dependent", False)
        residual = list(self.dynamics.residual.parameters()) if self.dynamics.nonlinear else []
        linear = [p for p in self.dynamics.parameters() if all(p is not q for q in residual)]
        return {
            "encoder": list(self.encoder.parameters()),
            "predictor": linear + ([] if head else noise),
            "residual": residual,
            "noise_head": noise if head else [],
            "observation": [] if self.observation is None else list(self.observation.parameters()),
        }

    def after_optimizer_step(self, max_radius: float = 1.02) -> None:
        """Keep the transition stable: clip the spectral radius of ``A`` (no gradient)."""
        self.dynamics.clip_spectral_radius_(max_radius)
