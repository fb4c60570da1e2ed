"""Tell when a training run's loss blew up and stayed up: a divergence that leaves the weights finite.

Non-finite weights stop training with an error (``after_optimizer_step``).  A run can also end
with finite weights that are ruined: on one wobbly seed the filtered state ran away in the last
250 of 5,000 steps, the loss rose from about −100 to 1.7e5, and the probe R² fell from 0.86 to
0.00 (``docs/nonlinear.md``).  :func:`late_divergence` finds that case in the loss history.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TrainingDivergedWarning", "late_divergence"]


class TrainingDivergedWarning(UserWarning):
    """The training loss ended far above its best: the fitted weights are those of a diverged run."""


def late_divergence(losses, window_fraction: float = 0.05, min_window: int = 10, tolerance: float = 20.0) -> str | None:
    """Describe a blow-up of the loss at the end of training, or return None.

    The losses are cut into consecutive windows of ``w = max(min_window, window_fraction · n)``
    steps.  The run has diverged when the mean of the last window exceeds the lowest mean of
    the earlier windows by more than ``tolerance`` times the per-step spread in that best window
    (the median absolute deviation of its losses from their median), or is not finite.  The
    spread of single steps is far wider than the noise of a window's mean, so the ordinary ups
    and downs of a run and a loss that levels off do not count.

    Parameters
    ----------
    losses : sequence of float, shape (n,)
        The loss of every optimiser step, in order (``LDMFilter.loss_history_``).
    window_fraction : float
        Window length as a fraction of the run.
    min_window : int
        Shortest window; runs shorter than four windows are never called diverged.
    tolerance : float
        How many per-step spreads above the best window's mean the last window's mean may lie.

    Returns
    -------
    str or None
        What happened (the windows' means, and the first step of the first window past the
        limit), for a warning; None when the run did not diverge.
    """
    losses = np.asarray(losses, dtype=np.float64)
    width = max(int(min_window), int(round(window_fraction * losses.size)))
    count = losses.size // width
    if count < 4:
        return None
    offset = losses.size - count * width  # the first steps left out, so that the last window ends at the last step
    windows = losses[offset:].reshape(count, width)
    means = windows.mean(axis=1)
    earlier = np.where(np.isfinite(means[:-1]), means[:-1], np.inf)
    best = int(np.argmin(earlier))
    if not np.isfinite(earlier[best]):
        return None  # no finite window to compare with
    spread = float(np.median(np.abs(windows[best] - np.median(windows[best]))))
    limit = means[best] + tolerance * max(spread, 1e-6 * max(1.0, abs(means[best])))
    last = means[-1]
    if np.isfinite(last) and last <= limit:
        return None
    above = best + 1 + int(np.argmax(~(means[best + 1:] <= limit)))  # the first window past the limit (NaN counts)
    return (
        f"the training loss blew up and stayed up: its mean over the last {width} optimiser steps is {last:.4g}, "
        f"against {means[best]:.4g} over steps {offset + best * width}–{offset + (best + 1) * width - 1} "
        f"(per-step spread {spread:.3g} there); it first went past {limit:.4g} in the window from step "
        f"{offset + above * width}.  The fitted model holds the weights of the last step.  Smaller learning rates "
        "(learning_rate, lr_multipliers) or gradient clipping (trainer_kwargs={'gradient_clip_val': 1.0}) may "
        "avoid it; loss_history_ holds every step's loss"
    )
